"""Every bad checkpoint or config input is one clear error of minigemma's family (minigemma.errors).

Each case writes a small broken file (a config.json, a GGUF's metadata, a .ckpt, a sharded
safetensors index, weights holding NaN), loads it, and checks the error's class and that its
message names the file and the field or tensor at fault. No test touches the network: the Hub
is either stubbed out or a local socket server that never answers.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from pathlib import Path

import gguf
from gguf.gguf_writer import GGUFValue
import huggingface_hub
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import minigemma
from minigemma import Gemma, GemmaConfig, get_config
from minigemma.errors import CheckpointError, ConfigError, ModelNotFoundError
from minigemma.loading import hub
from minigemma.loading.hf import config_from_hf
from minigemma.loading.names import hf_names
from minigemma.loading.weights import empty_model, fill_model

from reference import hf_model
from test_loading_formats import gemma_pytorch_state, quantize_state

TINY = get_config("tiny-gemma")


def load(path, **kwargs):
    return minigemma.load(path, progress=False, **kwargs)


# ---------------------------------------------------------------- config values

@pytest.mark.parametrize("changes, field", [
    (dict(num_kv_heads=0), "num_kv_heads"),
    (dict(num_kv_heads=3), "num_kv_heads"),       # 4 heads cannot share 3 key/value heads evenly
    (dict(hidden_size="64"), "hidden_size"),
    (dict(hidden_size=True), "hidden_size"),      # a bool is an int to Python, never a size
    (dict(num_layers=2.0), "num_layers"),
    (dict(vocab_size=-5), "vocab_size"),
    (dict(head_dim=15), "head_dim"),              # RoPE rotates pairs of dimensions
    (dict(rms_norm_eps=None), "rms_norm_eps"),
    (dict(rms_norm_eps=0.0), "rms_norm_eps"),
    (dict(rms_norm_eps=float("nan")), "rms_norm_eps"),
    (dict(rope_theta=-1.0), "rope_theta"),
    (dict(sliding_window=0), "sliding_window"),
    (dict(sliding_window_pattern=0), "sliding_window_pattern"),
    (dict(query_pre_attn_scalar="256"), "query_pre_attn_scalar"),
    (dict(qk_norm=1), "qk_norm"),
    (dict(architecture="gemma2"), "architecture"),
    (dict(bos_id=512), "bos_id"),                 # past the end of the 512-row embedding
])
def test_config_values_are_checked_before_anything_is_built(changes, field):
    with pytest.raises(ConfigError, match=rf"\b{field}\b.*{repr(next(iter(changes.values())))[:4]}"):
        TINY.replace(**changes)


def test_presets_are_valid():
    for preset in minigemma.model.config.PRESETS.values():
        assert GemmaConfig(**vars(preset)) == preset


def hf_config_json() -> dict:
    return {"model_type": "gemma", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16}


def drop(key):
    return lambda raw: {k: v for k, v in raw.items() if k != key}


@pytest.mark.parametrize("edit, expected", [
    (drop("vocab_size"), r"no 'vocab_size' field"),
    (drop("hidden_size"), r"no 'hidden_size' field"),
    (drop("num_hidden_layers"), r"no 'num_hidden_layers' field"),
    (lambda raw: [raw], r"holds a JSON list.*expected an object"),
    (lambda raw: {**raw, "hidden_size": "64"}, r"'hidden_size' is '64'.*expected a positive int"),
    (lambda raw: {**raw, "num_key_value_heads": 0}, r"'num_key_value_heads' is 0.*expected a positive int"),
    (lambda raw: {**raw, "rms_norm_eps": None}, r"'rms_norm_eps' is None.*expected a positive number"),
], ids=["no vocab_size", "no hidden_size", "no num_hidden_layers", "a list", "str size", "0 kv heads", "null eps"])
def test_bad_config_json(tmp_path, edit, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(edit(hf_config_json())))
    with pytest.raises(ConfigError, match=expected) as info:
        load(tmp_path)
    assert str(path) in str(info.value)


def gemma3_config_json() -> dict:
    """tiny-gemma3 as transformers 5 writes it: layer_types, and RoPE per kind of layer."""
    return {"model_type": "gemma3_text", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "max_position_embeddings": 256, "query_pre_attn_scalar": 16, "sliding_window": 8,
            "layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2,
            "eos_token_id": [1, 106], "rope_parameters": {"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                                                          "sliding_attention": {"rope_theta": 1e4}}}


def nested(path: str, value):
    """An edit setting raw["a"]["b"] for path "a.b"."""
    def edit(raw):
        *parents, key = path.split(".")
        inner = raw
        for parent in parents:
            inner = inner[parent]
        inner[key] = value
        return raw
    return edit


@pytest.mark.parametrize("base, edit, expected", [
    (gemma3_config_json, nested("layer_types", "full_attention"), r"'layer_types' is 'full_attention', expected a"),
    (gemma3_config_json, nested("layer_types", {"0": "full_attention"}), r"'layer_types' is \{.*expected a list"),
    (gemma3_config_json, nested("layer_types", [1, 2, 3, 4, 5, 6]), r"'layer_types' is \[1, 2, .*expected a list of"),
    (gemma3_config_json, nested("layer_types", ["full_attention"] * 4),
     r"'layer_types' .*expected one entry per layer \('num_hidden_layers' is 6\)"),
    (gemma3_config_json, nested("rope_parameters", [1e6, 1e4]), r"'rope_parameters' is \[.*expected an object"),
    (gemma3_config_json, nested("rope_parameters.full_attention", 1e6),
     r"'rope_parameters.full_attention' is 1000000.0, expected an object"),
    (gemma3_config_json, nested("rope_parameters.sliding_attention.rope_theta", "10k"),
     r"'rope_parameters.sliding_attention.rope_theta' is '10k', expected a positive number"),
    (gemma3_config_json, nested("eos_token_id", []), r"'eos_token_id' is \[\], expected a token id or a non-empty"),
    (gemma3_config_json, nested("eos_token_id", [1, "<end_of_turn>"]), r"'eos_token_id' is \[1, '<end_of_turn>'\]"),
    (hf_config_json, nested("eos_token_id", "1"), r"'eos_token_id' is '1', expected a token id"),
    (hf_config_json, nested("rope_scaling", "linear"), r"'rope_scaling' is 'linear', expected an object"),
    (hf_config_json, nested("model_type", 1), r"'model_type' is 1, expected a string"),
    (hf_config_json, drop("model_type"), r"no 'model_type' field"),
    (hf_config_json, nested("tie_word_embeddings", "false"), r"'tie_word_embeddings' is 'false', expected true or"),
    (hf_config_json, nested("hidden_act", ["gelu"]), r"'hidden_act' is \['gelu'\], expected a string"),
    (hf_config_json, nested("num_hidden_layers", 10**20), r"'num_hidden_layers' is 10+, expected a positive int up to"),
    (hf_config_json, nested("bos_token_id", None), r"'bos_token_id' is None, expected a token id"),
])
def test_bad_config_json_field(tmp_path, base, edit, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(edit(base())))
    with pytest.raises(ConfigError, match=expected) as info:
        load(tmp_path)
    assert str(path) in str(info.value)


def test_bad_config_json_bytes(tmp_path):
    (tmp_path / "config.json").write_bytes(b'{"model_type": "gemma\xff"}')  # not UTF-8
    with pytest.raises(ConfigError, match=r"config.json' is not valid JSON \(UnicodeDecodeError"):
        load(tmp_path)
    (tmp_path / "config.json").write_text("[" * 100_000)  # Python's parser recurses
    with pytest.raises(ConfigError, match=r"config.json' is not valid JSON \(RecursionError"):
        load(tmp_path)


def test_null_pad_token_id_means_gemmas_pad():
    """Some fine-tunes write "pad_token_id": null; that is <pad>, id 0, as when it is left out."""
    assert config_from_hf({**hf_config_json(), "pad_token_id": None}).pad_id == 0
    assert config_from_hf(gemma3_config_json()) == get_config("tiny-gemma3").replace(name="custom")  # a sound base


def test_a_zero_dimensional_embedding_is_a_shape_error(tmp_path):
    """The Flax vocabulary check reads shape[0]: a 0-d tensor must be reported, not an IndexError."""
    from test_loading_formats import GEMMA_2B_CONFIG_JSON

    config = get_config("gemma-2b")
    save_file({name: torch.zeros(()) for name in hf_names(config).values()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(GEMMA_2B_CONFIG_JSON))
    (tmp_path / "tokenizer.model").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"'model.embed_tokens.weight'.* has shape \(\) but gemma-2b expects"):
        load(tmp_path)


# ---------------------------------------------------------------- GGUF metadata

def write_metadata_gguf(path: Path, skip: str = "", typed: dict | None = None, **values) -> Path:
    """A Gemma GGUF holding metadata for tiny-gemma (and one tensor): enough to reach the config.

    `typed` {GGUF key: value, or None to delete} overrides the metadata with values of any type."""
    w = gguf.GGUFWriter(str(path), "gemma")
    keys = {"context_length": 128, "embedding_length": 64, "block_count": 2, "feed_forward_length": 128,
            "head_count": 4, "head_count_kv": 1, "key_length": 16, "layer_norm_rms_eps": 1e-6, **values}
    for key, value in keys.items():
        if key != skip:
            getattr(w, f"add_{key}")(value)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(512)])
    for key, value in (typed or {}).items():
        if value is None:
            del w.kv_data[0][key]
        else:
            w.kv_data[0][key] = GGUFValue(value, GGUF_TYPES[type(value)])
    w.add_tensor("token_embd.weight", np.zeros((512, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("skip, values, gguf_key", [
    ("head_count", {}, "gemma.attention.head_count"),
    ("embedding_length", {}, "gemma.embedding_length"),
    ("block_count", {}, "gemma.block_count"),
    ("layer_norm_rms_eps", {}, "gemma.attention.layer_norm_rms_epsilon"),
    ("", {"head_count": 0}, "gemma.attention.head_count"),
])
def test_bad_gguf_metadata(tmp_path, monkeypatch, skip, values, gguf_key):
    monkeypatch.setenv("MINIGEMMA_CACHE", str(tmp_path / "cache"))
    path = write_metadata_gguf(tmp_path / "tiny.gguf", skip, **values)
    with pytest.raises(ConfigError, match=gguf_key.replace(".", r"\.")) as info:
        load(path)
    assert str(path) in str(info.value)


GGUF_TYPES = {str: gguf.GGUFValueType.STRING, int: gguf.GGUFValueType.UINT32, list: gguf.GGUFValueType.ARRAY,
              float: gguf.GGUFValueType.FLOAT32}


@pytest.mark.parametrize("typed, expected", [
    ({"gemma.attention.head_count": "4"}, r"'gemma.attention.head_count' is '4', expected a positive int"),
    ({"gemma.attention.head_count": "4", "gemma.attention.key_length": None}, r"'gemma.attention.head_count' is '4'"),
    ({"gemma.attention.head_count": [4, 4]}, r"'gemma.attention.head_count' is \[4, 4\], expected a positive int"),
    ({"gemma.block_count": 2.0}, r"'gemma.block_count' is 2.0, expected a positive int"),
    ({"gemma.attention.layer_norm_rms_epsilon": "1e-6"}, r"'gemma.attention.layer_norm_rms_epsilon' is '1e-6'"),
    ({"gemma.rope.freq_base": "10000"}, r"'gemma.rope.freq_base' is '10000', expected a positive number"),
    ({"general.architecture": 3}, r"holds a 3 model; minigemma reads Gemma GGUF files"),
    ({"tokenizer.ggml.tokens": None}, r"lacks the GGUF metadata key\(s\) 'tokenizer.ggml.tokens'"),
    ({"tokenizer.ggml.tokens": [1, 2]}, r"'tokenizer.ggml.tokens' is \[1, 2\], expected an array of strings"),
    ({"tokenizer.ggml.model": 1}, r"'tokenizer.ggml.model' is 1, expected a string"),
    ({"tokenizer.ggml.scores": ["0.0"]}, r"'tokenizer.ggml.scores' is \['0.0'\], expected an array of floats"),
    ({"tokenizer.ggml.bos_token_id": "<bos>"}, r"'tokenizer.ggml.bos_token_id' is '<bos>', expected a token id"),
], ids=lambda v: "-".join(f"{k.split('.')[-1]}={type(x).__name__}" for k, x in v.items()) if isinstance(v, dict)
   else "")
def test_gguf_metadata_of_the_wrong_type(tmp_path, monkeypatch, typed, expected):
    monkeypatch.setenv("MINIGEMMA_CACHE", str(tmp_path / "cache"))
    path = write_metadata_gguf(tmp_path / "tiny.gguf", typed=typed)
    with pytest.raises(ConfigError, match=expected) as info:
        load(path)
    assert str(path) in str(info.value)


def test_gguf_tokenizer_that_sentencepiece_refuses(tmp_path, monkeypatch):
    """Found by the fuzzer: <unk> moved onto <pad>'s id. Refused before it is cached, not at every load."""
    from test_fuzz_inputs import write_tiny_gguf
    from test_loading_formats import train_spm

    monkeypatch.setenv("MINIGEMMA_CACHE", str(tmp_path / "cache"))
    value = GGUFValue(0, gguf.GGUFValueType.UINT32)
    path = write_tiny_gguf(tmp_path / "tiny.gguf", train_spm(tmp_path), [("tokenizer.ggml.unknown_token_id", value)])
    with pytest.raises(CheckpointError, match=r"tokenizer metadata of .*tiny.gguf' is unusable.*unk is already"):
        load(path)
    assert not any((tmp_path / "cache").glob("tiny-*"))


