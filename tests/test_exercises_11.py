"""The solutions to notebook 11's exercises (notebooks/solutions/11_attention_explorer.py) work."""

import importlib
import sys
from pathlib import Path

import numpy as np
import torch

from minigemma import get_config
from minigemma.explore import viz
from minigemma.explore.inspection import run_with_cache
from reference import random_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.11_attention_explorer")


def test_prev_token_scores_match_the_package():
    model = random_model()
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(0))
    _, cache = run_with_cache(model, ids, "hook_pattern")
    patterns = [cache[f"blocks.{i}.attn.hook_pattern"][0] for i in range(model.config.num_layers)]
    np.testing.assert_allclose(sol.prev_token_scores(cache, model.config.num_layers),
                               viz.head_summary(patterns, "previous token"), rtol=1e-6)


def test_induction_scores_shape_and_meaning():
    model = random_model()
    scores = sol.induction_scores(model, period=6, seed=0)
    assert scores.shape == (6, 4) and ((0 <= scores) & (scores <= 1)).all()
    ids = sol.repeated_tokens(5, seed=3)
    assert len(ids) == 11 and ids[0] == 2 and ids[1:6] == ids[6:]


def test_induction_heads_in_the_real_model(gemma3_270m):
    model, _ = gemma3_270m
    scores = sol.induction_scores(model, period=20, seed=0)
    assert scores.max() > 0.5  # at least one head attends mostly to "the token after last time"


def test_receptive_field_by_perturbation():
    model = random_model()
    cfg = model.config  # window 8; layers 0, 1 local, layer 2 global
    assert [sol.receptive_field(cfg, n) for n in range(4)] == [0, 7, 14, None]
    assert sol.receptive_field(get_config("gemma3-270m"), 5) == 5 * 511
    assert sol.receptive_field(get_config("gemma-2b"), 1) is None  # Gemma 1: every layer global
    ids = torch.randint(0, 512, (1, 30), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % 512
    names = [f"blocks.{i}.hook_resid_post" for i in range(3)]
    _, a = run_with_cache(model, ids, names)
    _, b = run_with_cache(model, changed, names)
    for layer, name in enumerate(names):
        moved = ((a[name] - b[name]).abs().amax(-1) > 0)[0]  # which positions felt token 0 change
        reach = sol.receptive_field(cfg, layer + 1)
        expected = torch.arange(30) <= (reach if reach is not None else 30)
        assert torch.equal(moved, expected), (layer, moved)
