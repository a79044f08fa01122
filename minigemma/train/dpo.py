"""Direct Preference Optimization (Rafailov et al. 2023): learn from pairs of answers, one preferred.

After supervised fine-tuning, Gemma was tuned on human preferences with RLHF (Gemma report,
"Instruction Tuning"): a reward model is trained on pairs (prompt, chosen, rejected) under the Bradley-Terry
model, p(chosen > rejected) = sigmoid(r(chosen) - r(rejected)), then the policy samples answers
and is updated by reinforcement learning (a REINFORCE variant) to raise their reward, with a KL
penalty that keeps it near the SFT model. That is two models, sampling inside the loop, and RL's
noisy gradients.

DPO removes the reward model and the sampling. The KL-regularized objective has a closed-form
optimum, pi(y|x) proportional to pi_ref(y|x) exp(r(x, y) / beta), so the reward that a policy
implies is r = beta log(pi / pi_ref) + (a term that cancels within a pair). Put into the
Bradley-Terry likelihood, the preference pairs train the policy directly (eq. 7):

    loss = -log sigmoid(beta [(log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))])

a classification loss on log-probability ratios. Unlike RLHF it learns only from the fixed pairs
(offline), never from answers the policy writes itself; it is the simplest honest stand-in for
that stage at notebook scale. The reference is the model DPO starts from (the SFT model); its
log-probabilities never change, so `dpo_batches` computes them once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from ..model.gemma import Gemma
from ..tokenizer import Tokenizer
from .data import Example, pad, sft_example
from .loop import autocast
from .loss import sequence_logprob

Pair = tuple[Example, Example]  # (chosen, rejected), each scored on the model's turn only
DPOBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ids, labels (2B, seq), reference log-probs (2B,)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Mean DPO loss over pairs; every argument is a (pairs,) tensor of sequence log-probabilities.

    beta is the KL penalty's weight: small lets the policy move far from the reference. When the
    policy is the reference the loss is log 2 (sigmoid(0) = 1/2) and its gradient is not zero.
    """
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # (pairs,)
    return -F.logsigmoid(beta * margin).mean()


def preference_pairs(tok: Tokenizer, records: Iterable[dict]) -> list[Pair]:
    """{"prompt", "chosen", "rejected"} records as (chosen, rejected) chat examples."""
    return [(sft_example(tok, r["prompt"], r["chosen"]), sft_example(tok, r["prompt"], r["rejected"]))
            for r in records]


@torch.no_grad()
def dpo_batches(reference: Gemma, pairs: list[Pair], batch_size: int, *, pad_id: int) -> list[DPOBatch]:
    """Batches of `batch_size` pairs, in order, with the reference model's log-probabilities.

    Each batch holds its chosen answers first and their rejected ones after, padded together,
    so one forward pass scores both. Call it before training, with the model DPO starts from.
    """
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        ids, labels = pad([c for c, _ in chunk] + [r for _, r in chunk], pad_id)  # (2B, seq)
        with autocast(reference.device):  # as in training, so that at step 0 the policy equals it exactly
            ref = sequence_logprob(reference, ids.to(reference.device), labels.to(reference.device))
        out.append((ids, labels, ref.float().cpu()))
    return out


def dpo_loss_fn(beta: float = 0.1) -> Callable[[Gemma, DPOBatch], torch.Tensor]:
    """The `loss_fn` for `train` on dpo_batches: train(model, batches, loss_fn=dpo_loss_fn(0.1), ...)."""
    def loss(model: Gemma, batch: DPOBatch) -> torch.Tensor:
        ids, labels, ref = batch
        chosen, rejected = sequence_logprob(model, ids, labels).chunk(2)  # (B,) each
        ref_chosen, ref_rejected = ref.chunk(2)
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    return loss


@torch.no_grad()
def preference_margin(model: Gemma, batches: list[DPOBatch]) -> dict[str, float]:
    """How far the policy moved towards the chosen answers, on (held-out) dpo_batches.

    margin: the mean of (log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)),
    the implicit reward margin divided by beta (0 before training). accuracy: the share of pairs
    where it is positive, i.e. where the policy prefers the chosen answer more than the reference
    did (DPO's "reward accuracy"; the raw log pi(chosen) > log pi(rejected) would favour whichever
    answer is shorter).
    """
    margins = []
    for ids, labels, ref in batches:
        with autocast(model.device):
            logp = sequence_logprob(model, ids.to(model.device), labels.to(model.device)).float().cpu()
        chosen, rejected = logp.chunk(2)
        ref_chosen, ref_rejected = ref.chunk(2)
        margins.append((chosen - ref_chosen) - (rejected - ref_rejected))
    m = torch.cat(margins)
    return {"margin": m.mean().item(), "accuracy": (m > 0).float().mean().item()}
