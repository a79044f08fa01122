"""Hub ids ("google/gemma-2b") without ever touching the network.

The local Hugging Face cache is a fake one under tmp (HF_HUB_CACHE), with the Hub switched
off (HF_HUB_OFFLINE): a cached snapshot must load from it, anything else must fail with a
message that says what to do. Downloads are simulated by replacing `snapshot_download`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

import minigemma
from minigemma import get_config
from minigemma.loading import hub

from reference import hf_model, randomize_
from test_loading_formats import train_spm

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny-gemma checkpoint in transformers' layout, and the transformers model it came from."""
    directory = tmp_path_factory.mktemp("tiny_hf")
    config = get_config("tiny-gemma")
    torch.manual_seed(0)
    hf = hf_model(config)
    randomize_(hf, seed=11)
    hf.save_pretrained(directory / "model")
    shutil.copy(train_spm(directory), directory / "model" / "tokenizer.model")
    return directory / "model", hf


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache under tmp, with the Hub unreachable (offline mode)."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_snapshot(cache: Path, repo_id: str, files: Path) -> Path:
    """The cache layout snapshot_download leaves: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(files, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def http_error(cls, message: str):
    """An instance of one of huggingface_hub's HTTP errors without a real HTTP response."""
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


def logits(model, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(0, 512, (1, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(ids).logits if hasattr(model, "generation_config") else model(ids)


def test_cached_snapshot_loads_without_network(tiny_checkpoint, hf_cache, monkeypatch):
    files, hf = tiny_checkpoint
    cache_snapshot(hf_cache, "google/gemma-2b", files)
    calls = []
    real = hub.snapshot_download

    def spy(repo_id, **kwargs):
        calls.append(kwargs)
        return real(repo_id, **kwargs)

    monkeypatch.setattr(hub, "snapshot_download", spy)
    model, tok = minigemma.load("google/gemma-2b", progress=False)
    assert [c["local_files_only"] for c in calls] == [True]  # found in the cache: no second, online call
    assert "tokenizer.model" in calls[0]["allow_patterns"] and "config.json" in calls[0]["allow_patterns"]
    torch.testing.assert_close(logits(model), logits(hf), atol=1e-5, rtol=0)
    assert tok.vocab_size == 512


def test_offline_and_not_cached(hf_cache):
    with pytest.raises(ValueError, match=r"google/gemma-7b-it is not in the local Hugging Face cache and the Hub "
                                         r"cannot be reached.*HF_HUB_OFFLINE.*pass load\(\) the local directory"):
        minigemma.load("google/gemma-7b-it", progress=False)


def fake_hub(monkeypatch, files: Path | None, tmp_path: Path, error: Exception | None = None,
             cached: Path | None = None) -> list[dict]:
    """Replace snapshot_download: `cached` answers local-only calls; downloads copy `files` or raise `error`."""
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append(kwargs)
        if kwargs.get("local_files_only"):
            if cached is None:
                raise LocalEntryNotFoundError("not cached")
            return str(cached)
        if error is not None:
            raise error
        target = tmp_path / "downloaded"
        shutil.copytree(files, target, dirs_exist_ok=True)
        return str(target)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(hub, "check_reachable", lambda repo_id, revision=None: None)  # the Hub "answers"
    return calls


def test_downloads_only_when_missing(tiny_checkpoint, tmp_path, monkeypatch):
    files, hf = tiny_checkpoint
    calls = fake_hub(monkeypatch, files, tmp_path)
    model, _ = minigemma.load("google/gemma-1.1-2b-it", progress=False)
    assert [c["local_files_only"] for c in calls] == [True, False]
    assert calls[1]["allow_patterns"] == hub.HUB_FILES and not any("gguf" in p for p in hub.HUB_FILES)
    torch.testing.assert_close(logits(model), logits(hf), atol=1e-5, rtol=0)


def test_incomplete_cache_is_completed(tiny_checkpoint, tmp_path, monkeypatch):
    files, _ = tiny_checkpoint
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(files / "config.json", partial)  # e.g. left by an earlier AutoConfig.from_pretrained
    calls = fake_hub(monkeypatch, files, tmp_path, cached=partial)
    minigemma.load("google/gemma-2b", progress=False)
    assert [c["local_files_only"] for c in calls] == [True, False]
    assert hub.missing_files(partial) == ["tokenizer.model", "model.safetensors"]


def test_gated_without_token(tmp_path, monkeypatch):
    fake_hub(monkeypatch, None, tmp_path, error=http_error(GatedRepoError, "403: gated repo"))
    with pytest.raises(ValueError, match=r"google/gemma-2b is gated .*huggingface.co/google/gemma-2b.*hf auth login"
                                         r".*huggingface-cli login.*HF_TOKEN.*local directory"):
        minigemma.load("google/gemma-2b", progress=False)


def test_repository_not_found(tmp_path, monkeypatch):
    fake_hub(monkeypatch, None, tmp_path, error=http_error(RepositoryNotFoundError, "404"))
    with pytest.raises(ValueError, match=r"no repository 'google/gemma-3b' visible to you: check the spelling"):
        minigemma.load("google/gemma-3b", progress=False)


def test_repository_without_safetensors(tmp_path, monkeypatch, tiny_checkpoint):
    files, _ = tiny_checkpoint
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    shutil.copy(files / "config.json", only_config)
    fake_hub(monkeypatch, only_config, tmp_path)
    with pytest.raises(ValueError, match="someone/gemma-ft has no tokenizer.model, model.safetensors"):
        minigemma.load("someone/gemma-ft", progress=False)


def test_local_directory_wins_over_hub_id(tiny_checkpoint, tmp_path, monkeypatch):
    files, hf = tiny_checkpoint
    shutil.copytree(files, tmp_path / "google" / "gemma-2b")
    monkeypatch.chdir(tmp_path)
    calls = fake_hub(monkeypatch, None, tmp_path)
    model, _ = minigemma.load("google/gemma-2b", progress=False)
    assert calls == []
    torch.testing.assert_close(logits(model), logits(hf), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, expected", [
    ("google/gemma-2b", True), ("google/gemma-1.1-7b-it", True), ("a/b/c", False),
    ("./gemma-2b", False), ("gemma-2b", False), ("/abs/dir", False),
])
def test_is_hub_id(name, expected):
    assert hub.is_hub_id(name) is expected


def test_unreachable_hub_also_says_no_local_directory_exists(monkeypatch, tmp_path):
    """'models/gemma-2b' (no ./models here) is a Hub id; if the Hub fails, say no such local path exists either."""
    from minigemma.errors import ModelNotFoundError
    from minigemma.loading import hub

    def unreachable(repo_id, revision=None):
        raise ModelNotFoundError(f"{repo_id} is not in the local Hugging Face cache and the Hub cannot be reached")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "snapshot", unreachable)
    with pytest.raises(ModelNotFoundError, match=r"cannot be reached.*Nor is there a local file or directory '.*models/gemma-2b'"):
        minigemma.load("models/gemma-2b")
