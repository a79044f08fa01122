"""The one model serves every path: full forward, prefill + cached decoding (ring buffers for the
local layers), the compiled decoding step, quantized modules, hooks. No timing here
(benchmarks/speed.py measures speed)."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minigemma
from minigemma.model.attention import KVCache
from minigemma.decoding.compile import kernel_cache_dir
from minigemma.decoding.generate import generate_ids
from minigemma.explore.inspection import ablate_head, hooks, run_with_cache
from minigemma.quantize import quantize
from reference import random_model

TINY = ["tiny-gemma", "tiny-gemma-mha", "tiny-gemma3"]


def decode_in_chunks(model, ids: torch.Tensor, chunks: list[int], cache: KVCache | None = None) -> torch.Tensor:
    """Feed ids (1, n) through one cache in pieces of the given sizes: logits (1, n, vocab)."""
    cache = cache or model.new_cache(batch=1, max_len=ids.shape[1])
    out, start = [], 0
    with torch.no_grad():
        for size in chunks:
            out.append(model(ids[:, start:start + size], cache=cache))
            start += size
    assert start == ids.shape[1]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("name", TINY)
def test_cached_decoding_matches_the_full_forward(name):
    """A 25-token prefill, then one token at a time to 40: past tiny-gemma3's window of 8, so its
    local layers' ring buffers (8 slots) wrap around several times, and the prefill is longer
    than a ring (only its last 8 keys are kept)."""
    model = random_model(name)
    ids = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(ids)
    torch.testing.assert_close(decode_in_chunks(model, ids, [25] + [1] * 15), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunks", [[3, 9, 1, 12, 5], [8, 8, 8, 6], [1] * 30, [30]])
def test_chunked_prefill_matches_the_full_forward(chunks):
    """Chunks shorter than, equal to and longer than the window (8): each chunk attends to the ring
    as it was plus itself, then overwrites it (KVCache.update)."""
    model = random_model("tiny-gemma3")
    ids = torch.randint(0, 512, (1, 30), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(ids)
    torch.testing.assert_close(decode_in_chunks(model, ids, chunks), expected, atol=1e-5, rtol=0)


def test_stale_cache_contents_are_never_read():
    """A reused cache (the compiled model hands out the same one) holds the last generation's keys:
    the mask must hide every slot not written by this one."""
    model = random_model("tiny-gemma3")
    ids = torch.randint(0, 512, (1, 30), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = model(ids)
    cache = model.new_cache(batch=1, max_len=40)
    for t in cache.k + cache.v:
        t.normal_(0, 100.0)
    torch.testing.assert_close(decode_in_chunks(model, ids, [12] + [1] * 18, cache), expected, atol=1e-5, rtol=0)


def test_local_layers_keep_only_their_window():
    config = minigemma.get_config("tiny-gemma3")  # window 8, every 3rd layer global
    cache = KVCache(config, batch=1, max_len=100)
    assert [cache.slots(i) for i in range(config.num_layers)] == [8, 8, 100, 8, 8, 100]
    assert KVCache(config, batch=1, max_len=5).slots(0) == 5  # shorter than the window: no more than needed


def test_kv_cache_of_the_270m_at_32k_is_a_quarter_of_full_length_buffers():
    """The issue's target: at most 1/4 of one full-length buffer per layer (what minigemma allocated
    before ring buffers). Shapes only (meta device)."""
    config = minigemma.get_config("gemma3-270m")
    ours = KVCache(config, batch=1, max_len=32_768, device="meta").memory_bytes()
    full = KVCache(config, batch=1, max_len=32_768, device="meta",
                   windows=[None] * config.num_layers).memory_bytes()
    assert full == 18 * 32_768 * 2 * 256 * 4  # 18 layers, k and v, one kv head of 256, float32
    assert ours == (3 * 32_768 + 15 * 512) * 2 * 256 * 4
    assert ours <= full / 4  # 5.6x less


def test_a_layer_made_global_gets_a_full_length_cache():
    """Notebook 07's exercise turns local layers global (attn.window = None): new_cache follows the
    layers, not the config, so cached decoding still matches the full forward."""
    model = random_model("tiny-gemma3")
    for block in model.blocks:
        block.attn.window = None
    ids = torch.randint(0, 512, (1, 20), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(ids)
    assert model.new_cache(1, 20).slots(0) == 20
    torch.testing.assert_close(decode_in_chunks(model, ids, [10] + [1] * 10), expected, atol=1e-5, rtol=0)


def test_a_full_cache_says_so():
    model = random_model("tiny-gemma3")
    cache = model.new_cache(batch=1, max_len=4)
    with torch.no_grad():
        model(torch.tensor([[2, 5, 6, 7]]), cache=cache)
        with pytest.raises(ValueError, match="KV cache holds 4 positions but position 4 was requested; "
                                             "create the cache with a larger max_len"):
            model(torch.tensor([[8]]), cache=cache)


def test_context_overflow_is_refused():
    model = random_model("tiny-gemma")
    with pytest.raises(ValueError, match="longer than the model's context"):
        model(torch.zeros(1, model.config.max_position_embeddings + 1, dtype=torch.long))


# --- quantized modules on the same model ------------------------------------------------------------

def test_hooks_work_on_a_quantized_model_as_on_the_float_one():
    """run_with_cache and ablation on int8 modules: the same hook points, the same shapes, and an
    ablated head changes the output exactly as the same ablation does on the float model's logits."""
    model = random_model("tiny-gemma3")
    small = quantize(copy.deepcopy(model), bits=8)
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(6))
    logits_f, cache_f = run_with_cache(model, ids, "hook_pattern")
    logits_q, cache_q = run_with_cache(small, ids, "hook_pattern")
    assert sorted(cache_f) == sorted(cache_q)
    assert all(cache_f[k].shape == cache_q[k].shape for k in cache_f)
    with torch.no_grad():
        # The explicit softmax (taken when the pattern is hooked) agrees with the fused kernel to float
        # rounding; the int8 matmuls then round their bf16 outputs, so a logit may move by one bf16 step.
        torch.testing.assert_close(logits_q, small(ids), atol=0.05, rtol=0.01)
        with hooks(small, ablate_head(1, 0)):
            ablated = small(ids)
    assert not torch.allclose(ablated, logits_q)


