"""The solutions to notebook 12's exercises (notebooks/solutions/12_logit_lens.py) work."""

import importlib
import sys
from pathlib import Path

import torch

from minigemma.explore.inspection import ablate_head, lens_filter, run_with_cache
from reference import random_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.12_logit_lens")


def test_lens_rank():
    model = random_model()
    ids = [2, 40, 99, 7, 300, 12]
    logits, cache = run_with_cache(model, ids, lens_filter)
    top = int(logits[0, 3].argmax())
    ranks = sol.lens_rank(model, cache, position=3, target_id=top)
    assert len(ranks) == model.config.num_layers + 1 and ranks[-1] == 0
    worst = int(logits[0, 3].argmin())
    assert sol.lens_rank(model, cache, 3, worst)[-1] == model.config.vocab_size - 1


def test_patching_curve():
    model = random_model()
    clean, corrupt = [2, 40, 99, 7, 300, 12], [2, 40, 55, 7, 300, 12]  # they differ at position 2 only
    answer = 17
    curve = sol.patching_curve(model, clean, corrupt, position=2, answer_id=answer)
    with torch.no_grad():
        p_clean = float(model(torch.tensor([clean]))[0, -1].softmax(-1)[answer])
    # Before layer 0 the differing position is all there is to fix: patching it restores the clean run.
    assert abs(curve[0] - p_clean) < 1e-6
    assert len(curve) == model.config.num_layers


def test_copy_loss_real_model(gemma3_270m):
    model, _ = gemma3_270m
    g = torch.Generator().manual_seed(0)
    r = torch.randint(1000, 20_000, (20,), generator=g).tolist()
    ids = [2] + r + r
    plain = sol.copy_loss(model, ids, 20)
    assert plain < 3.0  # copying works: far below the ~15 nats of an unseen random token
    # Ablating every head of every layer's attention destroys copying.
    everything = {}
    for layer in range(model.config.num_layers):
        everything.update(ablate_head(layer, [0, 1, 2, 3]))
    assert sol.copy_loss(model, ids, 20, everything) > plain + 3
