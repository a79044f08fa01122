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
import reprlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from torch import nn

from ..errors import ArgumentError, CheckpointError, ModelNotFoundError
from ..model.config import GemmaConfig, check_fields, matching_preset
from ..quantize import Int8Linear, dequantize_int8, scheme
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
# torch.save before torch 1.6 wrote a pickle starting with this magic number (a pickled int).
LEGACY_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
INFER_FIX = "pass config=<preset name or GemmaConfig> to load() if the file is sound"


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
        raise ModelNotFoundError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(32)
    if size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (an interrupted download?): download it again")
    zipped = head.startswith(b"PK")  # torch >= 1.6 saves a zip: data.pkl plus one entry per tensor
    try:
        names = _zip_names(path) if zipped else []
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:  # a damaged directory ("version 6.4")
        raise CheckpointError(f"checkpoint {str(path)!r} is a damaged zip file ({e}): download it again") from e
    if names is None:
        # torch.save writes a zip whose table of contents sits at the very end of the file.
        raise CheckpointError(f"checkpoint {str(path)!r} ({size:,} bytes) is truncated: its zip directory is "
                              "missing from the end of the file. Download it again")
    if zipped and not any(n.endswith("data.pkl") for n in names):
        raise CheckpointError(f"{str(path)!r} is a zip file but not a torch checkpoint (it has no data.pkl): check "
                              "the path")
    if not zipped and LEGACY_MAGIC not in head:
        # Without this check, random bytes reach the unpickler, which fails in ways that blame the file's "objects".
        raise CheckpointError(f"{str(path)!r} is not a torch checkpoint (it starts with {head[:8]!r}, neither a zip "
                              "nor torch's old pickle format): the file is corrupt or of another kind; check the "
                              "path, or download it again")
    try:
        # Files from torch < 1.6 are not zips and cannot be memory-mapped; they still load safely.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as e:
        # torch's reason: "Unsupported global: GLOBAL logging.Formatter was not ...", "Unsupported operand 149"
        after = str(e).partition("WeightsUnpickler error:")[2].strip()
        reason = after.splitlines()[0].split(" was not")[0] if after else type(e).__name__
        if "GLOBAL" not in reason:  # it asks for no class: the pickle itself is damaged or exotic
            raise CheckpointError(f"could not unpickle checkpoint {str(path)!r} ({reason}): the file is corrupt, or "
                                  "not saved by torch.save with its default pickle protocol; download it again") from e
        raise CheckpointError(f"{str(path)!r} holds Python objects other than tensors ({reason}), so minigemma "
                              "refuses to unpickle it (weights_only=True: unpickling can run arbitrary code). If you "
                              "trust the file, re-save just its tensors: torch.save({'model_state_dict': state_dict}, "
                              "...)") from e
    # A damaged zip or pickle: torch's reader and unpickler raise a dozen kinds of error on damaged
    # bytes (EOFError, UnicodeDecodeError, AssertionError...), and this call does nothing but read the file.
    except Exception as e:
        raise CheckpointError(f"could not read checkpoint {str(path)!r} ({type(e).__name__}: {e}); the file is "
                              "probably truncated or corrupt: download it again") from e
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else obj  # else a bare state dict
    if not isinstance(state, dict) or (state is obj and "embedder.weight" not in obj):
        found = (f"it holds the keys {reprlib.repr(list(obj))}" if isinstance(state, dict) else
                 f"{'its model_state_dict' if state is not obj else 'it'} is a {type(state).__name__}")
        raise CheckpointError(f"{str(path)!r} is not a gemma_pytorch checkpoint: expected a dict with "
                              f"'model_state_dict' holding 'embedder.weight' and the other tensors, but {found}")
    for key, value in state.items():  # weights_only allows ints, strings, lists... as well as tensors
        if not isinstance(key, str):
            problem = f"has the key {reprlib.repr(key)} ({type(key).__name__}), where tensor names are strings"
        elif not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            kind = type(value).__name__ if not isinstance(value, torch.Tensor) else f"{value.layout} tensor"
            problem = f"maps {key!r} to a {kind}, not to a (dense) tensor"
        else:
            continue
        raise CheckpointError(f"{str(path)!r} is not a gemma_pytorch checkpoint: its state dict {problem}. The file "
                              "is corrupt or holds something else")
    return state


