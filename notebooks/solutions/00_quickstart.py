"""Solutions to the exercises of notebooks/00_quickstart.ipynb."""

from __future__ import annotations

import torch


def top_tokens(model, tok, prompt: str, k: int) -> list[tuple[str, float]]:
    """The k most likely next tokens after `prompt`, as (text, probability), most likely first."""
    ids = torch.tensor([tok.encode(prompt, add_bos=True)])
    with torch.no_grad():
        probs = model(ids)[0, -1].softmax(-1)
    top = probs.topk(k)
    # Three decimals: a fourth would depend on the last bits of the arithmetic, which differ between CPUs.
    return [(tok.decode([i]), round(p, 3)) for i, p in zip(top.indices.tolist(), top.values.tolist())]


def greedy_by_hand(model, tok, prompt: str, n: int) -> str:
    """Greedy decoding without a KV cache: re-read the whole sequence for every new token."""
    ids = tok.encode(prompt, add_bos=True)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            next_id = int(model(torch.tensor([ids + new]))[0, -1].argmax())
            if next_id in (tok.eos_id, tok.end_of_turn_id):
                break
            new.append(next_id)
    return tok.decode(new)
