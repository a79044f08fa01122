"""Parameter counts of the presets, built on the meta device (shapes only, no memory).

Gemma report (Gemma Team, 2024): Table 1 gives the shapes, Table 2 the counts: 2B has
1,981,884,416 non-embedding parameters and 7B 7,751,248,896; with the 256,000-row tied
embedding that makes 2,506,172,416 and 8,537,680,896. (Table 2's embedding column counts the
256,128 rows of the padded Flax checkpoints; we keep the 256,000 real ones.)
"""

import pytest
import torch

import minigemma
from minigemma import PRESETS

from reference import hf_config

TOTAL = {"gemma-2b": 2_506_172_416, "gemma-7b": 8_537_680_896, "gemma3-270m": 268_098_176}
NON_EMBEDDING = {"gemma-2b": 1_981_884_416, "gemma-7b": 7_751_248_896}


def meta_model(name: str) -> minigemma.Gemma:
    with torch.device("meta"):
        return minigemma.Gemma(minigemma.get_config(name))


@pytest.mark.parametrize("name", sorted(TOTAL))
def test_total_parameters(name):
    model = meta_model(name)
    assert model.num_parameters() == TOTAL[name]
    assert all(p.is_meta for p in model.parameters())  # nothing was allocated


@pytest.mark.parametrize("name", sorted(NON_EMBEDDING))
def test_non_embedding_parameters_match_report_table_2(name):
    model = meta_model(name)
    assert model.num_parameters() - model.embed.weight.numel() == NON_EMBEDDING[name]
    assert model.config.vocab_size == 256_000


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_embedding_is_tied_and_counted_once(name):
    model = meta_model(name)
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    big = [n for n, p in model.named_parameters() if p.shape[0] == vocab]
    assert big == ["embed.weight"]  # no separate output matrix
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))
    assert model.embed.weight.shape == (vocab, hidden)


def test_shapes_that_are_easy_to_get_wrong():
    seven = meta_model("gemma-7b")
    # Pitfall 8: 16 heads x head_dim 256 = 4096, wider than hidden 3072.
    assert seven.blocks[0].attn.q_proj.weight.shape == (4096, 3072)
    assert seven.blocks[0].attn.o_proj.weight.shape == (3072, 4096)
    two = meta_model("gemma-2b")
    assert two.blocks[0].attn.k_proj.weight.shape == (256, 2048)  # multi-query: one kv head
    assert two.blocks[0].mlp.gate_proj.weight.shape == (16_384, 2048)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_per_layer_formula(name):
    """Every preset: count = embedding + layers x (attention + MLP + norms) + final norm."""
    c = minigemma.get_config(name)
    attention = c.hidden_size * c.head_dim * 2 * (c.num_heads + c.num_kv_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    norms = (4 if c.post_norms else 2) * c.hidden_size + (2 * c.head_dim if c.qk_norm else 0)
    expected = c.vocab_size * c.hidden_size + c.num_layers * (attention + mlp + norms) + c.hidden_size
    assert meta_model(name).num_parameters() == expected


@pytest.mark.parametrize("name", ["gemma-2b", "gemma-7b", "gemma3-270m"])
def test_transformers_counts_the_same(name):
    """transformers' own model of the same config, also on meta, has as many parameters."""
    import transformers

    config = minigemma.get_config(name)
    cls = transformers.GemmaForCausalLM if config.architecture == "gemma" else transformers.Gemma3ForCausalLM
    with torch.device("meta"):
        hf = cls(hf_config(config))
    assert sum(p.numel() for p in hf.parameters()) == TOTAL[name]
