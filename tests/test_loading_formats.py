"""Every checkpoint format a user may download, written here in miniature, loads to transformers' logits.

Each test writes a tiny random model the way the real releases are laid out (transformers'
save_pretrained, gemma_pytorch's .ckpt and its int8 variant, llama.cpp's GGUF), loads it with
`minigemma.load`, and compares logits with transformers' run of the same weights (fp32, 1e-5).
Then the failure modes: truncated files, wrong shapes, missing tensors, the wrong preset.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import gguf
import pytest
import torch

import minigemma
from minigemma import get_config
from minigemma.quantize import Int8Linear

from reference import hf_model, randomize_

ATOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- writers for each format

def train_spm(directory: Path) -> Path:
    """A 512-piece SentencePiece BPE model with Gemma's settings and special ids (the tiny configs' vocab)."""
    import sentencepiece as spm

    text = "\n".join(p.read_text() for p in sorted((ROOT / "minigemma").rglob("*.py")))
    (directory / "corpus.txt").write_text(text)
    spm.SentencePieceTrainer.train(
        input=str(directory / "corpus.txt"), model_prefix=str(directory / "tokenizer"), vocab_size=512,
        model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        minloglevel=2,
    )
    return directory / "tokenizer.model"


def write_hf(hf, directory: Path, spm_model: Path, max_shard_size: str | None = None) -> Path:
    """transformers' own layout: config.json + (sharded) safetensors, tokenizer.model beside."""
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    hf.save_pretrained(directory, **kwargs)
    shutil.copy(spm_model, directory / "tokenizer.model")
    return directory


def rope_table(head_dim: int, context: int, theta: float = 10_000.0) -> torch.Tensor:
    """gemma_pytorch's `freqs_cis` buffer: (2 * context, head_dim / 2) complex64."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(2 * context).float(), inv)
    return torch.polar(torch.ones_like(angles), angles)


def gemma_pytorch_state(hf, config) -> dict[str, torch.Tensor]:
    """The state dict of gemma_pytorch's GemmaForCausalLM holding hf's weights."""
    sd = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    state = {"embedder.weight": sd["model.embed_tokens.weight"], "model.norm.weight": sd["model.norm.weight"]}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        state[p + "self_attn.qkv_proj.weight"] = torch.cat(
            [sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])  # rows [q | k | v]
        for n in ("self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                  "input_layernorm.weight", "post_attention_layernorm.weight"):
            state[p + n] = sd[p + n]
    state["freqs_cis"] = rope_table(config.head_dim, config.max_position_embeddings)
    return state


def save_ckpt(state: dict, path: Path, spm_model: Path) -> Path:
    torch.save({"model_state_dict": state}, path)
    shutil.copy(spm_model, path.parent / "tokenizer.model")
    return path


def quantize_state(state: dict) -> tuple[dict, dict]:
    """gemma_pytorch's quant layout: int8 (rows, cols) + bf16 `weight_scaler` per row; norms untouched.

    Returns the int8 state and the same weights dequantized (float32) in the original layout.
    """
    quant, dequant = {}, {}
    for name, w in state.items():
        if w.dim() == 2 and not w.is_complex():
            scale = (w.abs().amax(dim=1) / 127).to(torch.bfloat16)
            q = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
            quant[name], quant[name + "_scaler"] = q, scale
            dequant[name] = q.float() * scale.float()[:, None]
        else:
            quant[name] = dequant[name] = w
    return quant, dequant


def hf_from_gemma_pytorch_state(state: dict, config):
    """A transformers model holding the weights of a gemma_pytorch state dict (q/k/v unfused)."""
    hf = hf_model(config)
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    sd = {"model.embed_tokens.weight": state["embedder.weight"], "model.norm.weight": state["model.norm.weight"]}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        qkv = state[p + "self_attn.qkv_proj.weight"]
        sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"], sd[p + "self_attn.v_proj.weight"] = \
            qkv.split([q, kv, kv])
        for n in ("self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                  "input_layernorm.weight", "post_attention_layernorm.weight"):
            sd[p + n] = state[p + n]
    hf.load_state_dict(sd, strict=False)  # lm_head is tied to the embedding
    return hf


def gguf_vocab(spm_model: Path) -> dict:
    """tokens, scores and token types as llama.cpp's converter writes them (types = ModelProto's)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(spm_model.read_bytes())
    return dict(tokens=[p.piece for p in proto.pieces], scores=[p.score for p in proto.pieces],
                types=[int(p.type) for p in proto.pieces])


