"""Solutions to the exercises of notebook 04 (attention, MQA/GQA, KV cache)."""

from __future__ import annotations

import torch

from minigemma import Gemma, GemmaConfig
from minigemma.model.attention import Attention


# Exercise 1: KV-cache size from the config alone, and what sliding windows save.
def kv_cache_bytes(config: GemmaConfig, seq_len: int, batch: int = 1, bytes_per_value: int = 2,
                   windowed: bool = False) -> int:
    """Bytes of keys and values for `seq_len` positions (bytes_per_value 2 = bf16, 4 = fp32).

    windowed=True keeps only the last `sliding_window` positions in Gemma 3's local layers,
    which never look further back; global layers keep everything.
    """
    per_position = 2 * config.num_kv_heads * config.head_dim * bytes_per_value  # 2: one key and one value
    total = 0
    for layer in range(config.num_layers):
        kept = seq_len
        if windowed and config.is_local_layer(layer):
            kept = min(seq_len, config.sliding_window)
        total += batch * kept * per_position
    return total


# Exercise 2: uptrain-style conversion of multi-head attention to grouped-query attention.
def mha_to_gqa(attn: Attention, config: GemmaConfig, num_kv_heads: int) -> Attention:
    """A grouped-query copy of the multi-head `attn`: each new key/value head is the mean of
    the old heads of its group (Ainslie et al., 2023, section 2.1, "mean pooling").

    Query head h reads key/value head h // group, so consecutive old heads form a group.
    """
    if attn.num_kv_heads != attn.num_heads:
        raise ValueError(f"expected multi-head attention (num_kv_heads == num_heads), got "
                         f"{attn.num_kv_heads} key/value heads for {attn.num_heads} query heads")
    new = Attention(config.replace(num_kv_heads=num_kv_heads), attn.layer)
    group, d = attn.num_heads // num_kv_heads, attn.head_dim
    with torch.no_grad():
        new.q_proj.weight.copy_(attn.q_proj.weight)
        new.o_proj.weight.copy_(attn.o_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(attn, name).weight                       # (heads * head_dim, hidden)
            w = w.view(num_kv_heads, group, d, -1).mean(dim=1)   # (kv_heads, head_dim, hidden)
            getattr(new, name).weight.copy_(w.reshape(num_kv_heads * d, -1))
        if attn.q_norm is not None:
            new.q_norm.weight.copy_(attn.q_norm.weight)
            new.k_norm.weight.copy_(attn.k_norm.weight)
    return new


# Exercise 3: the decoding loop with a KV cache, written out.
@torch.no_grad()
def greedy_with_cache(model: Gemma, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation: the prompt goes in once, then one token per step."""
    cache = model.new_cache(batch=1, max_len=len(prompt_ids) + max_new_tokens)
    logits = model(torch.tensor([prompt_ids]), cache=cache, last_only=True)  # prefill: (1, 1, vocab)
    new: list[int] = []
    for _ in range(max_new_tokens):
        new.append(int(logits[0, -1].argmax()))
        if len(new) == max_new_tokens:
            break
        logits = model(torch.tensor([new[-1:]]), cache=cache, last_only=True)  # only the new token
    return new
