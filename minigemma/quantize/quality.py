"""What quantization costs: perplexity, agreement with the float model, and bytes saved."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TextScore:
    perplexity: float        # exp(mean negative log-likelihood of each next token)
    predictions: torch.Tensor  # (len(ids) - 1,) the model's top-1 guess for each next token


@torch.no_grad()
def score_text(model: nn.Module, ids: list[int], chunk: int = 512) -> TextScore:
    """How well `model` predicts each token of `ids` (which should start with BOS) from the ones before.

    The text goes through in chunks of `chunk` tokens with a KV cache, so the (chunk, vocab)
    logits are the only big tensor: 262k float32 logits per token would need ~1 MB each.
    """
    if len(ids) < 2:
        raise ValueError("score_text needs at least two tokens (one to read, one to predict)")
    cache = model.new_cache(batch=1, max_len=len(ids))
    device = model.device
    nll, predictions = 0.0, []
    for start in range(0, len(ids) - 1, chunk):
        piece = ids[start:start + chunk]
        logits = model(torch.tensor([piece], device=device), cache=cache)[0].float()  # (n, vocab)
        targets = torch.tensor(ids[start + 1:start + chunk + 1], device=device)  # the next tokens
        logits = logits[: len(targets)]  # the text's last token predicts nothing
        nll += -logits.log_softmax(-1).gather(1, targets[:, None]).sum().item()
        predictions.append(logits.argmax(-1).cpu())
    predictions = torch.cat(predictions)
    return TextScore(perplexity=float(torch.tensor(nll / len(predictions)).exp()), predictions=predictions)


def agreement(a: TextScore, b: TextScore) -> float:
    """Fraction of positions where two models make the same top-1 next-token prediction."""
    return (a.predictions == b.predictions).float().mean().item()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all weights as stored (integers, scales and float parameters)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return total + sum(b.numel() * b.element_size() for b in model.buffers())