# ---------------------------------------------------------------- .ckpt files

def ckpt_dir(tmp_path: Path, obj) -> Path:
    """`obj` saved as model.ckpt, with a tokenizer.model beside it (never read: the errors come first)."""
    torch.save(obj, tmp_path / "model.ckpt")
    (tmp_path / "tokenizer.model").write_bytes(b"")
    return tmp_path / "model.ckpt"


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_not_a_checkpoint(tmp_path, seed):
    path = tmp_path / "model.ckpt"
    path.write_bytes(random.Random(seed).randbytes(4096))
    (tmp_path / "tokenizer.model").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"not a torch checkpoint.*corrupt") as info:
        load(path)
    assert str(path) in str(info.value) and "Python objects" not in str(info.value)


@pytest.mark.parametrize("obj, expected", [
    ({"model_state_dict": [torch.zeros(1)]}, r"its model_state_dict is a list"),
    ({"model_state_dict": None}, r"its model_state_dict is a NoneType"),
    ({"weights": {}}, r"it holds the keys \['weights'\]"),
    ([torch.zeros(1)], r"it is a list"),
    ({"model_state_dict": {"embedder.weight": [0.0, 1.0]}}, r"maps 'embedder.weight' to a list"),
    ({"model_state_dict": {"embedder.weight": torch.zeros(2, 2), 3: torch.zeros(1)}}, r"has the key 3 \(int\)"),
    ({"model_state_dict": {"embedder.weight": torch.zeros(4, 2).to_sparse()}}, r"to a torch.sparse_coo tensor"),
    ({"model_state_dict": {"embedder.weight": torch.zeros(512)}}, r"'embedder.weight'.*\(512,\), expected a matrix"),
])
def test_state_dict_of_the_wrong_shape(tmp_path, obj, expected):
    path = ckpt_dir(tmp_path, obj)
    with pytest.raises(CheckpointError, match=expected) as info:
        load(path)
    assert str(path) in str(info.value)


