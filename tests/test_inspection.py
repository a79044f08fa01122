"""minigemma.explore.inspection: caching only reads, edits do what they claim, hooks never outlive a call."""

from __future__ import annotations

import copy

import pytest
import torch

from minigemma import Gemma, get_config
from minigemma.model.hooks import HookPoint
from minigemma.explore.inspection import (ActivationCache, ablate_head, hook_names, hooks, lens_filter, logit_lens,
                                  logit_lens_table, patch_position, position_axis, run_with_cache, select_names)


def registered_hooks(model: torch.nn.Module) -> int:
    """Forward hooks left on any module of the model (all of them, not only hook points)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module", params=["tiny-gemma3", "tiny-gemma"])
def model(request):
    torch.manual_seed(0)
    m = Gemma(get_config(request.param)).eval()
    with torch.no_grad():  # random norm weights, so that "1 + w" is not trivially 1
        for name, p in m.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    return m


@pytest.fixture(scope="module")
def ids(model):
    return torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def no_hooks_left(request):
    """Every test in this file ends with the model free of hooks."""
    yield
    if "model" in request.fixturenames:
        assert registered_hooks(request.getfixturevalue("model")) == 0


def test_hook_names_mirror_transformerlens(model):
    names = hook_names(model)
    L = model.config.num_layers
    assert names[0] == "hook_embed"
    for suffix in ["hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post",
                   "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z"]:
        assert f"blocks.{L - 1}.{suffix}" in names
    assert "ln_final.hook_normalized" in names and "blocks.0.mlp_norm.hook_normalized" in names
    assert len(names) == len(set(names))
    assert not any(isinstance(m, HookPoint) and m.active for m in model.modules())


def test_caching_changes_no_logits(model, ids):
    with torch.no_grad():
        plain = model(ids)
    # Without hook_pattern the fused attention kernel runs: bit-identical logits.
    logits, cache = run_with_cache(model, ids, lambda n: "pattern" not in n)
    assert torch.equal(logits, plain)
    # Caching hook_pattern switches attention to the explicit softmax: same up to float rounding.
    logits, cache = run_with_cache(model, ids)
    torch.testing.assert_close(logits, plain, rtol=1e-4, atol=1e-4)
    assert set(cache) == set(hook_names(model))


def test_cache_shapes_and_meaning(model, ids):
    cfg = model.config
    batch, seq = ids.shape
    _, cache = run_with_cache(model, ids)
    assert cache["hook_embed"].shape == (batch, seq, cfg.hidden_size)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert pattern.shape == (batch, cfg.num_heads, seq, seq)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(batch, cfg.num_heads, seq))
    assert torch.all(pattern.triu(1) == 0), "attention must be causal"
    assert cache["blocks.0.attn.hook_z"].shape == (batch, seq, cfg.num_heads, cfg.head_dim)
    assert cache["blocks.0.attn.hook_k"].shape == (batch, cfg.num_kv_heads, seq, cfg.head_dim)
    # The residual stream bookkeeping: resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out.
    for L in range(cfg.num_layers):
        torch.testing.assert_close(cache[f"blocks.{L}.hook_resid_mid"],
                                   cache[f"blocks.{L}.hook_resid_pre"] + cache[f"blocks.{L}.hook_attn_out"])
        torch.testing.assert_close(cache[f"blocks.{L}.hook_resid_post"],
                                   cache[f"blocks.{L}.hook_resid_mid"] + cache[f"blocks.{L}.hook_mlp_out"])
    # A local layer's pattern is exactly zero beyond the sliding window.
    if cfg.sliding_window is not None and cfg.sliding_window < seq:
        local = next(L for L in range(cfg.num_layers) if cfg.is_local_layer(L))
        p = cache[f"blocks.{local}.attn.hook_pattern"]
        far = torch.ones(seq, seq, dtype=torch.bool).tril(-cfg.sliding_window)
        assert torch.all(p[..., far] == 0) and far.any()


def test_names_filter_forms(model, ids):
    all_names = hook_names(model)
    assert select_names(model, None) == all_names
    assert select_names(model, "resid_post") == [n for n in all_names if n.endswith("hook_resid_post")]
    assert select_names(model, ["hook_embed", "blocks.1.hook_mlp_out"]) == ["hook_embed", "blocks.1.hook_mlp_out"]
    assert select_names(model, lambda n: n.startswith("blocks.0.attn.")) == [
        n for n in all_names if n.startswith("blocks.0.attn.")]
    _, cache = run_with_cache(model, ids, "blocks.1.hook_resid")
    assert sorted(cache) == ["blocks.1.hook_resid_mid", "blocks.1.hook_resid_post", "blocks.1.hook_resid_pre"]
    with pytest.raises(KeyError, match="did you mean 'blocks.1.hook_resid_post'"):
        cache["blocks.1.hook_resid_pots"]
    with pytest.raises(KeyError, match="hook_resid_pre"):
        select_names(model, ["blocks.0.hook_resid_pr"])
    with pytest.raises(ValueError, match="no hook name contains"):
        select_names(model, "residual")
    assert isinstance(cache, ActivationCache) and isinstance(cache, dict)


def test_list_and_1d_ids_are_one_batch(model, ids):
    logits_list, _ = run_with_cache(model, ids[0].tolist(), "hook_embed")
    logits_1d, _ = run_with_cache(model, ids[0], "hook_embed")
    assert logits_list.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.equal(logits_list, logits_1d)
    with pytest.raises(ValueError, match="shape"):
        run_with_cache(model, ids[None], "hook_embed")


def test_zero_ablation_equals_removing_o_proj_columns(model, ids):
    cfg = model.config
    layer, head = cfg.num_layers - 1, 1
    with torch.no_grad(), hooks(model, ablate_head(layer, head)):
        ablated = model(ids)
    surgery = copy.deepcopy(model)
    with torch.no_grad():  # o_proj's input columns [head * head_dim, (head + 1) * head_dim) read head `head`
        surgery.blocks[layer].attn.o_proj.weight[:, head * cfg.head_dim:(head + 1) * cfg.head_dim] = 0
        expected, plain = surgery(ids), model(ids)
    torch.testing.assert_close(ablated, expected, rtol=1e-5, atol=1e-5)
    assert (ablated - plain).abs().max() > 1e-3, "ablating a head should change the logits"


def test_ablation_touches_only_that_head_and_later_positions(model, ids):
    layer = 0
    _, clean = run_with_cache(model, ids, f"blocks.{layer}.attn.hook_z")
    seen = {}
    with torch.no_grad(), hooks(model, ablate_head(layer, [0, 2]),
                                {f"blocks.{layer}.attn.hook_z": lambda z, name: seen.setdefault(name, z)}):
        model(ids)
    z = seen[f"blocks.{layer}.attn.hook_z"]  # hooks run in the order given: this one sees the ablated z
    assert torch.all(z[:, :, [0, 2]] == 0)
    assert torch.equal(z[:, :, [1, 3]], clean[f"blocks.{layer}.attn.hook_z"][:, :, [1, 3]])


def test_mean_ablation(model, ids):
    seen = {}
    with torch.no_grad(), hooks(model, ablate_head(0, 1, mode="mean"),
                                {"blocks.0.attn.hook_z": lambda z, name: seen.setdefault("z", z)}):
        model(ids)
    z = seen["z"][:, :, 1]  # (batch, seq, head_dim): the same vector at every position
    torch.testing.assert_close(z, z[:, :1].expand_as(z))
    with pytest.raises(ValueError, match="mode"):
        ablate_head(0, 1, mode="resample")
    with pytest.raises(ValueError, match="heads"), torch.no_grad(), hooks(model, ablate_head(0, 99)):
        model(ids)


def test_patching_every_position_restores_the_clean_run(model, ids):
    clean_ids, corrupt_ids = ids[:1], ids[1:]
    name = "blocks.1.hook_resid_pre"
    clean_logits, clean = run_with_cache(model, clean_ids, [name])
    seq = clean_ids.shape[1]
    with torch.no_grad(), hooks(model, patch_position(name, list(range(seq)), clean)):
        patched = model(corrupt_ids)
    # Everything after block 0 depends on the corrupt ids only through this residual stream.
    torch.testing.assert_close(patched, clean_logits, rtol=1e-5, atol=1e-5)


def test_patching_one_position_is_causal(model, ids):
    name, pos = "blocks.1.hook_resid_pre", 6
    _, clean = run_with_cache(model, ids[:1], [name])
    with torch.no_grad():
        corrupt = model(ids[1:])
        with hooks(model, patch_position(name, pos, clean)):
            patched = model(ids[1:])
    assert torch.equal(patched[:, :pos], corrupt[:, :pos]), "earlier positions cannot see a later patch"
    assert (patched[:, pos:] - corrupt[:, pos:]).abs().amax(-1).min() > 0
    # A tensor works as the source too, and attention-internal names patch along their own axis.
    value = clean[name][:, pos]
    with torch.no_grad(), hooks(model, patch_position(name, pos, value)):
        torch.testing.assert_close(model(ids[1:]), patched)
    # One vector broadcast into every batch row.
    seen = {}
    with torch.no_grad(), hooks(model, patch_position(name, pos, value[0]),
                                {name: lambda x, n: seen.setdefault("x", x)}):
        model(ids)
    assert torch.equal(seen["x"][:, pos], value[0].expand(ids.shape[0], -1))
    assert position_axis("blocks.0.attn.hook_pattern") == 2 and position_axis("blocks.0.attn.hook_z") == 1
    with pytest.raises(KeyError, match="source cache has no"):
        patch_position("blocks.0.hook_mlp_out", 0, clean)


def test_hook_edits_and_reads(model, ids):
    with torch.no_grad():
        plain = model(ids)
        with hooks(model, {"blocks.0.hook_resid_post": lambda x, name: None}):
            assert torch.equal(model(ids), plain), "a hook returning None only reads"
        with hooks(model, {"ln_final.hook_normalized": lambda x, name: torch.zeros_like(x)}):
            assert torch.all(model(ids) == 0)


def test_hooks_removed_after_every_call_and_every_exception(model, ids):
    assert registered_hooks(model) == 0
    run_with_cache(model, ids)
    assert registered_hooks(model) == 0

    def boom(x, name):
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError, match="inside a hook"):
        with hooks(model, {"blocks.0.attn.hook_pattern": boom, "hook_embed": lambda x, n: None}):
            assert registered_hooks(model) == 2
            model(ids)
    assert registered_hooks(model) == 0
    assert not model.blocks[0].attn.hook_pattern.active  # back on the fused kernel

    with pytest.raises(ZeroDivisionError):
        with hooks(model, ablate_head(0, 0)):
            1 / 0
    assert registered_hooks(model) == 0

    # A bad name after good ones: the good ones registered so far are removed too.
    with pytest.raises(KeyError, match="no hook point named"):
        with hooks(model, {"hook_embed": boom, "blocks.0.hook_resid_pots": boom}):
            pass
    assert registered_hooks(model) == 0

    with pytest.raises(RuntimeError):  # nested: the caching hooks and the outer ones all come off
        with hooks(model, {"blocks.1.hook_mlp_out": boom}):
            run_with_cache(model, ids, "resid")
    assert registered_hooks(model) == 0


def test_hooks_work_with_the_kv_cache(model, ids):
    kv = model.new_cache(batch=2, max_len=ids.shape[1])
    with torch.no_grad():
        full = model(ids)
        model(ids[:, :-1], cache=kv)
    logits, cache = run_with_cache(model, ids[:, -1:], cache=kv)
    torch.testing.assert_close(logits[:, -1], full[:, -1], rtol=1e-4, atol=1e-4)
    # One new query attends to every slot of its layer's cache: one per position in a global
    # layer, the window's worth in a local one (a ring buffer, in slot order).
    for i, block in enumerate(model.blocks):
        slots = ids.shape[1] if block.attn.window is None else min(block.attn.window, ids.shape[1])
        assert cache[f"blocks.{i}.attn.hook_pattern"].shape[-2:] == (1, slots) == (1, kv.slots(i))


def test_logit_lens_last_row_is_the_model_output(model, ids):
    logits, cache = run_with_cache(model, ids, lens_filter)
    assert sorted(cache) == sorted(["hook_embed"] + [f"blocks.{i}.hook_resid_post"
                                                     for i in range(model.config.num_layers)])
    lens = logit_lens(model, cache)
    assert lens.shape == (model.config.num_layers + 1, *logits.shape)
    torch.testing.assert_close(lens[-1], logits)
    torch.testing.assert_close(logit_lens(model, cache, positions=[3, 5]), lens[:, :, [3, 5]])

    table = logit_lens_table(model, cache, k=3, target_ids=ids[0, 1:], chunk=5)
    probs = lens[:, 0].softmax(-1)  # (layers + 1, seq, vocab)
    top = probs.topk(3, dim=-1)
    assert table.labels[0] == "embed" and table.labels[-1] == f"layer {model.config.num_layers - 1}"
    assert torch.equal(table.top_ids, top.indices)
    torch.testing.assert_close(table.top_probs, top.values)
    expected = probs[:, :-1].gather(-1, ids[0, 1:].expand(len(probs), -1)[..., None]).squeeze(-1)
    torch.testing.assert_close(table.target_probs[:, :-1], expected)
    assert torch.isnan(table.target_probs[:, -1]).all()


def test_logit_lens_needs_the_residual_stream(model, ids):
    _, cache = run_with_cache(model, ids, "hook_pattern")
    with pytest.raises(KeyError, match="resid_post"):
        logit_lens(model, cache)


def test_real_model_caching_and_lens(gemma3_270m):
    model, tok = gemma3_270m
    ids = tok.encode("The capital of France is Paris. The capital of Germany is", add_bos=True)
    with torch.no_grad():
        plain = model(torch.tensor([ids]))
    logits, cache = run_with_cache(model, ids, lambda n: lens_filter(n) or n.endswith("hook_pattern"))
    torch.testing.assert_close(logits, plain, rtol=1e-4, atol=1e-4)
    assert registered_hooks(model) == 0
    table = logit_lens_table(model, cache)
    assert int(table.top_ids[-1, -1, 0]) == int(plain[0, -1].argmax())
    assert tok.decode([int(table.top_ids[-1, -1, 0])]) == " Berlin"
    # Tied embeddings: the embedding row read through the unembedding mostly predicts the input token back.
    assert (table.top_ids[0, :, 0] == torch.tensor(ids)).float().mean() > 0.5
