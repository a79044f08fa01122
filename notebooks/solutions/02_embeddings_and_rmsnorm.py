"""Solutions to the exercises of notebook 02 (embeddings and RMSNorm)."""

from __future__ import annotations

import torch

from minigemma.model.norm import RMSNorm


# Exercise 1: LayerNorm by hand (Ba et al., 2016), to set RMSNorm beside it.
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dimension.

    The variance is the biased one (divide by n, not n - 1), as torch.nn.functional.layer_norm.
    RMSNorm keeps only the division, by the root mean square instead of the standard deviation:
    on a zero-mean vector the two statistics are the same number.
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


# Exercise 2: the embedding scale in a given dtype, and when rounding it changes nothing.
def embed_scale(hidden_size: int, dtype: torch.dtype = torch.float32) -> float:
    """sqrt(hidden_size) as the model multiplies by it: a scalar tensor in the activation dtype."""
    return torch.tensor(hidden_size ** 0.5, dtype=dtype).item()


def exact_bf16_scales(hidden_sizes: list[int]) -> list[int]:
    """The hidden sizes whose sqrt(hidden) survives bfloat16 unchanged.

    The square root of an integer is either an integer or irrational, and a bf16 number has 8
    significant bits: only perfect squares with a short enough root survive (64 -> 8,
    2304 -> 48, but not 257 ** 2, whose root needs 9 bits).
    """
    return [h for h in hidden_sizes if embed_scale(h, torch.bfloat16) == h ** 0.5]


# Exercise 3: GGUF stores each norm's multiplier (1 + w); our RMSNorm stores w.
def rmsnorm_from_multiplier(multiplier: torch.Tensor, eps: float = 1e-6) -> RMSNorm:
    """A minigemma RMSNorm whose output is x / rms(x) * multiplier."""
    norm = RMSNorm(multiplier.shape[-1], eps)
    with torch.no_grad():
        norm.weight.copy_(multiplier - 1.0)  # weight = multiplier - 1, so 1 + weight = multiplier
    return norm
