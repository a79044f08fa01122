"""The solutions to notebook 06's exercises (notebooks/solutions/06_the_model.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

import minigemma
from minigemma import PRESETS

from reference import hf_model, minigemma_from_hf, randomize_

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.06_the_model")  # file names start with a digit


def _meta_breakdown(config):
    """Count by parameter name on a meta-device model (what notebook 06 does)."""
    with torch.device("meta"):
        model = minigemma.Gemma(config)
    out = {"embedding": 0, "attention": 0, "MLP": 0, "norms": 0}
    for name, p in model.named_parameters():
        if name == "embed.weight":
            out["embedding"] += p.numel()
        elif "norm" in name or name.startswith("ln_final"):
            out["norms"] += p.numel()
        elif ".attn." in name:
            out["attention"] += p.numel()
        else:
            assert ".mlp." in name, name
            out["MLP"] += p.numel()
    assert sum(out.values()) == model.num_parameters()
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_count_parameters_matches_the_built_model(name):
    config = minigemma.get_config(name)
    assert sol.count_parameters(config) == _meta_breakdown(config)


def test_count_parameters_totals():
    assert sum(sol.count_parameters(minigemma.get_config("gemma-2b")).values()) == 2_506_172_416
    assert sum(sol.count_parameters(minigemma.get_config("gemma-7b")).values()) == 8_537_680_896


@pytest.fixture(scope="module")
def tiny_pair():
    config = minigemma.get_config("tiny-gemma")
    torch.manual_seed(0)
    hf = hf_model(config)
    randomize_(hf)
    return config, hf, minigemma_from_hf(hf, config)


@torch.no_grad()
def test_forward_skipping_nothing_is_the_model(tiny_pair):
    _, _, ours = tiny_pair
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sol.forward_skipping(ours, ids), ours(ids)[:, -1])


@torch.no_grad()
def test_layer_knockout_matches_a_hook_that_bypasses_the_block(tiny_pair):
    _, _, ours = tiny_pair
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(2))
    drops = sol.layer_knockout(ours, ids)
    assert len(drops) == ours.config.num_layers
    full = ours(ids)[0, -1].log_softmax(-1)
    target = full.argmax()
    for layer, drop in enumerate(drops):
        # A forward hook that returns the block's input makes the block an identity.
        handle = ours.blocks[layer].register_forward_hook(lambda module, args, output: args[0])
        try:
            skipped = ours(ids)[0, -1].log_softmax(-1)
        finally:
            handle.remove()
        assert drop == pytest.approx((full[target] - skipped[target]).item(), abs=1e-4)
    assert any(abs(d) > 1e-3 for d in drops)


@pytest.mark.parametrize("name", ["tiny-gemma", "tiny-gemma-mha", "tiny-gemma3"])
@torch.no_grad()
def test_to_hf_state_dict_loads_into_transformers(name):
    config = minigemma.get_config(name)
    torch.manual_seed(3)
    ours = minigemma.Gemma(config).eval()
    for p in ours.parameters():
        p.normal_(0, 0.2)
    hf = hf_model(config)
    missing, unexpected = hf.load_state_dict(sol.to_hf_state_dict(ours), strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}  # tied to the embedding
    assert torch.equal(hf.lm_head.weight, ours.embed.weight)
    ids = torch.randint(0, config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(hf(ids).logits, ours(ids), atol=1e-5, rtol=0)
