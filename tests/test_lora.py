"""LoRA (minigemma.model.lora) against its formula, and adapters (minigemma.loading.adapter) against peft.

peft is the reference for the files: an adapter saved by minigemma must load in
peft.PeftModel.from_pretrained on the transformers model with the same weights and give the same
logits, and one saved by peft must load here, both to ATOL (fp32, tiny random models).
"""

from __future__ import annotations

import json
import math

import peft
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import minigemma
from minigemma import add_lora, get_config, load_adapter, save_adapter
from minigemma.errors import ArgumentError, CheckpointError, ConfigError
from minigemma.loading.adapter import PEFT_DEFAULTS
from minigemma.model.lora import (LoRALinear, count_trainable, lora_disabled, lora_layers, lora_parameters,
                                  merge_lora, unmerge_lora)
from minigemma.quantize import Int8Linear, fuse, quantize

from reference import hf_model, minigemma_from_hf, random_model, randomize_
from test_loading_formats import train_spm, write_hf

ATOL = 1e-5  # logits of two fp32 implementations of the same tiny model
IDS = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(3))


def randomize_lora_(model: torch.nn.Module, seed: int = 1) -> None:
    """Nonzero B (and a fresh A): a freshly initialised adapter adds exactly nothing and would hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out = model(IDS)
    return getattr(out, "logits", out)


# ---------------------------------------------------------------- the module against its formula

def test_fresh_adapter_changes_nothing_and_only_it_trains():
    model = random_model("tiny-gemma3")
    base = logits(model)
    add_lora(model, targets="all-linear")
    assert torch.equal(logits(model), base)  # B = 0: bit for bit
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if ".lora_" in n}
    assert len(lora_parameters(model)) == 2 * 7 * model.config.num_layers


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_linear_is_the_dense_low_rank_update(rslora):
    torch.manual_seed(0)
    base = torch.nn.Linear(32, 24, bias=False, dtype=torch.float64)  # float64: 1e-6 measures the formula, not rounding
    layer = LoRALinear(base, rank=4, alpha=8, rslora=rslora)
    torch.nn.init.normal_(layer.lora_B)
    scale = 8 / math.sqrt(4) if rslora else 8 / 4  # Hu et al. alpha/r; rsLoRA alpha/sqrt(r)
    x = torch.randn(3, 5, 32, dtype=torch.float64)
    dense = base.weight + scale * layer.lora_B @ layer.lora_A
    torch.testing.assert_close(layer(x), F.linear(x, dense), atol=1e-6, rtol=0)


def test_lora_wraps_a_quantized_layer():
    torch.manual_seed(0)
    base = Int8Linear.from_float(torch.randn(32, 64))
    layer = LoRALinear(base, rank=4, alpha=4)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 64)
    torch.testing.assert_close(layer(x), base(x) + x @ layer.lora_A.T @ layer.lora_B.T, atol=1e-5, rtol=1e-5)
    with pytest.raises(ArgumentError, match="Merge before quantizing"):
        layer.merge()


def test_merge_unmerge_and_merge_lora():
    model = add_lora(random_model("tiny-gemma"), rank=4, targets=["q_proj", "o_proj", "down_proj"])
    randomize_lora_(model)
    before = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    adapted = logits(model)
    for m in lora_layers(model).values():
        m.merge()
    torch.testing.assert_close(logits(model), adapted, atol=ATOL, rtol=0)
    unmerge_lora(model)
    for n, p in model.named_parameters():
        if n in before:
            torch.testing.assert_close(p, before[n], atol=1e-6, rtol=0)
    merge_lora(model)
    assert not lora_layers(model) and type(model.blocks[0].attn.q_proj) is torch.nn.Linear
    torch.testing.assert_close(logits(model), adapted, atol=ATOL, rtol=0)


def test_lora_disabled_gives_the_base_model():
    model = random_model("tiny-gemma3")
    base = logits(model)
    add_lora(model)
    randomize_lora_(model)
    adapted = logits(model)
    assert not torch.allclose(adapted, base, atol=1e-3)
    with lora_disabled(model):
        assert torch.equal(logits(model), base)
    assert torch.equal(logits(model), adapted)


def test_trainable_count_of_the_270m():
    config = get_config("gemma3-270m")
    with torch.device("meta"):
        model = minigemma.Gemma(config)
        total_before = model.num_parameters()
        add_lora(model, rank=8, targets=("q_proj", "v_proj"))
    q_out, v_out = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    by_hand = config.num_layers * 8 * ((config.hidden_size + q_out) + (config.hidden_size + v_out))
    assert count_trainable(model) == (by_hand, total_before + by_hand)


# ---------------------------------------------------------------- peft's files, both ways

@pytest.mark.parametrize("name,targets", [("tiny-gemma", "all-linear"), ("tiny-gemma3", ["q_proj", "v_proj", "up_proj"])])
def test_minigemma_adapter_loads_in_peft(name, targets, tmp_path):
    config = get_config(name)
    hf = hf_model(config)
    randomize_(hf)
    ours = add_lora(minigemma_from_hf(hf, config), rank=4, alpha=8, targets=targets)
    randomize_lora_(ours)
    save_adapter(ours, tmp_path, base_model_name_or_path="tiny/base")
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path).eval()
    torch.testing.assert_close(logits(theirs), logits(ours), atol=ATOL, rtol=0)
    with lora_disabled(ours):
        assert not torch.allclose(logits(theirs), logits(ours), atol=1e-3)  # the adapter is not a no-op


@pytest.mark.parametrize("name,rslora", [("tiny-gemma", False), ("tiny-gemma3", True)])
def test_peft_adapter_loads_in_minigemma_and_saves_back_the_same(name, rslora, tmp_path):
    config = get_config(name)
    hf = hf_model(config)
    randomize_(hf)
    ours = minigemma_from_hf(hf, config)
    lora = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "down_proj"],
                           use_rslora=rslora, task_type="CAUSAL_LM")
    theirs = peft.get_peft_model(hf, lora).eval()
    randomize_lora_(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    load_adapter(ours, tmp_path / "peft")
    torch.testing.assert_close(logits(ours), logits(theirs), atol=ATOL, rtol=0)
    # Written back by minigemma: the same files, field for field and tensor for tensor.
    save_adapter(ours, tmp_path / "ours")
    read = lambda d: json.loads((d / "adapter_config.json").read_text())
    peft_config, our_config = read(tmp_path / "peft"), read(tmp_path / "ours")
    assert set(our_config.pop("target_modules")) == set(peft_config.pop("target_modules"))
    assert our_config == peft_config
    with safe_open(tmp_path / "peft" / "adapter_model.safetensors", "pt") as a, \
            safe_open(tmp_path / "ours" / "adapter_model.safetensors", "pt") as b:
        assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


@pytest.fixture(scope="module")
def hf_checkpoint_with_adapter(tmp_path_factory):
    """A tiny Gemma 3 checkpoint as save_pretrained writes it, a peft adapter for it, and the tuned logits."""
    directory = tmp_path_factory.mktemp("lora_hf")
    config = get_config("tiny-gemma3")
    hf = hf_model(config)
    randomize_(hf, seed=5)
    write_hf(hf, directory / "model", train_spm(directory))
    theirs = peft.get_peft_model(hf, peft.LoraConfig(r=8, lora_alpha=8, target_modules="all-linear"))
    randomize_lora_(theirs.eval())
    theirs.save_pretrained(directory / "adapter")
    return directory / "model", directory / "adapter", logits(theirs)


def test_load_with_adapter(hf_checkpoint_with_adapter):
    model_dir, adapter_dir, expected = hf_checkpoint_with_adapter
    model, _ = minigemma.load(model_dir, adapter=adapter_dir, progress=False)
    assert lora_layers(model)  # attached, not merged
    torch.testing.assert_close(logits(model), expected, atol=ATOL, rtol=0)


def test_load_quantized_with_adapter_merges_first(hf_checkpoint_with_adapter):
    model_dir, adapter_dir, expected = hf_checkpoint_with_adapter
    model, _ = minigemma.load(model_dir, adapter=adapter_dir, quantize="int8", progress=False)
    assert not lora_layers(model) and model.blocks[0].attn.qkv is not None  # merged, then quantized and fused
    got = logits(model)
    # int8's bound in test_quantize.py; measured 0.023 here, and 0.37 for the model without the adapter
    assert (got - expected).norm() / expected.norm() < 0.05


# ---------------------------------------------------------------- every refusal, one message each

@pytest.fixture
def adapter_dir(tmp_path):
    model = add_lora(random_model("tiny-gemma"), rank=4)
    return save_adapter(model, tmp_path / "adapter")


def edit_config(directory, **fields) -> None:
    path = directory / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.mark.parametrize("fields,message", [
    ({"peft_type": "LOHA"}, "'peft_type' is 'LOHA', expected 'LORA'"),
    ({"use_dora": True}, "'use_dora' is True, expected False.*not DoRA"),
    ({"bias": "all"}, "'bias' is 'all', expected 'none'"),
    ({"modules_to_save": ["lm_head"]}, "'modules_to_save' is \\['lm_head'\\], expected None"),
    ({"fan_in_fan_out": True}, "'fan_in_fan_out' is True, expected False"),
    ({"rank_pattern": {"q_proj": 2}}, "'rank_pattern'.*per-layer ranks"),
    ({"init_lora_weights": "pissa"}, "'init_lora_weights' is 'pissa'.*changes the base weights"),
    ({"r": 0}, "'r' is 0, expected a positive integer"),
    ({"target_modules": ["q_proj"]}, "'target_modules'.*different adapters"),
])
def test_bad_adapter_config(adapter_dir, fields, message):
    edit_config(adapter_dir, **fields)
    model = random_model("tiny-gemma")
    with pytest.raises(ConfigError, match=message) as err:
        load_adapter(model, adapter_dir)
    assert "adapter_config.json" in str(err.value)
    assert not lora_layers(model)  # nothing changed


def test_rank_that_does_not_match_the_tensors(adapter_dir):
    edit_config(adapter_dir, r=8)
    with pytest.raises(CheckpointError, match=r"lora_A.weight' .* is \(4, 64\).*r=8 .* expects \(8, 64\)"):
        load_adapter(random_model("tiny-gemma"), adapter_dir)


def test_adapter_of_another_size(adapter_dir):
    model = random_model("tiny-gemma-mha")  # hidden 48, not 64
    with pytest.raises(CheckpointError, match=r"is \(4, 64\) .* expects \(4, 48\).*another model size"):
        load_adapter(model, adapter_dir)


def rewrite_tensors(directory, edit) -> None:
    path = directory / "adapter_model.safetensors"
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(edit(tensors), path, metadata={"format": "pt"})


def test_unknown_tensor_name(adapter_dir):
    rewrite_tensors(adapter_dir, lambda t: {k.replace("model.layers", "model.language_model.layers"): v
                                            for k, v in t.items()})
    with pytest.raises(CheckpointError, match="language_model.*names no layer of this tiny-gemma model"):
        load_adapter(random_model("tiny-gemma"), adapter_dir)


def test_missing_tensor(adapter_dir):
    rewrite_tensors(adapter_dir, lambda t: {k: v for k, v in t.items() if "layers.1.self_attn.v_proj.lora_B" not in k})
    with pytest.raises(CheckpointError, match="lacks 1 tensor.*layers.1.self_attn.v_proj.lora_B"):
        load_adapter(random_model("tiny-gemma"), adapter_dir)


def test_pickle_is_refused_unread(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(PEFT_DEFAULTS | {"r": 4, "lora_alpha": 8}))
    (tmp_path / "adapter_model.bin").write_bytes(b"not even a pickle")  # never opened
    with pytest.raises(CheckpointError, match="adapter_model.bin' is a pickle.*save_file"):
        load_adapter(random_model("tiny-gemma"), tmp_path)


def test_load_checks_the_adapter_before_the_model(tmp_path):
    with pytest.raises(CheckpointError, match="not a LoRA adapter directory"):
        minigemma.load(tmp_path / "no-such-model", adapter=tmp_path)


def test_unknown_target():
    with pytest.raises(ArgumentError, match=r"\['qproj'\] match no layer.*q_proj, k_proj.*'all-linear'"):
        add_lora(random_model("tiny-gemma"), targets=["qproj"])


def test_second_adapter():
    model = add_lora(random_model("tiny-gemma"))
    with pytest.raises(ArgumentError, match="already has LoRA layers.*merge_lora"):
        add_lora(model)


def test_fused_model():
    model = fuse(quantize(random_model("tiny-gemma"), bits=8))
    with pytest.raises(ArgumentError, match="attn.q_proj is fused into attn.qkv.*before quantizing"):
        add_lora(model)
    add_lora(model, targets=["o_proj", "down_proj"])  # layers fuse leaves alone can still be adapted


def test_save_needs_an_adapter(tmp_path):
    with pytest.raises(CheckpointError, match="no LoRA layers"):
        save_adapter(random_model("tiny-gemma"), tmp_path)
