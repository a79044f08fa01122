"""Solutions to the exercises of notebook 10 (sampling)."""

from __future__ import annotations

import torch

from minigemma.decoding.sampling import next_token_probs


# Exercise 1: min-p sampling.
def min_p_probs(logits: torch.Tensor, min_p: float, temperature: float = 1.0) -> torch.Tensor:
    """Keep the tokens whose probability is at least `min_p` times the top token's, renormalise.

    Like top-p it adapts to the model's confidence (a sure model keeps few tokens, an unsure
    one many), but the threshold scales with the favourite instead of a fixed total mass
    (Nguyen et al., 2024, "Turning up the heat: min-p sampling").
    """
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    p = next_token_probs(logits, temperature)
    keep = p >= min_p * p.max(dim=-1, keepdim=True).values
    p = p * keep
    return p / p.sum(dim=-1, keepdim=True)


def entropy_bits(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-30).log2()).sum(-1)


# Exercise 2: the temperature that gives a chosen entropy.
def temperature_for_entropy(logits: torch.Tensor, target_bits: float, lo: float = 1e-3, hi: float = 100.0,
                            steps: int = 60) -> float:
    """Bisection on T: the entropy of softmax(z / T) never decreases as T grows
    (its derivative is Var(z) / T^3 under the tempered distribution), so halving works."""
    logits = logits.float()
    h = lambda t: float(entropy_bits((logits / t).softmax(-1)))  # noqa: E731
    if not h(lo) <= target_bits <= h(hi):
        raise ValueError(f"target {target_bits} bits is outside [{h(lo):.3f}, {h(hi):.3f}] reachable with T in [{lo}, {hi}]")
    for _ in range(steps):
        mid = (lo * hi) ** 0.5  # bisect on a log scale: T spans orders of magnitude
        lo, hi = (mid, hi) if h(mid) < target_bits else (lo, mid)
    return (lo * hi) ** 0.5


# Exercise 3: a repetition penalty.
def repetition_penalty(logits: torch.Tensor, previous_ids: list[int], penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al., 2019, section 4.1): make tokens already in the text less
    likely by dividing their logit by `penalty` when positive and multiplying when negative
    (dividing a negative logit would *raise* it)."""
    if penalty <= 0:
        raise ValueError(f"penalty must be > 0 (1 means no penalty), got {penalty}")
    logits = logits.clone()
    seen = torch.tensor(sorted(set(previous_ids)), dtype=torch.long)
    if seen.numel():
        z = logits[..., seen]
        logits[..., seen] = torch.where(z > 0, z / penalty, z * penalty)
    return logits
