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
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..config import GemmaConfig
from .names import hf_names
from .weights import FLAX_PADDED_VOCAB, GEMMA_VOCAB, match_preset

log = logging.getLogger("minigemma")

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def read_hf_config(directory: Path) -> GemmaConfig:
    """Our config from transformers' config.json (Gemma 1, or text-only Gemma 3)."""
    path = directory / "config.json"
    if not path.is_file():
        raise ValueError(f"{str(directory)!r} has no config.json; a Hugging Face checkpoint directory holds "
                         "config.json, the *.safetensors weights and tokenizer.model side by side")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); the download is probably incomplete: "
                         "re-download it") from e
    return config_from_hf(raw, str(path))


def config_from_hf(raw: dict, where: str = "config.json") -> GemmaConfig:
    model_type = raw.get("model_type")
    if model_type == "gemma2":
        raise ValueError(f"{where} describes a Gemma 2 model, which minigemma does not implement "
                         "(it needs attention logit soft-capping); use a Gemma 1 or Gemma 3 text checkpoint")
    if model_type == "gemma3":
        raise ValueError(f"{where} describes a multimodal Gemma 3 model (4B and larger); minigemma runs the "
                         "text-only ones (gemma-3-270m, gemma-3-1b) and Gemma 1")
    if model_type not in ("gemma", "gemma3_text"):
        raise ValueError(f"{where} has model_type {model_type!r}; minigemma reads 'gemma' (Gemma 1) and "
                         "'gemma3_text' (Gemma 3 270M/1B) checkpoints")
    if not raw.get("tie_word_embeddings", True):
        raise ValueError(f"{where} says tie_word_embeddings=false; Gemma ties its output projection to the "
                         "embedding (Gemma report, section 2) and minigemma relies on that")
    eos = raw.get("eos_token_id", 1)
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
        pad_id=raw.get("pad_token_id", 0),
    )
    rope = raw.get("rope_parameters") or {}
    if model_type == "gemma":
        act = raw.get("hidden_activation") or raw.get("hidden_act")
        if act == "gelu":
            # Pitfall 1: the first Gemma configs said "gelu" (exact, erf-based) although the model
            # was trained with the tanh approximation, which gemma_pytorch uses.
            log.info("%s says hidden_act='gelu'; Gemma was trained with the tanh approximation of GELU, "
                     "which minigemma always uses (pitfall 1)", where)
        fields["rope_theta"] = rope.get("rope_theta", raw.get("rope_theta", 10_000.0))
        _check_rope_type(rope, raw, where)
        return GemmaConfig(**fields)

    # Gemma 3: which layers are local comes as a list in new configs, as a period in old ones.
    for cap in ("final_logit_softcapping", "attn_logit_softcapping"):
        if raw.get(cap) is not None:
            raise ValueError(f"{where} sets {cap}={raw[cap]}, which minigemma does not implement")
    layer_types = raw.get("layer_types")
    if layer_types:
        pattern = layer_types.index("full_attention") + 1 if "full_attention" in layer_types else len(layer_types) + 1
        want = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(len(layer_types))]
        if layer_types != want:
            raise ValueError(f"{where} has layer_types {layer_types}; minigemma supports one global layer every "
                             "N layers (Gemma 3: 5 local, then 1 global)")
    else:
        pattern = raw.get("sliding_window_pattern") or raw.get("_sliding_window_pattern") or 6
    full = rope.get("full_attention", {})
    local = rope.get("sliding_attention", {})
    _check_rope_type(full, raw, where)
    fields.update(
        architecture="gemma3", qk_norm=True, post_norms=True,
        query_pre_attn_scalar=raw.get("query_pre_attn_scalar", fields["head_dim"]),
        sliding_window=raw.get("sliding_window"), sliding_window_pattern=pattern,
        rope_theta=full.get("rope_theta", raw.get("rope_theta", 1_000_000.0)),
        rope_local_theta=local.get("rope_theta", raw.get("rope_local_base_freq", 10_000.0)),
    )
    return GemmaConfig(**fields)


def _check_rope_type(rope: dict, raw: dict, where: str) -> None:
    scaling = raw.get("rope_scaling")
    scaled = scaling and scaling.get("rope_type", scaling.get("type")) != "default"
    if rope.get("rope_type", "default") != "default" or scaled:
        raise ValueError(f"{where} uses RoPE scaling ({rope or scaling}), which minigemma does not implement")


def weight_files(directory: Path) -> dict[str, Path]:
    """{tensor name in the file: the safetensors file that holds it}."""
    index = directory / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{str(index)!r} is unreadable ({e}); re-download it") from e
        missing = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
        if missing:
            raise ValueError(f"{str(directory)!r} lacks shard(s) {', '.join(missing)} listed in {INDEX}: "
                             "the download is incomplete; download the missing files again")
        return {name: directory / f for name, f in weight_map.items()}
    if (directory / SINGLE).is_file():
        with ExitStack() as stack:
            names = list(_open(directory / SINGLE, stack).keys())
        return {name: directory / SINGLE for name in names}
    found = sorted(p.name for p in directory.iterdir())
    raise ValueError(f"{str(directory)!r} has neither {SINGLE} nor {INDEX} "
                     f"(it holds: {', '.join(found) or 'nothing'}). "
                     "minigemma reads the safetensors weights only (never pickled .bin files): download "
                     "config.json, *.safetensors and tokenizer.model")


def _open(path: Path, stack: ExitStack):
    try:
        return stack.enter_context(safe_open(path, framework="pt"))  # memory-mapped, header parsed
    except (SafetensorError, OSError) as e:
        raise ValueError(f"could not read {str(path)!r} ({e}); the file is truncated or corrupt "
                         "(an interrupted download?): delete it and download it again") from e


def hf_tensors(directory: Path, config: GemmaConfig, stack: ExitStack,
               ) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, str]]:
    """Lazy tensors keyed by our names (plus any unexpected ones keyed by the file's), and our -> file names.

    The files stay open (memory-mapped) until `stack` closes; each function reads one tensor.
    """
    files = weight_files(directory)
    handles = {path: _open(path, stack) for path in sorted(set(files.values()))}
    names = hf_names(config)

    def reader(theirs: str, trim_padding: bool = False) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            try:
                tensor = handles[files[theirs]].get_tensor(theirs)
            except SafetensorError as e:
                raise ValueError(f"could not read tensor {theirs!r} from {str(files[theirs])!r} ({e}); the file "
                                 "is truncated or corrupt: download it again") from e
            if trim_padding and tensor.shape[0] == FLAX_PADDED_VOCAB:
                # Flax exports pad the vocabulary to 256128 rows (a multiple of 128); the extra rows are unused.
                tensor = tensor[:GEMMA_VOCAB]
            return tensor
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