def gemma_gguf_writer(path: Path, config, spm_model: Path, value_length: bool = True) -> gguf.GGUFWriter:
    """A GGUFWriter holding a Gemma 1 config and the tokenizer as llama.cpp's converter writes them.

    Add the tensors, then `finish_gguf`.
    """
    w = gguf.GGUFWriter(str(path), "gemma")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_key_length(config.head_dim)
    if value_length:
        w.add_value_length(config.head_dim)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    vocab = gguf_vocab(spm_model)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab["tokens"])
    w.add_token_scores(vocab["scores"])
    w.add_token_types(vocab["types"])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_space_prefix(False)
    return w


def finish_gguf(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf(hf, config, spm_model: Path, path: Path) -> Path:
    """A Gemma 1 GGUF the way llama.cpp's converter writes one: F32 here, norms stored as (1 + w)."""
    sd = hf.state_dict()
    w = gemma_gguf_writer(path, config, spm_model)
    w.add_name("tiny gemma")

    def put(name: str, t: torch.Tensor, norm: bool = False) -> None:
        w.add_tensor(name, (t.detach().float() + (1.0 if norm else 0.0)).numpy())

    put("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"], norm=True)
        put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], norm=True)
        for ours, theirs in (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
                             ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                             ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")):
            put(f"blk.{i}.{ours}.weight", sd[p + theirs + ".weight"])
    put("output_norm.weight", sd["model.norm.weight"], norm=True)
    finish_gguf(w)
    return path


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    return train_spm(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module", params=["tiny-gemma", "tiny-gemma-mha"])
def pair(request):
    """(config, transformers model with random weights): multi-query and multi-head attention."""
    config = get_config(request.param)
    torch.manual_seed(0)
    hf = hf_model(config)
    randomize_(hf, seed=3)
    return config, hf


@pytest.fixture
def ids():
    return torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(7))


def reference_logits(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids).logits


def our_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)


def load(path, **kwargs):
    return minigemma.load(path, progress=False, **kwargs)


# ---------------------------------------------------------------- Hugging Face directories

@pytest.mark.parametrize("shard", [None, "20KB"], ids=["single", "sharded"])
def test_hf_directory_matches_transformers(pair, spm_model, tmp_path, ids, shard):
    config, hf = pair
    directory = write_hf(hf, tmp_path / "hf", spm_model, shard)
    if shard:
        assert (directory / "model.safetensors.index.json").is_file()
        assert len(list(directory.glob("model-*-of-*.safetensors"))) > 2
    model, tok = load(directory)
    assert model.config.name == config.name  # the preset config.json matches
    torch.testing.assert_close(our_logits(model, ids), reference_logits(hf, ids), atol=ATOL, rtol=0)
    assert tok.vocab_size == 512 and tok.decode(tok.encode("def load(path)")) == "def load(path)"


def test_hf_gelu_config_runs_tanh_gelu(pair, spm_model, tmp_path, ids, caplog):
    """Pitfall 1: Gemma 1 configs say hidden_act "gelu"; the model still uses the tanh approximation."""
    config, hf = pair
    directory = write_hf(hf, tmp_path / "hf", spm_model)
    raw = json.loads((directory / "config.json").read_text())
    raw["hidden_act"] = "gelu"
    (directory / "config.json").write_text(json.dumps(raw))
    with caplog.at_level(logging.INFO, logger="minigemma"):
        model, _ = load(directory)
    assert "tanh approximation" in caplog.text and f"matches preset {config.name}" in caplog.text
    torch.testing.assert_close(our_logits(model, ids), reference_logits(hf, ids), atol=ATOL, rtol=0)


