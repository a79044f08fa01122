"""The solutions to notebook 04's exercises (notebooks/solutions/04_attention.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

from minigemma import Gemma, get_config
from minigemma.model.attention import Attention, KVCache
from minigemma.decoding.generate import generate_ids

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.04_attention")  # file names start with a digit


@pytest.mark.parametrize("name, expected", [("gemma-2b", 150_994_944), ("gemma-7b", 3_758_096_384)])
def test_kv_cache_bytes_gemma1(name, expected):
    config = get_config(name)
    assert sol.kv_cache_bytes(config, 8192) == expected
    # the package's cache, allocated on the meta device (shapes only, no memory), agrees
    cache = KVCache(config, batch=1, max_len=8192, device="meta", dtype=torch.bfloat16)
    assert cache.memory_bytes() == expected


def test_kv_cache_bytes_windowed_gemma3():
    config = get_config("gemma3-270m")
    full = sol.kv_cache_bytes(config, 32_768)
    windowed = sol.kv_cache_bytes(config, 32_768, windowed=True)
    assert full == 18 * 32_768 * 1024
    assert windowed == (3 * 32_768 + 15 * 512) * 1024  # 3 global layers, 15 local ones keep 512
    assert sol.kv_cache_bytes(config, 100, windowed=True) == sol.kv_cache_bytes(config, 100)


def test_mha_to_gqa_is_exact_when_grouped_heads_agree():
    config = get_config("tiny-gemma-mha")  # 4 heads, 4 key/value heads
    torch.manual_seed(0)
    mha = Attention(config, layer=0)
    with torch.no_grad():  # make heads (0, 1) and (2, 3) share keys and values
        for proj in (mha.k_proj, mha.v_proj):
            w = proj.weight.view(4, config.head_dim, -1)
            w[1], w[3] = w[0], w[2]
    gqa = sol.mha_to_gqa(mha, config, num_kv_heads=2)
    assert gqa.k_proj.weight.shape == (2 * config.head_dim, config.hidden_size)
    x, positions = torch.randn(2, 9, config.hidden_size), torch.arange(9)
    with torch.no_grad():
        torch.testing.assert_close(gqa(x, positions), mha(x, positions))


def test_mha_to_gqa_mean_pools():
    config = get_config("tiny-gemma-mha")
    mha = Attention(config, layer=0)
    gqa = sol.mha_to_gqa(mha, config, num_kv_heads=1)
    torch.testing.assert_close(gqa.v_proj.weight, mha.v_proj.weight.view(4, config.head_dim, -1).mean(0))
    with pytest.raises(ValueError, match="multi-head"):
        sol.mha_to_gqa(gqa, config, num_kv_heads=1)


@pytest.mark.parametrize("name", ["tiny-gemma", "tiny-gemma3"])
def test_greedy_with_cache_matches_generate(name):
    torch.manual_seed(0)
    model = Gemma(get_config(name)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # every weight random, norms included (as tests/reference.py does)
    prompt = [2, 17, 99, 250]  # 4 + 20 tokens: past tiny-gemma3's sliding window of 8
    assert sol.greedy_with_cache(model, prompt, 20) == list(generate_ids(model, prompt, max_new_tokens=20))
