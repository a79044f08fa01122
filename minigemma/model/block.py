"""One decoder layer: attention then MLP, each wrapped in a residual connection.

Gemma 1 normalises the input of each sublayer (pre-norm). Gemma 2 and 3 also normalise
each sublayer's *output* before adding it back to the residual stream ("sandwich" norms).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention, KVCache
from .config import GemmaConfig
from .hooks import HookPoint
from .mlp import GeGLU
from .norm import RMSNorm


class DecoderBlock(nn.Module):
    def __init__(self, config: GemmaConfig, layer: int):
        super().__init__()
        eps = config.rms_norm_eps
        self.attn_norm = RMSNorm(config.hidden_size, eps)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config.hidden_size, eps)
        self.mlp = GeGLU(config.hidden_size, config.intermediate_size)
        if config.post_norms:
            self.post_attn_norm = RMSNorm(config.hidden_size, eps)
            self.post_mlp_norm = RMSNorm(config.hidden_size, eps)
        else:
            self.post_attn_norm = self.post_mlp_norm = None
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_mid = HookPoint(), HookPoint(), HookPoint()
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.hook_resid_pre(x)  # (batch, seq, hidden): the residual stream entering this layer
        h = self.attn(self.attn_norm(x), positions, cache, rope, mask)
        if self.post_attn_norm is not None:
            h = self.post_attn_norm(h)
        x = self.hook_resid_mid(x + self.hook_attn_out(h))
        h = self.mlp(self.mlp_norm(x))
        if self.post_mlp_norm is not None:
            h = self.post_mlp_norm(h)
        return self.hook_resid_post(x + self.hook_mlp_out(h))
