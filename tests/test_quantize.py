"""Weight-only int8/int4 quantization: error bounds, kernels against the reference, save/load.

No timing here: speed is measured by benchmarks/speed.py, never asserted.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from minigemma.quantize import (
    Int4Linear,
    Int8Linear,
    QuantizedEmbedding,
    dequantize_int4,
    dequantize_int8,
    kernel_works,
    load_quantized,
    quantize,
    quantize_int4,
    quantize_int8,
    save_quantized,
    unpack_int4,
    weight_bytes,
)
from reference import random_model


# --- the arithmetic ---------------------------------------------------------------------------

def test_int8_round_trip_within_half_a_step():
    w = torch.randn(96, 200) * torch.logspace(-3, 1, 96)[:, None]  # rows of very different scales
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (96,)
    assert q.abs().max() <= 127
    err = (dequantize_int8(q, scale) - w).abs()
    # Rounding to the nearest step leaves at most half a step per entry (+ float32 slack).
    assert (err <= scale[:, None] / 2 * (1 + 1e-5) + 1e-7).all()
    # The largest entry of each row is exact up to float rounding: it defines the scale.
    torch.testing.assert_close(dequantize_int8(q, scale).abs().amax(1), w.abs().amax(1), rtol=1e-6, atol=0)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_round_trip_within_half_a_step(group_size):
    w = torch.randn(48, 256) + torch.linspace(-2, 2, 48)[:, None]  # groups not centred on zero
    packed, scale, zero = quantize_int4(w, group_size)
    assert packed.dtype == torch.uint8 and packed.shape == (48, 128)
    assert scale.shape == zero.shape == (48, 256 // group_size) and scale.dtype == torch.bfloat16
    err = (dequantize_int4(packed, scale, zero) - w).abs().reshape(48, -1, group_size)
    # Half a step, plus what storing s and z in bf16 (8 significant bits) can shift the grid by.
    s, z = scale.float()[..., None], zero.float()[..., None]
    assert (err <= s / 2 + 2**-8 * (z.abs() + 15 * s) + 1e-6).all()
    assert err.max() < 0.55 * s.max()  # in practice the bf16 shift is tiny
    # Every group spans the full grid: its minimum lands on level 0 and its maximum on 15.
    levels = unpack_int4(packed).reshape(48, -1, group_size)
    assert (levels.amin(-1) == 0).all() and (levels.amax(-1) == 15).all()


def test_int4_packing_two_per_byte():
    w = torch.arange(16.0).repeat(2, 2)  # (2, 32): each row 0..15 twice
    packed, scale, zero = quantize_int4(w, 32)
    assert unpack_int4(packed).tolist() == [list(range(16)) * 2] * 2
    assert packed[0, 0].item() == 0 | (1 << 4)  # column 0 in the low nibble, column 1 in the high one


def test_constant_rows_and_groups_survive():
    w = torch.zeros(4, 64)
    w[1], w[2] = 0.5, 0.3
    q, s = quantize_int8(w)
    torch.testing.assert_close(dequantize_int8(q, s), w, atol=1e-7, rtol=0)
    # int4 stores a constant group as its zero point, in bf16: 0.3 comes back as 0.30078125.
    torch.testing.assert_close(dequantize_int4(*quantize_int4(w, 32)), w, atol=0, rtol=2**-8)


@pytest.mark.parametrize("bad", [16, 48, 100])
def test_int4_group_size_errors_are_clear(bad):
    with pytest.raises(ValueError, match="group_size"):
        quantize_int4(torch.randn(8, 192), bad)


def test_int4_group_must_divide_the_input_width():
    with pytest.raises(ValueError, match="divides 96"):
        quantize_int4(torch.randn(8, 96), 64)


def test_bits_must_be_4_or_8():
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        quantize(random_model(), bits=2)


# --- the layers: fast kernel (when it exists here) against dequantize-then-matmul --------------

@pytest.mark.parametrize("rows", [1, 15])  # a decoding step (kernel) and a prompt (kernel or fallback)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_matches_its_dequantized_weight(dtype, rows):
    torch.manual_seed(0)
    w, x = torch.randn(64, 128), torch.randn(rows, 1, 128)
    layer = Int8Linear.from_float(w)
    expected = F.linear(x.to(dtype).float(), layer.dequantized())
    tol = 1e-4 if dtype == torch.float32 else 0.1  # bf16 output keeps ~3 significant digits
    torch.testing.assert_close(layer(x.to(dtype)).float(), expected, atol=tol, rtol=0.01 if tol > 1e-3 else 0)


@pytest.mark.parametrize("rows", [1, 7, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_matches_its_dequantized_weight(dtype, rows):
    torch.manual_seed(0)
    w, x = torch.randn(64, 128), torch.randn(rows, 128)
    layer = Int4Linear.from_float(w, 32)
    expected = F.linear(x.to(dtype).float(), layer.dequantized())
    tol = 1e-4 if dtype == torch.float32 else 0.15  # bf16 output keeps ~3 significant digits
    torch.testing.assert_close(layer(x.to(dtype)).float(), expected, atol=tol, rtol=0.02 if tol > 1e-3 else 0)


def test_cpu_kernels_are_found():
    # PyTorch 2.13 on x86 has both; if a future version drops one, the layers fall back (still
    # correct, per the tests above) and this test says why the benchmark got slower.
    cpu = torch.device("cpu")
    assert kernel_works("int8", cpu, torch.bfloat16)
    assert kernel_works("int4", cpu, torch.bfloat16)


def test_cat_stacks_outputs():
    torch.manual_seed(0)
    a, b = torch.randn(32, 64), torch.randn(16, 64)
    x = torch.randn(2, 64)
    for make in (Int8Linear.from_float, lambda w: Int4Linear.from_float(w, 32)):
        la, lb = make(a), make(b)
        fused = type(la).cat([la, lb])
        torch.testing.assert_close(fused(x), torch.cat([la(x), lb(x)], -1), atol=1e-5, rtol=0)


# --- whole models --------------------------------------------------------------------------------

@pytest.mark.parametrize("bits,group_size,max_rel_error", [(8, 64, 0.05), (4, 32, 0.5)])
def test_quantized_tiny_model_close_to_float(bits, group_size, max_rel_error):
    """Relative error of the logits, ||got - fp32|| / ||fp32||, on random Gaussian weights.

    Measured 0.03 (int8) and 0.38 (int4, groups of 32): Gaussian weights are int4's worst case,
    a tiny model has no redundancy to average the noise out. The real 270M does far better
    (tests below, notebook 13).
    """
    model = random_model()
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids)
        got = quantize(copy.deepcopy(model), bits, group_size)(ids)
    assert (got - expected).norm() / expected.norm() < max_rel_error


def test_quantize_replaces_every_linear_and_the_embedding():
    model = quantize(random_model(), bits=8)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert isinstance(model.embed, QuantizedEmbedding)
    assert model.quantization["layers"]["blocks.0.attn.q_proj"] == {"bits": 8, "group_size": None}
    # Norms stay float32.
    assert model.blocks[0].attn_norm.weight.dtype == torch.float32


def test_quantize_parts_separately():
    only_embedding = quantize(random_model(), bits=8, layer_bits=None)
    assert isinstance(only_embedding.blocks[0].mlp.up_proj, torch.nn.Linear)
    assert isinstance(only_embedding.embed, QuantizedEmbedding) and only_embedding.embed.linear.bits == 8
    mixed = quantize(random_model(), bits=4, group_size=32, embedding_bits=8)
    assert isinstance(mixed.blocks[0].mlp.up_proj, Int4Linear)
    assert isinstance(mixed.embed.linear, Int8Linear)
    only_layers = quantize(random_model(), bits=8, embedding_bits=None)
    assert isinstance(only_layers.embed, torch.nn.Embedding)
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        quantize(random_model(), bits=8, embedding_bits=3)


def test_mixed_save_load(tmp_path):
    model = quantize(random_model(), bits=4, group_size=32, layer_bits=None)
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(3))
    save_quantized(model, tmp_path)
    loaded = load_quantized(tmp_path)
    assert isinstance(loaded.blocks[0].attn.q_proj, torch.nn.Linear)
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_embedding_lookup_dequantizes_rows():
    model = random_model()
    float_rows = model.embed.weight[torch.tensor([3, 7])]
    quantize(model, bits=8)
    rows = model.embed(torch.tensor([3, 7]))
    torch.testing.assert_close(rows, float_rows, atol=model.embed.linear.scale.max().item(), rtol=0)
    torch.testing.assert_close(model.embed.weight[torch.tensor([3, 7])], rows)  # the property agrees


@pytest.mark.parametrize("bits,group_size", [(8, 64), (4, 32), (4, 64)])
def test_save_load_gives_identical_logits(tmp_path, bits, group_size):
    model = quantize(random_model(), bits, group_size)
    ids = torch.randint(0, 512, (1, 20), generator=torch.Generator().manual_seed(2))
    save_quantized(model, tmp_path)
    assert (tmp_path / "quantization.json").is_file()
    loaded = load_quantized(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert weight_bytes(loaded) == weight_bytes(model)


def test_save_refuses_a_float_model(tmp_path):
    with pytest.raises(ValueError, match="no quantized layers"):
        save_quantized(random_model(), tmp_path)


def test_load_refuses_a_directory_without_scheme(tmp_path):
    with pytest.raises(ValueError, match="quantization.json"):
        load_quantized(tmp_path)


def test_weight_bytes_shrink():
    model = random_model()
    full = weight_bytes(model)
    assert weight_bytes(quantize(copy.deepcopy(model), 8)) < full / 3
    assert weight_bytes(quantize(copy.deepcopy(model), 4, 32)) < full / 4


# --- the real 270M ---------------------------------------------------------------------------------

PROMPT = "The capital of France is Paris. The capital of Germany is"


@pytest.fixture(scope="module")
def real_270m_int8(gemma3_270m):
    model, _ = gemma3_270m
    return quantize(copy.deepcopy(model), bits=8)


def test_real_270m_int8_close_to_fp32(gemma3_270m, real_270m_int8):
    """int8 per-row weights on the real model: logits move by ~1% of their norm, predictions stay.

    Measured on this prompt: relative error 3.9%, max |difference| 1.2 on logits spanning ~35.
    """
    model, tok = gemma3_270m
    ids = torch.tensor([tok.encode(PROMPT, add_bos=True)])
    with torch.no_grad():
        expected, got = model(ids), real_270m_int8(ids)
    assert (got - expected).norm() / expected.norm() < 0.06
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9
    assert got[0, -1].argmax() == expected[0, -1].argmax()


def test_real_270m_int4_save_load(gemma3_270m, tmp_path):
    model, tok = gemma3_270m
    ids = torch.tensor([tok.encode(PROMPT, add_bos=True)])
    q4 = quantize(copy.deepcopy(model), bits=4, group_size=64)
    save_quantized(q4, tmp_path)
    loaded = load_quantized(tmp_path)
    with torch.no_grad():
        got, expected = loaded(ids), q4(ids)
        reference = model(ids)
    assert torch.equal(got, expected)
    # int4 moves logits more than int8, but the prediction of the last token survives.
    assert got[0, -1].argmax() == reference[0, -1].argmax()
    assert weight_bytes(loaded) < weight_bytes(model) / 5


def test_device_and_cache_do_not_dequantize_the_embedding(monkeypatch):
    """model.device and new_cache read a norm's weight: asking a QuantizedEmbedding for `.weight`
    would dequantize all its rows (262k for the 270M) on every generate call."""
    from minigemma.quantize import QuantizedEmbedding

    model = quantize(random_model(), bits=8)

    def refuse(self):
        raise AssertionError("the full embedding was dequantized")

    monkeypatch.setattr(QuantizedEmbedding, "weight", property(refuse))
    assert model.device == torch.device("cpu")
    cache = model.new_cache(batch=1, max_len=4)
    assert cache.k[0].dtype == torch.float32
