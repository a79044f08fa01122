"""gemma_pytorch checkpoints (Kaggle's "PyTorch" Gemma downloads): one `.ckpt` torch file.

It is `torch.save({"model_state_dict": state})` of google/gemma_pytorch's GemmaForCausalLM, so
the names are that module tree's:

    embedder.weight                               (vocab, hidden), tied output projection
    model.layers.{i}.self_attn.qkv_proj.weight    q, k and v stacked by rows: [q | k | v]
    model.layers.{i}.self_attn.o_proj.weight
    model.layers.{i}.mlp.{gate,up,down}_proj.weight
    model.layers.{i}.input_layernorm.weight       before attention
    model.layers.{i}.post_attention_layernorm.weight   before the MLP (Gemma 1)
    model.norm.weight
    freqs_cis                                     RoPE table, recomputed by us: ignored

The "quant" variant stores every matrix as int8 plus a `weight_scaler` per output row (and the
embedder per vocabulary row); norms stay in float.

A torch file is a zip of pickled code and raw tensor bytes. Unpickling can run arbitrary code,
so we only ever load with `weights_only=True` (tensors and plain containers, nothing else),
and with `mmap=True` so tensors are read from disk lazily rather than all at once.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import PRESETS, GemmaConfig
from .int8 import dequantize_rows
from .weights import FLAX_PADDED_VOCAB, GEMMA_VOCAB, match_preset

log = logging.getLogger("minigemma")

# ours -> gemma_pytorch, per layer (`model.layers.{i}.` prefix omitted). q/k/v come from qkv_proj.
_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
QKV = "self_attn.qkv_proj.weight"
IGNORED = ("freqs_cis",)  # a precomputed RoPE table (complex64), not a learned weight


def ckpt_names(config: GemmaConfig) -> dict[str, str]:
    """{our name: gemma_pytorch name}, with the rows of the fused qkv_proj that each of q, k, v takes."""
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    table = {"embed.weight": "embedder.weight", "ln_final.weight": "model.norm.weight"}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        table.update({f"blocks.{i}.{ours}": p + theirs for ours, theirs in _LAYER.items()})
        for name, start, stop in (("q", 0, q), ("k", q, q + kv), ("v", q + kv, q + 2 * kv)):
            table[f"blocks.{i}.attn.{name}_proj.weight"] = f"{p}{QKV}[{start}:{stop}]"
    return table


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The `model_state_dict` of a gemma_pytorch checkpoint, memory-mapped, never unpickling code."""
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(2)
    if size == 0:
        raise ValueError(f"checkpoint {str(path)!r} is empty (an interrupted download?): download it again")
    if magic == b"PK" and not zipfile.is_zipfile(path):
        # torch.save writes a zip whose table of contents sits at the very end of the file.
        raise ValueError(f"checkpoint {str(path)!r} ({size:,} bytes) is truncated: its zip directory is "
                         "missing from the end of the file. Download it again")
    try:
        # Files from torch < 1.6 are not zips and cannot be memory-mapped; they still load safely.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=magic == b"PK")
    except pickle.UnpicklingError as e:
        raise ValueError(f"{str(path)!r} holds Python objects other than tensors, so minigemma refuses to "
                         "unpickle it (weights_only=True: unpickling can run arbitrary code). If you trust "
                         "the file, re-save just its tensors: torch.save({'model_state_dict': state_dict}, ...)") from e
    except (RuntimeError, OSError, EOFError) as e:
        raise ValueError(f"could not read checkpoint {str(path)!r} ({type(e).__name__}: {e}); the file is "
                         "probably truncated or corrupt: download it again") from e
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):
        return obj["model_state_dict"]
    if isinstance(obj, dict) and "embedder.weight" in obj:  # a bare state dict
        return obj
    keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{str(path)!r} is not a gemma_pytorch checkpoint: expected a dict with 'model_state_dict' "
                     f"holding 'embedder.weight', found {keys}")


def is_quantized(state: dict[str, torch.Tensor]) -> bool:
    return "embedder.weight_scaler" in state


