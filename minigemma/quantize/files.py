"""A quantized model on disk: its integers, scales and float norms, and the scheme that made them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from .apply import FUSED, scheme
from .modules import (BlockLinear, DynamicInt8Unembedding, Int4Linear, Int8Linear, QuantizedEmbedding, QuantizedLinear,
                      QuantizedUnembedding)


def save_quantized(model: nn.Module, directory: str | Path) -> Path:
    """Write `quantized.safetensors` (integers, scales, float norms) and `quantization.json`."""
    from safetensors.torch import save_file

    if not any(isinstance(m, QuantizedLinear) for m in model.modules()):
        raise ValueError("this model has no quantized layers; call minigemma.quantize.quantize(model, bits=...) first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, directory / "quantized.safetensors")
    meta = scheme(model) | {"model_config": dataclasses.asdict(model.config)}
    (directory / "quantization.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_quantized(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_quantized`: quantized modules first, then their tensors."""
    from safetensors.torch import load_file

    from ..model.config import GemmaConfig
    from ..model.gemma import Gemma

    directory = Path(directory)
    meta_path = directory / "quantization.json"
    if not meta_path.is_file():
        raise ValueError(f"{str(directory)!r} has no quantization.json; it was not written by save_quantized")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != "minigemma-quantized" or meta.get("version") != 1:
        raise ValueError(f"{str(meta_path)!r} is not a minigemma quantization scheme (version 1)")
    state = load_file(directory / "quantized.safetensors", device=str(device))
    config = GemmaConfig(**meta["model_config"])
    with torch.device("meta"):
        model = Gemma(config)
    for name, layer in meta["layers"].items():
        parent_name, _, attr = name.rpartition(".")
        if attr in FUSED:  # q|k|v or gate|up in one layer (apply.fuse): its parts' rows, stacked
            parent = model.get_submodule(parent_name)
            parts = [getattr(parent, p) for p in FUSED[attr]]
            setattr(parent, attr, _empty_quantized(layer, parts[0].in_features, sum(p.out_features for p in parts)))
            for p in FUSED[attr]:
                setattr(parent, p, None)
        elif name != "embed.linear":
            old = model.get_submodule(name)
            model.set_submodule(name, _empty_quantized(layer, old.in_features, old.out_features))
    if meta["embedding"]:
        layer = meta["layers"]["embed.linear"]
        dtype = next(v.dtype for k, v in state.items() if k.endswith("norm.weight"))
        model.embed = QuantizedEmbedding(_empty_quantized(layer, config.hidden_size, config.vocab_size), dtype)
        # Files saved before the unembedding was a module have no "unembedding": theirs was the matmul.
        dynamic = meta.get("unembedding") == "int8-dynamic"
        model.unembed = DynamicInt8Unembedding() if dynamic else QuantizedUnembedding()
    model.load_state_dict(state, strict=True, assign=True)
    model.quantization = scheme(model)
    return model.eval()


def _empty_quantized(layer: dict, in_features: int, out_features: int) -> QuantizedLinear:
    if layer.get("blocks"):
        return BlockLinear(in_features, out_features, layer["bits"], device="meta")
    if layer["bits"] == 8:
        return Int8Linear(in_features, out_features, device="meta")
    return Int4Linear(in_features, out_features, layer["group_size"], device="meta")
