"""Fuzzing minigemma.load: a damaged checkpoint either loads or raises a MinigemmaError, nothing else.

The issue's bar is "no input reachable through the public API crashes the process": an
AttributeError, TypeError, KeyError or IndexError from deep inside a loader is a bug, however
odd the file. Each test starts from a valid tiny checkpoint (written the way the real releases
are: transformers' save_pretrained, llama.cpp's GGUF writer, gemma_pytorch's torch.save) and
lets hypothesis damage it: config.json fields set to random JSON values or deleted, GGUF
metadata retyped or deleted, .ckpt, .safetensors and .gguf bytes truncated, overwritten or replaced.

derandomize=True: hypothesis derives its examples from each test's name, so every run (and CI)
tries the same ones; database=None keeps it from saving failures between runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch
from gguf.gguf_writer import GGUFValue
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import minigemma
from minigemma import Gemma, get_config
from minigemma.errors import MinigemmaError
from minigemma.loading.names import gguf_names

from reference import hf_model
from test_loading_formats import (finish_gguf, gemma_gguf_writer, gemma_pytorch_state,  # noqa: F401 (a fixture)
                                  spm_model, write_hf)



def fuzz(examples: int):
    # tmp_path is the same directory for every example of a test: each one overwrites the last's file.
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def loads_or_refuses(path: Path) -> None:
    """The property under test: any exception but a MinigemmaError propagates and fails the test."""
    try:
        minigemma.load(path, progress=False)
        event("loaded")  # (pytest --hypothesis-show-statistics: how many loaded, how many were refused how)
    except MinigemmaError as e:
        event(type(e).__name__)


# ---------------------------------------------------------------- config.json

SCALARS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6),
    st.sampled_from(["gemma", "gemma3_text", "default", "full_attention"]),
    st.integers(-3, 600), st.sampled_from([2**31, 2**63, 10**30]), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),  # json writes NaN and Infinity, and reads them back
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
                    max_leaves=8)
DELETE = object()
# Keys config_from_hf reads that transformers may not write (dotted: nested in rope_parameters).
EXTRA_KEYS = ["rope_scaling", "rope_theta", "rope_local_base_freq", "sliding_window_pattern", "hidden_act",
              "hidden_activation", "layer_types", "rope_parameters.rope_theta", "rope_parameters.rope_type",
              "rope_parameters.full_attention", "rope_parameters.full_attention.rope_theta",
              "rope_parameters.sliding_attention.rope_type"]


def mutate(raw: dict, path: str, value: object) -> None:
    """Set (or delete) raw["a"]["b"] for path "a.b"; a parent that is not an object is left alone."""
    *parents, key = path.split(".")
    for parent in parents:
        raw = raw.get(parent) if isinstance(raw, dict) else None
    if isinstance(raw, dict):
        if value is DELETE:
            raw.pop(key, None)
        else:
            raw[key] = value


@pytest.fixture(scope="module", params=["tiny-gemma", "tiny-gemma3"])
def hf_dir(request, spm_model, tmp_path_factory):
    """A transformers save_pretrained directory, and its config.json as written."""
    directory = write_hf(hf_model(get_config(request.param)), tmp_path_factory.mktemp("hf") / "model", spm_model)
    return directory, json.loads((directory / "config.json").read_text())


@fuzz(150)
@given(data=st.data())
def test_fuzzed_config_json(hf_dir, data):
    directory, valid = hf_dir
    raw = json.loads(json.dumps(valid))
    keys = st.sampled_from(sorted(valid) + EXTRA_KEYS)
    for path, value in data.draw(st.lists(st.tuples(keys, JSON | st.just(DELETE)), min_size=1, max_size=2)):
        mutate(raw, path, value)
    (directory / "config.json").write_text(json.dumps(raw))
    try:
        loads_or_refuses(directory)
    finally:
        (directory / "config.json").write_text(json.dumps(valid))


# ---------------------------------------------------------------- GGUF metadata

TINY = get_config("tiny-gemma")
T = gguf.GGUFValueType
GGUF_VALUES = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.just(T.UINT32)),
    st.tuples(st.integers(-2**31, 2**31 - 1), st.just(T.INT32)),
    st.tuples(st.integers(0, 2**64 - 1), st.just(T.UINT64)),
    st.tuples(st.floats(width=32, allow_nan=True), st.just(T.FLOAT32)), st.tuples(st.booleans(), st.just(T.BOOL)),
    st.tuples(st.text(max_size=6), st.just(T.STRING)),
    st.tuples(st.lists(st.integers(0, 600), min_size=1, max_size=4), st.just(T.ARRAY)),
    st.tuples(st.lists(st.text(max_size=4), min_size=1, max_size=4), st.just(T.ARRAY)),
)
GGUF_KEYS = ["general.architecture", "gemma.context_length", "gemma.embedding_length", "gemma.block_count",
             "gemma.feed_forward_length", "gemma.attention.head_count", "gemma.attention.head_count_kv",
             "gemma.attention.key_length", "gemma.attention.layer_norm_rms_epsilon", "gemma.rope.freq_base",
             "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
             "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
             "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_space_prefix"]


def write_tiny_gguf(path: Path, spm: Path, mutations=()) -> Path:
    """tiny-gemma as llama.cpp's converter writes it (F32), then `mutations`: (key, GGUFValue or None to delete)."""
    w = gemma_gguf_writer(path, TINY, spm, value_length=False)
    for key, value in mutations:
        if value is None:
            w.kv_data[0].pop(key, None)
        else:
            w.kv_data[0][key] = value
    torch.manual_seed(0)
    names = gguf_names(TINY)
    for ours, p in Gemma(TINY).named_parameters():
        w.add_tensor(names[ours], p.detach().numpy())
    finish_gguf(w)
    return path


