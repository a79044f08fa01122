"""The whole Gemma decoder: embed, N decoder blocks, final norm, unembed with the same matrix."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ArgumentError
from .attention import KVCache, layer_mask
from .block import DecoderBlock
from .config import GemmaConfig
from .hooks import HookPoint
from .norm import RMSNorm
from .rope import rope_cos_sin


class Unembedding(nn.Module):
    """The output projection, tied to the embedding: logits = x @ E^T (Gemma report, section 2).

    A module of its own, holding no weight, so that a faster or quantized version can replace it
    in place (minigemma.quantize) while still reading the one embedding matrix.
    """

    def forward(self, x: torch.Tensor, embed: nn.Module) -> torch.Tensor:
        # F.linear keeps the (vocab, hidden) weight in its stored layout: a transposed bf16 matmul
        # was measured 100x slower on CPU (docs/pitfalls.md, performance).
        return nn.functional.linear(x, embed.weight)  # (batch, seq, vocab)


class Gemma(nn.Module):
    def __init__(self, config: GemmaConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(DecoderBlock(config, i) for i in range(config.num_layers))
        self.ln_final = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.unembed = Unembedding()
        self.compiled_step = None  # minigemma.compile sets these three
        self.cuda_graphs = False
        self.static_cache: KVCache | None = None
        self.hook_embed = HookPoint()  # the scaled embeddings that enter block 0

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                last_only: bool = False, *, select: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, seq, vocab) for input_ids (batch, seq).

        With a cache, input_ids continue the sequence the cache holds (positions start at
        cache.length). `last_only` returns (batch, 1, vocab): generation needs only the last
        position, and the 262k-wide unembedding of every prompt token would dominate prefill.
        `select`, a (batch, seq) bool mask, returns (n_selected, vocab), the rows in row-major
        order: training scores only some positions (minigemma.train.loss), and the unembedding of
        the others would dominate its memory and time. Not with a cache or last_only.
        """
        batch, seq = input_ids.shape
        if select is not None and (cache is not None or last_only or select.shape != input_ids.shape
                                   or select.dtype != torch.bool):
            raise ArgumentError(f"select must be a bool mask of the ids' shape {tuple(input_ids.shape)}, without a "
                                "cache or last_only (it is for training on whole sequences)")
        start = cache.length if cache is not None else 0
        if start + seq > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {start + seq} tokens is longer than the model's context of "
                f"{self.config.max_position_embeddings}; shorten the prompt or max_new_tokens"
            )
        if cache is not None:
            cache.check_room(start + seq)  # else index_copy_ past the end fails with an opaque index error
        positions = torch.arange(start, start + seq, device=input_ids.device)
        if select is not None:  # training: eager, no cache, so the compiled step's call stays as it was
            return self.forward_at(input_ids, positions, None, False, select)
        step = self.forward_at
        if self.compiled_step is not None and seq == 1 and cache is not None and not self.hooked():
            step = self.compiled_step  # minigemma.compile: the same function, recorded once
        logits = step(input_ids, positions, cache, last_only)
        if cache is not None:
            cache.length = start + seq
        return logits

    def forward_at(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: KVCache | None,
                   last_only: bool, select: torch.Tensor | None = None) -> torch.Tensor:
        """The forward pass at `positions` (seq,), a tensor: nothing here depends on a Python
        number that changes from step to step, so one decoding step can be compiled for all."""
        x = self.embed(input_ids)  # (batch, seq, hidden)
        # Pitfall 3: scale by sqrt(hidden) *in the activation dtype*, as the reference does: in
        # bf16 sqrt(2048) = 45.254... rounds to 45.25, and the checkpoints were trained with that.
        x = self.hook_embed(x * torch.tensor(self.config.hidden_size ** 0.5, dtype=x.dtype))
        # What depends only on the positions is computed once here, not once per layer: RoPE's
        # cos/sin for each base (local and global layers use different ones), and the mask for
        # each kind of layer (each window size and number of cache slots).
        rope, masks = {}, {}
        for i, block in enumerate(self.blocks):
            attn = block.attn
            if attn.rope_theta not in rope:
                rope[attn.rope_theta] = rope_cos_sin(positions, self.config.head_dim, attn.rope_theta)
            slots = cache.slots(i) if cache is not None else None
            if (slots, attn.window) not in masks:
                masks[slots, attn.window] = layer_mask(positions, slots, attn.window)
            x = block(x, positions, cache, rope[attn.rope_theta], masks[slots, attn.window])
        if last_only:
            x = x[:, -1:]
        elif select is not None:
            x = x[select]  # (n_selected, hidden): the norm and unembedding act on each row alone
        x = self.ln_final(x)
        return self.unembed(x, self.embed)  # (batch, seq, vocab), or (n_selected, vocab)

    def hooked(self) -> bool:
        """Is any forward hook registered on the model (a HookPoint or any other module)?
        A compiled step would not call it, so hooks always run the eager forward pass."""
        return bool(nn.modules.module._global_forward_hooks) or any(
            m._forward_hooks or m._forward_pre_hooks for m in self.modules())

    @property
    def device(self) -> torch.device:
        return self.ln_final.weight.device

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        # The final norm's weight has the activations' device and dtype even when the embedding is
        # quantized (minigemma.quantize), whose `.weight` would dequantize all 262k rows; `device`
        # above reads it for the same reason.
        p = self.ln_final.weight
        if self.compiled_step is not None:
            # The compiled step is specialised to the cache's shapes: rounding the length up to a
            # multiple of 256 lets nearby lengths share one compilation.
            max_len = min(-(-max_len // 256) * 256, max(max_len, self.config.max_position_embeddings))
            cache = self.static_cache
            if cache is not None and cache.k[0].shape[0] == batch and cache.max_len == max_len:
                cache.length = 0  # a reused cache: stale slots are masked out until rewritten
                return cache
        cache = KVCache(self.config, batch, max_len, device=p.device, dtype=p.dtype,
                        windows=[block.attn.window for block in self.blocks])
        if self.cuda_graphs:
            # A CUDA graph replays fixed addresses: the cache it writes must stay where it was
            # recorded, so one cache is kept and handed out again.
            for t in cache.k + cache.v:
                torch._dynamo.mark_static_address(t)
            self.static_cache = cache
        return cache

    def num_parameters(self) -> int:
        """Unique parameters; the unembedding is the embedding, so it is counted once."""
        return sum(p.numel() for p in self.parameters())
