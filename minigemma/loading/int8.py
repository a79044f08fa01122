"""Int8 weights with one scale per output row, as in gemma_pytorch's "quant" checkpoints.

Each row of a weight matrix (one output feature) is stored as int8 values q and one float
scale s, so that row ~= q * s. Keeping the int8 matrix on the device halves the memory of
bf16 (a quarter of fp32); the layer multiplies by the scales after the matmul, which is the
same product because each output feature has a single scale: x @ (q * s)^T = (x @ q^T) * s.

Deliberately minimal: this reads the checkpoints Google published. General quantization
(choosing scales, other bit widths) lives in `minigemma/quantize.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArgumentError


class Int8Linear(nn.Module):
    """A bias-free linear layer whose (out, in) weight is int8 with a per-row scale."""

    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # Frozen parameters (not buffers) so loaders and `model.parameters()` see them like any weight.
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=torch.int8, device=device),
                                   requires_grad=False)
        self.weight_scaler = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device),
                                          requires_grad=False)  # gemma_pytorch's name for the scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The int8 -> activation-dtype cast makes a temporary of one layer's weight only.
        return F.linear(x, self.weight.to(x.dtype)) * self.weight_scaler.to(x.dtype)  # (..., out)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as a float (out, in) matrix."""
        return dequantize_rows(self.weight, self.weight_scaler, dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-row scales"


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q (rows, cols) int8 times scale (rows,): computed in float32, then cast once to `dtype`."""
    return (q.float() * scale.float()[:, None]).to(dtype)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax int8 per row: scale = max|row| / 127, so the largest entry maps to +-127."""
    scale = w.float().abs().amax(dim=1) / 127.0  # (rows,)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero row stays zero
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def use_int8_linears(model: nn.Module, scale_dtype: torch.dtype) -> nn.Module:
    """Replace every nn.Linear of `model` by an Int8Linear of the same shape, in place.

    Meant for a model on the meta device (see weights.empty_model): the new layers are
    created on the same device as the ones they replace, so nothing is allocated yet.
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            if module.bias is not None:
                raise ArgumentError(f"{name} has a bias; Gemma's linear layers have none")
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, Int8Linear(module.in_features, module.out_features,
                                             dtype=scale_dtype, device=module.weight.device))
    return model