def _zip_names(path: Path) -> list[str] | None:
    """The names in the zip file `path`, or None if it has no zip directory at its end."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def is_quantized(state: dict[str, torch.Tensor]) -> bool:
    return "embedder.weight_scaler" in state


def infer_config(state: dict[str, torch.Tensor], path: Path) -> GemmaConfig:
    """Hyper-parameters from tensor shapes: a .ckpt carries no config, but its shapes say nearly everything."""
    for key in ("embedder.weight", "model.layers.0.self_attn.o_proj.weight", f"model.layers.0.{QKV}",
                "model.layers.0.mlp.gate_proj.weight"):
        if key not in state:
            raise CheckpointError(f"{str(path)!r} has no {key!r}: it is not a Gemma 1 gemma_pytorch checkpoint, or it "
                                  f"is incomplete (it holds {len(state)} tensors, e.g. {list(state)[:4]})")
        if state[key].dim() != 2:  # the sizes below are read from these shapes
            raise CheckpointError(f"tensor {key!r} in {str(path)!r} has shape {tuple(state[key].shape)}, expected a "
                                  "matrix (2 dimensions): the file is corrupt; download it again")
    if any(".query_norm." in k or "pre_feedforward_layernorm" in k for k in state):
        raise CheckpointError(f"{str(path)!r} is a Gemma 2/3 gemma_pytorch checkpoint; minigemma reads Gemma 1 ones "
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
    check_fields(fields, str(path), fix=INFER_FIX)  # e.g. an empty embedding: no vocabulary at all
    # A preset whose shapes agree is the best guess (it knows head_dim, context, ...).
    preset = matching_preset(GemmaConfig(**fields),
                             ignore=("num_heads", "num_kv_heads", "head_dim", "max_position_embeddings"))
    if preset and preset.num_heads * preset.head_dim == q_rows and preset.num_kv_heads * preset.head_dim == kv_rows:
        return match_preset(preset, str(path))
    # Otherwise: the RoPE table gemma_pytorch saves is (2 * context, head_dim / 2) complex numbers,
    # which gives head_dim and the context; every released Gemma has head_dim 256.
    head_dim, context = 256, 8192
    if "freqs_cis" in state and state["freqs_cis"].dim() == 2 and min(state["freqs_cis"].shape) > 0:
        context, head_dim = state["freqs_cis"].shape[0] // 2, 2 * state["freqs_cis"].shape[1]
    if q_rows % head_dim or kv_rows % head_dim or q_rows <= 0 or kv_rows <= 0:
        raise CheckpointError(f"{str(path)!r}: attention widths (queries {q_rows}, keys/values {kv_rows}) are not "
                              f"positive multiples of head_dim {head_dim}; {INFER_FIX}")
    fields.update(name=path.stem, num_heads=q_rows // head_dim, num_kv_heads=kv_rows // head_dim, head_dim=head_dim,
                  max_position_embeddings=context)
    check_fields(fields, str(path), fix=INFER_FIX)
    return match_preset(GemmaConfig(**fields), str(path))


def ckpt_tensors(state: dict[str, torch.Tensor], config: GemmaConfig, *, keep_int8: bool, where: str = "checkpoint",
                 ) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, str]]:
    """Lazy tensors keyed by our names (plus unexpected ones keyed by the file's), and our -> file names.

    Dequantizes int8 weights to float32 unless `keep_int8`, in which case the linear layers get
    the int8 matrix and its scales as `weight` and `scale` (the model must hold Int8Linear layers,
    use_int8_linears below).
    `where` (the file) is named in errors.
    """
    quant = is_quantized(state)
    q_rows, kv_rows = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    tensors: dict[str, Callable[[], torch.Tensor]] = {}
    source: dict[str, str] = {}
    used: set[str] = set(IGNORED)

    def check_int8(key: str) -> None:
        """A quantized matrix must be int8 with one float scale per row, or the product q * s is garbage."""
        t, scale = state[key], state[f"{key}_scaler"]
        if t.dim() != 2:  # (and a 1-D one would broadcast with its scales into a huge square)
            raise CheckpointError(f"tensor {key!r} in {where} has shape {tuple(t.shape)}, expected an int8 matrix. "
                                  "The file is corrupt: download it again")
        if t.dtype != torch.int8:
            raise CheckpointError(
                f"tensor {key!r} in {where} is {t.dtype}, but this int8 checkpoint stores its matrices as torch.int8 "
                f"(this one has a {key}_scaler): scaling it would silently corrupt it. The file is corrupt or "
                "mixes two checkpoints: download it again")
        if tuple(scale.shape) != (t.shape[0],) or not scale.is_floating_point():
            raise CheckpointError(
                f"tensor '{key}_scaler' in {where} has shape {tuple(scale.shape)} ({scale.dtype}), expected "
                f"({t.shape[0]},) floats: one scale per row of {key!r}. The file is corrupt: download it again")

    def take(key: str, rows: slice | None = None, quantized: bool = False,
             dequantize: bool = False) -> Callable[[], torch.Tensor]:
        """A reader of state[key] (its `rows` only); a `quantized` matrix is checked, and dequantized if asked."""
        used.update([key, f"{key}_scaler"] if quantized else [key])

        def read() -> torch.Tensor:
            t = state[key]
            if key.endswith(QKV) and t.shape[:1] != (q_rows + 2 * kv_rows,):
                raise CheckpointError(
                    f"tensor {key!r} in {where} has shape {tuple(t.shape)} but {config.name} expects "
                    f"({q_rows + 2 * kv_rows}, {config.hidden_size}) = q {q_rows} + k {kv_rows} + v {kv_rows} rows. "
                    "Likely cause: the wrong preset for this checkpoint, or a corrupt file.")
            if quantized:
                check_int8(key)
            t = t if rows is None else t[rows]  # slice first: dequantize only the rows we keep
            if dequantize:
                scale = state[f"{key}_scaler"]
                t = dequantize_int8(t, scale if rows is None else scale[rows])  # float32
            return t
        return read

    def add(ours: str, key: str, kind: str, rows: slice | None = None, row_note: str = "") -> None:
        """kind: "norm" (never quantized), "embed" (always dequantized: it is looked up and reused
        as the output projection) or "linear" (int8 kept as is with keep_int8)."""
        source[ours] = key + row_note
        if key not in state or (quant and kind != "norm" and f"{key}_scaler" not in state):
            return  # fill_model reports it missing, by both names
        if quant and keep_int8 and kind == "linear":
            tensors[ours] = take(key, rows, quantized=True)  # int8, checked with its scales
            scale = ours.removesuffix("weight") + "scale"  # gemma_pytorch's weight_scaler is Int8Linear's scale
            tensors[scale] = take(key + "_scaler", rows)
            source[scale] = key + "_scaler" + row_note
        else:
            quantized = quant and kind != "norm"
            tensors[ours] = take(key, rows, quantized=quantized, dequantize=quantized)

    embed_rows = state["embedder.weight"].shape[:1] if "embedder.weight" in state else None
    padded = embed_rows == (FLAX_PADDED_VOCAB,) and config.vocab_size == GEMMA_VOCAB
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


def use_int8_linears(model: nn.Module, scale_dtype: torch.dtype = torch.float32) -> nn.Module:
    """For `load(..., keep_int8=True)`: every nn.Linear of `model` (on the meta device, nothing
    allocated yet) becomes minigemma.quantize's Int8Linear of the same shape, in place.

    A "quant" checkpoint's rows are int8 values q and one scale s each (row ~= q * s), which is
    exactly what Int8Linear holds, so the checkpoint runs through PyTorch's int8 kernel like any
    quantized model; `weight_scaler` is read into `scale`, in `scale_dtype` (fill_model keeps the
    dtypes the layers declare).
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            if module.bias is not None:
                raise ArgumentError(f"{name} has a bias; Gemma's linear layers have none")
            layer = Int8Linear(module.in_features, module.out_features, device=module.weight.device)
            model.set_submodule(name, layer.to(scale_dtype))  # .to(dtype) casts only the float scales
    model.quantization = scheme(model)  # int8 layers, float embedding: what save_quantized writes
    return model
