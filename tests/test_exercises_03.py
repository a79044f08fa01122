"""The solutions to notebook 03's exercises (notebooks/solutions/03_rope.py) work."""

import importlib
import math
import sys
from pathlib import Path

import torch

from minigemma.model.rope import apply_rope, rope_cos_sin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.03_rope")  # file names start with a digit


def test_interleaved_rope_is_rotate_half_with_channels_permuted():
    x = torch.randn(2, 3, 11, 64, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(11) + 100
    cos, sin = rope_cos_sin(positions, 64, 10_000.0)
    perm = sol.interleave_permutation(64)
    assert perm[:4].tolist() == [0, 32, 1, 33] and sorted(perm.tolist()) == list(range(64))
    torch.testing.assert_close(sol.rope_interleaved(x[..., perm], positions, 10_000.0),
                               apply_rope(x, cos, sin)[..., perm])


def test_interleaved_rope_keeps_relative_positions():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 64, generator=g), torch.randn(1, 64, generator=g)

    def score(m, n):
        return (sol.rope_interleaved(q, torch.tensor([m]), 1e4) * sol.rope_interleaved(k, torch.tensor([n]), 1e4)).sum()

    torch.testing.assert_close(score(7, 3), score(107, 103), atol=1e-4, rtol=1e-4)


def test_wavelengths():
    w = sol.wavelengths(256, 10_000.0)
    assert w.shape == (128,)
    assert w[0] == 2 * math.pi and torch.all(w[1:] > w[:-1])
    assert sol.pairs_turning_within(512, 256, 10_000.0) == 62
    assert sol.pairs_turning_within(32_768, 256, 10_000.0) == 119
    assert sol.pairs_turning_within(32_768, 256, 1_000_000.0) == 80


def test_positions_in_low_precision():
    assert sol.first_unrepresentable_position(torch.bfloat16) == 257
    assert sol.first_unrepresentable_position(torch.float16) == 2049
    assert sol.first_unrepresentable_position(torch.float32) == 2 ** 24 + 1
    assert torch.tensor(257.0, dtype=torch.bfloat16).item() != 257
    assert sol.angle_error(5001, torch.bfloat16) == 9.0  # 5001 is stored as 4992 in bf16
    assert sol.angle_error(5001, torch.float32) == 0.0
