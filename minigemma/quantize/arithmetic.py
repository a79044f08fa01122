"""The arithmetic: a float matrix <-> small integers plus scales (the formulas: see __init__.py).

int8 per row is exactly what gemma_pytorch's int8 checkpoints store (notebook 08), so its loader
(minigemma/loading/ckpt.py) uses these same two int8 functions.
"""

from __future__ import annotations

import torch

from ..errors import ArgumentError

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what PyTorch's int4 kernels accept


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax int8 per row: scale = max|row| / 127, so the largest entry maps to +-127.

    (out, in) float -> int8 (out, in), float32 scales (out,).
    """
    scale = w.float().abs().amax(dim=1) / 127.0  # (out,)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero row stays zero
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q (rows, cols) int8 times scale (rows,): computed in float32, then cast once to `dtype`."""
    return (q.float() * scale.float()[:, None]).to(dtype)


def quantize_int4(w: torch.Tensor, group_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, in) float -> packed uint8 (out, in/2), bf16 scales and zeros (out, in/group_size).

    Asymmetric min-max per group: the group's minimum maps to level 0 and its maximum to 15, so
    all 16 levels are used even when a group is lopsided. Written as w ~= (q - 8) * s + z, where
    z is the value of the middle level 8: the convention of PyTorch's int4 kernels, so the same
    numbers feed the kernel and the readable dequantization. s and z are kept in bf16 (2 x 16
    bits per group: 4.5 bits per weight with groups of 64) and q is rounded against those
    bf16 values, so the error per entry stays about half a step, s / 2 = (max - min) / 30.
    Two 4-bit values share a byte: column 2j in the low nibble, column 2j+1 in the high one.
    """
    check_int4_shape(w.shape, group_size)
    out_features, in_features = w.shape
    groups = w.float().reshape(out_features, in_features // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (out, n_groups)
    constant = high == low  # such a group is all z: every q is 8, whatever the scale
    scale = torch.where(constant, 1.0, (high - low) / 15.0).to(torch.bfloat16)
    zero = torch.where(constant, low, low + 8 * scale.float()).to(torch.bfloat16)
    # round((w - z) / s) + 8, in place on one copy (2x faster than a new tensor per step).
    q = groups.clone().sub_(zero.float()[..., None]).div_(scale.float()[..., None]).round_().add_(8)
    q = q.clamp_(0, 15).to(torch.uint8).reshape(out_features, in_features)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)  # (out, in/2)
    return packed, scale, zero


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (out, in/2) -> uint8 values 0..15 (out, in)."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Packed uint8 (out, in/2), scales and zeros (out, n_groups) -> float (out, in)."""
    out_features, n_groups = scale.shape
    w = unpack_int4(packed).float().reshape(out_features, n_groups, -1)  # (out, n_groups, group_size)
    # In place: the same (q - 8) * s + z, but ~10x faster than new tensors with broadcast operands.
    w.sub_(8).mul_(scale.float()[..., None]).add_(zero.float()[..., None])
    return w.reshape(out_features, -1).to(dtype)


def check_group_size(group_size: int) -> None:
    if group_size not in INT4_GROUP_SIZES:
        raise ArgumentError(f"int4 group_size must be one of {INT4_GROUP_SIZES} (PyTorch's int4 kernels "
                            f"accept only these), got {group_size}")


def check_int4_shape(shape: torch.Size | tuple[int, ...], group_size: int) -> None:
    """Raise ArgumentError (a ValueError) unless a weight of `shape` (out, in) can be cut into int4 groups."""
    check_group_size(group_size)
    if shape[1] % group_size != 0:
        raise ArgumentError(f"a weight with {shape[1]} input features cannot be cut into groups of "
                            f"{group_size}; pick a group_size that divides {shape[1]}")