# --- compiled ---------------------------------------------------------------------------------------

def test_compiled_step_gives_the_same_tokens_and_compiles_once():
    """int8 modules, tiny-gemma3 (a local layer with a window of 8, QK norms): the compiled step
    gives the eager model's greedy tokens and logits to float rounding, and one compilation serves
    every step, past the window, and another prompt length. ~1 min on 2 CPU cores."""
    model = quantize(random_model("tiny-gemma3"), bits=8)
    eager = copy.deepcopy(model)
    minigemma.compile(model, verbose=False)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(kernel_cache_dir()) and any(kernel_cache_dir().iterdir())
    prompt = [2, 40, 41, 300, 7]
    assert list(generate_ids(model, prompt, 12)) == list(generate_ids(eager, prompt, 12))
    torch.compiler.set_stance("fail_on_recompile")
    try:
        assert list(generate_ids(model, prompt + [8], 30)) == list(generate_ids(eager, prompt + [8], 30))
    finally:
        torch.compiler.set_stance("default")
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(decode_in_chunks(model, ids, [6] + [1] * 6), decode_in_chunks(eager, ids, [6] + [1] * 6),
                               atol=1e-3, rtol=1e-3)


def test_compiled_kernels_are_kept_per_torch_version_and_cpu_code_path(monkeypatch, tmp_path):
    """Inductor's default kernel folder is keyed without the CPU code path (torch 2.13): kernels
    written for AVX-512 were reused under ATEN_CPU_CAPABILITY=avx2 and the compiled 270M stopped
    after one token. So compile keeps them in minigemma's cache, a folder per torch version and
    code path, and leaves a folder the user chose alone."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("MINIGEMMA_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    here = kernel_cache_dir()
    capability = torch.backends.cpu.get_cpu_capability().lower()
    assert here == tmp_path / "inductor" / f"torch-{torch.__version__}-{capability}"
    # The code path is fixed when torch starts, so another one needs another process.
    other = subprocess.run([sys.executable, "-c", "from minigemma.decoding.compile import kernel_cache_dir as k; print(k())"],
                           env={**os.environ, "ATEN_CPU_CAPABILITY": "default"}, capture_output=True, text=True, check=True)
    assert Path(other.stdout.strip()) == here.parent / f"torch-{torch.__version__}-default" != here
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # torch writes its default there once it has run
    assert kernel_cache_dir() == here
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert kernel_cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize("scheme", ["int8", "int8-dynamic", "int4", "int8-blocks"])
def test_the_decoding_step_compiles_in_one_piece(scheme):
    """torch.compile records the quantized layers inside one graph: a graph break per int8 layer
    (kernels.aligned's pointer check, once traced as Python) split the step into pieces that were
    recompiled per layer, and the compiled model decoded slower than the eager one. Only
    int8-dynamic's fbgemm output projection, an opaque C++ object, runs eagerly."""
    from minigemma.quantize import apply_scheme

    model = apply_scheme(random_model("tiny-gemma3"), scheme)
    with torch.inference_mode():
        model(torch.tensor([[2]]), cache=model.new_cache(1, 8))  # the layers bind their kernels
        cache = model.new_cache(1, 8)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model.forward_at)(torch.tensor([[5]]), torch.tensor([0]), cache, True)
    if scheme != "int8-dynamic":
        assert (explained.graph_count, explained.graph_break_count) == (1, 0)
        return
    # The one eager call splits the step where it enters and leaves the output projection, the
    # last thing in the step (before the fix: 17 breaks in 18 pieces).
    assert explained.graph_break_count <= 2
    where = {frame.line.strip() for reason in explained.break_reasons for frame in reason.user_stack[-1:]}
    assert where == {"return dynamic_int8_matmul(x.float(), self._packed[x.device]).to(x.dtype)  # (batch, seq, vocab)"}