def test_inferred_sizes_are_checked(tmp_path):
    state = gemma_pytorch_state(hf_model(TINY), TINY)
    path = ckpt_dir(tmp_path, {"model_state_dict": {**state, "embedder.weight": torch.zeros(0, 64)}})
    with pytest.raises(ConfigError, match=r"model.ckpt: 'vocab_size' is 0, expected a positive int"):
        load(path)


def damage(path: Path, find: bytes, offset: int, new: bytes, last: bool = False) -> Path:
    """Overwrite the bytes at `offset` from the first (or `last`) occurrence of `find` in the file."""
    data = bytearray(path.read_bytes())
    at = (data.rfind(find) if last else data.find(find)) + offset
    data[at:at + len(new)] = new
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("find, offset, new, last, expected", [
    # Found by the fuzzer: the zip's central directory asks for zip version 6.4 (NotImplementedError).
    (b"PK\x01\x02", 6, b"\x40", True, r"is a damaged zip file \(zip file version 6.4\)"),
    # The zip64 end locator says the archive spans several disks (BadZipFile from is_zipfile).
    (b"PK\x06\x07", 16, b"\x02", True, r"is a damaged zip file \(zipfiles that span multiple disks"),
    # A byte that is not UTF-8 in a class name of data.pkl (UnicodeDecodeError in the unpickler).
    (b"ctorch._utils\n", 1, b"\x80", False, r"could not read checkpoint .*UnicodeDecodeError"),
], ids=["zip version", "zip disks", "pickle utf-8"])
def test_damaged_ckpt_bytes(tmp_path, find, offset, new, last, expected):
    path = ckpt_dir(tmp_path, {"model_state_dict": gemma_pytorch_state(hf_model(TINY), TINY)})
    with pytest.raises(CheckpointError, match=expected):
        load(damage(path, find, offset, new, last))


