"""Block quantization for decoding: weights *and* activations in blocks of 32 small integers.

The int8 format in arithmetic.py keeps one scale per output row and leaves the activations in
float, so every multiply is int8 -> float -> multiply. llama.cpp's Q8_0 and Q4_0 formats instead
cut every row into blocks of 32 consecutive weights, each with its own scale, and round the
activation vector the same way, once per matmul. Then the dot product of two blocks is a sum of
32 products of small integers, exact in int32, which a CPU does 32 at a time (one AVX2 or VNNI
instruction sequence), and the floats only enter once per block:

    y[m, n] = sum over blocks b of  dw[n, b] * dx[m, b] * sum_j qw[n, 32b + j] * qx[m, 32b + j]
              (two float scales)               (an exact integer)

This file is the format and a readable reference of exactly that arithmetic, in PyTorch; the fast
version is csrc/block_matmul.cpp, and native.py checks one against the other.

  8-bit ("Q8_0"): symmetric absmax, d = max|w| / 127, q = round(w / d) in [-127, 127].
      -128 is never used: the grid is symmetric around zero, and |q| <= 127 is still a signed
      byte after negation, which the C++ kernel's sign trick relies on (see dot_avx2 there).
  4-bit ("Q4_0"-like): 16 levels -8..7. The value of largest magnitude m (with its sign) maps to
      -8 exactly: d = m / -8, q = clamp(round(w / d), -8, 7). Using -8 for the extreme value uses
      all 16 levels (a symmetric -7..7 grid would waste one); the price is that a value of the
      opposite sign as large as |m| would round to +8 and is clamped to +7, an error of up to one
      step instead of half a step.

Scales are stored as float16, 2 bytes per 32 weights (8.5 bits per weight for 8-bit, 4.5 for
4-bit), and the integers are rounded against the float16 value actually stored, so that
dequantized = q * float(scale) holds exactly. Activations keep float32 scales: they are made on
the fly and never stored.
"""

from __future__ import annotations

import torch

from ..errors import ArgumentError

BLOCK = 32  # weights per scale: llama.cpp's QK8_0 / QK4_0


def check_block_shape(shape: torch.Size | tuple[int, ...], what: str = "a weight") -> None:
    """Raise ArgumentError unless `shape` is 2-D with a last dimension that is a multiple of BLOCK."""
    if len(shape) != 2:
        raise ArgumentError(f"{what} for block quantization must be 2-D (rows, {BLOCK} * k), got shape {tuple(shape)}")
    if shape[1] % BLOCK:
        raise ArgumentError(f"{what} of shape {tuple(shape)} cannot be cut into blocks of {BLOCK}: found "
                            f"{shape[1]} columns, expected a multiple of {BLOCK}")


def _check_bits(bits: int) -> None:
    if bits not in (4, 8):
        raise ArgumentError(f"block quantization takes bits=8 or bits=4, got {bits!r}")


