"""Bridges to the reference implementation (transformers), used only by the tests."""

from __future__ import annotations

import torch
import transformers

from minigemma import Gemma, GemmaConfig, get_config
from minigemma.loading.names import hf_names


def hf_config(config: GemmaConfig):
    """The transformers config describing the same architecture as `config`."""
    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim, max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps, bos_token_id=config.bos_id, eos_token_id=config.eos_id,
        pad_token_id=config.pad_id, tie_word_embeddings=True,
    )
    if config.architecture == "gemma":
        return transformers.GemmaConfig(
            **common, hidden_act="gelu_pytorch_tanh",
            rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta})
    layer_types = ["sliding_attention" if config.is_local_layer(i) else "full_attention"
                   for i in range(config.num_layers)]
    return transformers.Gemma3TextConfig(
        **common, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=config.query_pre_attn_scalar,
        sliding_window=config.sliding_window, layer_types=layer_types,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": config.rope_local_theta},
                         "full_attention": {"rope_type": "default", "rope_theta": config.rope_theta}})


def hf_model(config: GemmaConfig):
    cls = transformers.GemmaForCausalLM if config.architecture == "gemma" else transformers.Gemma3ForCausalLM
    return cls(hf_config(config)).eval()


def randomize_(hf, seed: int = 0) -> None:
    """Random weights everywhere, norms included (their init of 0 or 1 would hide convention bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def random_model(name: str = "tiny-gemma3", seed: int = 0) -> Gemma:
    """A preset's minigemma model with random N(0, 0.1) weights, norms included (torch's global seed)."""
    torch.manual_seed(seed)
    model = Gemma(get_config(name)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


def minigemma_from_hf(hf, config: GemmaConfig) -> Gemma:
    """Our model holding exactly the weights of the transformers model `hf`."""
    state = hf.state_dict()
    model = Gemma(config).eval()
    model.load_state_dict({ours: state[theirs] for ours, theirs in hf_names(config).items()})
    return model
