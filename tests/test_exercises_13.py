"""The solutions to notebook 13's exercises (notebooks/solutions/13_quantization_and_speed.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

import minigemma
from minigemma.quantize import dequantize_int4, quantize_int4

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.13_quantization_and_speed")  # file names start with a digit


def weights(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(128, 256, generator=g) * 0.05


def rel_error(w_hat: torch.Tensor, w: torch.Tensor) -> float:
    return ((w_hat - w).norm() / w.norm()).item()


@pytest.mark.parametrize("group_size", [32, 64])
def test_symmetric_int4_within_half_a_step(group_size):
    w = weights()
    w_hat = sol.quantize_int4_symmetric(w, group_size)
    step = w.reshape(128, -1, group_size).abs().amax(-1, keepdim=True) / 7
    err = (w_hat - w).reshape(128, -1, group_size).abs()
    assert (err <= step / 2 + 1e-7).all()
    # Symmetric levels: every value is a multiple of its group's step, zero included.
    ratio = w_hat.reshape(128, -1, group_size) / step
    assert torch.allclose(ratio, ratio.round(), atol=1e-4)


def test_zero_point_pays_off_on_lopsided_groups():
    w = weights()
    symmetric = rel_error(sol.quantize_int4_symmetric(w.abs(), 64), w.abs())
    asymmetric = rel_error(dequantize_int4(*quantize_int4(w.abs(), 64)), w.abs())
    assert asymmetric < 0.6 * symmetric  # all-positive groups waste half of the symmetric levels


@pytest.mark.parametrize("name", ["gemma-2b", "gemma-7b", "gemma3-270m"])
def test_decode_limit(name):
    config = minigemma.get_config(name)
    n = minigemma.loading.weights.empty_model(config).num_parameters()
    assert sol.decode_limit(config, "bf16", 100) == pytest.approx(100e9 / (2 * n))
    int8, int4 = sol.decode_limit(config, "int8", 100), sol.decode_limit(config, "int4", 100)
    # int8 reads ~1 byte per weight; int4 4.5 bits (a bf16 scale and zero per 64 weights).
    assert int8 == pytest.approx(100e9 / n, rel=0.01)
    assert int4 == pytest.approx(100e9 / (n * 4.5 / 8), rel=0.01)
    with pytest.raises(ValueError):
        sol.decode_limit(config, "fp8", 100)


def test_decode_limit_7b_int4_on_a_laptop():
    assert 11 < sol.decode_limit(minigemma.get_config("gemma-7b"), "int4", 60) < 13  # 4.8 GB per token


def test_clipped_grid_never_worse_and_usually_better():
    w = weights()
    plain = dequantize_int4(*quantize_int4(w, 64))
    clipped = sol.quantize_int4_clipped(w, 64)
    only_minmax = sol.quantize_int4_clipped(w, 64, shrinks=(1.0,))
    # Shrink 1.0 alone is plain min-max rounding (in float32: the package also rounds s, z to bf16).
    assert rel_error(only_minmax, w) == pytest.approx(rel_error(plain, w), rel=0.02)
    assert rel_error(clipped, w) <= rel_error(only_minmax, w)
    assert rel_error(clipped, w) < 0.99 * rel_error(only_minmax, w)  # a small gain (~2% on Gaussian weights)
    # Still 16 levels per group.
    levels = clipped.reshape(128, -1, 64)
    assert all(len(torch.unique(g)) <= 16 for g in levels.reshape(-1, 64)[:50])
