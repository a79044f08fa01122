"""The solutions to notebook 07's exercises (notebooks/solutions/07_gemma1_to_gemma3.py) work."""

import importlib
import sys
from pathlib import Path

import pytest
import torch

import minigemma
from minigemma import PRESETS
from minigemma.model.attention import KVCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
sol = importlib.import_module("solutions.07_gemma1_to_gemma3")  # file names start with a digit


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("context", [1, 100, 4096])
def test_kv_cache_bytes_with_ring_buffer_is_what_kvcache_allocates(name, context):
    config = minigemma.get_config(name)
    expected = KVCache(config, batch=1, max_len=context, device="meta").memory_bytes()  # float32
    assert sol.kv_cache_bytes(config, context, bytes_per_value=4, ring_buffer=True) == expected


def test_kv_cache_bytes_known_values():
    g3 = minigemma.get_config("gemma3-270m")
    # bf16, 32k: 3 global layers x 32768 positions + 15 local layers x 512, 1 KiB per position each
    assert sol.kv_cache_bytes(g3, 32_768) == (3 * 32_768 + 15 * 512) * 1024 == 108_527_616
    assert sol.kv_cache_bytes(g3, 32_768, ring_buffer=False) == 18 * 32_768 * 1024
    assert sol.kv_cache_bytes(g3, 300) == sol.kv_cache_bytes(g3, 300, ring_buffer=False)  # inside the window
    # Gemma 1 has no local layers: the ring buffer changes nothing. 2B (multi-query) vs 7B (multi-head) at 8k.
    g2b, g7b = minigemma.get_config("gemma-2b"), minigemma.get_config("gemma-7b")
    assert sol.kv_cache_bytes(g2b, 8192) == sol.kv_cache_bytes(g2b, 8192, ring_buffer=False) == 18 * 8192 * 1024
    assert sol.kv_cache_bytes(g7b, 8192) == 28 * 8192 * 2 * 16 * 256 * 2
    with pytest.raises(ValueError, match="context"):
        sol.kv_cache_bytes(g3, -1)


def test_receptive_field_theory():
    g3 = minigemma.get_config("gemma3-270m")
    assert [sol.receptive_field(g3, n) for n in range(6)] == [0, 511, 1022, 1533, 2044, 2555]
    assert sol.receptive_field(g3, 6) == sol.receptive_field(g3, 18) == 32_767
    assert sol.receptive_field(minigemma.get_config("gemma-2b"), 1) == 8191
    with pytest.raises(ValueError, match="num_layers"):
        sol.receptive_field(g3, 19)


@pytest.fixture(scope="module")
def tiny3():
    torch.manual_seed(0)
    model = minigemma.Gemma(minigemma.get_config("tiny-gemma3")).eval()  # window 8, layers L L G L L G
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_receptive_field_matches_gradients(tiny3, num_layers):
    seq = 40
    ids = torch.randint(0, 512, (1, seq), generator=torch.Generator().manual_seed(1))
    reached = sol.influenced_positions(tiny3, ids, num_layers)
    field = sol.receptive_field(tiny3.config, num_layers)
    expected = torch.arange(seq) >= seq - 1 - field
    assert torch.equal(reached, expected)


@torch.no_grad()
def test_all_global_changes_only_long_prompts(tiny3):
    cfg = tiny3.config
    windows = [b.attn.window for b in tiny3.blocks]
    short = torch.randint(0, 512, (1, cfg.sliding_window), generator=torch.Generator().manual_seed(2))
    long = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(3))
    short_ref, long_ref = tiny3(short), tiny3(long)
    with sol.all_global(tiny3):
        assert all(b.attn.window is None for b in tiny3.blocks)
        assert torch.equal(tiny3(short), short_ref)
        assert not torch.allclose(tiny3(long), long_ref)
    assert [b.attn.window for b in tiny3.blocks] == windows
    assert torch.equal(tiny3(long), long_ref)


def test_all_global_restores_after_an_error(tiny3):
    windows = [b.attn.window for b in tiny3.blocks]
    with pytest.raises(RuntimeError):
        with sol.all_global(tiny3):
            raise RuntimeError("boom")
    assert [b.attn.window for b in tiny3.blocks] == windows
