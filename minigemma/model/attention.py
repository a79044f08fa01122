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
    """Keys and values of every layer, in buffers allocated once and written in place.

    Decoding one token would otherwise recompute keys and values for the whole prefix at every
    step. The buffers have a fixed size, and a forward pass writes into them at the positions
    it is given (a tensor, not a Python int), so every decoding step has the same shapes: the
    same code serves prefill, eager decoding, and a step that torch.compile or a CUDA graph
    can record once (gpt-fast's design).

    A global layer keeps a slot per position, `max_len` of them. A local (sliding-window) layer
    never looks further back than its window, so it keeps only `window` slots and position p
    goes to slot p % window, overwriting the key that has just fallen out of every later query's
    window: a ring buffer. For the Gemma 3 270M at 32k tokens that is 15 layers of 512 slots and
    3 of 32,768 instead of 18 of 32,768 (notebook 07 measures it).
    """

    def __init__(self, config: GemmaConfig, batch: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 windows: list[int | None] | None = None):
        # windows: each layer's window (None: global); by default the config's. Gemma.new_cache
        # passes its layers' own, so a layer whose window a reader changed gets the slots it needs.
        if windows is None:
            windows = [config.sliding_window if config.is_local_layer(i) else None for i in range(config.num_layers)]
        self.k, self.v = [], []
        for window in windows:
            slots = max_len if window is None else min(window, max_len)
            shape = (batch, config.num_kv_heads, slots, config.head_dim)  # (batch, kv_heads, slots, head_dim)
            self.k.append(torch.zeros(shape, device=device, dtype=dtype))
            self.v.append(torch.zeros(shape, device=device, dtype=dtype))
        self.max_len = max_len
        self.length = 0  # positions filled so far; the model advances it after the last layer

    def slots(self, layer: int) -> int:
        return self.k[layer].shape[2]

    def update(self, layer: int, positions: torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (batch, kv_heads, seq, head_dim) of `positions` (seq,); return the keys and
        values the new queries attend to, whose positions `key_positions` gives.

        One new token (decoding) is written first and then sees the whole buffer. A chunk of
        several tokens attends to the buffer as it was plus the chunk itself, and only then
        overwrites it: in a ring buffer the chunk's later keys would otherwise replace keys
        its earlier queries still need.
        """
        kb, vb = self.k[layer], self.v[layer]
        slots = kb.shape[2]
        if k.shape[2] == 1:
            kb.index_copy_(2, positions % slots, k)
            vb.index_copy_(2, positions % slots, v)
            return kb, vb
        keys, values = torch.cat([kb, k], dim=2), torch.cat([vb, v], dim=2)  # (batch, kv, slots + seq, d)
        n = min(k.shape[2], slots)  # a chunk longer than a ring keeps only its last `slots` keys
        kb.index_copy_(2, positions[-n:] % slots, k[:, :, -n:])
        vb.index_copy_(2, positions[-n:] % slots, v[:, :, -n:])
        return keys, values

    @staticmethod
    def key_positions(positions: torch.Tensor, slots: int) -> torch.Tensor:
        """The position held by each key `update` returns for queries at `positions`; negative = empty.

        After position `last` is written, slot s holds the latest position p <= last with
        p % slots == s, which is last - ((last - s) mod slots); negative if none was written yet.
        """
        seq = positions.shape[0]
        last = positions[-1] if seq == 1 else positions[0] - 1  # the newest position in the buffer
        held = last - torch.remainder(last - torch.arange(slots, device=positions.device), slots)
        return held if seq == 1 else torch.cat([held, positions])

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
    query sees at most `window` keys, itself included. A negative key position marks an
    empty cache slot (KVCache.key_positions), which nobody sees.
    """
    diff = q_pos[:, None] - k_pos[None, :]  # how far back each key is
    mask = (diff >= 0) & (k_pos >= 0)[None, :]
    if window is not None:
        mask &= diff < window
    return mask


def layer_mask(positions: torch.Tensor, slots: int | None, window: int | None) -> torch.Tensor:
    """The (q, keys) mask for queries at `positions` over the keys a layer attends to: the new
    ones alone without a cache (slots None), else what KVCache.update returns for `slots` slots."""
    k_pos = positions if slots is None else KVCache.key_positions(positions, slots)
    return attention_mask(positions, k_pos, window)


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
        # minigemma.quantize.fuse may replace q_proj, k_proj and v_proj (then None) by one layer
        # holding all three: the same products in one matmul call (~70 us saved per layer in int8).
        self.qkv: nn.Module | None = None
        if config.qk_norm:  # Gemma 3: RMSNorm over each head's query and key, replacing Gemma 2's soft-capping
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_pattern = HookPoint()  # (batch, heads, q, k) softmax weights
        self.hook_z = HookPoint()        # (batch, seq, heads, head_dim) per-head outputs, before o_proj

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (batch, seq, hidden) at `positions` (seq,) -> (batch, seq, hidden).

        `rope` (this layer's cos, sin) and `mask` depend only on the positions, not on the layer:
        the model computes them once per forward pass and hands them to every layer (Gemma.forward).
        Called on its own, the layer computes them itself.
        """
        batch, seq, _ = x.shape
        if self.qkv is not None:
            q, k, v = self.qkv(x).split([self.num_heads * self.head_dim] + [self.num_kv_heads * self.head_dim] * 2, -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        # (batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim)
        q = q.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope if rope is not None else rope_cos_sin(positions, self.head_dim, self.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)

        if cache is not None:
            k, v = cache.update(self.layer, positions, k, v)  # (batch, kv_heads, keys, head_dim)
        if mask is None:
            mask = layer_mask(positions, cache.slots(self.layer) if cache is not None else None, self.window)

        # The textbook formula when someone hooks the pattern (it must exist to be seen), and in a
        # compiled decoding step: for one query, inductor fuses its few small operations, where
        # the fused CPU kernel below (built for long sequences) took ~0.1 ms a call in a profile
        # (benchmarks/RESULTS.md, the block kernel's second version). Eager code keeps the fused kernel: the tests
        # hold it to transformers' numbers at 1e-5, and the two formulas differ in the last bits.
        if self.hook_pattern.active or (seq == 1 and torch.compiler.is_compiling()):
            z = self._explicit_attention(q, k, v, mask)
        else:
            # The fused kernel computes the same softmax(q k^T * scale) v without materialising
            # the (q, k) matrix; enable_gqa lets each key/value head serve its group of query heads.
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale,
                                               enable_gqa=self.num_kv_heads != self.num_heads)
        z = self.hook_z(z.transpose(1, 2))  # (batch, seq, heads, head_dim)
        return self.o_proj(z.reshape(batch, seq, self.num_heads * self.head_dim))

    def _explicit_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The textbook formula, softmax(q k^T * scale) v, with the pattern materialised.

        Used when someone hooks the pattern to look at it.
        """
        batch, heads, seq, d = q.shape
        group = heads // self.num_kv_heads
        # Each kv head serves `group` query heads (heads kv*group .. kv*group + group - 1): stack them
        # as extra query rows, so k and v are read as they are, never copied per head.
        qg = q.reshape(batch, self.num_kv_heads, group * seq, d)  # (batch, kv_heads, group * q, head_dim)
        scores = (qg @ k.transpose(-1, -2)).float() * self.scale  # (batch, kv_heads, group * q, k)
        scores = scores.view(batch, heads, seq, -1).masked_fill(~mask, float("-inf"))  # (batch, heads, q, k)
        pattern = self.hook_pattern(scores.softmax(dim=-1).to(q.dtype))
        z = pattern.reshape(batch, self.num_kv_heads, group * seq, -1) @ v  # (batch, kv_heads, group * q, head_dim)
        return z.view(batch, heads, seq, d)
