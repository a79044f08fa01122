"""Shared fixtures: the embedded real model (loaded once per session) and a tiny tokenizer."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import reference.py

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Tests that run the real 270M are marked `numerics`: `make test` runs them a second time on
    another CPU code path (tests/cpu_path.py), so an expectation that holds on one kind of CPU only fails."""
    for item in items:
        if {"gemma3_270m", "hf_270m"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.numerics)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A 512-piece vocabulary (the tiny configs' size) trained by sentencepiece with Gemma's settings."""
    import sentencepiece as spm

    from minigemma.tokenizer import load_tokenizer

    text = "\n".join(p.read_text() for p in sorted((ROOT / "minigemma").rglob("*.py")))
    directory = tmp_path_factory.mktemp("tiny_tok")
    (directory / "corpus.txt").write_text(text)
    spm.SentencePieceTrainer.train(
        input=str(directory / "corpus.txt"), model_prefix=str(directory / "tiny"), vocab_size=512,
        model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        minloglevel=2,
    )
    return load_tokenizer(directory / "tiny.model")


@pytest.fixture(scope="session")
def gemma3_270m():
    """(model, tokenizer) of the embedded real model, fp32 on CPU."""
    import minigemma

    return minigemma.load("gemma3-270m", progress=False)


@pytest.fixture(scope="session")
def embedded_gguf():
    from minigemma.loading import embedded_gguf_path

    return embedded_gguf_path()


@pytest.fixture(scope="session")
def hf_270m(embedded_gguf):
    """transformers' own reading of the same GGUF (its GGUF loader, its dequantization), fp32.

    That reading takes ~45 s, and `make test` needs it twice (the second CPU code path), so the
    model it read is kept in the temp folder (safetensors: the same float32 numbers) and read back
    by the next session; a copy that fails to load is read again from the GGUF.
    """
    import transformers
    from safetensors.torch import load_model, save_model
    from transformers import AutoConfig, AutoModelForCausalLM

    stat = embedded_gguf.stat()
    kept = (Path(tempfile.gettempdir()) / f"minigemma-tests-{os.getuid() if hasattr(os, 'getuid') else 0}"
            / f"hf-{embedded_gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}-transformers-{transformers.__version__}")
    if kept.is_dir():
        try:
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(kept), dtype=torch.float32)
            load_model(model, kept / "model.safetensors")  # strict: every tensor, shapes checked
            return model.eval()
        except (OSError, ValueError, RuntimeError):
            shutil.rmtree(kept, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(embedded_gguf.parent), gguf_file=embedded_gguf.name, dtype=torch.float32).eval()
    # (save_pretrained refuses a model read from a GGUF: the config and the tensors, then.)
    partial = kept.with_name(f".tmp-{kept.name}-{os.getpid()}")
    try:
        partial.mkdir(parents=True)
        model.config.save_pretrained(partial)
        save_model(model, partial / "model.safetensors")
        partial.rename(kept)  # whole or not at all; another session may have won the race
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return model


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train several times faster on one thread than on two cores that others share
    (a module's tests opt in with pytestmark = pytest.mark.usefixtures("one_thread"))."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
