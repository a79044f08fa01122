"""The solutions to notebook 08's exercises (notebooks/solutions/08_real_weights.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

import minigemma
from minigemma.loading.ckpt import ckpt_names
from minigemma.loading.weights import empty_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.08_real_weights")  # file names start with a digit


@pytest.mark.parametrize("name", ["gemma-2b", "gemma-7b", "gemma3-270m", "tiny-gemma", "tiny-gemma3"])
def test_count_parameters(name):
    config = minigemma.get_config(name)
    assert sol.count_parameters(config) == empty_model(config).num_parameters()


def test_count_parameters_matches_the_report():
    assert sol.count_parameters(minigemma.get_config("gemma-2b")) == 2_506_172_416
    assert sol.count_parameters(minigemma.get_config("gemma-7b")) == 8_537_680_896


@pytest.mark.parametrize("name", ["tiny-gemma", "tiny-gemma-mha"])
def test_split_qkv_inverts_the_fusion(name):
    config = minigemma.get_config(name)
    model = minigemma.Gemma(config)
    attn = model.blocks[1].attn
    qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
    q, k, v = sol.split_qkv(qkv, config)
    for got, layer in ((q, attn.q_proj), (k, attn.k_proj), (v, attn.v_proj)):
        assert torch.equal(got, layer.weight)
    # The same row ranges the loader uses (as written in its name table).
    assert ckpt_names(config)["blocks.1.attn.k_proj.weight"].endswith(f"[{q.shape[0]}:{q.shape[0] + k.shape[0]}]")
    with pytest.raises(ValueError, match="rows"):
        sol.split_qkv(qkv[:-1], config)


def test_row_errors_grow_with_outliers():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g)
    w[7, 3] = 40.0  # one outlier makes row 7's grid 10x coarser
    errors = sol.row_errors(w)
    assert errors.shape == (64,)
    assert int(errors.argmax()) == 7 and errors[7] > 3 * errors.median()
    assert errors.median() < 0.01  # ordinary Gaussian rows lose well under 1%
    assert int(sol.outlier_ratio(w).argmax()) == 7
