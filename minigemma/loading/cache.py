"""Convert a GGUF once, then load it in a second.

Parsing a GGUF's 262k-entry vocabulary in Python takes ~12 s and dequantizing ~3 s; every
notebook loads the model, so we do that work once and keep the result in a cache directory,
keyed by the file's fingerprint: fp32 weights as safetensors (memory-mapped on load), the
tokenizer as a SentencePiece `.model`, and the config as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..config import GemmaConfig

FORMAT_VERSION = 1  # bump when the cached layout or conversion changes


def cache_root() -> Path:
    root = os.environ.get("MINIGEMMA_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "minigemma"


def fingerprint(path: Path) -> str:
    """Hash of size and the first and last MiB: cheap for big files, changes when the file does."""
    h = hashlib.sha256(f"v{FORMAT_VERSION}:{path.stat().st_size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def converted_gguf_dir(path: str | Path, progress: bool = True) -> Path:
    """The cache directory for `path`, converting the GGUF first if needed."""
    path = Path(path)
    target = cache_root() / f"{path.stem}-{fingerprint(path)}"
    if (target / "model.safetensors").is_file():
        return target
    from .gguf_file import dequantize, read_gguf

    contents = read_gguf(path)
    unexpected = [n for n in contents.tensors if n not in contents.source_names]
    if unexpected:
        raise ValueError(f"{str(path)!r} has tensors minigemma does not use: {unexpected[:5]}; "
                         "is it a Gemma checkpoint of a supported architecture?")
    missing = [contents.source_names[n] for n in contents.source_names if n not in contents.tensors]
    if missing:
        raise ValueError(f"{str(path)!r} lacks {len(missing)} tensor(s) {contents.config.name} needs, "
                         f"e.g. {missing[:3]}; the file is probably truncated or from another model")
    weights = {name: dequantize(contents.source_names[name], t).contiguous()
               for name, t in tqdm(contents.tensors.items(), desc="dequantizing GGUF", disable=not progress, leave=False)}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        save_file(weights, tmp / "model.safetensors")
        (tmp / "tokenizer.model").write_bytes(contents.tokenizer_model)
        (tmp / "config.json").write_text(json.dumps(dataclasses.asdict(contents.config), indent=2))
        (tmp / "source.txt").write_text(str(path.resolve()) + "\n")
        try:
            tmp.rename(target)  # atomic: a concurrent loader sees all of it or nothing
        except OSError:  # another process converted it first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_config(directory: Path) -> GemmaConfig:
    return GemmaConfig(**json.loads((directory / "config.json").read_text()))
