"""Text in, text out: tokenize, prefill the KV cache with the prompt, then decode token by token."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

from ..errors import ArgumentError
from ..model.gemma import Gemma
from .sampling import check_sampling, is_whole, sample_checked
from ..tokenizer import Tokenizer, check_text  # noqa: F401 (check_text: chat and the CLI import it from here)

SEEDS = 2**64  # torch.Generator.manual_seed takes 0 .. 2**64 - 1 (and negatives, which we refuse)


def stop_ids(tok: Tokenizer) -> set[int]:
    """Generation ends at end-of-sequence, and for chat models at the end of the model's turn."""
    ids = {tok.eos_id}
    try:
        ids.add(tok.end_of_turn_id)
    except (KeyError, ValueError):
        pass
    return ids


def check_generation(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                     seed: int | None) -> None:
    """Raise ArgumentError for a bad generation setting, before any work is done."""
    check_sampling(temperature, top_k, top_p)
    if not is_whole(max_new_tokens) or max_new_tokens < 0:
        raise ArgumentError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    if seed is not None and (not is_whole(seed) or not 0 <= seed < SEEDS):
        raise ArgumentError(f"seed must be a whole number from 0 to 2**64 - 1 = {SEEDS - 1}, got {seed!r}")


def check_room(model: Gemma, prompt_len: int, max_new_tokens: int) -> None:
    """Raise ArgumentError unless the prompt and max_new_tokens new tokens fit in the model's context."""
    context = model.config.max_position_embeddings
    if prompt_len > context:
        raise ArgumentError(f"the prompt is {prompt_len} tokens, longer than the model's context of "
                            f"{context} tokens; shorten the prompt")
    if prompt_len + max_new_tokens > context:
        raise ArgumentError(f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                            f"model's context of {context} tokens; lower max_new_tokens to at most "
                            f"{context - prompt_len}")


def generate_ids(model: Gemma, prompt_ids: list[int], max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop: set[int] = frozenset()) -> Iterator[int]:
    """Yield new token ids one at a time, continuing `prompt_ids` (which should start with BOS)."""
    check_generation(max_new_tokens, temperature, top_k, top_p, seed)
    return _generate_ids(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, stop)


@torch.inference_mode()
def _generate_ids(model: Gemma, prompt_ids: list[int], max_new_tokens: int, temperature: float,
                  top_k: int | None, top_p: float | None, seed: int | None, stop: set[int]) -> Iterator[int]:
    # generate_ids with its settings already checked (once per call, not once per token).
    check_room(model, len(prompt_ids), max_new_tokens)
    if max_new_tokens == 0 or not prompt_ids:
        return
    cache = model.new_cache(batch=1, max_len=len(prompt_ids) + max_new_tokens)
    device = model.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    # Prefill: the whole prompt in one forward pass fills the cache for every layer.
    logits = model(torch.tensor([prompt_ids], device=device), cache=cache, last_only=True)
    for step in range(max_new_tokens):
        next_id = sample_checked(logits[:, -1], temperature, top_k, top_p, generator)  # (1,)
        token = int(next_id)
        yield token
        if token in stop or step == max_new_tokens - 1:
            return
        # Decode: one token in, reusing every earlier key and value from the cache.
        logits = model(next_id[:, None], cache=cache, last_only=True)


def generate(
    model: Gemma,
    tok: Tokenizer,
    prompt: str | list[int],
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stream: Callable[[str], None] | None = None,
    progress: bool = False,
) -> str:
    """Continue `prompt` and return only the new text.

    prompt: text, or token ids used as they are (e.g. from `minigemma.decoding.chat.encode_chat`).
    Pitfall 5: BOS is always prepended to text; Gemma never saw text without it, and without it
    gemma-7b's perplexity explodes. `stream(text_piece)` is called as text becomes final.
    """
    check_generation(max_new_tokens, temperature, top_k, top_p, seed)  # before the tokenizer's work
    if isinstance(prompt, str):
        check_text(prompt)
        prompt_ids = tok.encode(prompt, add_bos=True)
    else:
        prompt_ids = [int(i) for i in prompt]
    new_ids: list[int] = []
    shown = ""
    stop = stop_ids(tok)
    bar = tqdm(total=max_new_tokens, desc="generating", unit="tok", disable=not progress, leave=False)
    for token in _generate_ids(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, stop):
        bar.update()
        if token in stop:
            break
        new_ids.append(token)
        text = tok.decode(new_ids)
        # A character split over several byte-fallback tokens decodes to U+FFFD until its last
        # byte arrives: hold it back rather than stream a replacement character.
        if stream is not None and not text.endswith("\ufffd") and len(text) > len(shown):
            stream(text[len(shown):])
            shown = text
    bar.close()
    text = tok.decode(new_ids)
    if stream is not None and len(text) > len(shown):
        stream(text[len(shown):])
    return text
