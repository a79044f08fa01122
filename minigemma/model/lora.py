"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") as a module swap.

Fine-tuning changes each weight by some dW; the paper's hypothesis (section 4.1) is that this
update has a low "intrinsic rank", so it trains dW = B A with B (out, r) and A (r, in), r << in,
while the pretrained W stays frozen: h = W x + (alpha / r) B A x. For the 270M with r = 8 on q and
v that is 368,640 numbers to train and store, 0.14% of the model (`count_trainable`). As with
minigemma.quantize, the model itself does not change: `add_lora` replaces some of its linear
layers by LoRALinear wrappers, and the base layer may itself be quantized (Int8Linear, Int4Linear:
LoRALinear only calls it), which is QLoRA's recipe (Dettmers et al. 2023) in its plainest form.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArgumentError

# The linear layers of a decoder block, by the name LoRA configs use (peft's target_modules).
BLOCK_LINEARS = {"q_proj": "attn.q_proj", "k_proj": "attn.k_proj", "v_proj": "attn.v_proj", "o_proj": "attn.o_proj",
                 "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "down_proj": "mlp.down_proj"}
FUSED_INTO = {"q_proj": "attn.qkv", "k_proj": "attn.qkv", "v_proj": "attn.qkv",
              "gate_proj": "mlp.gate_up", "up_proj": "mlp.gate_up"}  # minigemma.quantize.fuse


class LoRALinear(nn.Module):
    """base(x) + scale * B A dropout(x), with scale = alpha / rank (alpha / sqrt(rank) with rslora).

    `base` is any bias-free linear-like module with in_features and out_features (nn.Linear,
    minigemma.quantize's Int8Linear and Int4Linear); it stays frozen.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0, rslora: bool = False):
        super().__init__()
        if not (isinstance(rank, int) and rank >= 1):
            raise ArgumentError(f"LoRA rank must be a positive integer, got {rank!r}")
        self.base_layer = base  # peft's name for it
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.rslora = rank, alpha, rslora
        # Section 4.1: dividing by r means alpha need not be retuned when r changes. rsLoRA
        # (Kalajdzievski 2023) shows alpha / r shrinks the update's learning as r grows, and
        # alpha / sqrt(r) does not.
        self.scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        w = base.weight  # int8 / packed uint8 in a quantized layer: the adapter then trains in float32
        dtype = w.dtype if w.is_floating_point() else torch.float32
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=w.device, dtype=dtype))   # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=w.device, dtype=dtype))  # (out, r)
        # Section 4.1: A random, B zero, so B A = 0 and training starts from the pretrained model
        # exactly. The authors' loralib (and peft) draw A as nn.Linear draws its weights.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()  # on the adapter's input only
        self.enabled = True  # False: the base layer alone (see lora_disabled)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., out)
        if self.merged or not self.enabled:
            return y
        h = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)  # (..., r) -> (..., out)
        return y + (h * self.scale).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """scale * B A, the (out, in) update this adapter adds to the base weight, in float32."""
        return self.scale * (self.lora_B.float() @ self.lora_A.float())

    def _float_weight(self) -> nn.Parameter:
        if type(self.base_layer) is not nn.Linear:
            raise ArgumentError(
                f"cannot merge LoRA into a {type(self.base_layer).__name__}: merging writes W + (alpha/r) B A into a "
                "float nn.Linear weight. Merge before quantizing (minigemma.load(..., adapter=dir, quantize=...) does), "
                "or keep the adapter unmerged on the quantized model")
        return self.base_layer.weight

    @torch.no_grad()
    def merge(self) -> None:
        """Add B A into the base weight: no extra work per token (section 4.1, "No Additional Inference Latency")."""
        if not self.merged:
            w = self._float_weight()
            w += self.delta_weight().to(w.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract B A again (section 4.1: how one base model switches tasks); exact up to rounding."""
        if self.merged:
            w = self._float_weight()
            w -= self.delta_weight().to(w.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scale={self.scale:g}" + (", merged" if self.merged else "")


def resolve_targets(model: nn.Module, targets: str | Sequence[str]) -> list[str]:
    """The short names (q_proj, ...) `targets` means, after checking that add_lora can adapt them here."""
    if isinstance(targets, str):
        targets = list(BLOCK_LINEARS) if targets == "all-linear" else [targets]
    unknown = [t for t in targets if t not in BLOCK_LINEARS]
    if unknown or not targets:
        raise ArgumentError(f"LoRA target(s) {unknown or list(targets)} match no layer of a Gemma block; choose among "
                            f"{', '.join(BLOCK_LINEARS)} (a list of them) or 'all-linear'")
    if lora_layers(model):
        raise ArgumentError("this model already has LoRA layers (add_lora or load_adapter was called on it): one "
                            "adapter at a time. Fold it in with merge_lora(model) first, or start from a fresh model")
    for t in targets:
        parent, attr = BLOCK_LINEARS[t].split(".")
        if getattr(getattr(model.blocks[0], parent), attr) is None:
            raise ArgumentError(
                f"blocks.*.{BLOCK_LINEARS[t]} is fused into {FUSED_INTO[t]} (minigemma.quantize.fuse, which "
                f"load(quantize=...) applies), so LoRA cannot wrap {t} alone. Add the adapter before quantizing: "
                "minigemma.load(..., quantize=..., adapter=dir) merges it first, or quantize with "
                "minigemma.quantize.quantize(model) (no fuse) and then add_lora")
    return list(dict.fromkeys(targets))


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16, targets: str | Sequence[str] = ("q_proj", "v_proj"),
             dropout: float = 0.0, rslora: bool = False) -> nn.Module:
    """Freeze every parameter of `model` and wrap the `targets` of every block in LoRALinear; in place.

    The default targets are the paper's choice (section 7.1, Table 5: for a fixed budget, adapting
    W_q and W_v did best). Returns the model.
    """
    names = resolve_targets(model, targets)  # every check before anything changes
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.blocks:
        for t in names:
            path = BLOCK_LINEARS[t]
            block.set_submodule(path, LoRALinear(block.get_submodule(path), rank, alpha, dropout, rslora))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """{dotted name: LoRALinear} of every adapted layer."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' A and B matrices: what an optimizer gets."""
    return [p for m in lora_layers(model).values() for p in (m.lora_A, m.lora_B)]


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(parameters that require grad, all parameters), the tied embedding counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain nn.Linear back; in place, for good."""
    layers = lora_layers(model)
    for m in layers.values():
        m._float_weight()  # every check before anything changes
    for name, m in layers.items():
        m.merge()
        model.set_submodule(name, m.base_layer)
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo LoRALinear.merge() on every adapted layer (the wrappers stay; see merge_lora for good)."""
    for m in lora_layers(model).values():
        m.unmerge()
    return model


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model inside the block: the same model with B A switched off (e.g. DPO's reference)."""
    layers = list(lora_layers(model).values())
    if any(m.merged for m in layers):
        raise ArgumentError("lora_disabled: some adapters are merged into their weights; unmerge_lora(model) first")
    before = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, on in zip(layers, before):
            m.enabled = on
