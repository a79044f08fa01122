"""Rotary position embeddings (Su et al., 2021, "RoFormer"), used by every Gemma layer.

Each pair of channels in a query or key is rotated by an angle proportional to the token's
position. The dot product of a rotated query and key then depends only on the *difference*
of their positions, which is how attention learns relative order.
"""

from __future__ import annotations

import torch


def rope_frequencies(head_dim: int, theta: float, device: torch.device | str | None = None) -> torch.Tensor:
    """Angular speed of each channel pair: theta^(-2i/d) for i in [0, d/2). Shape (head_dim // 2,)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    return 1.0 / (theta ** exponents)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, each (seq, head_dim), in float32.

    Pitfall 4: positions stay integers and the angles are computed in float32. In bf16 a
    position like 5000 is not even representable exactly, and the rotation would drift.
    """
    # Made on positions' device: a CUDA graph cannot contain a copy from the CPU (fast.py).
    freqs = rope_frequencies(head_dim, theta, positions.device)
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]  # (seq, head_dim // 2)
    # The "rotate-half" layout (gemma_pytorch, transformers, llama.cpp for Gemma): channel i is
    # paired with channel i + head_dim/2, so both halves use the same angles.
    angles = torch.cat([angles, angles], dim=-1)  # (seq, head_dim)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1): a 90-degree turn of every channel pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (batch, heads, seq, head_dim) by the angles in cos/sin (seq, head_dim)."""
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).type_as(x)
