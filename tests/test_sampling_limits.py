"""Sampling at the edges: tiny and huge temperatures, top_k=1, and settings of the wrong type."""

import pytest
import torch

import minigemma
from minigemma.errors import ArgumentError
from minigemma.decoding.generate import generate_ids
from minigemma.decoding.sampling import next_token_probs, sample_next

VOCAB = 262_144  # Gemma 3's vocabulary: the size where a flat distribution hides the favourite


@pytest.fixture
def logits():
    return torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0)) * 8


@pytest.mark.parametrize("temperature", [1e-40, 1e-45, 1e-300, 5e-324, torch.finfo(torch.float32).tiny, 1e-30])
def test_a_tiny_temperature_is_greedy(logits, temperature):
    probs = next_token_probs(logits, temperature)
    assert torch.isfinite(probs).all()
    assert torch.equal(probs.argmax(-1), logits.argmax(-1)) and torch.equal(probs.max(-1).values, torch.ones(3))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, temperature, generator=g), logits.argmax(-1))


def test_a_tiny_temperature_splits_an_exact_tie_like_the_limit():
    # Above GREEDY_BELOW (float32's smallest normal number) the division really happens: its
    # T -> 0 limit shares the mass between tied maxima.
    probs = next_token_probs(torch.tensor([1.0, 3.0, 3.0, 2.0]), 1e-30)
    assert probs.tolist() == [0.0, 0.5, 0.5, 0.0]


@pytest.mark.parametrize("temperature", [1e-40, 1.0, 1e30, 3e38])
def test_top_k_1_is_greedy_at_any_temperature(logits, temperature):
    probs = next_token_probs(logits, temperature, top_k=1)
    assert torch.equal(probs, torch.nn.functional.one_hot(logits.argmax(-1), VOCAB).float())
    assert torch.equal(sample_next(logits, temperature, top_k=1), logits.argmax(-1))


def test_top_k_keeps_k_tokens_however_flat_the_temperature(logits):
    # 1e30 rounds every logit / T to about the same number: the cut must not let more through.
    probs = next_token_probs(logits, 1e30, top_k=5)
    assert ((probs > 0).sum(-1) == 5).all()
    assert torch.allclose(probs.max(-1).values, torch.full((3,), 0.2))


@pytest.mark.parametrize("temperature", [float("inf"), 1e39, 1e300])
def test_an_infinite_temperature_is_refused(temperature):
    with pytest.raises(ArgumentError, match="temperature must be finite"):
        next_token_probs(torch.zeros(4), temperature)
    with pytest.raises(ArgumentError, match="temperature must be finite"):
        sample_next(torch.zeros(1, 4), temperature, top_k=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature="0.7"), "temperature must be a number"),
    (dict(temperature=True), "temperature must be a number"),
    (dict(temperature=None), "temperature must be a number"),
    (dict(top_k=True), "top_k must be a whole number"),
    (dict(top_k="5"), "top_k must be a whole number"),
    (dict(top_k=2.5), "top_k must be a whole number"),
    (dict(top_p=True), r"top_p must be in \(0, 1\]"),
    (dict(top_p="0.9"), r"top_p must be in \(0, 1\]"),
    (dict(top_p=float("nan")), r"top_p must be in \(0, 1\]"),
])
def test_settings_of_the_wrong_type_are_refused(kwargs, message):
    kwargs = {"temperature": 1.0, **kwargs}
    with pytest.raises(ArgumentError, match=message):
        next_token_probs(torch.zeros(4), **kwargs)
    with pytest.raises(ArgumentError, match=message):
        sample_next(torch.zeros(1, 4), **kwargs)


def test_numpy_numbers_are_accepted():
    np = pytest.importorskip("numpy")
    probs = next_token_probs(torch.tensor([0.0, 1.0, 2.0]), np.float32(0.5), top_k=np.int64(2),
                             top_p=np.float64(0.99))
    assert probs[0] == 0 and torch.isclose(probs.sum(), torch.tensor(1.0))


def test_ordinary_temperatures_are_unchanged(logits):
    for t in (0.3, 1.0, 1.7):
        torch.testing.assert_close(next_token_probs(logits, t), (logits / t).softmax(-1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=2**64), r"seed must be a whole number from 0 to 2\*\*64 - 1"),
    (dict(seed=-1), r"seed must be a whole number from 0 to 2\*\*64 - 1"),
    (dict(seed="1"), "seed must be a whole number"),
    (dict(max_new_tokens=-1), "max_new_tokens must be a whole number >= 0"),
    (dict(max_new_tokens=2.0), "max_new_tokens must be a whole number >= 0"),
    (dict(max_new_tokens=True), "max_new_tokens must be a whole number >= 0"),
])
def test_generation_settings_are_checked(kwargs, message):
    model = minigemma.Gemma(minigemma.get_config("tiny-gemma"))
    with pytest.raises(ArgumentError, match=message):
        list(generate_ids(model, [2, 5], **{"max_new_tokens": 3, "temperature": 1.0, **kwargs}))


def test_the_largest_seed_works():
    model = minigemma.Gemma(minigemma.get_config("tiny-gemma"))
    assert len(list(generate_ids(model, [2, 5], max_new_tokens=2, temperature=1.0, seed=2**64 - 1))) == 2


def test_a_tiny_temperature_generates_the_greedy_text(gemma3_270m):
    model, tok = gemma3_270m
    prompt = "The capital of France is"
    greedy = minigemma.generate(model, tok, prompt, max_new_tokens=8)
    assert minigemma.generate(model, tok, prompt, max_new_tokens=8, temperature=1e-40, seed=0) == greedy
    assert minigemma.generate(model, tok, prompt, max_new_tokens=8, temperature=50.0, top_k=1, seed=0) == greedy


def test_settings_are_checked_once_per_call_not_per_token(monkeypatch):
    """generate and generate_ids check their sampling settings once, before any work; the loop
    samples with the checked settings (sampling.sample_checked)."""
    import minigemma
    import minigemma.decoding.generate as gen
    import minigemma.decoding.sampling as sampling
    from reference import random_model

    calls = []
    real = sampling.check_sampling
    counting = lambda *a, **k: calls.append(1) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(sampling, "check_sampling", counting)
    monkeypatch.setattr(gen, "check_sampling", counting)
    model = random_model("tiny-gemma")
    assert len(list(gen.generate_ids(model, [2, 5, 6], 6, temperature=0.7, top_p=0.9, seed=1))) == 6
    assert len(calls) == 1

    class Tok:  # the least a tokenizer needs here
        eos_id, end_of_turn_id = 1, 107

        def decode(self, ids):
            return "x" * len(ids)

    calls.clear()
    assert minigemma.generate(model, Tok(), [2, 5, 6], max_new_tokens=6, temperature=0.7, seed=1)
    assert len(calls) == 1
