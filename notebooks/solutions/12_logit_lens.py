"""Solutions to the exercises of notebook 12 (logit lens, ablation, patching)."""

from __future__ import annotations

import torch

from minigemma.explore.inspection import hooks, logit_lens, patch_position, run_with_cache


# Exercise 1: the rank of one token through the layers.
def lens_rank(model, cache, position: int, target_id: int) -> list[int]:
    """For each row of the lens (embedding, layer 0, ...), how many tokens beat `target_id`
    at `position` (0 = it is the top prediction)."""
    logits = logit_lens(model, cache, positions=[position])[:, 0, 0]  # (layers + 1, vocab)
    target = logits[:, target_id : target_id + 1]
    return (logits > target).sum(-1).tolist()


# Exercise 2: activation patching, layer by layer.
@torch.no_grad()
def patching_curve(model, clean_ids: list[int], corrupt_ids: list[int], position: int, answer_id: int) -> list[float]:
    """Probability of `answer_id` after the corrupted prompt when the residual stream entering
    layer L at `position` is copied from the clean prompt, for L = 0 .. layers - 1.

    Where the curve drops is where the information at `position` has already moved on to
    other positions (Meng et al., 2022, "Locating and editing factual associations", causal tracing).
    """
    if len(clean_ids) != len(corrupt_ids):
        raise ValueError("clean and corrupt prompts must have the same number of tokens")
    names = [f"blocks.{i}.hook_resid_pre" for i in range(model.config.num_layers)]
    _, clean = run_with_cache(model, clean_ids, names)
    curve = []
    for name in names:
        with hooks(model, patch_position(name, position, clean)):
            logits = model(torch.tensor([corrupt_ids]), last_only=True)[0, -1]
        curve.append(float(logits.float().softmax(-1)[answer_id]))
    return curve


# Exercise 3: the loss on a repeated sequence, with and without one head.
@torch.no_grad()
def copy_loss(model, ids: list[int], period: int, ablate: dict | None = None) -> float:
    """Mean cross-entropy (nats) over the second copy of `ids` = [BOS] + r + r (its first token
    left out), where a model that copies from the first copy can be nearly certain. `ablate` is a hook dict
    such as `ablate_head(layer, head)`."""
    with hooks(model, ablate or {}):
        logits = model(torch.tensor([ids]))[0]
    logp = logits[:-1].float().log_softmax(-1)
    nll = -logp.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    # nll[j] scores ids[j + 1]. The second copy's first token (ids[period + 1]) cannot be
    # guessed; from ids[period + 2] on, the earlier copy says what comes next.
    return float(nll[period + 1:].mean())
