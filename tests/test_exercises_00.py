"""The solutions to notebook 00's exercises work (and agree with the package)."""

import importlib
import sys
from pathlib import Path

import torch

import minigemma

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.00_quickstart")


def test_top_tokens_are_sorted_probabilities(gemma3_270m):
    model, tok = gemma3_270m
    top = sol.top_tokens(model, tok, "The capital of France is", 5)
    assert len(top) == 5
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    ids = torch.tensor([tok.encode("The capital of France is", add_bos=True)])
    assert top[0][0] == tok.decode([int(model(ids)[0, -1].argmax())])


def test_greedy_by_hand_equals_cached_generation(gemma3_270m):
    model, tok = gemma3_270m
    for prompt in ["def add(a, b):", "Water boils at"]:
        assert sol.greedy_by_hand(model, tok, prompt, 10) == minigemma.generate(model, tok, prompt, max_new_tokens=10)
