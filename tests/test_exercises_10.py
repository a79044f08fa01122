"""The solutions to notebook 10's exercises (notebooks/solutions/10_sampling.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.10_sampling")  # file names start with a digit


def test_min_p_keeps_tokens_above_a_fraction_of_the_favourite():
    probs = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    out = sol.min_p_probs(probs.log(), min_p=0.25)  # threshold 0.125: no probability sits on the edge
    torch.testing.assert_close(out, torch.tensor([0.5, 0.2, 0.15, 0, 0]) / 0.85)
    assert torch.equal(sol.min_p_probs(probs.log(), 0.0) > 0, probs > 0)
    assert (sol.min_p_probs(probs.log(), 1.0) > 0).sum() == 1
    with pytest.raises(ValueError, match="min_p"):
        sol.min_p_probs(probs.log(), 1.5)


def test_min_p_matches_transformers():
    from transformers.generation.logits_process import MinPLogitsWarper

    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0)) * 3
    ours = sol.min_p_probs(logits, 0.1)
    theirs = MinPLogitsWarper(min_p=0.1)(None, logits.clone()).softmax(-1)
    torch.testing.assert_close(ours, theirs)


def test_temperature_for_entropy():
    logits = torch.randn(5000, generator=torch.Generator().manual_seed(1)) * 2
    for target in [0.5, 3.0, 10.0]:
        t = sol.temperature_for_entropy(logits, target)
        assert abs(float(sol.entropy_bits((logits / t).softmax(-1))) - target) < 1e-3
    with pytest.raises(ValueError, match="outside"):
        sol.temperature_for_entropy(logits, 20.0)  # more than log2(5000) = 12.3 bits is impossible


def test_repetition_penalty_matches_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(2))
    previous = [3, 7, 7, 20, 41]
    ours = sol.repetition_penalty(logits, previous, 1.3)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([previous]), logits.clone())
    torch.testing.assert_close(ours, theirs)
    assert torch.equal(sol.repetition_penalty(logits, [], 1.3), logits)
    probs_before, probs_after = logits.softmax(-1), ours.softmax(-1)
    assert (probs_after[0, previous] < probs_before[0, previous]).all()  # every seen token lost mass