def test_hf_bfloat16(pair, spm_model, tmp_path, ids):
    config, hf = pair
    model, _ = load(write_hf(hf, tmp_path / "hf", spm_model), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    got = our_logits(model, ids).float()
    assert (got.argmax(-1) == reference_logits(hf, ids).argmax(-1)).float().mean() > 0.9


def test_hf_directory_given_as_safetensors_file(pair, spm_model, tmp_path, ids):
    config, hf = pair
    directory = write_hf(hf, tmp_path / "hf", spm_model)
    model, _ = load(directory / "model.safetensors")
    torch.testing.assert_close(our_logits(model, ids), reference_logits(hf, ids), atol=ATOL, rtol=0)


# ---------------------------------------------------------------- gemma_pytorch .ckpt

def test_ckpt_matches_transformers(pair, spm_model, tmp_path, ids):
    config, hf = pair
    path = save_ckpt(gemma_pytorch_state(hf, config), tmp_path / "model.ckpt", spm_model)
    model, tok = load(path)
    assert model.config.name == config.name
    torch.testing.assert_close(our_logits(model, ids), reference_logits(hf, ids), atol=ATOL, rtol=0)
    model, _ = load(tmp_path)  # a Kaggle-style folder: one .ckpt and tokenizer.model
    torch.testing.assert_close(our_logits(model, ids), reference_logits(hf, ids), atol=ATOL, rtol=0)


def test_ckpt_config_inferred_without_a_preset(spm_model, tmp_path, ids):
    """No preset has 3 layers and head_dim 32: heads, kv heads, head_dim and context come from shapes."""
    config = get_config("tiny-gemma").replace(name="custom", num_layers=3, num_heads=2, head_dim=32,
                                              max_position_embeddings=64)
    hf = hf_model(config)
    randomize_(hf, seed=5)
    model, _ = load(save_ckpt(gemma_pytorch_state(hf, config), tmp_path / "my-gemma.ckpt", spm_model))
    assert model.config == config.replace(name="my-gemma")
    torch.testing.assert_close(our_logits(model, ids), reference_logits(hf, ids), atol=ATOL, rtol=0)


def test_int8_ckpt_dequantized(pair, spm_model, tmp_path, ids):
    config, hf = pair
    quant, dequant = quantize_state(gemma_pytorch_state(hf, config))
    assert quant["embedder.weight"].dtype == torch.int8 and quant["embedder.weight_scaler"].dtype == torch.bfloat16
    model, _ = load(save_ckpt(quant, tmp_path / "model-quant.ckpt", spm_model))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    expected = reference_logits(hf_from_gemma_pytorch_state(dequant, config), ids)
    torch.testing.assert_close(our_logits(model, ids), expected, atol=ATOL, rtol=0)


def test_int8_ckpt_kept_int8(pair, spm_model, tmp_path, ids):
    config, hf = pair
    quant, dequant = quantize_state(gemma_pytorch_state(hf, config))
    model, _ = load(save_ckpt(quant, tmp_path / "model-quant.ckpt", spm_model), keep_int8=True)
    # minigemma.quantize's one Int8Linear: gemma_pytorch's bf16 weight_scaler is its float32 `scale`.
    int8 = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert len(int8) == 7 * config.num_layers and all(m.weight.dtype == torch.int8 for m in int8)
    assert all(m.scale.dtype == torch.float32 for m in int8) and len(model.quantization["layers"]) == len(int8)
    torch.testing.assert_close(model.blocks[0].mlp.up_proj.scale,
                               quant["model.layers.0.mlp.up_proj.weight_scaler"].float(), atol=0, rtol=0)
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    torch.testing.assert_close(model.blocks[1].attn.k_proj.weight,
                               quant["model.layers.1.self_attn.qkv_proj.weight"][q:q + kv])
    expected = reference_logits(hf_from_gemma_pytorch_state(dequant, config), ids)
    # Scaling after the matmul instead of before changes only the rounding order.
    torch.testing.assert_close(our_logits(model, ids), expected, atol=1e-4, rtol=0)
    # One row (a decoding step) goes through PyTorch's int8 kernel, with bf16 inputs on a CPU:
    # within their rounding (measured 0.7-1.0%) of the first position's logits.
    step = our_logits(model, ids[:1, :1])[0, 0]
    assert (step - expected[0, 0]).norm() / expected[0, 0].norm() < 0.03


@pytest.mark.parametrize("fmt", ["ckpt", "hf"])
def test_flax_padded_vocabulary_is_trimmed(spm_model, tmp_path, fmt):
    config = get_config("tiny-gemma").replace(name="custom", vocab_size=256_128, num_layers=1, hidden_size=16,
                                              intermediate_size=32, num_heads=1, head_dim=8)
    hf = hf_model(config)
    if fmt == "hf":
        path = write_hf(hf, tmp_path / "hf", spm_model)
    else:
        path = save_ckpt(gemma_pytorch_state(hf, config), tmp_path / "flax.ckpt", spm_model)
    model, _ = load(path)
    assert model.config.vocab_size == 256_000
    torch.testing.assert_close(model.embed.weight, hf.model.embed_tokens.weight[:256_000].detach())


# ---------------------------------------------------------------- GGUF (Gemma 1 architecture)

def test_gemma1_gguf_matches_transformers(pair, spm_model, tmp_path, ids, monkeypatch):
    monkeypatch.setenv("MINIGEMMA_CACHE", str(tmp_path / "cache"))
    config, hf = pair
    model, tok = load(write_gguf(hf, config, spm_model, tmp_path / "tiny.gguf"))
    assert model.config == config
    torch.testing.assert_close(our_logits(model, ids), reference_logits(hf, ids), atol=ATOL, rtol=0)
    import sentencepiece as spm

    text = "def fill_model(model, tensors):\n    return 42"
    assert tok.encode(text) == spm.SentencePieceProcessor(model_file=str(spm_model)).encode(text)


# ---------------------------------------------------------------- what goes wrong, and what the user is told

@pytest.fixture
def tiny_hf_dir(spm_model, tmp_path):
    config = get_config("tiny-gemma")
    hf = hf_model(config)
    randomize_(hf)
    return write_hf(hf, tmp_path / "hf", spm_model, max_shard_size="20KB"), hf, config


@pytest.fixture
def tiny_ckpt_state():
    config = get_config("tiny-gemma")
    return gemma_pytorch_state(hf_model(config), config)


def test_truncated_safetensors(tiny_hf_dir):
    directory, _, _ = tiny_hf_dir
    shard = sorted(directory.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{shard.name}.*truncated or corrupt.*download it again"):
        load(directory)


def test_missing_shard(tiny_hf_dir):
    directory, _, _ = tiny_hf_dir
    shard = sorted(directory.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ValueError, match=rf"lacks shard\(s\) {shard.name}.*incomplete"):
        load(directory)


def test_missing_tensor_names_both_names(tiny_hf_dir):
    directory, _, _ = tiny_hf_dir
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"missing 1 tensor.*'model.layers.1.mlp.up_proj.weight' "
                                         r"\(minigemma 'blocks.1.mlp.up_proj.weight'\).*truncated.*wrong preset"):
        load(directory)


def test_wrong_preset_names_tensor_and_shapes(tiny_hf_dir):
    directory, _, _ = tiny_hf_dir
    with pytest.raises(ValueError, match=r"'model.embed_tokens.weight' \(minigemma 'embed.weight'\).*shape "
                                         r"\(512, 64\) but tiny-gemma-mha expects \(512, 48\).*wrong preset"):
        load(directory, config="tiny-gemma-mha")


def test_missing_tokenizer_says_where_to_put_it(tiny_hf_dir):
    directory, _, _ = tiny_hf_dir
    (directory / "tokenizer.model").unlink()
    with pytest.raises(ValueError, match=r"no tokenizer.model next to .*put .* at .*tokenizer.model"):
        load(directory)


def test_hf_directory_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(get_config_json()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    (tmp_path / "tokenizer.model").write_bytes(b"")
    with pytest.raises(ValueError, match="neither model.safetensors nor .*never pickled .bin"):
        load(tmp_path)


def get_config_json() -> dict:
    return {"model_type": "gemma", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16}


def test_gemma2_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**get_config_json(), "model_type": "gemma2"}))
    with pytest.raises(ValueError, match="Gemma 2 .*soft-capping"):
        load(tmp_path)