@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIGEMMA_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_tiny_gguf_loads(gguf_cache, spm_model, tmp_path):
    model, _ = minigemma.load(write_tiny_gguf(tmp_path / "tiny.gguf", spm_model), progress=False)
    assert model.config.name == "tiny-gemma"


@fuzz(100)
@given(mutations=st.lists(st.tuples(st.sampled_from(GGUF_KEYS), st.none() | GGUF_VALUES), min_size=1, max_size=2))
def test_fuzzed_gguf_metadata(gguf_cache, spm_model, tmp_path, mutations):
    values = [(key, None if v is None else GGUFValue(v[0], v[1])) for key, v in mutations]
    path = write_tiny_gguf(tmp_path / "tiny.gguf", spm_model, values)
    loads_or_refuses(path)


# ---------------------------------------------------------------- damaged bytes

def damaged(valid: bytes, data) -> bytes:
    """`valid` truncated, with a few bytes overwritten (mostly near the start or the end, where the
    headers and zip directories are), or replaced by random bytes."""
    n = len(valid)
    where = st.one_of(st.integers(0, min(n, 1024) - 1), st.integers(max(0, n - 1024), n - 1), st.integers(0, n - 1))
    kind = data.draw(st.sampled_from(["truncate", "overwrite", "replace"]))
    if kind == "truncate":
        return valid[:data.draw(where)]
    if kind == "replace":
        return data.draw(st.binary(max_size=2048))
    out = bytearray(valid)
    for i, byte in data.draw(st.lists(st.tuples(where, st.integers(0, 255)), min_size=1, max_size=4)):
        out[i] = byte
    return bytes(out)


class Valid:
    """A valid file and its bytes, with a short repr: hypothesis prints a failing example's fixtures."""

    def __init__(self, path: Path):
        self.path, self.data = path, path.read_bytes()

    def __repr__(self) -> str:
        return f"Valid({str(self.path)!r})"


@pytest.fixture(scope="module")
def ckpt_file(spm_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"model_state_dict": gemma_pytorch_state(hf_model(TINY), TINY)}, path)
    shutil.copy(spm_model, path.parent / "tokenizer.model")
    return Valid(path)


@fuzz(150)
@given(data=st.data())
def test_damaged_ckpt_bytes(ckpt_file, data):
    ckpt_file.path.write_bytes(damaged(ckpt_file.data, data))
    loads_or_refuses(ckpt_file.path)


@pytest.fixture(scope="module")
def safetensors_dir(spm_model, tmp_path_factory):
    directory = write_hf(hf_model(TINY), tmp_path_factory.mktemp("st") / "model", spm_model)
    return Valid(directory / "model.safetensors")


@fuzz(150)
@given(data=st.data())
def test_damaged_safetensors_bytes(safetensors_dir, data):
    safetensors_dir.path.write_bytes(damaged(safetensors_dir.data, data))
    loads_or_refuses(safetensors_dir.path.parent)


@pytest.fixture(scope="module")
def gguf_file(spm_model, tmp_path_factory):
    return Valid(write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", spm_model))


@fuzz(100)
@given(data=st.data())
def test_damaged_gguf_bytes(gguf_file, gguf_cache, data):
    gguf_file.path.write_bytes(damaged(gguf_file.data, data))
    loads_or_refuses(gguf_file.path)
