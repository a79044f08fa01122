"""The solutions to notebook 16's exercises (notebooks/solutions/16_block_kernel.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

from minigemma.quantize.blocks import BLOCK, quantize_activation_blocks, quantize_blocks, unpack_nibbles

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.16_block_kernel")  # file names start with a digit


def int8_blocks(n: int, low: int = -127, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, 128, (n, BLOCK), generator=g).to(torch.int8)


def exact_dot(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (w.long() * x.long()).sum(-1)


# ---------------------------------------------------------------- exercise 1: dpbusd

def test_dpbusd_adds_groups_of_four_into_the_lanes():
    u = torch.arange(32, dtype=torch.int32).to(torch.int8)
    ones = torch.ones(32, dtype=torch.int8)
    acc = torch.arange(8, dtype=torch.int32) * 1000
    lanes = sol.dpbusd(acc, u, ones)
    assert lanes.dtype == torch.int32 and lanes.shape == (8,)
    expected = torch.tensor([sum(range(4 * i, 4 * i + 4)) + 1000 * i for i in range(8)], dtype=torch.int32)
    assert torch.equal(lanes, expected)


def test_dpbusd_reads_u_unsigned_and_s_signed():
    u = torch.full((32,), -1, dtype=torch.int8)  # the byte 0xFF: 255 unsigned
    s = torch.full((32,), -128, dtype=torch.int8)
    lanes = sol.dpbusd(torch.zeros(8, dtype=torch.int32), u, s)
    assert torch.equal(lanes, torch.full((8,), 4 * 255 * -128, dtype=torch.int32))  # no int16 step, no saturation


def test_dot_vnni_is_exact_on_the_grid():
    w, x = int8_blocks(2000, seed=1), int8_blocks(2000, seed=2)
    w[:10], x[:10] = 127, -127  # the extremes of the grid
    lanes = sol.dot_vnni(w, x)
    assert lanes.shape == (2000, 8)
    assert torch.equal(lanes.sum(-1).long(), exact_dot(w, x))
    # lane i holds the products of bytes 4i..4i+3
    assert torch.equal(lanes.long(), (w.long() * x.long()).reshape(2000, 8, 4).sum(-1))


def test_dot_vnni_keeps_the_sign_tricks_limit():
    # -(-128) is not a signed byte: with w = x = -128 the trick gives the opposite sign, as the hardware does.
    w = x = torch.full((1, 32), -128, dtype=torch.int8)
    assert torch.equal(sol.dot_vnni(w, x), torch.full((1, 8), 4 * 128 * -128, dtype=torch.int32))


# ---------------------------------------------------------------- exercise 2: 4-bit blocks

def test_q4_dot_on_quantized_weights():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, 4 * BLOCK, generator=g) * torch.rand(16, 1, generator=g)
    packed, _ = quantize_blocks(w, bits=4)  # (16, 64): 16 bytes per block
    qx, _ = quantize_activation_blocks(torch.randn(1, 4 * BLOCK, generator=g))
    ints = unpack_nibbles(packed)  # (16, 128) in -8..7
    assert ints.min() == -8  # the extreme value of each block lands on -8
    for row in range(16):
        for b in range(4):
            expected = int(exact_dot(ints[row, b * BLOCK:(b + 1) * BLOCK], qx[0, b * BLOCK:(b + 1) * BLOCK]))
            got = sol.q4_dot(packed[row, b * 16:(b + 1) * 16], qx[0, b * BLOCK:(b + 1) * BLOCK])
            assert int(got) == expected


def test_q4_dot_follows_the_nibble_layout():
    # Byte j: element j in the low nibble, element j + 16 in the high one, both stored as q + 8.
    packed = torch.tensor([(j % 16) | ((15 - j) << 4) for j in range(16)], dtype=torch.uint8)
    for element, stored in [(0, 0), (5, 5), (16, 15), (20, 11), (31, 0)]:
        qx = torch.zeros(32, dtype=torch.int8)
        qx[element] = 3
        assert int(sol.q4_dot(packed, qx)) == 3 * (stored - 8)


# ---------------------------------------------------------------- exercise 3: block size

def outlier_activations(seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 640, generator=g)
    x[:, [3, 100, 400]] *= 60  # a few huge channels, as Gemma's
    return x, torch.randn(256, 640, generator=g) * 0.02


def test_block_of_32_is_blocks_py_rounding():
    x, w = outlier_activations()
    qx, dx = quantize_activation_blocks(x)
    x_hat = (qx.float().reshape(16, -1, BLOCK) * dx[..., None]).reshape(16, 640)
    exact = x @ w.T
    expected = ((x_hat @ w.T - exact).norm() / exact.norm()).item()
    assert sol.block_rounding_error(x, w, 32) == pytest.approx(expected, rel=1e-3)


def test_smaller_blocks_round_better():
    x, w = outlier_activations()
    errors = [sol.block_rounding_error(x, w, b) for b in (8, 16, 32, 64, 128, 640)]
    assert errors == sorted(errors)
    assert errors[-1] > 2 * errors[2]  # one scale per vector, against blocks of 32
    assert 0 < errors[0] < 0.01


def test_block_rounding_error_edge_cases():
    x, w = outlier_activations()
    x[0, :64] = 0  # two all-zero blocks: they stay zero, no 0/0
    qx, dx = quantize_activation_blocks(x)
    x_hat = (qx.float().reshape(16, -1, BLOCK) * dx[..., None]).reshape(16, 640)
    exact = x @ w.T
    expected = ((x_hat @ w.T - exact).norm() / exact.norm()).item()
    assert sol.block_rounding_error(x, w, 32) == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError):
        sol.block_rounding_error(x, w, 48)  # does not divide 640
