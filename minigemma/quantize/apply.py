"""Quantizing a whole model: module swaps, in place, on the one readable model."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import ArgumentError
from .arithmetic import check_group_size, check_int4_shape
from .kernels import kernel_works
from .blocks import BLOCK
from .native import kernel_isa
from .modules import (BlockLinear, DynamicInt8Unembedding, Int4Linear, Int8Linear, OneDNNUnembedding,
                      QuantizedEmbedding, QuantizedLinear, QuantizedUnembedding)

log = logging.getLogger("minigemma")

SAME = "same"  # default of layer_bits / embedding_bits: use `bits`
UNEMBEDDINGS = {QuantizedUnembedding: "matmul", DynamicInt8Unembedding: "int8-dynamic"}
# What `apply_scheme` (and so the loader) offers, each a call of `quantize` below.
SCHEMES = (None, "int8", "int8-rows", "int8-dynamic", "int4", "int8-blocks", "int4-blocks")


@torch.no_grad()
def quantize(model: nn.Module, bits: int = 8, group_size: int = 64, *,
             layer_bits: int | None | str = SAME, embedding_bits: int | None | str = SAME,
             unembedding: str = "matmul", blocks: bool = False) -> nn.Module:
    """Replace, in place, the model's linear layers and its tied embedding by quantized ones.

    bits: 8 (int8, one scale per row) or 4 (int4 in groups of `group_size` inputs), for both
    the linear layers and the embedding / output projection, unless `layer_bits` or
    `embedding_bits` says otherwise; None there keeps that part in float. For example
    `quantize(model, 8, layer_bits=None)` quantizes only the embedding, 63% of the 270M's bytes.
    Norms always keep their float dtype. Layers that are already quantized are kept.
    unembedding: how a quantized embedding serves as the output projection: "matmul" (the same
    int8/int4 kernel as the layers, QuantizedUnembedding) or "int8-dynamic" (int8 embedding only:
    fbgemm's int8 x int8 kernel, DynamicInt8Unembedding; where it is missing, "matmul", logged).
    blocks: store weights in blocks of 32 with a scale each (BlockLinear: 8-bit "Q8_0" or 4-bit
    "Q4_0") for minigemma's own kernel (native.py), which also rounds activations per block and
    multiplies integers; group_size is then ignored. Not yet the default: in the whole 270M it is
    still slower than PyTorch's int8 kernel (benchmarks/RESULTS.md). Where the kernel is missing
    (no C++ compiler, not a CPU), these layers dequantize and call F.linear.
    Sets `model.quantization` (see `scheme`). Returns the model.
    """
    layer_bits = bits if layer_bits == SAME else layer_bits
    embedding_bits = bits if embedding_bits == SAME else embedding_bits
    for b in (layer_bits, embedding_bits):
        if b not in (4, 8, None):
            raise ArgumentError(f"bits must be 8 or 4 (or None to keep float), got {b}")
    if unembedding not in UNEMBEDDINGS.values():
        raise ArgumentError(f"unembedding must be one of {tuple(UNEMBEDDINGS.values())}, got {unembedding!r}")
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)] if layer_bits else []
    for name, module in linears:  # check everything before changing anything
        if module.bias is not None:
            raise ValueError(f"{name} has a bias; Gemma's linear layers have none")
        if layer_bits == 4:
            check_int4_shape(module.weight.shape, group_size)
    quantize_embedding = embedding_bits is not None and isinstance(model.embed, nn.Embedding)
    if quantize_embedding and embedding_bits == 4:
        check_int4_shape(model.embed.weight.shape, group_size)
    dynamic = unembedding == "int8-dynamic"
    held = model.embed.linear.bits if isinstance(model.embed, QuantizedEmbedding) else None
    if dynamic and (embedding_bits if quantize_embedding else held) != 8:
        raise ArgumentError("unembedding='int8-dynamic' multiplies the int8 embedding rows, so it needs an int8 "
                            "embedding: pass embedding_bits=8, or unembedding='matmul'")

    if blocks and next(model.parameters()).device.type == "cpu":
        kernel_isa()  # built (once, ~20 s, said on stderr) or found missing now, while loading, not mid-generation

    def quantized(w: torch.Tensor, bits: int) -> QuantizedLinear:
        if blocks and w.shape[1] % BLOCK == 0:
            return BlockLinear.from_float(w, bits)
        return Int8Linear.from_float(w) if bits == 8 else Int4Linear.from_float(w, group_size)

    for name, module in linears:
        model.set_submodule(name, quantized(module.weight, layer_bits))
    if quantize_embedding:
        model.embed = QuantizedEmbedding(quantized(model.embed.weight, embedding_bits), model.embed.weight.dtype)
    if isinstance(model.embed, QuantizedEmbedding):
        if dynamic and not kernel_works("int8-dynamic", model.embed.linear.weight.device):
            log.warning("fbgemm's int8 x int8 kernel is not available here; the output projection uses the "
                        "int8 weight-only kernel instead (unembedding='matmul')")
            dynamic = False
        model.unembed = DynamicInt8Unembedding() if dynamic else QuantizedUnembedding()
    model.quantization = scheme(model)
    return model


FUSED = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("gate_proj", "up_proj")}


@torch.no_grad()
def fuse(model: nn.Module) -> nn.Module:
    """In place: each layer's quantized q, k, v projections become one layer (`attn.qkv`), and gate
    and up one (`mlp.gate_up`); the separate ones become None. They read the same input, so the
    products are the same, in 2 kernel calls instead of 5 per layer.

    Why only quantized layers: PyTorch's int8/int4 kernels cost ~75 us a call on the 270M's small
    matrices whatever their size (q+k+v 142 us, fused 72; gate+up 197, fused 162; 2-core AVX-512 CPU,
    2026-12-01), about 2 ms a token; float32 F.linear gains little (92 -> 76 us) and keeps the
    separate layers that notebooks and readers look at. Hook points are untouched.
    """
    for parent in model.modules():
        for fused, parts in FUSED.items():
            layers = [getattr(parent, p, None) for p in parts]
            if getattr(parent, fused, "absent") is None and all(isinstance(l, QuantizedLinear) for l in layers) \
                    and len({(type(l), l.bits, getattr(l, "group_size", None)) for l in layers}) == 1:
                setattr(parent, fused, type(layers[0]).cat(layers))
                for p in parts:
                    setattr(parent, p, None)
    model.quantization = scheme(model)
    return model


def scheme(model: nn.Module) -> dict:
    """What `quantize` did, as JSON-friendly data: saved next to the weights."""
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            layers[name] = {"bits": module.bits, "group_size": getattr(module, "group_size", None)}
            if isinstance(module, BlockLinear):
                layers[name]["blocks"] = BLOCK
    return {"format": "minigemma-quantized", "version": 1, "config": model.config.name, "layers": layers,
            "embedding": isinstance(getattr(model, "embed", None), QuantizedEmbedding),
            "unembedding": UNEMBEDDINGS.get(type(getattr(model, "unembed", None)))}


def check_scheme(scheme: str | None, group_size: int = 64) -> None:
    """Raise ArgumentError unless `apply_scheme(model, scheme, group_size)` can be asked for (before any load)."""
    if scheme not in SCHEMES:
        raise ArgumentError(f"unknown quantization scheme {scheme!r}; choose one of "
                            f"{', '.join(map(repr, SCHEMES))} (None keeps float weights)")
    if scheme == "int4":
        check_group_size(group_size)


def apply_scheme(model: nn.Module, scheme: str | None, group_size: int = 64) -> nn.Module:
    """Make `model` (in place) run the named scheme of SCHEMES; the loader's one entry point.

    None: float weights kept; a float32 model on a CPU gets its output projection through oneDNN
    (OneDNNUnembedding: 37 ms instead of 63.5 ms for the 270M's, benchmarks/RESULTS.md).
    "int8": on a CPU where minigemma's own kernel runs (native.kernel_isa()), "int8-blocks", the
    fastest and most accurate int8 there (benchmarks/RESULTS.md); elsewhere (a GPU, no compiler) or
    on a model that already holds per-row int8 layers, "int8-rows".
    "int8-rows": quantize(model, 8), one scale per row through PyTorch's weight-only int8 kernel,
    +0.6% perplexity on the 270M, ~4x fewer weight bytes.
    "int8-dynamic": int8-rows, and the output projection by fbgemm's int8 x int8 kernel (+1.1%).
    "int4": quantize(model, 4, group_size), ~7x fewer bytes, +43% perplexity with groups of 64.
    "int8-blocks" / "int4-blocks": quantize(model, 8 or 4, blocks=True), weights and activations in
    blocks of 32 through minigemma's own kernel (llama.cpp's Q8_0 / Q4_0 arithmetic; blocks.py).
    A model already quantized (e.g. an int8 .ckpt loaded with keep_int8=True) keeps its layers;
    it may only be completed with the same number of bits.
    """
    check_scheme(scheme, group_size)
    asked = scheme
    if scheme == "int8":
        scheme = "int8-blocks" if _blocks_run_here(model) else "int8-rows"
    if scheme is None:
        embed = model.embed
        if (isinstance(embed, nn.Embedding) and embed.weight.dtype == torch.float32
                and kernel_works("onednn", embed.weight.device)):
            model.unembed = OneDNNUnembedding()
        return model
    bits = 4 if scheme.startswith("int4") else 8
    blocks = scheme.endswith("-blocks")  # "int8-rows", "int8-dynamic", "int4": PyTorch's kernels
    want = (bits, group_size if bits == 4 and not blocks else None, blocks)
    held = {(m.bits, getattr(m, "group_size", None), isinstance(m, BlockLinear))
            for m in model.modules() if isinstance(m, QuantizedLinear)}
    if held - {want}:
        found = ", ".join(sorted(f"int{b}" + (f" in groups of {g}" if g else "") + (" blocks" if k else "")
                                 for b, g, k in held))
        raise ArgumentError(f"this model is already quantized ({found}), so it cannot be made {asked!r}: "
                            "start from float weights (load the model again without quantization)")
    quantize(model, bits, group_size, unembedding="int8-dynamic" if scheme == "int8-dynamic" else "matmul",
             blocks=blocks)
    return fuse(model)


def _blocks_run_here(model: nn.Module) -> bool:
    """Can "int8" be "int8-blocks" for this model: on a CPU with the kernel, not yet quantized otherwise?"""
    held = any(isinstance(m, QuantizedLinear) and not isinstance(m, BlockLinear) for m in model.modules())
    return model.device.type == "cpu" and not held and kernel_isa() is not None


@torch.no_grad()
def float_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with every quantized module replaced by its float equivalent, holding the
    same rounded weights: what quantization did to the numbers, run in plain float32 arithmetic
    (the kernels round activations to bf16 on some CPUs; notebook 13 compares greedy text this way).
    A fused layer (see fuse) stays one layer: one float nn.Linear computes all its parts."""
    import copy

    from ..model.gemma import Unembedding

    model = copy.deepcopy(model)
    if isinstance(model.embed, QuantizedEmbedding):  # first: its rows are a QuantizedLinear too
        model.embed = nn.Embedding.from_pretrained(model.embed.linear.dequantized(model.embed.dtype))
        model.unembed = Unembedding()
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantizedLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=False, device=module.weight.device)
            linear.weight = nn.Parameter(module.dequantized(), requires_grad=False)
            model.set_submodule(name, linear)
    model.quantization = None
    return model
