"""The solutions to notebook 14's exercises (notebooks/solutions/14_pretraining.py) work.

Tiny models on made-up token streams, so every test takes a second or two on a CPU.
"""

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

import minigemma

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.14_pretraining")  # file names start with a digit

# tiny-pretrain's layout (Gemma 3, local and global layers), smaller still.
CONFIG = minigemma.get_config("tiny-pretrain").replace(
    name="tiny-pretrain-test", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
    max_position_embeddings=64, sliding_window=8, sliding_window_pattern=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def stream(n: int = 4000, seed: int = 0) -> torch.Tensor:
    """A learnable stream: a 16-token phrase over and over, one token in eight replaced at random."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(4, 20).repeat(n // 16 + 1)[:n]
    noise = torch.rand(n, generator=g) < 0.125
    return torch.where(noise, torch.randint(4, CONFIG.vocab_size, (n,), generator=g), ids)


def windows(ids: torch.Tensor, seq: int = 16) -> torch.Tensor:
    return ids[: len(ids) // seq * seq].view(-1, seq)


def bigram_mle_loss(train_ids, val_windows) -> float:
    pairs = list(zip(train_ids.tolist(), train_ids[1:].tolist()))
    out = []
    for row in val_windows.tolist():
        for b, c in zip(row, row[1:]):
            following = [y for x, y in pairs if x == b]
            out.append(-math.log(following.count(c) / len(following)))
    return sum(out) / len(out)


def test_trigram_sees_what_a_bigram_cannot():
    # After 5 comes 6 or 7, half and half; the token before the 5 says which.
    ids = torch.tensor([5, 6, 5, 7] * 100)
    w = windows(ids, 16)
    bigram = bigram_mle_loss(ids, w)
    assert bigram == pytest.approx(8 / 15 * math.log(2), rel=1e-9)  # 8 of the 15 scored tokens follow a 5
    trigram = sol.trigram_loss(ids, w, vocab_size=8, weights=(0.98, 0.01, 0.01))
    assert trigram < 0.3 * bigram


def test_trigram_reduces_to_its_parts():
    ids = stream(600)
    w = windows(stream(160, seed=1), 16)
    # Unigram weight only: the add-one unigram, by hand.
    counts = torch.bincount(ids, minlength=CONFIG.vocab_size).double()
    p1 = (counts + 1) / (len(ids) + CONFIG.vocab_size)
    expected = float(-p1[w[:, 1:].reshape(-1)].log().mean())
    assert sol.trigram_loss(ids, w, CONFIG.vocab_size, (0.0, 0.0, 1.0)) == pytest.approx(expected, rel=1e-9)
    # Bigram weight only, on windows whose every pair occurs in training: the plain bigram ratio.
    seen = windows(ids[:320], 16)
    assert sol.trigram_loss(ids, seen, CONFIG.vocab_size, (0.0, 1.0, 0.0)) == pytest.approx(
        bigram_mle_loss(ids, seen), rel=1e-9)


def test_trigram_unseen_contexts_stay_finite():
    ids = stream(600)
    w = torch.randint(4, CONFIG.vocab_size, (4, 16), generator=torch.Generator().manual_seed(3))
    loss = sol.trigram_loss(ids, w, CONFIG.vocab_size)
    assert math.isfinite(loss) and loss < 3 * math.log(CONFIG.vocab_size)
    with pytest.raises(ValueError, match="unigram"):
        sol.trigram_loss(ids, torch.tensor([[60, 61, 62]]), CONFIG.vocab_size, (1.0, 0.0, 0.0))


def test_compare_schedules():
    ids = stream()
    result = sol.compare_schedules(CONFIG, ids, windows(stream(800, seed=1)), steps=40, lr=1e-2, batch=8, seq=16)
    assert set(result) == {"cosine", "constant"}
    (cos_loss, cos), (const_loss, const) = result["cosine"], result["constant"]
    warmup = 40 // 10
    assert const.lr[warmup:] == [1e-2] * (40 - warmup)
    assert cos.lr[warmup] == pytest.approx(1e-2) and cos.lr[-1] < 1e-3
    assert cos.lr[:warmup] == const.lr[:warmup]
    assert cos.loss[0] == const.loss[0]  # the same initial weights and first batch
    for loss in (cos_loss, const_loss):
        assert loss < 0.6 * math.log(CONFIG.vocab_size)  # both learned the phrase


def test_size_sweep():
    ids, val = stream(), windows(stream(800, seed=1))
    rows = sol.size_sweep(CONFIG, [16, 32], ids, val, steps=10, lr=1e-2, batch=8, seq=16)
    for h, (params, steps, loss) in zip([16, 32], rows):
        built = minigemma.Gemma(CONFIG.replace(hidden_size=h, intermediate_size=2 * h))
        assert params == built.num_parameters() and steps == 10
        assert math.isfinite(loss)
    assert rows[0][0] < rows[1][0]
    equal = sol.size_sweep(CONFIG, [16, 32], ids, val, steps=10, lr=1e-2, batch=8, seq=16, equal_compute=True)
    (small, small_steps, _), (large, large_steps, _) = equal
    assert large_steps == 10 and small_steps == round(10 * large / small) > 10
