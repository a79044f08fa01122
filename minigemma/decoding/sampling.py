"""Choosing the next token from the model's logits.

Greedy decoding takes the most likely token. Sampling draws from the softmax, reshaped by
three knobs, applied in this order (as in transformers' generate):
  temperature  divides the logits: < 1 sharpens the distribution, > 1 flattens it;
  top-k        keeps only the k most likely tokens;
  top-p        keeps the smallest set of most likely tokens whose probabilities add up to p
               ("nucleus sampling", Holtzman et al., 2019).

The limits are exact, not numerical accidents: as the temperature goes to 0 the distribution
tends to the argmax, so a temperature too small for float32 (below GREEDY_BELOW) *is* greedy
decoding, and top_k=1 is greedy at any temperature. An infinite temperature is refused: its
limit, a uniform draw over 262k tokens, is never what anyone wants.
"""

from __future__ import annotations

import numbers

import torch

from ..errors import ArgumentError

# The logits are divided in float32. Below float32's smallest normal number (1.2e-38) a
# temperature can round to 0 or be flushed to zero (some CPUs do that with denormals), and
# 0/0 is NaN; so below it we take the limit T -> 0 directly: greedy. Above it nothing can
# overflow, because the largest logit is subtracted first (every quotient is <= 0).
GREEDY_BELOW = torch.finfo(torch.float32).tiny
LARGEST = torch.finfo(torch.float32).max  # a larger temperature is inf once it is float32


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)  # True is an int in Python


def is_whole(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ArgumentError for a setting that is the wrong type or out of range."""
    if not _is_real(temperature):
        raise ArgumentError(f"temperature must be a number (0 means greedy), got {temperature!r} "
                            f"({type(temperature).__name__})")
    if not temperature >= 0:  # also catches NaN
        raise ArgumentError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if temperature > LARGEST:
        raise ArgumentError(f"temperature must be finite, got {temperature}: as T grows every token becomes "
                            "equally likely; use a temperature between 0 and about 2")
    if top_k is not None and (not is_whole(top_k) or top_k < 1):
        raise ArgumentError(f"top_k must be a whole number >= 1 (or None to keep every token), got {top_k!r}")
    if top_p is not None and (not _is_real(top_p) or not 0 < top_p <= 1):
        raise ArgumentError(f"top_p must be in (0, 1] (or None to keep every token), got {top_p!r}")


def is_greedy(temperature: float, top_k: int | None) -> bool:
    """True where sampling has only one possible outcome, the most likely token."""
    return temperature < GREEDY_BELOW or top_k == 1


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """The distribution actually sampled from: (..., vocab) probabilities, zero where cut off.

    Greedy (temperature 0, or below GREEDY_BELOW, or top_k=1) gives all the mass to the argmax.
    """
    check_sampling(temperature, top_k, top_p)
    return _probs(logits, temperature, top_k, top_p)


def _probs(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    # next_token_probs without the argument check: generation checks once per call, not per token.
    logits = logits.float()
    if is_greedy(temperature, top_k):
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    if top_k is not None and top_k < logits.shape[-1]:
        # Cut before dividing: dividing by T > 0 keeps the ranking, and a huge T could round
        # distinct logits to the same value and let more than k tokens through.
        kth = logits.topk(int(top_k), dim=-1).values[..., -1:]  # the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    # Subtract the largest logit first: softmax does not change, and a tiny T cannot overflow to inf.
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    probs = logits.softmax(-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above each one
        # A token stays if the tokens above it have not yet reached p: the token that crosses p is kept.
        keep_sorted = before < top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = probs * keep
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of logits (batch, vocab) -> (batch,)."""
    check_sampling(temperature, top_k, top_p)
    return sample_checked(logits, temperature, top_k, top_p, generator)


def sample_checked(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """sample_next for settings already checked (check_sampling): the generation loop calls it per token."""
    if is_greedy(temperature, top_k):
        return logits.argmax(-1)
    probs = _probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
