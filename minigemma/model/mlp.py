"""The feed-forward sublayer: GeGLU (Shazeer, 2020, "GLU Variants Improve Transformer").

Gemma report, section 2: "GeGLU Activations: the standard ReLU non-linearity is replaced by
the approximated version of the GeGLU activation function." One projection goes through GELU
and gates another, elementwise; a third projects back to the model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # Pitfall 1: Gemma was trained with the tanh approximation of GELU. Early configs said
    # `hidden_act: "gelu"` and the exact erf form quietly degraded outputs.
    return F.gelu(x, approximate="tanh")


class GeGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.gate_up: nn.Module | None = None  # gate_proj and up_proj in one layer (minigemma.quantize.fuse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, seq, hidden) -> (batch, seq, intermediate) -> (batch, seq, hidden)
        if self.gate_up is not None:
            gate, up = self.gate_up(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(gelu_tanh(gate) * up)
