"""Solutions to the exercises of notebook 07 (from Gemma 1 to Gemma 3)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from minigemma.model.config import GemmaConfig
from minigemma.model import Gemma


# Exercise 1: the KV cache, with and without ring buffers for the local layers.
def kv_cache_bytes(config: GemmaConfig, context: int, bytes_per_value: int = 2, ring_buffer: bool = True) -> int:
    """Bytes of keys and values for one sequence of `context` tokens (bf16 by default).

    Each layer keeps 2 (k, v) x kv_heads x head_dim numbers per position it remembers. A local
    layer never attends further back than its window, so with a ring buffer it only remembers
    the last `sliding_window` positions; global layers remember all of them.
    """
    if context < 0:
        raise ValueError(f"context must be a number of tokens >= 0, got {context}")
    per_position = 2 * config.num_kv_heads * config.head_dim * bytes_per_value
    total = 0
    for layer in range(config.num_layers):
        kept = context
        if ring_buffer and config.is_local_layer(layer):
            kept = min(context, config.sliding_window)
        total += kept * per_position
    return total


# Exercise 2: how far back the first `num_layers` blocks can reach.
def receptive_field(config: GemmaConfig, num_layers: int) -> int:
    """Largest d such that the output at position p after `num_layers` blocks can depend on token p - d.

    Attention is the only place positions mix. A local layer lets a position read keys up to
    sliding_window - 1 back, and stacked local layers add their reaches (a relay: p reads p - w + 1,
    which already read p - 2(w - 1), ...). A global layer reads the whole past.
    """
    if not 0 <= num_layers <= config.num_layers:
        raise ValueError(f"num_layers must be between 0 and {config.num_layers}, got {num_layers}")
    whole_context = config.max_position_embeddings - 1
    reach = 0
    for layer in range(num_layers):
        if not config.is_local_layer(layer):
            return whole_context
        reach += config.sliding_window - 1
    return min(reach, whole_context)


def influenced_positions(model: Gemma, ids: torch.Tensor, num_layers: int) -> torch.Tensor:
    """(seq,) bool: which input positions the last position's output after `num_layers` blocks
    depends on, read off the gradient with respect to the input embeddings. ids is (1, seq)."""
    positions = torch.arange(ids.shape[1])
    with torch.enable_grad():
        x = (model.embed(ids) * model.config.hidden_size ** 0.5).detach().requires_grad_(True)
        h = x
        for block in model.blocks[:num_layers]:
            h = block(h, positions)
        h[0, -1].sum().backward()
    return x.grad[0].abs().sum(-1) > 0


# Exercise 3: Gemma 3 without its sliding windows.
@contextlib.contextmanager
def all_global(model: Gemma) -> Iterator[None]:
    """Inside the block every layer attends to the whole past; the windows come back on exit."""
    saved = [block.attn.window for block in model.blocks]
    try:
        for block in model.blocks:
            block.attn.window = None
        yield
    finally:
        for block, window in zip(model.blocks, saved):
            block.attn.window = window
