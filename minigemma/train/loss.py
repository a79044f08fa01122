"""The causal language-modelling loss: every scored token, predicted from the tokens before it.

A decoder is trained by next-token prediction (Gemma report, "Pretraining"): the
logits at position t are a distribution over token t+1, and the loss is the mean negative
log-probability of the tokens that are actually there. `labels` has the ids' shape and holds,
at each position, the token to score there, or IGNORE (-100, PyTorch's `ignore_index`) for a
token that is context only: a prompt in fine-tuning, or padding. Position 0 is never scored: no
logits come before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ArgumentError
from ..model.gemma import Gemma

IGNORE = -100


def scored(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(select, targets): which positions' logits the loss needs, and the tokens they predict.

    select (batch, seq) is True at t where label t+1 is scored; targets (n_scored,) are those
    labels in the same row-major order as `Gemma.forward(..., select=select)` returns its rows.
    """
    nxt = labels[:, 1:]  # (batch, seq - 1): what the logits at 0..seq-2 predict
    select = torch.zeros_like(labels, dtype=torch.bool)
    select[:, :-1] = nxt != IGNORE
    if not select.any():
        raise ArgumentError("no scored tokens: every label after the first is -100 (IGNORE)")
    return select, nxt[nxt != IGNORE]


def lm_loss(model: Gemma, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the scored tokens of ids/labels (batch, seq): a scalar.

    Logits are computed only where a token is scored (`select`): the 262k-wide unembedding of
    every position would otherwise take most of the memory and time of a training step.
    """
    select, targets = scored(labels)
    logits = model(ids, select=select)  # (n_scored, vocab)
    # float32 for the log-softmax over 262k entries, also when the matmuls ran in bf16 (autocast).
    return F.cross_entropy(logits.float(), targets)


def sequence_logprob(model: Gemma, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over each sequence's scored tokens of log p(token | the tokens before): (batch,).

    DPO compares whole responses, so it needs the log-probability of each one (a sum, not a mean,
    as in Rafailov et al. 2023, eq. 7: log pi(y|x) of the response y).
    """
    select, targets = scored(labels)
    logits = model(ids, select=select)  # (n_scored, vocab)
    token_logp = -F.cross_entropy(logits.float(), targets, reduction="none")  # (n_scored,)
    rows = select.nonzero()[:, 0]  # the sequence each scored token belongs to
    return torch.zeros(ids.shape[0], device=token_logp.device).index_add(0, rows, token_logp)
