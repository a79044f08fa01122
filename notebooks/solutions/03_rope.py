"""Solutions to the exercises of notebook 03 (rotary position embeddings)."""

from __future__ import annotations

import math

import torch


# Exercise 1: the interleaved layout of the RoFormer paper (Su et al., 2021, section 3.4.2).
def rope_interleaved(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate the neighbouring pairs (x0, x1), (x2, x3), ... of x (..., seq, head_dim).

    Pair i turns by position * theta^(-2i/d), as in rotate-half RoPE; only which two channels
    form pair i differs (there: channels i and i + d/2).
    """
    d = x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)       # (d/2,)
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]                 # (seq, d/2)
    cos, sin = angles.cos(), angles.sin()
    even, odd = x[..., 0::2].float(), x[..., 1::2].float()                         # (..., seq, d/2)
    out = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)    # (..., seq, d/2, 2)
    return out.flatten(-2).type_as(x)                                              # (..., seq, d)


def interleave_permutation(head_dim: int) -> torch.Tensor:
    """Channel order that turns the rotate-half layout into the interleaved one: 0, d/2, 1, d/2+1, ..."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=-1).flatten()


# Exercise 2: which channel pairs turn at least once inside a window of positions?
def wavelengths(head_dim: int, theta: float) -> torch.Tensor:
    """Positions needed for each channel pair to turn a full circle: 2 pi / frequency. Shape (head_dim // 2,)."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return 2 * math.pi / freqs


def pairs_turning_within(span: int, head_dim: int, theta: float) -> int:
    """How many channel pairs complete at least one full turn over `span` positions."""
    return int((wavelengths(head_dim, theta) <= span).sum())


# Exercise 3: why positions must stay integers (docs/pitfalls.md, pitfall 4).
def first_unrepresentable_position(dtype: torch.dtype) -> int:
    """The smallest positive integer that `dtype` cannot store exactly (2^(significand bits) + 1)."""
    # eps = 2^-(stored mantissa bits); the significand has one more, implicit, leading bit.
    significand_bits = round(-math.log2(torch.finfo(dtype).eps)) + 1
    return 2 ** significand_bits + 1


def angle_error(position: int, dtype: torch.dtype, head_dim: int = 256, theta: float = 10_000.0) -> float:
    """Largest error (radians) in the rotation angles when the position is first stored in `dtype`."""
    stored = torch.tensor(position, dtype=dtype).to(torch.float64)
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return float(((stored - position) * freqs).abs().max())