def infer_config(state: dict[str, torch.Tensor], path: Path) -> GemmaConfig:
    """Hyper-parameters from tensor shapes: a .ckpt carries no config, but its shapes say nearly everything."""
    for key in ("embedder.weight", "model.layers.0.self_attn.o_proj.weight", f"model.layers.0.{QKV}",
                "model.layers.0.mlp.gate_proj.weight"):
        if key not in state:
            raise ValueError(f"{str(path)!r} has no {key!r}: it is not a Gemma 1 gemma_pytorch checkpoint, or it "
                             f"is incomplete (it holds {len(state)} tensors, e.g. {list(state)[:4]})")
    if any(".query_norm." in k or "pre_feedforward_layernorm" in k for k in state):
        raise ValueError(f"{str(path)!r} is a Gemma 2/3 gemma_pytorch checkpoint; minigemma reads Gemma 1 ones "
                         "(for Gemma 3 use its Hugging Face or GGUF release)")
    vocab, hidden = state["embedder.weight"].shape
    if vocab == FLAX_PADDED_VOCAB:
        log.info("%s: vocabulary padded to %d rows (Flax export); using the first %d", path, vocab, GEMMA_VOCAB)
        vocab = GEMMA_VOCAB
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"model\.layers\.(\d+)\.", k)))
    q_rows = state["model.layers.0.self_attn.o_proj.weight"].shape[1]  # heads * head_dim
    kv_rows = (state[f"model.layers.0.{QKV}"].shape[0] - q_rows) // 2  # kv_heads * head_dim
    fields = dict(vocab_size=vocab, hidden_size=hidden, num_layers=layers,
                  intermediate_size=state["model.layers.0.mlp.gate_proj.weight"].shape[0])
    # A preset whose shapes agree is the best guess (it knows head_dim, context, ...).
    for preset in PRESETS.values():
        if (preset.architecture == "gemma" and preset.replace(**fields) == preset
                and preset.num_heads * preset.head_dim == q_rows and preset.num_kv_heads * preset.head_dim == kv_rows):
            return match_preset(preset, str(path))
    # Otherwise: the RoPE table gemma_pytorch saves is (2 * context, head_dim / 2) complex numbers,
    # which gives head_dim and the context; every released Gemma has head_dim 256.
    head_dim, context = 256, 8192
    if "freqs_cis" in state and state["freqs_cis"].dim() == 2:
        context, head_dim = state["freqs_cis"].shape[0] // 2, 2 * state["freqs_cis"].shape[1]
    if q_rows % head_dim or kv_rows % head_dim or kv_rows <= 0:
        raise ValueError(f"{str(path)!r}: attention widths (queries {q_rows}, keys/values {kv_rows}) are not "
                         f"multiples of head_dim {head_dim}; pass config=<preset name or GemmaConfig> to load()")
    config = GemmaConfig(name=path.stem, num_heads=q_rows // head_dim, num_kv_heads=kv_rows // head_dim,
                         head_dim=head_dim, max_position_embeddings=context, **fields)
    return match_preset(config, str(path))


def ckpt_tensors(state: dict[str, torch.Tensor], config: GemmaConfig, *, keep_int8: bool,
                 ) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, str]]:
    """Lazy tensors keyed by our names (plus unexpected ones keyed by the file's), and our -> file names.

    Dequantizes int8 weights to float32 unless `keep_int8`, in which case the linear layers get
    the int8 matrix and its scales (the model must hold Int8Linear layers, see int8.py).
    """
    quant = is_quantized(state)
    q_rows, kv_rows = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    tensors: dict[str, Callable[[], torch.Tensor]] = {}
    source: dict[str, str] = {}
    used: set[str] = set(IGNORED)

    def take(key: str, rows: slice | None = None, dequantize: bool = quant) -> Callable[[], torch.Tensor]:
        used.add(key)
        if dequantize:
            used.add(f"{key}_scaler")

        def read() -> torch.Tensor:
            t = state[key]
            if key.endswith(QKV) and t.shape[0] != q_rows + 2 * kv_rows:
                raise ValueError(
                    f"tensor {key!r} has shape {tuple(t.shape)} but {config.name} expects "
                    f"({q_rows + 2 * kv_rows}, {config.hidden_size}) = q {q_rows} + k {kv_rows} + v {kv_rows} rows. "
                    "Likely cause: the wrong preset for this checkpoint, or a corrupt file.")
            t = t if rows is None else t[rows]  # slice first: dequantize only the rows we keep
            if dequantize:
                scale = state[f"{key}_scaler"]
                t = dequantize_rows(t, scale if rows is None else scale[rows])  # float32
            return t
        return read

    def add(ours: str, key: str, kind: str, rows: slice | None = None, row_note: str = "") -> None:
        """kind: "norm" (never quantized), "embed" (always dequantized: it is looked up and reused
        as the output projection) or "linear" (int8 kept as is with keep_int8)."""
        source[ours] = key + row_note
        if key not in state or (quant and kind != "norm" and f"{key}_scaler" not in state):
            return  # fill_model reports it missing, by both names
        if quant and keep_int8 and kind == "linear":
            tensors[ours] = take(key, rows, dequantize=False)  # int8
            tensors[ours + "_scaler"] = take(key + "_scaler", rows, dequantize=False)
            source[ours + "_scaler"] = key + "_scaler" + row_note
        else:
            tensors[ours] = take(key, rows, dequantize=quant and kind != "norm")

    embed_rows = state["embedder.weight"].shape[0] if "embedder.weight" in state else None
    padded = embed_rows == FLAX_PADDED_VOCAB and config.vocab_size == GEMMA_VOCAB
    vocab_rows = slice(0, GEMMA_VOCAB) if padded else None  # drop the Flax padding rows
    add("embed.weight", "embedder.weight", "embed", vocab_rows)
    add("ln_final.weight", "model.norm.weight", "norm")
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        for ours, theirs in _LAYER.items():
            add(f"blocks.{i}.{ours}", p + theirs, "norm" if ours.endswith("norm.weight") else "linear")
        # Split the fused projection by rows: the first heads*head_dim are the queries, then keys, then values.
        for name, start, stop in (("q", 0, q_rows), ("k", q_rows, q_rows + kv_rows),
                                  ("v", q_rows + kv_rows, q_rows + 2 * kv_rows)):
            add(f"blocks.{i}.attn.{name}_proj.weight", p + QKV, "linear", slice(start, stop), f"[{start}:{stop}]")
    for key in state:
        if key not in used:
            tensors[key] = lambda key=key: state[key]
    return tensors, source
