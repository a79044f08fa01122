"""Training data as (ids, labels) pairs: chat examples for fine-tuning, windows of text for pretraining.

Labels follow minigemma.train.loss: the token to score at each position, or IGNORE (-100).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ..decoding.chat import encode_chat, encode_text
from ..errors import ArgumentError
from ..tokenizer import Tokenizer
from .loss import IGNORE

Example = tuple[list[int], list[int]]  # (ids, labels) of one sequence


def sft_example(tok: Tokenizer, prompt: str, response: str, *, mask_prompt: bool = True) -> Example:
    """One supervised fine-tuning example in Gemma's chat template (pitfall 6):

        <bos><start_of_turn>user\\n{prompt}<end_of_turn>\\n<start_of_turn>model\\n{response}<end_of_turn>\\n

    With mask_prompt, only the model's turn is scored: its text and its <end_of_turn>, the token
    that teaches it to stop (generation ends there, so the "\\n" after it is never generated and
    not scored). The prompt is context: scoring it too spends the training on imitating users.
    """
    # The prompt ids are exactly what `Chat` sends at inference, then the reply's own ids: training
    # sees the token boundary the model will see when it answers.
    context = encode_chat(tok, [{"role": "user", "content": prompt}], add_generation_prompt=True)
    reply = [*encode_text(tok, response), tok.end_of_turn_id]
    ids = [*context, *reply, *tok.encode("\n")]
    if not mask_prompt:
        return ids, list(ids)
    return ids, [IGNORE] * len(context) + reply + [IGNORE] * (len(ids) - len(context) - len(reply))


def pad(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack examples into (ids, labels), each (batch, longest), padded on the right.

    Right padding needs no attention mask: attention is causal, so no real token ever looks at a
    pad after it, and the pads' own labels are IGNORE.
    """
    longest = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
    for row, (i, l) in enumerate(examples):
        ids[row, :len(i)], labels[row, :len(l)] = torch.tensor(i), torch.tensor(l)
    return ids, labels


def batches(examples: list[Example], batch_size: int, *, pad_id: int, shuffle: bool = True,
            seed: int = 0, epochs: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Padded (ids, labels) batches (batch_size, longest in the batch), epoch after epoch.

    shuffle: a new order each epoch, drawn from `seed` (the same seed, the same batches).
    epochs=None repeats forever (`train` takes as many as it needs); the last batch of an epoch
    may be smaller.
    """
    if not examples:
        raise ArgumentError("no examples to batch")
    gen = torch.Generator().manual_seed(seed)
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(len(examples), generator=gen).tolist() if shuffle else list(range(len(examples)))
        for i in range(0, len(order), batch_size):
            yield pad([examples[j] for j in order[i:i + batch_size]], pad_id)
        epoch += 1


def text_batches(ids: torch.Tensor | list[int], batch_size: int, seq_len: int,
                 seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Random windows of a token stream for pretraining: (ids, labels), both (batch_size, seq_len), forever.

    Every token is scored, so labels are the windows themselves (the loss shifts them: the logits
    at t predict token t+1), as in the pretraining of GPT-2 and Gemma alike.
    """
    stream = torch.as_tensor(ids, dtype=torch.long)  # (n_tokens,)
    if len(stream) < seq_len:
        raise ArgumentError(f"the token stream has {len(stream)} tokens, fewer than seq_len={seq_len}")
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(stream) - seq_len + 1, (batch_size,), generator=gen)
        windows = torch.stack([stream[s:s + seq_len] for s in starts.tolist()])  # (batch, seq_len)
        yield windows, windows.clone()


def read_jsonl(path: str | Path, split: str | None = None) -> list[dict]:
    """The records of a JSON-lines file (one object a line, blank lines skipped), of one `split` if given."""
    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if split is None or r.get("split") == split]


def sft_examples(tok: Tokenizer, records: Iterable[dict], *, mask_prompt: bool = True) -> list[Example]:
    """sft_example of each {"prompt", "response"} record."""
    return [sft_example(tok, r["prompt"], r["response"], mask_prompt=mask_prompt) for r in records]