def test_pickled_objects_are_told_apart_from_garbage(tmp_path):
    import logging

    path = ckpt_dir(tmp_path, {"model_state_dict": {}, "optimizer": logging.Formatter()})
    with pytest.raises(CheckpointError, match=r"holds Python objects other than tensors.*logging\.Formatter"):
        load(path)


@pytest.fixture(scope="module")
def int8_state():
    torch.manual_seed(0)
    quant, _ = quantize_state(gemma_pytorch_state(hf_model(TINY), TINY))
    return quant


@pytest.mark.parametrize("keep_int8", [False, True])
def test_int8_scaler_of_the_wrong_shape(tmp_path, int8_state, keep_int8):
    key = "model.layers.0.mlp.down_proj.weight"
    state = dict(int8_state, **{key + "_scaler": int8_state[key + "_scaler"][:-1]})
    path = ckpt_dir(tmp_path, {"model_state_dict": state})
    with pytest.raises(CheckpointError, match=rf"'{key}_scaler'.*shape \(63,\).*expected \(64,\)") as info:
        load(path, keep_int8=keep_int8)
    assert str(path) in str(info.value)


def test_float_weight_in_an_int8_checkpoint(tmp_path, int8_state):
    key = "model.layers.1.mlp.up_proj.weight"
    state = dict(int8_state, **{key: int8_state[key].float()})
    path = ckpt_dir(tmp_path, {"model_state_dict": state})
    with pytest.raises(CheckpointError, match=rf"'{key}'.*is torch.float32.*int8") as info:
        load(path)
    assert str(path) in str(info.value)


