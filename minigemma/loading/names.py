"""How each checkpoint format names our parameters.

minigemma's own names follow the paper's structure (`blocks.{i}.attn.q_proj.weight`); every
loader translates its format's names to these, so the model never knows where weights came from.
"""

from __future__ import annotations

import re

from ..model.config import GemmaConfig

# Per-layer names: ours -> Hugging Face transformers (`model.layers.{i}.` prefix omitted).
_HF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
# Gemma 1 calls the norm before the MLP "post_attention_layernorm" (it comes after attention);
# Gemma 2/3 use that name for the norm applied to attention's *output* and add two more.
_HF_GEMMA1 = {"mlp_norm.weight": "post_attention_layernorm.weight"}
_HF_GEMMA3 = {
    "mlp_norm.weight": "pre_feedforward_layernorm.weight",
    "post_attn_norm.weight": "post_attention_layernorm.weight",
    "post_mlp_norm.weight": "post_feedforward_layernorm.weight",
    "attn.q_norm.weight": "self_attn.q_norm.weight",
    "attn.k_norm.weight": "self_attn.k_norm.weight",
}

# Per-layer names: ours -> GGUF (llama.cpp) (`blk.{i}.` prefix omitted).
_GGUF_LAYER = {
    "attn_norm.weight": "attn_norm.weight",
    "attn.q_proj.weight": "attn_q.weight",
    "attn.k_proj.weight": "attn_k.weight",
    "attn.v_proj.weight": "attn_v.weight",
    "attn.o_proj.weight": "attn_output.weight",
    "mlp_norm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_attn_norm.weight": "post_attention_norm.weight",
    "post_mlp_norm.weight": "post_ffw_norm.weight",
    "attn.q_norm.weight": "attn_q_norm.weight",
    "attn.k_norm.weight": "attn_k_norm.weight",
}


def _layer_names(config: GemmaConfig) -> list[str]:
    names = ["attn_norm.weight", "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight",
             "attn.o_proj.weight", "mlp_norm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
             "mlp.down_proj.weight"]
    if config.post_norms:
        names += ["post_attn_norm.weight", "post_mlp_norm.weight"]
    if config.qk_norm:
        names += ["attn.q_norm.weight", "attn.k_norm.weight"]
    return names


def hf_names(config: GemmaConfig) -> dict[str, str]:
    """{our name: transformers name} for every parameter of `config`."""
    extra = _HF_GEMMA3 if config.architecture == "gemma3" else _HF_GEMMA1
    table = {"embed.weight": "model.embed_tokens.weight", "ln_final.weight": "model.norm.weight"}
    for i in range(config.num_layers):
        for ours in _layer_names(config):
            table[f"blocks.{i}.{ours}"] = f"model.layers.{i}.{_HF_LAYER.get(ours) or extra[ours]}"
    return table


def gguf_names(config: GemmaConfig) -> dict[str, str]:
    """{our name: GGUF tensor name} for every parameter of `config`."""
    table = {"embed.weight": "token_embd.weight", "ln_final.weight": "output_norm.weight"}
    for i in range(config.num_layers):
        for ours in _layer_names(config):
            table[f"blocks.{i}.{ours}"] = f"blk.{i}.{_GGUF_LAYER[ours]}"
    return table


def is_norm(name: str) -> bool:
    return re.search(r"norm\.weight$", name) is not None


# LoRA adapters in peft's format: the layers an adapter may target, ours -> transformers (the
# weights' names above without ".weight"), and the prefix peft's PeftModelForCausalLM wrapped
# around GemmaForCausalLM / Gemma3ForCausalLM gives every key.
_HF_LORA_LAYER = {ours.removesuffix(".weight"): theirs.removesuffix(".weight")
                  for ours, theirs in _HF_LAYER.items() if ours.startswith(("attn.", "mlp."))}
PEFT_PREFIX = "base_model.model.model.layers"


def hf_adapter_names(config: GemmaConfig, targets: list[str]) -> dict[str, str]:
    """{our LoRA parameter: its key in peft's adapter_model.safetensors} for `targets` (q_proj, ...) in every layer.

    e.g. blocks.0.attn.q_proj.lora_A -> base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
    """
    table = {}
    for i in range(config.num_layers):
        for ours, theirs in _HF_LORA_LAYER.items():
            if ours.rpartition(".")[2] in targets:
                for m in ("lora_A", "lora_B"):
                    table[f"blocks.{i}.{ours}.{m}"] = f"{PEFT_PREFIX}.{i}.{theirs}.{m}.weight"
    return table
