"""Solutions to the exercises of notebook 16 (a kernel of our own: block int8 decoding)."""

from __future__ import annotations

import torch


def _wrap8(v: torch.Tensor) -> torch.Tensor:
    """Integers -> int8 as a register byte holds them: 8 bits, wrapping (128 becomes -128)."""
    return ((v.to(torch.int32) + 128) % 256 - 128).to(torch.int8)


def _sign_epi8(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """_mm256_sign_epi8: a where s > 0, -a where s < 0 (in 8 bits: -(-128) stays -128), 0 where s == 0."""
    a32 = a.to(torch.int32)
    return _wrap8(torch.where(s > 0, a32, torch.where(s < 0, -a32, 0)))


# Exercise 1: VNNI's dpbusd, and the 8-bit dot product with it.
def dpbusd(acc: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """_mm256_dpbusd_epi32 on (..., 32) byte tensors -> (..., 8) int32.

    u's bytes are read as unsigned (0..255), s's as signed (-128..127); lane i is acc[i] plus the four
    products of bytes 4i..4i+3. Unlike AVX2's maddubs there is no int16 step: a group of four
    products is at most 4 * 255 * 128 = 130,560 in size, which int32 holds, so nothing saturates.
    """
    products = u.view(torch.uint8).to(torch.int32) * s.to(torch.int32)  # (..., 32)
    return acc + products.reshape(*products.shape[:-1], 8, 4).sum(-1, dtype=torch.int32)


def dot_vnni(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(..., 32) int8 blocks -> (..., 8) int32 lanes whose sum is sum(w * x), as the kernel's dot_vnni.

    dpbusd still multiplies unsigned by signed bytes, so the weights' signs move onto the activations:
    |w| * (x * sign(w)) = w * x. What AVX2 could overflow, the int16 pair sums of maddubs (saturating
    above 32767), does not exist here; the sign trick's limit does: -(-128) is not a signed byte, so
    the grid must still stop at -127.
    """
    acc = torch.zeros(*w.shape[:-1], 8, dtype=torch.int32)
    return dpbusd(acc, _sign_epi8(w, w), _sign_epi8(x, w))


# Exercise 2: a 4-bit block's dot product with the zero-point correction.
def q4_dot(packed: torch.Tensor, qx: torch.Tensor) -> int:
    """The exact sum(q * x) of one 4-bit block, from its 16 packed bytes and 32 int8 activations.

    Byte j holds element j (low nibble) and element j + 16 (high nibble), each stored as q + 8 in
    0..15 (blocks.pack_nibbles). Those stored values are unsigned already, which is exactly what
    maddubs / dpbusd want for their first operand: no sign trick (two sign operations per block)
    is needed. Multiplying q + 8 instead of q adds 8 * sum(x), one integer per input block that the
    kernel computes once per input row and subtracts for every weight row.
    """
    stored = torch.cat([packed & 0x0F, packed >> 4]).to(torch.int32)  # q + 8 for elements 0..15, then 16..31
    x = qx.to(torch.int32)
    return int((stored * x).sum() - 8 * x.sum())


# Exercise 3: the error of int8 activations, as a function of the block size.
def block_rounding_error(x: torch.Tensor, w: torch.Tensor, block: int) -> float:
    """Relative error of x W^T when x (tokens, in) is rounded to symmetric int8 per `block` values.

    One scale (max |x| / 127) per `block` consecutive values of a row; block = in is one scale per
    vector. Each scale costs 32 bits (float32), so a value costs 8 + 32 / block bits. On the 270M's
    matmul inputs there is no sharp knee: from blocks of 128 down to 8 the error shrinks by about a
    third per halving, while one scale per vector is a bigger jump (its outliers). What a smaller
    block costs is mostly the kernel's work, not bits: per block it converts an integer sum to float
    and does a multiply-add with the two scales, so halving the block doubles that float work per
    byte of weights. 32 int8 values are exactly one 256-bit AVX2 register: a block is one load and
    one maddubs + madd (or one dpbusd), with its scales applied once.
    """
    tokens, k = x.shape
    if k % block:
        raise ValueError(f"block={block} does not divide the {k} values of a row")
    blocks = x.float().reshape(tokens, k // block, block)
    d = blocks.abs().amax(-1, keepdim=True) / 127
    d = torch.where(d == 0, torch.ones_like(d), d)  # an all-zero block stays zero, no 0/0
    x_hat = (torch.round(blocks / d).clamp(-127, 127) * d).reshape(tokens, k)
    exact = x.float() @ w.float().T
    return ((x_hat @ w.float().T - exact).norm() / exact.norm()).item()
