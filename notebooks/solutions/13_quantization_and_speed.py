"""Solutions to the exercises of notebook 13 (quantization and speed)."""

from __future__ import annotations

import torch

from minigemma.model.config import GemmaConfig
from minigemma.loading.weights import empty_model
from minigemma.quantize import quantize, weight_bytes


# Exercise 1: a symmetric int4 grid, no zero point.
def quantize_int4_symmetric(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """The dequantized weight of symmetric int4 per group: q in -8..7, w ~= q * s, s = max|group| / 7.

    Zero is always exactly representable and only the scale is stored (4 + 16/g bits), but a group
    whose weights are all positive wastes the negative half of the levels: half the resolution.
    """
    rows, cols = w.shape
    groups = w.float().reshape(rows, cols // group_size, group_size)
    scale = groups.abs().amax(-1, keepdim=True) / 7
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(groups / scale).clamp(-8, 7)
    return (q * scale).reshape(rows, cols)


# Exercise 2: the bandwidth limit from the config alone.
def decode_limit(config: GemmaConfig, fmt: str, bandwidth_gb_s: float) -> float:
    """Tokens/s if every weight byte is read once per token at `bandwidth_gb_s`.

    The bytes are those `quantize` produces on the meta device (no memory used): the embedding is
    read in full as the output projection, so all weights count once.
    """
    if fmt == "bf16":
        nbytes = 2 * empty_model(config).num_parameters()
    elif fmt in ("int8", "int4"):
        bits = 8 if fmt == "int8" else 4
        nbytes = weight_bytes(quantize(empty_model(config), bits=bits, group_size=64))
    else:
        raise ValueError(f"fmt must be 'bf16', 'int8' or 'int4', got {fmt!r}")
    return bandwidth_gb_s * 1e9 / nbytes


# Exercise 3: search each group's range instead of taking min and max as they are.
def quantize_int4_clipped(w: torch.Tensor, group_size: int,
                          shrinks: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7)) -> torch.Tensor:
    """Dequantized int4 (asymmetric, 16 levels per group) with the best of a few shrunken ranges.

    Shrinking the range around its middle makes the step finer for the many ordinary weights and
    clamps the rare extreme ones; per group we keep whichever shrink gives the smallest squared
    error. Shrink 1.0 is plain min-max rounding, so the result is never worse than it (in float32;
    the package's version also rounds s and z to bf16).
    """
    rows, cols = w.shape
    groups = w.float().reshape(rows, cols // group_size, group_size)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    middle, half = (low + high) / 2, (high - low) / 2
    best, best_error = None, None
    for shrink in shrinks:
        lo = middle - shrink * half
        step = (2 * shrink * half / 15).clamp_min(1e-12)
        q = torch.round((groups - lo) / step).clamp(0, 15)
        candidate = q * step + lo
        error = (candidate - groups).pow(2).sum(-1, keepdim=True)  # per group
        if best is None:
            best, best_error = candidate, error
        else:
            better = error < best_error
            best = torch.where(better, candidate, best)
            best_error = torch.where(better, error, best_error)
    return best.reshape(rows, cols)
