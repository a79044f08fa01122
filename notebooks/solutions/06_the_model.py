"""Solutions to the exercises of notebook 06 (the decoder block and the whole model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minigemma.model.config import GemmaConfig
from minigemma.loading.names import hf_names
from minigemma.model import Gemma


# Exercise 1: the parameter count from the config alone.
def count_parameters(config: GemmaConfig) -> dict[str, int]:
    """Parameters per component, from the shapes the config implies (no model is built)."""
    hidden, layers = config.hidden_size, config.num_layers
    # q and o: hidden x (heads * head_dim) each; k and v: hidden x (kv_heads * head_dim) each.
    # head_dim is its own field (pitfall 8): 7B's 16 x 256 = 4096 is wider than its hidden 3072.
    attention = hidden * config.head_dim * (2 * config.num_heads + 2 * config.num_kv_heads)
    mlp = 3 * hidden * config.intermediate_size  # gate, up (hidden -> intermediate), down (back)
    norms = (4 if config.post_norms else 2) * hidden  # before (and in Gemma 3 after) each sublayer
    if config.qk_norm:
        norms += 2 * config.head_dim  # one gain per channel of a head, shared by all heads
    return {
        "embedding": config.vocab_size * hidden,  # tied: it is also the output projection
        "attention": layers * attention,
        "MLP": layers * mlp,
        "norms": layers * norms + hidden,  # + ln_final
    }


# Exercise 2: how much does each block matter for the next token?
def forward_skipping(model: Gemma, ids: torch.Tensor, skip: int | None = None) -> torch.Tensor:
    """Next-token logits (batch, vocab) with block `skip` left out: the stream passes it unchanged."""
    positions = torch.arange(ids.shape[1], device=ids.device)
    x = model.embed(ids)
    x = x * torch.tensor(model.config.hidden_size ** 0.5, dtype=x.dtype)
    for i, block in enumerate(model.blocks):
        if i != skip:
            x = block(x, positions)
    return F.linear(model.ln_final(x[:, -1]), model.embed.weight)


@torch.no_grad()
def layer_knockout(model: Gemma, ids: torch.Tensor) -> list[float]:
    """For each block: log p(top token) of the full model minus the same with that block skipped.

    Positive = the block was helping the model's own prediction; ids is (1, seq).
    On the 270M and "The Eiffel Tower is in the city of" (top token " Paris") the largest drops
    are layer 5, the first global layer (about 16 nats), and layer 1 (about 12); several late
    layers hardly matter for this token.
    """
    full = forward_skipping(model, ids).log_softmax(-1)[0]  # (vocab,)
    target = full.argmax()
    return [(full[target] - forward_skipping(model, ids, skip=i).log_softmax(-1)[0, target]).item()
            for i in range(len(model.blocks))]


# Exercise 3: our weights under transformers' names.
def to_hf_state_dict(model: Gemma) -> dict[str, torch.Tensor]:
    """The model's weights keyed by transformers' names (GemmaForCausalLM / Gemma3ForCausalLM).

    No lm_head entry: the output projection is tied to the embedding in both libraries.
    """
    state = model.state_dict()
    return {theirs: state[ours] for ours, theirs in hf_names(model.config).items()}
