"""Solutions to the exercises of notebook 14 (pretraining a tiny Gemma from scratch)."""

from __future__ import annotations

import math
from collections import Counter

import torch

import minigemma
from minigemma.model.config import GemmaConfig
from minigemma.train import History, lm_loss, text_batches, train


# The notebook's helpers, so that these functions run on their own.
def init_weights(model: minigemma.Gemma, std: float = 0.02) -> None:
    """Every matrix from N(0, std^2); the 1-D norm gains stay 0, the identity in Gemma's (1 + w)."""
    for p in model.parameters():
        if p.ndim >= 2:
            torch.nn.init.normal_(p, std=std)


@torch.no_grad()
def val_loss(model: minigemma.Gemma, windows: torch.Tensor, batch: int = 64) -> float:
    """Mean cross-entropy (nats) of every token after the first of each window (windows: (n, seq))."""
    return sum(float(lm_loss(model, w, w)) * len(w) for w in windows.split(batch)) / len(windows)


def pretrain(config: GemmaConfig, train_ids: torch.Tensor, windows: torch.Tensor, steps: int, lr: float, *,
             schedule: str = "cosine", batch: int = 16, seq: int = 64, weight_decay: float = 0.1,
             seed: int = 0) -> tuple[minigemma.Gemma, History, float]:
    """A fresh model of `config`, initialised and trained as in the notebook: (model, history, val loss)."""
    torch.manual_seed(seed)
    model = minigemma.Gemma(config)
    init_weights(model)
    history = train(model, text_batches(train_ids, batch, seq, seed=seed), steps=steps, lr=lr,
                    warmup=steps // 10, schedule=schedule, weight_decay=weight_decay, seed=seed, progress=False)
    return model, history, val_loss(model, windows)


# Exercise 1: an interpolated trigram baseline.
def trigram_loss(train_ids, windows: torch.Tensor, vocab_size: int,
                 weights: tuple[float, float, float] = (0.6, 0.3, 0.1)) -> float:
    """Mean negative log-likelihood (nats) of every token after the first of each window under

        P(c | a, b) = l3 P3(c | a, b) + l2 P2(c | b) + l1 P1(c)    (Jelinek and Mercer, 1980)

    P3 and P2 are ratios of counts in `train_ids`, P1 is add-one smoothed, so never zero. When a
    context never occurred in training its estimate says nothing: its term is dropped and the other
    weights renormalised, so the mixture still sums to one. The first scored token of a window has one
    token of context only, and mixes P2 and P1 the same way.

    On the notebook's corpus it beats the bigram, and also the tiny Gemma after its 400 steps:
    with 150k training tokens, exact counts of every three-token sequence are hard to beat. But the
    table grows with each new context, and at four or eight tokens of context almost every one is
    unseen, while a network shares what it learns between contexts; with more data and compute
    the network wins.
    """
    ids = torch.as_tensor(train_ids).tolist()
    l3, l2, l1 = weights
    n = len(ids)
    unigrams = Counter(ids)
    bigrams, bigram_contexts = Counter(zip(ids, ids[1:])), Counter(ids[:-1])
    trigrams, trigram_contexts = Counter(zip(ids, ids[1:], ids[2:])), Counter(zip(ids, ids[1:-1]))

    total, scored = 0.0, 0
    for row in windows.tolist():
        for t in range(1, len(row)):
            a, b, c = (row[t - 2] if t >= 2 else None), row[t - 1], row[t]
            terms = [(l1, (unigrams[c] + 1) / (n + vocab_size))]
            if bigram_contexts[b]:
                terms.append((l2, bigrams[b, c] / bigram_contexts[b]))
            if a is not None and trigram_contexts[a, b]:
                terms.append((l3, trigrams[a, b, c] / trigram_contexts[a, b]))
            weight = sum(w for w, _ in terms)
            p = sum(w * q for w, q in terms) / weight if weight else 0.0
            if p <= 0:
                raise ValueError(f"probability 0 for token {c} after {(a, b)}: give the unigram a weight above 0")
            total -= math.log(p)
            scored += 1
    return total / scored


# Exercise 2: a constant learning rate against the cosine.
def compare_schedules(config: GemmaConfig, train_ids: torch.Tensor, windows: torch.Tensor, steps: int, lr: float,
                      **settings) -> dict[str, tuple[float, History]]:
    """{"cosine": (val loss, history), "constant": (val loss, history)}: the same initial weights
    (seed), batches and warmup; only the learning rate after the warmup differs.

    The cosine's last steps take small steps: each update's noise (a batch is a noisy estimate of the
    gradient) shrinks with the learning rate, so the weights settle into the minimum instead of
    bouncing around it. A constant rate usually ends higher for the same number of steps.
    """
    out = {}
    for schedule in ("cosine", "constant"):
        _, history, loss = pretrain(config, train_ids, windows, steps, lr, schedule=schedule, **settings)
        out[schedule] = (loss, history)
    return out


# Exercise 3: validation loss against model size.
def size_sweep(config: GemmaConfig, hidden_sizes: list[int], train_ids: torch.Tensor, windows: torch.Tensor,
               steps: int, lr: float, *, equal_compute: bool = False, **settings) -> list[tuple[int, int, float]]:
    """(parameters, steps, val loss) of `config` at each hidden size (intermediate_size = 2 x hidden).

    head_dim stays what the config says (pitfall 8: it is not hidden // heads). With equal_compute,
    `steps` is for the largest model and each smaller one trains proportionally longer, so that
    parameters x tokens (compute, ~6ND) is the same for all. At equal steps the largest model usually
    wins; at equal compute a smaller model that sees more tokens can win (Hoffmann et al., 2022).
    """
    configs = [config.replace(name=f"{config.name}-h{h}", hidden_size=h, intermediate_size=2 * h)
               for h in hidden_sizes]
    sizes = [minigemma.Gemma(c).num_parameters() for c in configs]
    out = []
    for c, size in zip(configs, sizes):
        n_steps = round(steps * max(sizes) / size) if equal_compute else steps
        _, _, loss = pretrain(c, train_ids, windows, n_steps, lr, **settings)
        out.append((size, n_steps, loss))
    return out
