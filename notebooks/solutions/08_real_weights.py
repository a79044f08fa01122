"""Solutions to the exercises of notebook 08 (real weights: formats, memory, int8)."""

from __future__ import annotations

import torch

from minigemma.model.config import GemmaConfig
from minigemma.quantize import dequantize_int8, quantize_int8


# Exercise 1: the parameter count from the config alone.
def count_parameters(config: GemmaConfig) -> int:
    """Embedding (tied: counted once) + per layer attention, MLP and norms + the final norm.

    Attention: q and o are (heads * head_dim) x hidden each, k and v (kv_heads * head_dim) x hidden.
    MLP: gate and up hidden -> intermediate, down back. Norms: one gain vector each; Gemma 3 adds
    the two "post" norms and a head_dim-wide norm on q and on k.
    """
    h, d = config.hidden_size, config.head_dim
    attention = 2 * h * config.num_heads * d + 2 * h * config.num_kv_heads * d
    mlp = 3 * h * config.intermediate_size
    norms = 2 * h + (2 * h if config.post_norms else 0) + (2 * d if config.qk_norm else 0)
    return config.vocab_size * h + config.num_layers * (attention + mlp + norms) + h


# Exercise 2: gemma_pytorch's fused projection, unfused.
def split_qkv(qkv: torch.Tensor, config: GemmaConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [q | k | v] of a qkv_proj.weight: heads * head_dim rows of queries, then kv_heads * head_dim each."""
    q_rows, kv_rows = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    if qkv.shape[0] != q_rows + 2 * kv_rows:
        raise ValueError(f"qkv has {qkv.shape[0]} rows, expected {q_rows} + 2 * {kv_rows} for this config")
    q, k, v = qkv.split([q_rows, kv_rows, kv_rows])
    return q, k, v


# Exercise 3: per-row int8 error, to see where it hurts.
def row_errors(weight: torch.Tensor) -> torch.Tensor:
    """Relative error of each row after per-row absmax int8: |w - dq| / |w| (rows,).

    The step of a row's grid is max|row| / 127: a row with one large outlier gets a coarse grid
    for all its other, small weights, so those rows have the largest relative error.
    """
    q, scale = quantize_int8(weight)
    error = weight.float() - dequantize_int8(q, scale)
    return error.norm(dim=1) / weight.float().norm(dim=1).clamp_min(1e-12)


def outlier_ratio(weight: torch.Tensor) -> torch.Tensor:
    """max |w| / RMS(w) per row: how far the largest weight sticks out of the rest."""
    w = weight.float()
    return w.abs().amax(dim=1) / w.pow(2).mean(dim=1).sqrt()
