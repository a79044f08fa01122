"""Hugging Face checkpoints: a directory with config.json, safetensors weights and tokenizer.model.

This is what `huggingface_hub.snapshot_download("google/gemma-2b")` leaves on disk:

    config.json                          hyper-parameters (transformers' names)
    model.safetensors                    all tensors, or for big models shards:
    model-00001-of-00002.safetensors     ... each holding some of the tensors
    model.safetensors.index.json         {"weight_map": {tensor name: shard file}}
    tokenizer.model                      the SentencePiece model

safetensors is a JSON header (names, dtypes, shapes, byte offsets) followed by raw bytes,
so `safe_open` memory-maps the file and hands out one tensor at a time without unpickling.
"""

from __future__ import annotations

import json
import logging
import reprlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path, PurePath

import torch
from safetensors import SafetensorError, safe_open

from ..model.config import GemmaConfig, check_fields, field_error, is_int
from ..errors import CheckpointError, ConfigError
from .names import hf_names
from .weights import FLAX_PADDED_VOCAB, GEMMA_VOCAB, match_preset

log = logging.getLogger("minigemma")

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Our config fields whose config.json key differs (transformers' names); the others are the same.
HF_KEYS = dict(num_layers="num_hidden_layers", num_heads="num_attention_heads", num_kv_heads="num_key_value_heads",
               bos_id="bos_token_id", eos_id="eos_token_id", pad_id="pad_token_id")
REQUIRED = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def read_hf_config(directory: Path) -> GemmaConfig:
    """Our config from transformers' config.json (Gemma 1, or text-only Gemma 3)."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{str(directory)!r} has no config.json; a Hugging Face checkpoint directory holds "
                              "config.json, the *.safetensors weights and tokenizer.model side by side")
    return config_from_hf(_read_json(path, ConfigError), str(path))


def _read_json(path: Path, error: type[Exception]) -> object:
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested a million deep
        raise error(f"{str(path)!r} is not valid JSON ({type(e).__name__}: {e}); the download is probably "
                    "incomplete: re-download it") from e
    except OSError as e:
        raise error(f"could not read {str(path)!r} ({e.strerror or e})") from e


FIX = "Correct it in the file, or pass config=<preset name or GemmaConfig> to load()"
# The shapes of config.json values that are not plain numbers (those are checked by check_fields).
_OBJECT = (lambda v: v is None or isinstance(v, dict), "an object {...} or null")
_STRING = (lambda v: v is None or isinstance(v, str), "a string or null")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_EOS = (lambda v: is_int(v) or (isinstance(v, list) and v != [] and all(map(is_int, v))),
        "a token id or a non-empty list of token ids")
_LAYER_TYPES = (lambda v: v is None or (isinstance(v, list) and all(isinstance(t, str) for t in v)),
                "a list of 'sliding_attention' / 'full_attention', one per layer")
_ABSENT = object()


def _lookup(raw: dict, path: str) -> object:
    """raw["a"]["b"] for path "a.b", or _ABSENT."""
    for key in path.split("."):
        if not isinstance(raw, dict) or key not in raw:
            return _ABSENT
        raw = raw[key]
    return raw


def config_from_hf(raw: dict, where: str = "config.json") -> GemmaConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} holds a JSON {_json_type(raw)}, expected an object "
                          '{"model_type": "gemma", "vocab_size": ..., ...}: it is not a transformers config.json; '
                          "download the model's own config.json again")
    if missing := [key for key in REQUIRED if key not in raw]:
        raise ConfigError(f"{where} has no {', '.join(map(repr, missing))} field{'s' * (len(missing) > 1)}, which "
                          "every transformers Gemma config.json has: the file is incomplete or edited; download "
                          "the model's own config.json again, or pass config=<preset name or GemmaConfig> to load()")
    keys = dict(HF_KEYS)  # our field -> the config.json key its value came from, for messages

    def get(path: str, rule: tuple, default: object = None) -> object:
        """The value at `path` ("a.b" for raw["a"]["b"]), or `default`; a ConfigError unless `rule` accepts it."""
        value = _lookup(raw, path)
        value = default if value is _ABSENT else value
        if not rule[0](value):
            raise field_error(where, path, value, rule[1], FIX)
        return value

    def first(field: str, default: object, *paths: str) -> object:
        """The value at the first of `paths` present (checked later by check_fields, under that name)."""
        for path in paths:
            if (value := _lookup(raw, path)) is not _ABSENT:
                keys[field] = path
                return value
        return default

    model_type = get("model_type", (lambda v: isinstance(v, str), "a string such as 'gemma'"))
    if model_type == "gemma2":
        raise ConfigError(f"{where} describes a Gemma 2 model, which minigemma does not implement "
                          "(it needs attention logit soft-capping); use a Gemma 1 or Gemma 3 text checkpoint")
    if model_type == "gemma3":
        raise ConfigError(f"{where} describes a multimodal Gemma 3 model (4B and larger); minigemma runs the "
                          "text-only ones (gemma-3-270m, gemma-3-1b) and Gemma 1")
    if model_type not in ("gemma", "gemma3_text"):
        raise ConfigError(f"{where} has model_type {model_type!r}; minigemma reads 'gemma' (Gemma 1) and "
                          "'gemma3_text' (Gemma 3 270M/1B) checkpoints")
    if not get("tie_word_embeddings", _BOOL, default=True):
        raise ConfigError(f"{where} says tie_word_embeddings=false; Gemma ties its output projection to the "
                          "embedding (Gemma report, section 2) and minigemma relies on that")
    eos = get("eos_token_id", _EOS, default=1)
    pad = raw.get("pad_token_id")
    fields = dict(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=raw["num_attention_heads"],
        num_kv_heads=raw.get("num_key_value_heads", raw["num_attention_heads"]),
        # Pitfall 8: head_dim is in the file (256 for every Gemma), never hidden // heads.
        head_dim=raw.get("head_dim", 256),
        max_position_embeddings=raw.get("max_position_embeddings", 8192),
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
        bos_id=raw.get("bos_token_id", 2),
        eos_id=eos[0] if isinstance(eos, list) else eos,  # Gemma 3 lists [<eos>, <end_of_turn>]
        # Some fine-tunes write "pad_token_id": null (their tokenizer has no pad token); Gemma's
        # <pad> is id 0, and minigemma pads only batches of prompts, whose padding is masked anyway.
        pad_id=0 if pad is None else pad,
    )
    check_fields(fields, where, keys, FIX)  # the sizes first: layer_types below is compared with num_layers
    for path in ("rope_scaling", "rope_parameters", "rope_parameters.full_attention",
                 "rope_parameters.sliding_attention"):
        get(path, _OBJECT)
    if model_type == "gemma":
        act = get("hidden_activation", _STRING) or get("hidden_act", _STRING)
        if act == "gelu":
            # Pitfall 1: the first Gemma configs said "gelu" (exact, erf-based) although the model
            # was trained with the tanh approximation, which gemma_pytorch uses.
            log.info("%s says hidden_act='gelu'; Gemma was trained with the tanh approximation of GELU, "
                     "which minigemma always uses (pitfall 1)", where)
        fields["rope_theta"] = first("rope_theta", 10_000.0, "rope_parameters.rope_theta", "rope_theta")
        _check_rope_type(raw.get("rope_parameters") or {}, raw, where)
        return _config(fields, where, keys)

    # Gemma 3: which layers are local comes as a list in new configs, as a period in old ones.
    for cap in ("final_logit_softcapping", "attn_logit_softcapping"):
        if raw.get(cap) is not None:
            raise ConfigError(f"{where} sets {cap}={raw[cap]!r}, which minigemma does not implement")
    layer_types = get("layer_types", _LAYER_TYPES)
    if layer_types is not None and len(layer_types) != fields["num_layers"]:
        raise field_error(where, "layer_types", layer_types,
                          f"one entry per layer ('num_hidden_layers' is {fields['num_layers']})", FIX)
    if layer_types:
        pattern = layer_types.index("full_attention") + 1 if "full_attention" in layer_types else len(layer_types) + 1
        want = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(len(layer_types))]
        if layer_types != want:
            raise ConfigError(f"{where} has layer_types {reprlib.repr(layer_types)}; minigemma supports one global "
                              "layer every N layers (Gemma 3: 5 local, then 1 global)")
    else:
        pattern = first("sliding_window_pattern", 6, "sliding_window_pattern", "_sliding_window_pattern")
    rope = raw.get("rope_parameters") or {}
    for part in ("full_attention", "sliding_attention"):
        _check_rope_type(rope.get(part) or {}, raw, where)
    fields.update(
        architecture="gemma3", qk_norm=True, post_norms=True,
        query_pre_attn_scalar=raw.get("query_pre_attn_scalar", fields["head_dim"]),
        sliding_window=raw.get("sliding_window"), sliding_window_pattern=pattern,
        rope_theta=first("rope_theta", 1_000_000.0, "rope_parameters.full_attention.rope_theta", "rope_theta"),
        rope_local_theta=first("rope_local_theta", 10_000.0, "rope_parameters.sliding_attention.rope_theta",
                               "rope_local_base_freq"),
    )
    return _config(fields, where, keys)


def _config(fields: dict, where: str, keys: dict[str, str]) -> GemmaConfig:
    """GemmaConfig(**fields), with a bad value reported by its config.json key."""
    check_fields(fields, where, keys, FIX)
    return GemmaConfig(**fields)


def _json_type(value: object) -> str:
    """What json.loads returned, in JSON's words."""
    names = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
    return names[type(value)]


def _check_rope_type(rope: dict, raw: dict, where: str) -> None:
    scaling = raw.get("rope_scaling")
    scaled = scaling and scaling.get("rope_type", scaling.get("type")) != "default"
    if rope.get("rope_type", "default") != "default" or scaled:
        raise ConfigError(f"{where} uses RoPE scaling ({reprlib.repr(rope or scaling)}), which minigemma does not "
                          "implement")


def weight_files(directory: Path) -> dict[str, Path]:
    """{tensor name in the file: the safetensors file that holds it}."""
    index = directory / INDEX
    if index.is_file():
        raw = _read_json(index, CheckpointError)
        weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            found = "missing" if weight_map is None else f"a {type(weight_map).__name__}"
            raise CheckpointError(f"{str(index)!r}: 'weight_map' is {found}, expected an object "
                                  "{tensor name: shard file name}; the index is corrupt: re-download it")
        for name, f in weight_map.items():
            # The index is data from the internet: it must not make us open /etc/passwd or ../x.
            if PurePath(f).is_absolute() or ".." in PurePath(f).parts:
                raise CheckpointError(f"{str(index)!r} maps tensor {name!r} to {f!r}, which is outside the checkpoint "
                                      f"directory {str(directory)!r}; shards are files beside the index. The index "
                                      "is corrupt or was tampered with: re-download it")
        missing = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
        if missing:
            raise CheckpointError(f"{str(directory)!r} lacks shard(s) {', '.join(missing)} listed in {INDEX}: "
                                  "the download is incomplete; download the missing files again")
        return {name: directory / f for name, f in weight_map.items()}
    if (directory / SINGLE).is_file():
        with ExitStack() as stack:
            names = list(_open(directory / SINGLE, stack).keys())
        return {name: directory / SINGLE for name in names}
    found = sorted(p.name for p in directory.iterdir())
    raise CheckpointError(f"{str(directory)!r} has neither {SINGLE} nor {INDEX} "
                          f"(it holds: {', '.join(found) or 'nothing'}). "
                          "minigemma reads the safetensors weights only (never pickled .bin files): download "
                          "config.json, *.safetensors and tokenizer.model")


def _open(path: Path, stack: ExitStack):
    try:
        return stack.enter_context(safe_open(path, framework="pt"))  # memory-mapped, header parsed
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"could not read {str(path)!r} ({e}); the file is truncated or corrupt "
                              "(an interrupted download?): delete it and download it again") from e