def quantize_blocks(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float -> (integers, float16 scales (out, in/32)).

    bits=8: int8 (out, in) in [-127, 127]. bits=4: uint8 (out, in/2), two values per byte laid out
    for the kernel's unpacking (see `pack_nibbles`). An all-zero block gets scale 0 and zeros.
    """
    _check_bits(bits)
    check_block_shape(w.shape)
    rows, cols = w.shape
    blocks = w.float().reshape(rows, cols // BLOCK, BLOCK)  # (out, n_blocks, 32)
    if bits == 8:
        d = blocks.abs().amax(dim=-1) / 127  # (out, n_blocks): the largest |w| lands on 127
        low, high = -127, 127
    else:
        lo, hi = torch.aminmax(blocks, dim=-1)  # one pass for both ends
        extreme = torch.where(-lo > hi, lo, hi)  # the signed value of largest magnitude (on a tie, the positive one)
        d = extreme / -8  # signed: the extreme value lands on -8 whatever its sign
        low, high = -8, 7
    scale = d.to(torch.float16)  # what is stored; round against it, not against the float32 d
    d16 = scale.float()[..., None]  # (out, n_blocks, 1)
    # A block whose scale is 0 (all zeros, or |w| below ~4e-6, where float16 underflows to 0) is
    # divided by 1 instead, which avoids 0/0 = NaN and still rounds all its values to 0. (Scales
    # under 6e-5 are float16 subnormals, coarser than half a step; the absolute error they add is
    # below 127 * 2^-25 ~ 4e-6 per weight.)
    q = (blocks / torch.where(d16 == 0, 1.0, d16)).round_().clamp_(low, high).to(torch.int8)  # (out, n_blocks, 32)
    if bits == 4:
        return pack_nibbles(q), scale
    return q.reshape(rows, cols), scale


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """int8 values -8..7 in blocks (out, n_blocks, 32) -> uint8 (out, n_blocks * 16).

    Within each block, byte j (0..15) holds element j in its low nibble and element j + 16 in its
    high nibble, both stored as q + 8 (0..15, so no sign bits to extend). This is ggml's Q4_0 order
    rather than neighbours-share-a-byte: the kernel unpacks 16 bytes with one AND (elements
    0..15) and one shift + AND (elements 16..31), already in order, with no shuffle.
    """
    u = (q + 8).to(torch.uint8)  # 0..15
    return (u[..., :16] | (u[..., 16:] << 4)).reshape(q.shape[0], -1)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (out, in/2) in `pack_nibbles`' layout -> int8 values -8..7 (out, in)."""
    rows = packed.shape[0]
    b = packed.reshape(rows, -1, 16)  # (out, n_blocks, 16)
    u = torch.cat([b & 0x0F, b >> 4], dim=-1)  # (out, n_blocks, 32): low nibbles first, as packed
    return (u.to(torch.int8) - 8).reshape(rows, -1)


def block_integers(q: torch.Tensor, bits: int) -> torch.Tensor:
    """The stored integers as int8 (out, in), whichever the bit width."""
    _check_bits(bits)
    return q if bits == 8 else unpack_nibbles(q)


def dequantize_blocks(q: torch.Tensor, scales: torch.Tensor, bits: int,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integers and float16 scales (out, in/32) -> float (out, in): w = q * scale, blockwise."""
    ints = block_integers(q, bits)
    rows, cols = ints.shape
    w = ints.float().reshape(rows, cols // BLOCK, BLOCK) * scales.float()[..., None]  # (out, n_blocks, 32)
    return w.reshape(rows, cols).to(dtype)


def quantize_activation_blocks(x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, in) float32 -> int8 (M, in) in [-127, 127], float32 scales (M, in/32).

    The same absmax rule as the 8-bit weights, spelled as the exact float32 operations the C++
    kernel performs, so that both produce the same bits (tests/test_block_kernel.py checks it):
        d   = amax / 127                       float32 division
        inv = 1 / d, or 0 where d == 0         an all-zero block -> q = 0, no NaN
        q   = round_half_to_even(x * inv)      one float32 multiply; C's nearbyintf in the default
                                               rounding mode, and _mm256_round_ps, round the same way
    Multiplying by the reciprocal instead of dividing by d is what the SIMD code does (one
    division per block instead of 32). x * inv can differ from x / d in the last bit, and where
    that bit decides a rounding (a value next to a half) the integer differs by one: so the
    reference copies the kernel's formula rather than the "obvious" one. Inputs must be finite.
    """
    check_block_shape(x2d.shape, "an activation")
    rows, cols = x2d.shape
    blocks = x2d.float().reshape(rows, cols // BLOCK, BLOCK)  # (M, n_blocks, 32)
    d = blocks.abs().amax(dim=-1) / 127  # (M, n_blocks)
    inv = torch.where(d != 0, 1 / torch.where(d != 0, d, 1.0), 0.0)
    q = (blocks * inv[..., None]).round().clamp(-127, 127).to(torch.int8)
    return q.reshape(rows, cols), d


def block_matmul_reference(x2d: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """x (M, in) float32 times block-quantized w (out, in) -> (M, out) float32, as the kernel computes it.

    Not dequantize-then-matmul: x is rounded to 8-bit blocks too, and each block's dot product is
    summed in integers first. Only the final sum over blocks is in float, so a kernel can differ
    from this only in the order of that sum (last-bit differences), never in the integer parts.
    """
    qx, sx = quantize_activation_blocks(x2d)  # (M, in) int8, (M, n_blocks)
    qw = block_integers(q, bits)  # (out, in) int8
    m, k = qx.shape
    n, n_blocks = qw.shape[0], k // BLOCK
    xb = qx.reshape(m, n_blocks, BLOCK).to(torch.int32)  # (M, n_blocks, 32)
    wb = qw.reshape(n, n_blocks, BLOCK).to(torch.int32)  # (out, n_blocks, 32)
    # One integer dot product per (row of x, row of w, block): a batched matmul over blocks,
    # (n_blocks, M, 32) @ (n_blocks, 32, out). |sum| <= 32 * 127 * 127 = 516,128: int32 is exact.
    isum = torch.bmm(xb.transpose(0, 1), wb.permute(1, 2, 0)).permute(1, 2, 0)  # (M, out, n_blocks)
    block_scale = scales.float()[None, :, :] * sx[:, None, :]  # (M, out, n_blocks): dw * dx
    return (block_scale * isum.float()).sum(dim=-1)  # (M, out)