def test_non_finite_ckpt_weight(tmp_path):
    state = gemma_pytorch_state(hf_model(TINY), TINY)
    state["model.layers.1.mlp.gate_proj.weight"][3, 5] = float("inf")
    path = ckpt_dir(tmp_path, {"model_state_dict": state})
    with pytest.raises(CheckpointError, match=r"'model.layers.1.mlp.gate_proj.weight'.*1 NaN or infinite") as info:
        load(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- Hugging Face directories

def write_sharded_hf(directory: Path, config: GemmaConfig = TINY) -> Path:
    """config.json and our own random weights in two safetensors shards plus their index."""
    directory.mkdir(exist_ok=True)
    torch.manual_seed(0)
    names = hf_names(config)
    tensors = {names[n]: p.detach().contiguous() for n, p in Gemma(config).named_parameters()}
    shards, weight_map = [{}, {}], {}
    for i, (name, t) in enumerate(sorted(tensors.items())):
        shards[i % 2][name] = t
        weight_map[name] = f"model-0000{i % 2 + 1}-of-00002.safetensors"
    for i, shard in enumerate(shards):
        save_file(shard, directory / f"model-0000{i + 1}-of-00002.safetensors")
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(hf_config_json()))
    (directory / "tokenizer.model").write_bytes(b"")  # never read: the errors come first
    return directory


def edit_index(directory: Path, edit) -> Path:
    index = directory / "model.safetensors.index.json"
    index.write_text(json.dumps(edit(json.loads(index.read_text()))))
    return index


def test_index_weight_map_not_an_object(tmp_path):
    directory = write_sharded_hf(tmp_path / "hf")
    index = edit_index(directory, lambda raw: {"weight_map": sorted(raw["weight_map"])})
    with pytest.raises(CheckpointError, match=r"'weight_map'.*list.*expected an object") as info:
        load(directory)
    assert str(index) in str(info.value)


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.safetensors", "sub/../../outside.safetensors"])
def test_index_cannot_point_outside_the_checkpoint(tmp_path, target, monkeypatch):
    directory = write_sharded_hf(tmp_path / "hf")
    save_file({"x": torch.zeros(1)}, tmp_path / "outside.safetensors")
    edit_index(directory, lambda raw: {"weight_map": {**raw["weight_map"], "model.norm.weight": target}})
    opened = []
    monkeypatch.setattr("minigemma.loading.hf.safe_open", lambda path, **kw: opened.append(path))
    with pytest.raises(CheckpointError, match=rf"'model.norm.weight'.*{target.replace('.', '[.]')}.*outside"):
        load(directory)
    assert opened == []  # refused before any file is opened