def test_truncated_ckpt(tiny_ckpt_state, spm_model, tmp_path):
    path = save_ckpt(tiny_ckpt_state, tmp_path / "model.ckpt", spm_model)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model.ckpt.*is truncated.*Download it again"):
        load(path)


def test_misshaped_ckpt_tensor(tiny_ckpt_state, spm_model, tmp_path):
    tiny_ckpt_state["model.layers.1.mlp.down_proj.weight"] = torch.zeros(64, 100)
    path = save_ckpt(tiny_ckpt_state, tmp_path / "model.ckpt", spm_model)
    with pytest.raises(ValueError, match=r"'model.layers.1.mlp.down_proj.weight' \(minigemma "
                                         r"'blocks.1.mlp.down_proj.weight'\).*shape \(64, 100\) but tiny-gemma "
                                         r"expects \(64, 128\).*wrong preset.*corrupt"):
        load(path)


def test_misshaped_fused_qkv(tiny_ckpt_state, spm_model, tmp_path):
    qkv = tiny_ckpt_state["model.layers.0.self_attn.qkv_proj.weight"]
    tiny_ckpt_state["model.layers.0.self_attn.qkv_proj.weight"] = torch.cat([qkv, qkv[:16]])
    path = save_ckpt(tiny_ckpt_state, tmp_path / "model.ckpt", spm_model)
    with pytest.raises(ValueError, match=r"'model.layers.0.self_attn.qkv_proj.weight' in .*model.ckpt has shape "
                                         r"\(112, 64\) but tiny-gemma expects \(96, 64\) = q 64 \+ k 16 \+ v 16 rows"):
        load(path, config="tiny-gemma")


