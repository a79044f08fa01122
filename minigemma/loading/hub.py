"""Hub ids like "google/gemma-2b": find the files in the local Hugging Face cache, download only if missing.

Gemma repositories are gated: each account accepts the Gemma Terms of Use once on the model
page, and downloads need that account's token (`hf auth login`, or the HF_TOKEN variable).
Only the files minigemma reads are fetched; the repositories also hold a full-precision .gguf
as large as the safetensors, which we skip.

A Hub that does not answer is an error after HF_HUB_ETAG_TIMEOUT seconds (10 unless that
environment variable says otherwise), never a hang; a download then waits at most
HF_HUB_DOWNLOAD_TIMEOUT seconds (10) for each chunk. A name that looks like a local path is never
sent to the Hub at all (see looks_like_path).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from pathlib import Path

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

from ..errors import CheckpointError, ModelNotFoundError

log = logging.getLogger("minigemma")

HUB_FILES = ["config.json", "model*.safetensors", "model.safetensors.index.json", "tokenizer.model"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Names ending like this are files, never Hub repositories.
PATH_SUFFIXES = (".gguf", ".ckpt", ".pt", ".pth", ".safetensors", ".json", ".model", ".bin")

LOGIN_HELP = ("accept the Gemma terms on https://huggingface.co/{repo} with your account, then log in with "
              "`hf auth login` (older huggingface_hub: `huggingface-cli login`) or set the HF_TOKEN environment "
              "variable; or download the files elsewhere and pass load() the local directory")


def looks_like_path(name: str) -> bool:
    """Whether `name` (which does not exist) was meant as a local path, so it must not go to the Hub.

    The rule: a Hub id is exactly 'org/name'. A name is a path if it starts with '.', '/' or '~',
    holds a backslash, ends in a file suffix (.gguf, .ckpt, .safetensors, ...), has a '/' but is not
    shaped 'org/name' ('a/b/c'), or is 'folder/name' where ./folder exists here: 'models/gemma-2b'
    with a ./models folder is a mistyped path into it, not the Hub repository of a user "models".
    """
    if name.startswith((".", "/", "~")) or "\\" in name or name.lower().endswith(PATH_SUFFIXES):
        return True
    if "/" in name:
        return _HUB_ID.match(name) is None or Path(name.split("/")[0]).is_dir()
    return False


def is_hub_id(name: str) -> bool:
    """'org/name' with Hub-legal characters, that cannot be read as a local path (see looks_like_path)."""
    return _HUB_ID.match(name) is not None and not looks_like_path(name)


def no_such_path(name: str, path: Path) -> str:
    """The message for `name`, a local path that does not exist, with the names it was probably meant to be."""
    path = path.absolute()
    message = f"no such local file or directory: {str(path)!r}"
    if path.parent.is_dir():
        near = difflib.get_close_matches(path.name, [p.name for p in path.parent.iterdir()], n=3)
        if near:
            message += f" (did you mean {' or '.join(repr(str(path.parent / n)) for n in near)}?)"
    else:
        message += f" (even the folder {str(path.parent)!r} does not exist)"
    message += ". Check the spelling, and the current directory (relative paths start there)"
    if _HUB_ID.match(name) and Path(name.split("/")[0]).is_dir():
        message += (f". {name!r} is read as a path, not a Hub id, because ./{name.split('/')[0]} is a folder here: "
                    "to download that Hub repository, call load() from another directory")
    return message


def missing_files(directory: Path) -> list[str]:
    """What a snapshot still lacks for minigemma to load it (empty when complete)."""
    missing = [f for f in ("config.json", "tokenizer.model") if not (directory / f).is_file()]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            return missing + [index.name]
        missing += sorted(s for s in shards if not (directory / s).is_file())
    elif not (directory / "model.safetensors").is_file():
        missing.append("model.safetensors")
    return missing


def _unreachable(repo_id: str, error: Exception) -> ModelNotFoundError:
    # requests, httpx and the standard library each name their timeout class "...Timeout...".
    if any("Timeout" in type(e).__name__ for e in (error, error.__cause__, error.__context__) if e is not None):
        why = (f"at {constants.ENDPOINT} did not answer within {constants.HF_HUB_ETAG_TIMEOUT} s (a proxy or "
               "firewall that holds connections? set HF_HUB_ETAG_TIMEOUT to wait longer)")
    else:
        why = f"cannot be reached ({type(error).__name__}: {error})"
    return ModelNotFoundError(
        f"{repo_id} is not in the local Hugging Face cache and the Hub {why}. Connect to the network (and unset "
        "HF_HUB_OFFLINE), or download the files on another machine and pass load() the local directory")


def check_reachable(repo_id: str, revision: str | None = None) -> None:
    """Ask the Hub about `repo_id` once, with a timeout; raise ModelNotFoundError if it does not answer.

    snapshot_download's first request (the repository's file list) has no timeout, so a server
    that accepts the connection and then says nothing (a stuck proxy) would hang it forever.
    """
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:
        pass  # it answered (not found, gated, ...): snapshot_download meets the same answer and reports it
    except Exception as e:  # the HTTP library's own errors (requests' or httpx's, by huggingface_hub version)
        raise _unreachable(repo_id, e) from e


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local directory holding `repo_id`'s config, weights and tokenizer; downloads what is missing."""
    try:
        # First without any network access: a complete cached copy is all we need.
        local = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES, local_files_only=True))
        if not missing_files(local):
            log.info("%s: using the cached snapshot %s", repo_id, local)
            return local
    except LocalEntryNotFoundError:  # not cached (or cached only in part)
        pass
    except ValueError as e:  # huggingface_hub's HFValidationError: e.g. "--" or ".." in the name, too long
        raise ModelNotFoundError(f"{repo_id!r} is not a valid Hub id ({e})") from e
    log.info("%s: not (fully) in the local cache, downloading %s", repo_id, ", ".join(HUB_FILES))
    try:
        if not constants.HF_HUB_OFFLINE:
            check_reachable(repo_id, revision)
        # The token comes from the usual places: HF_TOKEN, or the one `hf auth login` saved.
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES, local_files_only=False,
                                      etag_timeout=constants.HF_HUB_ETAG_TIMEOUT))
    except GatedRepoError as e:
        raise ModelNotFoundError(f"{repo_id} is gated and this machine has no token with access to it: "
                                 + LOGIN_HELP.format(repo=repo_id)) from e
    except RepositoryNotFoundError as e:  # the Hub answers "not found" for private repos without a token too
        raise ModelNotFoundError(f"the Hub has no repository {repo_id!r} visible to you: check the spelling "
                                 f"(e.g. google/gemma-2b, google/gemma-7b-it, google/gemma-1.1-2b-it); if it is "
                                 "private or gated, " + LOGIN_HELP.format(repo=repo_id)) from e
    except LocalEntryNotFoundError as e:  # offline, HF_HUB_OFFLINE=1, or the Hub unreachable
        raise _unreachable(repo_id, e) from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelNotFoundError(f"the Hub refused access to {repo_id} ({status}): "
                                     + LOGIN_HELP.format(repo=repo_id)) from e
        raise ModelNotFoundError(f"downloading {repo_id} failed ({e}); try again later, or pass a local "
                                 "directory") from e
    if missing := missing_files(path):
        raise CheckpointError(f"{repo_id} has no {', '.join(missing)}: minigemma needs a Gemma repository with "
                              "safetensors weights, config.json and tokenizer.model")
    return path
