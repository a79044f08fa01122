"""The solutions to notebook 05's exercises (notebooks/solutions/05_geglu.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import minigemma
import minigemma.model.mlp
from minigemma.model.mlp import GeGLU
from reference import random_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.05_geglu")  # file names start with a digit

TRAINED_GELU = minigemma.model.mlp.gelu_tanh
TEXT = ("Gemma is a family of small open language models. Every layer reads the residual stream, "
        "looks back at earlier tokens, then sends each position through a gated feed-forward network.")


@pytest.fixture
def mlp_and_x():
    torch.manual_seed(0)
    mlp = GeGLU(32, 80)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    return mlp, x


def test_glu_with_gelu_tanh_is_geglu(mlp_and_x):
    mlp, x = mlp_and_x
    torch.testing.assert_close(sol.glu(x, mlp, minigemma.model.mlp.gelu_tanh), mlp(x))


@pytest.mark.parametrize("activation", [torch.sigmoid, F.relu, F.silu, lambda a: a])
def test_glu_variants_follow_the_formula(mlp_and_x, activation):
    mlp, x = mlp_and_x
    w_gate, w_up, w_down = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
    expected = (activation(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T
    torch.testing.assert_close(sol.glu(x, mlp, activation), expected)
    assert not torch.allclose(sol.glu(x, mlp, activation), mlp(x))  # a different layer from GeGLU


def _gate_fractions_by_hand(model, ids, threshold):
    """The same quantity from a forward pass written out block by block (no hooks)."""
    cfg = model.config
    positions = torch.arange(ids.shape[1])
    x = model.embed(ids) * torch.tensor(cfg.hidden_size ** 0.5)
    out = []
    for block in model.blocks:
        h = block.post_attn_norm(block.attn(block.attn_norm(x), positions))
        x = x + h
        mlp_in = block.mlp_norm(x)
        gate = F.gelu(mlp_in @ block.mlp.gate_proj.weight.T, approximate="tanh")
        out.append((gate.abs() > threshold).float().mean().item())
        x = x + block.post_mlp_norm(block.mlp(mlp_in))
    return out


@torch.no_grad()
def test_gate_open_fraction_matches_a_hand_forward():
    model = random_model()
    ids = torch.randint(0, 512, (1, 20), generator=torch.Generator().manual_seed(2))
    got = sol.gate_open_fraction(model, ids, threshold=0.1)
    assert got == pytest.approx(_gate_fractions_by_hand(model, ids, 0.1), abs=1e-6)
    assert len(got) == model.config.num_layers and all(0 < f < 1 for f in got)
    assert sol.gate_open_fraction(model, ids, threshold=1e9) == [0.0] * len(got)
    assert all(not block.mlp._forward_pre_hooks for block in model.blocks)  # hooks removed


def test_exact_gelu_context_manager_restores_even_after_an_error():
    with pytest.raises(RuntimeError):
        with sol.exact_gelu():
            assert minigemma.model.mlp.gelu_tanh is F.gelu
            raise RuntimeError("boom")
    assert minigemma.model.mlp.gelu_tanh is TRAINED_GELU


def test_exact_gelu_report_on_a_tiny_model():
    model = random_model()
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(3))
    report = sol.exact_gelu_report(model, ids)
    assert report["max_abs_logit_change"] > 0
    assert 0.0 <= report["top1_agreement"] <= 1.0
    assert minigemma.model.mlp.gelu_tanh is TRAINED_GELU


def test_on_the_real_270m(gemma3_270m):
    """The numbers notebook 05 shows: the wrong GELU moves logits by hundredths, no top-1 change."""
    model, tok = gemma3_270m
    ids = torch.tensor([tok.encode(TEXT, add_bos=True)])
    report = sol.exact_gelu_report(model, ids)
    assert 1e-3 < report["max_abs_logit_change"] < 0.2
    assert report["top1_agreement"] == 1.0
    assert minigemma.model.mlp.gelu_tanh is TRAINED_GELU
    fractions = sol.gate_open_fraction(model, ids)
    assert len(fractions) == 18 and all(0 < f < 1 for f in fractions)
