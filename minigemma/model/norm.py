"""RMSNorm (Zhang & Sennrich, 2019), as Gemma uses it before (and in Gemma 3 also after) each sublayer.

RMSNorm drops LayerNorm's mean subtraction and bias: it only rescales a vector to unit
root-mean-square, then multiplies by a learned per-channel gain.
"""

from __future__ import annotations

import torch
from torch import nn

from .hooks import HookPoint


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        # Gemma stores the gain as an offset from one: the multiplier is (1 + weight), so a
        # freshly zero-initialised norm is the identity (gemma_pytorch `add_unit_offset`).
        self.weight = nn.Parameter(torch.zeros(dim))
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pitfall 2: statistics in float32 even when activations are bf16, where the mean of
        # squares of a few thousand values loses too many bits; cast back only at the end.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        out = (x32 * (1.0 + self.weight.float())).type_as(x)
        return self.hook_normalized(out)