def test_hooks_switch_the_compiled_step_off(monkeypatch):
    """A hook registered after compile() must be called, not skipped by the recorded step."""
    model = random_model("tiny-gemma")
    minigemma.compile(model, verbose=False)
    calls = []
    monkeypatch.setattr(model, "compiled_step", lambda *a: calls.append("compiled") or model.forward_at(*a))
    cache = model.new_cache(1, 8)
    with torch.no_grad():
        model(torch.tensor([[2, 5, 6]]), cache=cache)
        model(torch.tensor([[7]]), cache=cache)
        assert calls == ["compiled"]  # prefill eager, the decoding step compiled
        seen = []
        with hooks(model, {"blocks.0.hook_resid_post": lambda x, name: seen.append(name)}):
            model(torch.tensor([[8]]), cache=cache)
    assert seen == ["blocks.0.hook_resid_post"] and calls == ["compiled"]


def test_cuda_graphs_need_a_gpu():
    with pytest.raises(ValueError, match="CUDA graphs need the model on a CUDA GPU.*cuda_graphs=False"):
        minigemma.compile(random_model("tiny-gemma"), cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graphs_give_the_same_tokens():
    """On a GPU compile() records each decoding step as a CUDA graph: the same tokens as eager, twice
    in a row (the second generation replays the graph on the same cache buffers)."""
    model = random_model("tiny-gemma3").to("cuda")
    eager = copy.deepcopy(model)
    minigemma.compile(model, verbose=False)
    assert model.cuda_graphs
    for prompt in ([2, 40, 41, 300, 7], [2, 9, 8]):
        assert list(generate_ids(model, prompt, 20)) == list(generate_ids(eager, prompt, 20))


# --- the real 270M ----------------------------------------------------------------------------------

@pytest.mark.numerics
@pytest.mark.parametrize("prompt", ["The capital of France is", "def fibonacci(n):"])
def test_real_270m_compiled_greedy_text_identical(gemma3_270m, prompt, compiled_270m):
    model, tok = gemma3_270m
    assert minigemma.generate(compiled_270m, tok, prompt, max_new_tokens=16) == \
        minigemma.generate(model, tok, prompt, max_new_tokens=16)


@pytest.fixture(scope="module")
def compiled_270m(gemma3_270m):
    model, _ = gemma3_270m
    return minigemma.compile(copy.deepcopy(model), verbose=False)  # a copy: other tests use the eager one


def test_float_copy_runs_the_rounded_weights_in_float():
    """quantize.float_copy: the quantized numbers in plain nn.Linear / nn.Embedding (notebook 13's
    greedy text): exactly the float model whose weights were replaced by their dequantized values."""
    from minigemma.quantize import QuantizedLinear, float_copy

    model = random_model("tiny-gemma3")
    small = quantize(copy.deepcopy(model), bits=8)
    expected = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in small.named_modules():
            if isinstance(module, QuantizedLinear) and not name.startswith("embed"):
                expected.get_submodule(name).weight.copy_(module.dequantized())
        expected.embed.weight.copy_(small.embed.linear.dequantized())
    floats = float_copy(small)
    assert not any(isinstance(m, QuantizedLinear) for m in floats.modules())
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(floats(ids), expected(ids), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bits,name", [(8, "tiny-gemma3"), (4, "tiny-gemma3"), (8, "tiny-gemma-mha")])
def test_fused_projections_compute_the_same(bits, name, tmp_path):
    """quantize.fuse: q|k|v and gate|up in one layer each, the same numbers (their rows stacked),
    the separate layers gone (no second copy), hook points intact; saved and loaded fused."""
    from minigemma.quantize import QuantizedLinear, fuse, load_quantized, save_quantized

    model = quantize(random_model(name), bits=bits, group_size=32)
    fused = fuse(copy.deepcopy(model))
    attn, mlp = fused.blocks[0].attn, fused.blocks[0].mlp
    assert isinstance(attn.qkv, QuantizedLinear) and attn.q_proj is None and attn.k_proj is None
    assert isinstance(mlp.gate_up, QuantizedLinear) and mlp.gate_proj is None
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids), model(ids), atol=1e-5, rtol=0)
        assert list(generate_ids(fused, [2, 9, 4], 10)) == list(generate_ids(model, [2, 9, 4], 10))
        _, cache = run_with_cache(fused, ids, "hook_pattern")
        assert len(cache) == model.config.num_layers
        reloaded = load_quantized(save_quantized(fused, tmp_path / "q"))
        torch.testing.assert_close(reloaded(ids), fused(ids), atol=0, rtol=0)


def test_load_with_a_scheme_fuses_and_float_copy_unfuses():
    from minigemma.quantize import apply_scheme, float_copy

    model = apply_scheme(random_model("tiny-gemma3"), "int8")
    assert model.blocks[0].attn.qkv is not None
    floats = float_copy(model)
    assert type(floats.blocks[0].attn.qkv) is torch.nn.Linear and floats.blocks[0].attn.q_proj is None
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # the float copy has the same weights: only the bf16 rounding of activations differs
        assert ((floats(ids) - model(ids)).norm() / floats(ids).norm()) < 0.03
