"""Gemma checkpoints in llama.cpp's GGUF format, read with the `gguf` package.

A GGUF file holds three things we need: hyper-parameters (key/value metadata), the
tokenizer's vocabulary (also metadata), and the tensors, most of them quantized in blocks
(Q8_0, Q5_0, Q4_K, Q6_K ...). `gguf.quants.dequantize` turns each back into float32.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model.config import GemmaConfig, check_fields, field_error, is_int, is_number, matching_preset
from ..errors import CheckpointError, ConfigError, ModelNotFoundError
from ..tokenizer import SentencePieceTokenizer, tokenizer_model_from_gguf_fields
from .names import gguf_names, is_norm

SUPPORTED_ARCHS = ("gemma", "gemma3")
# Our config fields and the GGUF metadata keys they come from ("{arch}." omitted).
GGUF_KEYS = dict(hidden_size="embedding_length", intermediate_size="feed_forward_length", num_layers="block_count",
                 num_heads="attention.head_count", num_kv_heads="attention.head_count_kv",
                 head_dim="attention.key_length", max_position_embeddings="context_length",
                 rms_norm_eps="attention.layer_norm_rms_epsilon", rope_theta="rope.freq_base",
                 sliding_window="attention.sliding_window")
REQUIRED = ("embedding_length", "feed_forward_length", "block_count", "attention.head_count", "context_length",
            "attention.layer_norm_rms_epsilon")


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
        raise ModelNotFoundError(f"GGUF file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise CheckpointError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
                              "check the path, or re-download a file that may be corrupt")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # the reader raises many kinds of error on truncated/corrupt files
        raise CheckpointError(f"could not read GGUF file {str(path)!r} ({type(e).__name__}: {e}); "
                              "the file is probably truncated or corrupt: re-download it") from e


def _field(reader, key: str, default=None, path: str | Path = ""):
    f = reader.fields.get(key)
    try:
        return default if f is None else f.contents()
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{str(path)!r}: GGUF metadata {key!r} is not valid UTF-8 text ({e}); the file is "
                              "corrupt: download it again") from e


def config_from_gguf(reader, path: str | Path = "") -> GemmaConfig:
    arch = _field(reader, "general.architecture", path=path)
    if arch not in SUPPORTED_ARCHS:
        raise ConfigError(f"{str(path)!r} holds a {reprlib.repr(arch)} model; minigemma reads Gemma GGUF files "
                          f"(architectures {', '.join(SUPPORTED_ARCHS)})")
    k = lambda name, default=None: _field(reader, f"{arch}.{name}", default, path)  # noqa: E731
    missing = [f"{arch}.{key}" for key in REQUIRED if k(key) is None]
    missing += ["tokenizer.ggml.tokens"] if "tokenizer.ggml.tokens" not in reader.fields else []
    if missing:
        raise ConfigError(f"{str(path)!r} lacks the GGUF metadata key(s) {', '.join(map(repr, missing))}, which "
                          f"every {arch} GGUF from llama.cpp's converter has: the file is damaged or was written by "
                          "another tool; download it again")
    fix = "The file is damaged or not a Gemma model: download it again"
    # The tokenizer's metadata by its GGUF types: decoding its values (262k tokens) takes seconds.
    for key, (types, expected) in _tokenizer_types().items():
        if key in reader.fields and tuple(reader.fields[key].types) not in types:
            raise field_error(str(path), key, _field(reader, key, path=path), expected, fix)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    heads, hidden, eps = k("attention.head_count"), k("embedding_length"), k("attention.layer_norm_rms_epsilon")
    head_dim = k("attention.key_length", hidden // heads if is_int(hidden) and is_int(heads) and heads else None)
    fields = dict(
        architecture=arch,
        vocab_size=len(tokens.data),
        hidden_size=hidden,
        intermediate_size=k("feed_forward_length"),
        num_layers=k("block_count"),
        num_heads=heads,
        num_kv_heads=k("attention.head_count_kv", heads),
        head_dim=head_dim,
        max_position_embeddings=k("context_length"),
        # Stored as float32 (9.99999997e-07); round so the 270M matches its preset exactly.
        rms_norm_eps=float(f"{eps:.6g}") if is_number(eps) else eps,
        rope_theta=k("rope.freq_base", 10_000.0),
    )
    if arch == "gemma3":
        scaling = k("rope.scaling.factor", 1.0)
        if not is_number(scaling):
            raise field_error(str(path), f"{arch}.rope.scaling.factor", scaling, "a number", fix)
        if scaling != 1.0:
            raise ConfigError(f"{str(path)!r} uses RoPE scaling (Gemma 3 4B and larger), which minigemma does not "
                              "implement")
        # Not stored in the file: llama.cpp hard-codes these for Gemma 3 (5 local : 1 global
        # layers, local RoPE base 10k), and scales queries by 1/sqrt(head_dim).
        fields.update(sliding_window=k("attention.sliding_window"), sliding_window_pattern=6,
                      rope_local_theta=10_000.0, query_pre_attn_scalar=head_dim,
                      qk_norm=True, post_norms=True)
    keys = {ours: f"{arch}.{key}" for ours, key in GGUF_KEYS.items()} | {"vocab_size": "len(tokenizer.ggml.tokens)"}
    check_fields(fields, str(path), keys, fix)
    config = GemmaConfig(**fields)
    # A known model keeps its preset's name; any other is named as the file names it.
    return matching_preset(config) or config.replace(name=str(_field(reader, "general.name", "custom", path)))


def _tokenizer_types() -> dict[str, tuple[set[tuple], str]]:
    """The tokenizer metadata read_gguf turns into a SentencePiece model: {key: (GGUF types accepted, in words)}."""
    from gguf import GGUFValueType as T

    ints = {T.UINT8, T.INT8, T.UINT16, T.INT16, T.UINT32, T.INT32, T.UINT64, T.INT64}
    return {
        "tokenizer.ggml.model": ({(T.STRING,)}, "a string ('llama')"),
        "tokenizer.ggml.tokens": ({(T.ARRAY, T.STRING)}, "an array of strings"),
        "tokenizer.ggml.scores": ({(T.ARRAY, T.FLOAT32), (T.ARRAY, T.FLOAT64)}, "an array of floats"),
        "tokenizer.ggml.token_type": ({(T.ARRAY, t) for t in ints}, "an array of ints"),
        **{f"tokenizer.ggml.{name}_token_id": ({(t,) for t in ints}, "a token id (an int)")
           for name in ("bos", "eos", "unknown", "padding")},
    }


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
    try:
        tokenizer_model = tokenizer_model_from_gguf_fields(reader.fields, "it")  # "(it has no ...)"
        SentencePieceTokenizer(tokenizer_model)  # the library accepts it (one <unk>...), before it is cached
    except (ValueError, TypeError) as e:  # a missing, mistyped or inconsistent tokenizer.ggml.* field
        raise CheckpointError(f"the tokenizer metadata of {str(path)!r} is unusable ({e}); the file is damaged "
                              "or was written by another tool: download it again") from e
    return GGUFContents(config, tensors, names, tokenizer_model)


def dequantize(name: str, tensor) -> torch.Tensor:
    """A GGUF tensor as float32, in nn.Linear's (out, in) layout."""
    import gguf

    try:
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except (NotImplementedError, ValueError) as e:  # a type gguf cannot decode, or data of the wrong size
        raise CheckpointError(f"GGUF tensor {name!r} ({tensor.tensor_type.name}, shape {list(tensor.shape)}) cannot "
                              f"be decoded ({type(e).__name__}: {e}); the file is corrupt or uses a newer "
                              "format") from e
    # GGUF lists dimensions fastest-first ([in, out]); numpy's shape is already (out, in).
    out = torch.from_numpy(np.array(array, dtype=np.float32))  # a copy: F32 tensors come back as read-only memory maps
    if is_norm(name):
        # llama.cpp's converter stores every Gemma norm gain as the full multiplier (1 + w);
        # our RMSNorm adds the 1 itself (see norm.py), so take it back out.
        out = out - 1.0
    return out