def test_index_maps_a_tensor_to_the_wrong_shard(tmp_path):
    directory = write_sharded_hf(tmp_path / "hf")
    name = "model.layers.0.mlp.up_proj.weight"
    edit_index(directory, lambda raw: {"weight_map": {**raw["weight_map"], name: (
        "model-00002-of-00002.safetensors" if raw["weight_map"][name].startswith("model-00001")
        else "model-00001-of-00002.safetensors")}})
    with pytest.raises(CheckpointError, match=rf"maps tensor '{name}' to shard 'model-0000\d-of-00002.safetensors'"
                                              r", which does not contain it.*it is in 'model-0000\d"):
        load(directory)


def test_non_finite_hf_weight(tmp_path):
    directory = write_sharded_hf(tmp_path / "hf")
    shard = directory / "model-00001-of-00002.safetensors"
    from safetensors.torch import load_file

    tensors = load_file(shard)
    name = sorted(tensors)[0]
    tensors[name].view(-1)[:2] = float("nan")
    save_file(tensors, shard)
    # The shard holding it, not only the directory: that is the file to download again.
    with pytest.raises(CheckpointError, match=rf"'{name}'.*in {re.escape(str(shard))} holds 2 NaN or infinite"):
        load(directory)


def test_check_finite_can_be_turned_off():
    model = Gemma(TINY)
    tensors = {n: (lambda p=p: torch.full_like(p, float("nan"))) for n, p in model.named_parameters()}
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        fill_model(empty_model(TINY), tensors, progress=False)
    filled = fill_model(empty_model(TINY), tensors, progress=False, check_finite=False)
    assert filled.embed.weight.isnan().all()


# ---------------------------------------------------------------- a path is never sent to the Hub

@pytest.fixture
def no_hub(monkeypatch):
    """Record (and refuse) any call that would reach the Hub."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the Hub was called")

    monkeypatch.setattr(hub, "snapshot_download", refuse)
    monkeypatch.setattr(hub, "HfApi", refuse, raising=False)
    return calls


@pytest.mark.parametrize("name", ["./gemma-2b", "~/no-such-gemma-dir", "a/b/c", "weights\\model.ckpt",
                                  "gemma-2b.gguf", "google/gemma-2b.safetensors", "/no/such/gemma"])
def test_a_missing_path_is_not_a_hub_id(name, tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no such local file or directory") as info:
        load(name)
    assert isinstance(info.value, FileNotFoundError) and no_hub == []
    assert repr(str(Path(name).expanduser().absolute())) in str(info.value)
    assert "Hub" not in str(info.value).split("(")[0]  # the message is about the path, not the Hub


def test_relative_path_whose_first_folder_exists(tmp_path, monkeypatch, no_hub):
    """'models/gemma-2b' is a valid Hub id, but with a ./models folder here it is a mistyped path."""
    (tmp_path / "models" / "gemma-2b-it").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not hub.is_hub_id("models/gemma-2b") and hub.is_hub_id("google/gemma-2b")
    with pytest.raises(ModelNotFoundError, match=r"no such local file or directory: .*models/gemma-2b'"
                                                 r".*did you mean .*gemma-2b-it") as info:
        load("models/gemma-2b")
    assert no_hub == [] and str(tmp_path / "models" / "gemma-2b") in str(info.value)


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers (like a stuck proxy)."""
    server = socket.create_server(("127.0.0.1", 0))
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # keep it open, say nothing
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hub_that_never_answers_times_out(silent_server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", silent_server)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", silent_server)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_ETAG_TIMEOUT", 1)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match=r"google/gemma-2b is not in the local Hugging Face cache and the Hub "
                                                 rf"at {silent_server} did not answer within 1 s.*HF_HUB_ETAG_TIMEOUT"):
        load("google/gemma-2b")
    assert time.monotonic() - start < 15
