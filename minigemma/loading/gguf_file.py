"""Gemma checkpoints in llama.cpp's GGUF format, read with the `gguf` package.

A GGUF file holds three things we need: hyper-parameters (key/value metadata), the
tokenizer's vocabulary (also metadata), and the tensors, most of them quantized in blocks
(Q8_0, Q5_0, Q4_K, Q6_K ...). `gguf.quants.dequantize` turns each back into float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import PRESETS, GemmaConfig
from ..tokenizer import tokenizer_model_from_gguf_fields
from .names import gguf_names, is_norm

SUPPORTED_ARCHS = ("gemma", "gemma3")


@dataclass
class GGUFContents:
    config: GemmaConfig
    tensors: dict[str, object]   # our name -> gguf ReaderTensor (still quantized, memory-mapped)
    source_names: dict[str, str]  # our name -> GGUF tensor name
    tokenizer_model: bytes        # the vocabulary as a SentencePiece ModelProto


def open_gguf(path: str | Path):
    """GGUFReader, with the failure modes a user meets turned into clear errors."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"GGUF file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ValueError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
                         "check the path, or re-download a file that may be corrupt")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # the reader raises many kinds of error on truncated/corrupt files
        raise ValueError(f"could not read GGUF file {str(path)!r} ({type(e).__name__}: {e}); "
                         "the file is probably truncated or corrupt: re-download it") from e


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def config_from_gguf(reader, path: str | Path = "") -> GemmaConfig:
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"{str(path)!r} holds a {arch!r} model; minigemma reads Gemma GGUF files "
                         f"(architectures {', '.join(SUPPORTED_ARCHS)})")
    k = lambda name, default=None: _field(reader, f"{arch}.{name}", default)  # noqa: E731
    heads, hidden = k("attention.head_count"), k("embedding_length")
    head_dim = k("attention.key_length", hidden // heads)
    fields = dict(
        architecture=arch,
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        hidden_size=hidden,
        intermediate_size=k("feed_forward_length"),
        num_layers=k("block_count"),
        num_heads=heads,
        num_kv_heads=k("attention.head_count_kv", heads),
        head_dim=head_dim,
        max_position_embeddings=k("context_length"),
        # Stored as float32 (9.99999997e-07); round so the 270M matches its preset exactly.
        rms_norm_eps=float(f"{k('attention.layer_norm_rms_epsilon'):.6g}"),
        rope_theta=float(k("rope.freq_base", 10_000.0)),
    )
    if arch == "gemma3":
        if float(k("rope.scaling.factor", 1.0)) != 1.0:
            raise ValueError(f"{str(path)!r} uses RoPE scaling (Gemma 3 4B and larger), which minigemma does not implement")
        # Not stored in the file: llama.cpp hard-codes these for Gemma 3 (5 local : 1 global
        # layers, local RoPE base 10k), and scales queries by 1/sqrt(head_dim).
        fields.update(sliding_window=k("attention.sliding_window"), sliding_window_pattern=6,
                      rope_local_theta=10_000.0, query_pre_attn_scalar=head_dim,
                      qk_norm=True, post_norms=True)
    config = GemmaConfig(**fields)
    for name, preset in PRESETS.items():
        if preset.replace(name="custom") == config:  # say which known model this is
            return preset
    return config.replace(name=str(_field(reader, "general.name", "custom")))


def read_gguf(path: str | Path) -> GGUFContents:
    reader = open_gguf(path)
    config = config_from_gguf(reader, path)
    by_name = {t.name: t for t in reader.tensors}
    names = gguf_names(config)
    tensors = {ours: by_name[theirs] for ours, theirs in names.items() if theirs in by_name}
    # Anything in the file we would not use is worth an error too (output.weight: untied head).
    for theirs in by_name:
        if theirs not in names.values():
            tensors[theirs] = by_name[theirs]
    # The tokenizer travels as metadata; turn it into a SentencePiece model file now, while the
    # (slow to parse) metadata is open anyway.
    tokenizer_model = tokenizer_model_from_gguf_fields(reader.fields, str(path))
    return GGUFContents(config, tensors, names, tokenizer_model)


def dequantize(name: str, tensor) -> torch.Tensor:
    """A GGUF tensor as float32, in nn.Linear's (out, in) layout."""
    import gguf

    array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    # GGUF lists dimensions fastest-first ([in, out]); numpy's shape is already (out, in).
    out = torch.from_numpy(np.array(array, dtype=np.float32))  # a copy: F32 tensors come back as read-only memory maps
    if is_norm(name):
        # llama.cpp's converter stores every Gemma norm gain as the full multiplier (1 + w);
        # our RMSNorm adds the 1 itself (see norm.py), so take it back out.
        out = out - 1.0
    return out
