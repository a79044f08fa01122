"""The solutions to notebook 02's exercises (notebooks/solutions/02_embeddings_and_rmsnorm.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.02_embeddings_and_rmsnorm")  # file names start with a digit


def test_layer_norm_matches_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 64, generator=g) * 4 + 2
    w, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    torch.testing.assert_close(sol.layer_norm(x, w, b), F.layer_norm(x, (64,), w, b, eps=1e-6))


def test_layer_norm_equals_rms_norm_on_zero_mean_vectors():
    from minigemma.model.norm import RMSNorm

    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    x = x - x.mean(dim=-1, keepdim=True)
    torch.testing.assert_close(sol.layer_norm(x, torch.ones(64), torch.zeros(64)), RMSNorm(64)(x))


@pytest.mark.parametrize("hidden, bf16", [(2048, 45.25), (3072, 55.5), (640, 25.25)])
def test_embed_scale(hidden, bf16):
    assert sol.embed_scale(hidden, torch.bfloat16) == bf16
    assert sol.embed_scale(hidden) == pytest.approx(hidden ** 0.5, rel=1e-7)


def test_exact_bf16_scales_are_small_perfect_squares():
    sizes = list(range(64, 4097, 64))
    assert sol.exact_bf16_scales(sizes) == [64, 256, 576, 1024, 1600, 2304, 3136, 4096]
    assert sol.exact_bf16_scales([256 ** 2, 257 ** 2]) == [256 ** 2]  # 257 needs 9 significant bits


def test_rmsnorm_from_multiplier():
    g = torch.Generator().manual_seed(2)
    m = torch.randn(64, generator=g) * 3
    x = torch.randn(2, 7, 64, generator=g) * 10
    norm = sol.rmsnorm_from_multiplier(m)
    expected = x / x.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt() * m
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm.weight.detach(), m - 1)
