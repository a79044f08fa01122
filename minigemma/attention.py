"""Causal self-attention with shared key/value heads, sliding windows and a KV cache.

One module covers the three variants in the Gemma family, which differ only in how many
key/value heads the query heads share (Gemma report, section 2, "Multi-Query Attention"):
  multi-head   (7B):   num_kv_heads == num_heads
  multi-query  (2B):   num_kv_heads == 1
  grouped-query (Gemma 3): anything in between
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import GemmaConfig
from .hooks import HookPoint
from .norm import RMSNorm
from .rope import apply_rope, rope_cos_sin


class KVCache:
    """Keys and values of every layer, preallocated once for `max_len` positions.

    Decoding one token would otherwise recompute keys and values for the whole prefix at
    every step. Allocating the buffers up front (rather than concatenating per step) keeps
    memory flat and avoids a copy per token.
    """

    def __init__(self, config: GemmaConfig, batch: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (batch, config.num_kv_heads, max_len, config.head_dim)  # (batch, kv_heads, seq, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.max_len = max_len
        self.length = 0  # positions filled so far; the model advances it after the last layer

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (batch, kv_heads, new, head_dim) at `start` and return all keys/values so far."""
        end = start + k.shape[2]
        self.check_room(end)
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def check_room(self, end: int) -> None:
        """Raise a clear error if positions up to `end` (exclusive) do not fit."""
        if end > self.max_len:
            raise ValueError(
                f"KV cache holds {self.max_len} positions but position {end - 1} was requested; "
                "create the cache with a larger max_len"
            )

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Boolean (q, k) mask, True where a query may look at a key.

    Causal: a token sees itself and the past, never the future. With a sliding window
    (Gemma 3 local layers) it also forgets keys `window` or more positions back, so each
    query sees at most `window` keys, itself included.
    """
    diff = q_pos[:, None] - k_pos[None, :]  # how far back each key is
    mask = diff >= 0
    if window is not None:
        mask &= diff < window
    return mask


class Attention(nn.Module):
    def __init__(self, config: GemmaConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.scale = config.attn_scale  # pitfall 9: 1/sqrt(head_dim) in Gemma 1, 1/sqrt(query_pre_attn_scalar) in Gemma 3
        local = config.is_local_layer(layer)
        self.window = config.sliding_window if local else None
        # Gemma 3 gives local layers a short RoPE base (10k) and global layers a long one (1M).
        self.rope_theta = config.rope_local_theta if local else config.rope_theta
        hidden = config.hidden_size
        # nn.Linear stores weights as (out, in): the layout of every Gemma checkpoint.
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        if config.qk_norm:  # Gemma 3: RMSNorm over each head's query and key, replacing Gemma 2's soft-capping
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_pattern = HookPoint()  # (batch, heads, q, k) softmax weights
        self.hook_z = HookPoint()        # (batch, seq, heads, head_dim) per-head outputs, before o_proj

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        batch, seq, _ = x.shape
        # (batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim)
        q = self.q_proj(x).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)

        if cache is not None:
            k, v = cache.update(self.layer, int(positions[0]), k, v)  # (batch, kv_heads, past + seq, head_dim)
        k_pos = torch.arange(k.shape[2], device=x.device)
        mask = attention_mask(positions, k_pos, self.window)

        if self.hook_pattern.active:
            z = self._explicit_attention(q, k, v, mask)
        else:
            # The fused kernel computes the same softmax(q k^T * scale) v without materialising
            # the (q, k) matrix; enable_gqa lets each key/value head serve its group of query heads.
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale,
                                               enable_gqa=self.num_kv_heads != self.num_heads)
        z = self.hook_z(z.transpose(1, 2))  # (batch, seq, heads, head_dim)
        return self.o_proj(z.reshape(batch, seq, self.num_heads * self.head_dim))

    def _explicit_attention(self, q, k, v, mask) -> torch.Tensor:
        """The textbook formula, used when someone hooks the attention pattern to look at it."""
        group = self.num_heads // self.num_kv_heads
        k = k.repeat_interleave(group, dim=1)  # (batch, heads, k, head_dim): each kv head copied for its group
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() * self.scale  # (batch, heads, q, k)
        scores = scores.masked_fill(~mask, float("-inf"))
        pattern = self.hook_pattern(scores.softmax(dim=-1).to(q.dtype))
        return pattern @ v
