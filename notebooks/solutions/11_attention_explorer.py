"""Solutions to the exercises of notebook 11 (looking at attention)."""

from __future__ import annotations

import numpy as np
import torch

from minigemma import GemmaConfig
from minigemma.explore.inspection import run_with_cache


# Exercise 1: previous-token scores straight from the cache.
def prev_token_scores(cache, num_layers: int) -> np.ndarray:
    """(layers, heads): mean weight that query q puts on key q - 1, over queries 1.. (batch 0)."""
    scores = []
    for layer in range(num_layers):
        p = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # (heads, q, k)
        scores.append(torch.diagonal(p, offset=-1, dim1=-2, dim2=-1).mean(-1))
    return torch.stack(scores).float().numpy()


# Exercise 2: induction heads.
def repeated_tokens(period: int, seed: int = 0, low: int = 1000, high: int = 20_000) -> list[int]:
    """BOS, then `period` random token ids, then the same ids again."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(low, high, (period,), generator=g).tolist()
    return [2] + r + r


def induction_scores(model, period: int = 20, seed: int = 0) -> np.ndarray:
    """(layers, heads): on repeated random tokens, the mean weight a query in the second copy puts
    on the token right *after* its earlier occurrence, the token an induction head copies
    (Olsson et al., 2022, "In-context learning and induction heads")."""
    high = min(20_000, model.config.vocab_size)  # ordinary tokens: skip the control and byte ids at the start
    ids = repeated_tokens(period, seed, low=min(1000, high // 2), high=high)
    _, cache = run_with_cache(model, ids, "hook_pattern", last_only=True)
    q = torch.arange(period + 1, 2 * period + 1)  # positions of the second copy
    k = q - period + 1                            # the token after the same token's first occurrence
    scores = [cache[f"blocks.{i}.attn.hook_pattern"][0][:, q, k].mean(-1) for i in range(model.config.num_layers)]
    return torch.stack(scores).float().numpy()


# Exercise 3: how far back can information travel?
def receptive_field(config: GemmaConfig, layers: int) -> int | None:
    """Positions back that the residual stream after `layers` layers can have read from;
    None means the whole context (a global layer was among them).

    A local layer lets query q read keys q - (window - 1) .. q, so each one extends the reach
    by window - 1 positions; stacked local layers add up.
    """
    reach = 0
    for layer in range(layers):
        if not config.is_local_layer(layer):
            return None
        reach += config.sliding_window - 1
    return reach