def test_missing_and_unexpected_ckpt_tensors(tiny_ckpt_state, spm_model, tmp_path):
    state = dict(tiny_ckpt_state)
    del state["model.layers.1.post_attention_layernorm.weight"]
    with pytest.raises(ValueError, match=r"missing 1 tensor.*'model.layers.1.post_attention_layernorm.weight' "
                                         r"\(minigemma 'blocks.1.mlp_norm.weight'\)"):
        load(save_ckpt(state, tmp_path / "a.ckpt", spm_model))
    state = dict(tiny_ckpt_state, **{"lm_head.weight": torch.zeros(512, 64)})
    with pytest.raises(ValueError, match=r"does not use: 'lm_head.weight'"):
        load(save_ckpt(state, tmp_path / "b.ckpt", spm_model))


def test_ckpt_with_python_objects_is_refused(spm_model, tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"model_state_dict": {}, "optimizer": logging.Formatter()}, path)  # any non-tensor class
    shutil.copy(spm_model, tmp_path / "tokenizer.model")
    with pytest.raises(ValueError, match="refuses to unpickle it .*weights_only=True"):
        load(path)


def test_keep_int8_needs_an_int8_checkpoint(tiny_ckpt_state, spm_model, tmp_path, tiny_hf_dir):
    with pytest.raises(ValueError, match="keep_int8=True but .* is not an int8 checkpoint"):
        load(save_ckpt(tiny_ckpt_state, tmp_path / "model.ckpt", spm_model), keep_int8=True)
    with pytest.raises(ValueError, match="keep_int8=True needs an int8 gemma_pytorch checkpoint"):
        load(tiny_hf_dir[0], keep_int8=True)


def test_tokenizer_larger_than_embedding(tiny_ckpt_state, spm_model, tmp_path):
    config = get_config("tiny-gemma").replace(vocab_size=300)
    state = gemma_pytorch_state(hf_model(config), config)
    with pytest.raises(ValueError, match="512 pieces but the model's embedding has only 300 rows"):
        load(save_ckpt(state, tmp_path / "model.ckpt", spm_model))


def test_unknown_name_and_missing_paths(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'gemma-2b'.*gemma3-270m.*presets.*"
                                         r"use the Hub id 'google/gemma-2b'"):
        load("gemma-2b")
    with pytest.raises(ValueError, match=r"no such local file or directory: '.*nothing\.ckpt'"):
        load(tmp_path / "nothing.ckpt")
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        load(tmp_path)


def test_hf_gemma3_text_directory(spm_model, tmp_path, ids):
    """Text-only Gemma 3 (gemma-3-270m, gemma-3-1b) in transformers' layout: local layers, QK-norm, extra norms."""
    config = get_config("tiny-gemma3")
    hf = hf_model(config)
    randomize_(hf, seed=4)
    directory = write_hf(hf, tmp_path / "hf", spm_model)
    assert json.loads((directory / "config.json").read_text())["model_type"] == "gemma3_text"
    model, _ = load(directory)
    assert model.config == config
    # 24 tokens: longer than tiny-gemma3's sliding window of 8, so the local layers really forget.
    torch.testing.assert_close(our_logits(model, ids), reference_logits(hf, ids), atol=ATOL, rtol=0)


GEMMA_2B_CONFIG_JSON = {  # google/gemma-2b's config.json as published (transformers 4.38)
    "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 16384, "max_position_embeddings": 8192,
    "model_type": "gemma", "num_attention_heads": 8, "num_hidden_layers": 18, "num_key_value_heads": 1,
    "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
    "torch_dtype": "bfloat16", "transformers_version": "4.38.0.dev0", "use_cache": True, "vocab_size": 256000,
}
GEMMA_7B_CHANGES = dict(hidden_size=3072, intermediate_size=24576, num_attention_heads=16, num_hidden_layers=28,
                        num_key_value_heads=16)


@pytest.mark.parametrize("changes, preset", [
    ({}, "gemma-2b"),
    (GEMMA_7B_CHANGES, "gemma-7b"),
    ({"hidden_activation": "gelu_pytorch_tanh"}, "gemma-2b"),  # the 1.1 releases add this field
    ({"vocab_size": 256128}, "gemma-2b"),                      # a Flax export's padded vocabulary
])
def test_published_configs_match_presets(tmp_path, changes, preset):
    from minigemma.loading.hf import load_hf_config

    (tmp_path / "config.json").write_text(json.dumps({**GEMMA_2B_CONFIG_JSON, **changes}))
    assert load_hf_config(tmp_path) == get_config(preset)