def hf_tensors(directory: Path, config: GemmaConfig, stack: ExitStack,
               ) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, str]]:
    """Lazy tensors keyed by our names (plus any unexpected ones keyed by the file's), and our -> file names.

    The files stay open (memory-mapped) until `stack` closes; each function reads one tensor.
    """
    files = weight_files(directory)
    handles = {path: _open(path, stack) for path in sorted(set(files.values()))}
    held = {path: set(handle.keys()) for path, handle in handles.items()}  # from the headers: no tensor is read
    for theirs, path in files.items():
        if theirs not in held[path]:
            elsewhere = [p.name for p, keys in held.items() if theirs in keys]
            raise CheckpointError(
                f"{str(directory / INDEX)!r} maps tensor {theirs!r} to shard {path.name!r}, which does not contain it "
                f"({f'it is in {elsewhere[0]!r}' if elsewhere else 'no shard does'}): the index and the shards come "
                "from different downloads; download model.safetensors.index.json and the shards again")
    names = hf_names(config)

    def reader(theirs: str, trim_padding: bool = False) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            try:
                tensor = handles[files[theirs]].get_tensor(theirs)
            except SafetensorError as e:
                raise CheckpointError(f"could not read tensor {theirs!r} from {str(files[theirs])!r} ({e}); the "
                                      "file is truncated or corrupt: download it again") from e
            if trim_padding and tensor.shape[:1] == (FLAX_PADDED_VOCAB,):  # (a 0-d tensor has no shape[0])
                # Flax exports pad the vocabulary to 256128 rows (a multiple of 128); the extra rows are unused.
                tensor = tensor[:GEMMA_VOCAB]
            return tensor
        read.file = str(files[theirs])  # fill_model names this shard, not just the directory, in its errors
        return read

    tensors = {}
    for ours, theirs in names.items():
        if theirs in files:
            tensors[ours] = reader(theirs, trim_padding=ours == "embed.weight" and config.vocab_size == GEMMA_VOCAB)
    known = set(names.values())
    for theirs in files:
        # An `lm_head.weight` beside tied embeddings is ignored, as transformers does (it re-ties it).
        if theirs not in known and theirs != "lm_head.weight":
            tensors[theirs] = reader(theirs)
    return tensors, names


def load_hf_config(directory: Path) -> GemmaConfig:
    """config.json, with a Flax-padded vocabulary trimmed and the matching preset named."""
    config = read_hf_config(directory)
    if config.vocab_size == FLAX_PADDED_VOCAB:
        log.info("%s: vocabulary padded to %d rows (Flax export); using the first %d", directory,
                 FLAX_PADDED_VOCAB, GEMMA_VOCAB)
        config = config.replace(vocab_size=GEMMA_VOCAB)
    return match_preset(config, str(directory / "config.json"))
