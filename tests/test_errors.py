"""Bad input gets a ValueError that names the problem and the way out."""

import gguf
import numpy as np
import pytest
import torch

import minigemma
from minigemma.errors import ArgumentError
from minigemma.decoding.generate import generate_ids
from minigemma.decoding.sampling import sample_next


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'gemma-9000'.*gemma3-270m"):
        minigemma.load("gemma-9000")


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match=r"unknown model preset 'gemma-1b'.*gemma-2b, gemma-7b"):
        minigemma.get_config("gemma-1b")


def test_float16_is_refused():
    with pytest.raises(ValueError, match="float16 overflows.*bfloat16"):
        minigemma.load("gemma3-270m", dtype=torch.float16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_missing_gpu_is_explained():
    with pytest.raises(ArgumentError, match="no CUDA GPU"):
        minigemma.load("gemma3-270m", device="cuda")


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-0.5), "temperature must be >= 0"),
    (dict(temperature=float("nan")), "temperature must be >= 0"),
    (dict(temperature=1.0, top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(temperature=1.0, top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(temperature=1.0, top_k=0), "top_k must be a whole number >= 1"),
])
def test_bad_sampling_parameters(kwargs, message):
    model = minigemma.Gemma(minigemma.get_config("tiny-gemma"))
    with pytest.raises(ArgumentError, match=message):
        list(generate_ids(model, [2, 5], max_new_tokens=3, **kwargs))
    with pytest.raises(ArgumentError, match=message):
        sample_next(torch.zeros(1, 10), **kwargs)


def test_prompt_longer_than_context():
    model = minigemma.Gemma(minigemma.get_config("tiny-gemma"))  # context 128
    with pytest.raises(ArgumentError, match="prompt is 200 tokens, longer than the model's context of 128"):
        list(generate_ids(model, [2] * 200, max_new_tokens=1))
    with pytest.raises(ArgumentError, match="lower max_new_tokens to at most 28"):
        list(generate_ids(model, [2] * 100, max_new_tokens=50))
    with pytest.raises(ValueError, match="longer than the model's context"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 definitely a zip file")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        minigemma.load(path)


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ValueError, match=r"no such local file or directory: '.*nowhere\.gguf'"):
        minigemma.load(tmp_path / "nowhere.gguf")


def test_truncated_gguf(tmp_path, embedded_gguf):
    path = tmp_path / "truncated.gguf"
    with open(embedded_gguf, "rb") as f:
        path.write_bytes(f.read(1 << 20))  # the header and part of the vocabulary only
    with pytest.raises(ValueError, match="truncated or corrupt"):
        minigemma.load(path)


def test_non_gemma_gguf(tmp_path):
    path = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_token_list(["<unk>", "a"])
    writer.add_tensor("token_embd.weight", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="holds a 'llama' model; minigemma reads Gemma GGUF"):
        minigemma.load(path)
