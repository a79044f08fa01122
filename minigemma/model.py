"""The whole Gemma decoder: embed, N decoder blocks, final norm, unembed with the same matrix."""

from __future__ import annotations

import torch
from torch import nn

from .attention import KVCache
from .block import DecoderBlock
from .config import GemmaConfig
from .hooks import HookPoint
from .norm import RMSNorm


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
        self.hook_embed = HookPoint()  # the scaled embeddings that enter block 0

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Logits (batch, seq, vocab) for input_ids (batch, seq).

        With a cache, input_ids continue the sequence the cache holds (positions start at
        cache.length). `last_only` returns (batch, 1, vocab): generation needs only the last
        position, and the 262k-wide unembedding of every prompt token would dominate prefill.
        """
        batch, seq = input_ids.shape
        start = cache.length if cache is not None else 0
        if start + seq > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {start + seq} tokens is longer than the model's context of "
                f"{self.config.max_position_embeddings}; shorten the prompt or max_new_tokens"
            )
        positions = torch.arange(start, start + seq, device=input_ids.device)

        x = self.embed(input_ids)  # (batch, seq, hidden)
        # Pitfall 3: scale by sqrt(hidden) *in the activation dtype*, as the reference does: in
        # bf16 sqrt(2048) = 45.254... rounds to 45.25, and the checkpoints were trained with that.
        x = self.hook_embed(x * torch.tensor(self.config.hidden_size ** 0.5, dtype=x.dtype))
        for block in self.blocks:
            x = block(x, positions, cache)
        if cache is not None:
            cache.length = start + seq
        if last_only:
            x = x[:, -1:]
        x = self.ln_final(x)
        return self.unembed(x, self.embed)  # (batch, seq, vocab)

    @property
    def device(self) -> torch.device:
        return self.ln_final.weight.device

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        # The final norm's weight has the activations' device and dtype even when the embedding is
        # quantized (minigemma.quantize), whose `.weight` would dequantize all 262k rows; `device`
        # above reads it for the same reason.
        p = self.ln_final.weight
        return KVCache(self.config, batch, max_len, device=p.device, dtype=p.dtype)

    def num_parameters(self) -> int:
        """Unique parameters; the unembedding is the embedding, so it is counted once."""
        return sum(p.numel() for p in self.parameters())
