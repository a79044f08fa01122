"""Solutions to the exercises of notebook 05 (GeGLU)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import minigemma.model.mlp
from minigemma.model.mlp import GeGLU


# Exercise 1: the GLU family (Dauphin et al., 2017; Shazeer, 2020) on one set of weights.
def glu(x: torch.Tensor, mlp: GeGLU, activation: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """down(activation(gate(x)) * up(x)): sigmoid = GLU, relu = ReGLU, silu = SwiGLU,
    gelu_tanh = GeGLU (Gemma), identity = bilinear. (batch, seq, hidden) -> same shape."""
    return mlp.down_proj(activation(mlp.gate_proj(x)) * mlp.up_proj(x))


# Exercise 2: how many gate units are open, layer by layer.
@torch.no_grad()
def gate_open_fraction(model: nn.Module, ids: torch.Tensor, threshold: float = 0.1) -> list[float]:
    """For each block, the fraction of (position, unit) pairs with |GELU(x W_gate)| > threshold.

    A forward pre-hook on each MLP sees its input x, the normalised residual stream; the gate is
    recomputed from it with the MLP's own gate projection. Hooks are removed even on error.
    On the 270M and notebook 05's TEXT, about two thirds of the gates are open (|gate| > 0.1)
    in the first layers and about 40 % in the last three: later MLPs are sparser.
    """
    fractions: list[float] = []

    def measure(module: GeGLU, args: tuple[torch.Tensor, ...]) -> None:
        gate = minigemma.model.mlp.gelu_tanh(module.gate_proj(args[0]))  # (batch, seq, intermediate)
        fractions.append((gate.abs() > threshold).float().mean().item())

    handles = [block.mlp.register_forward_pre_hook(measure) for block in model.blocks]
    try:
        model(ids, last_only=True)  # the blocks still see every position
    finally:
        for handle in handles:
            handle.remove()
    return fractions


# Exercise 3: the hidden_act "gelu" bug, measured.
@contextlib.contextmanager
def exact_gelu() -> Iterator[None]:
    """Make every minigemma GeGLU use the exact (erf) GELU inside the block; always restore."""
    original = minigemma.model.mlp.gelu_tanh
    minigemma.model.mlp.gelu_tanh = F.gelu  # F.gelu defaults to approximate="none", the erf form
    try:
        yield
    finally:
        minigemma.model.mlp.gelu_tanh = original


@torch.no_grad()
def exact_gelu_report(model: nn.Module, ids: torch.Tensor) -> dict[str, float]:
    """How far the exact GELU moves the logits from the tanh GELU the model was trained with."""
    reference = model(ids)  # (batch, seq, vocab)
    with exact_gelu():
        exact = model(ids)
    return {
        "max_abs_logit_change": (exact - reference).abs().max().item(),
        "top1_agreement": (exact.argmax(-1) == reference.argmax(-1)).float().mean().item(),
    }
