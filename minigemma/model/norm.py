"""RMSNorm (Zhang & Sennrich, 2019), as Gemma uses it before (and in Gemma 3 also after) each sublayer.

RMSNorm drops LayerNorm's mean subtraction and bias: it only rescales a vector to unit
root-mean-square, then multiplies by a learned per-channel gain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        # F.rms_norm computes x / sqrt(mean(x^2) + eps) * gain in one call: the same formula as
        # x * rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain (notebook 02 checks it), without
        # the four separate operations that cost ~40 us per norm, ~4 ms per token of the 270M.
        gain = 1.0 + self.weight.float()
        out = F.rms_norm(x.float(), (x.shape[-1],), gain, self.eps).type_as(x)
        return self.hook_normalized(out)
