"""Hub ids like "google/gemma-2b": find the files in the local Hugging Face cache, download only if missing.

Gemma repositories are gated: each account accepts the Gemma Terms of Use once on the model
page, and downloads need that account's token (`hf auth login`, or the HF_TOKEN variable).
Only the files minigemma reads are fetched; the repositories also hold a full-precision .gguf
as large as the safetensors, which we skip.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

log = logging.getLogger("minigemma")

HUB_FILES = ["config.json", "model*.safetensors", "model.safetensors.index.json", "tokenizer.model"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

LOGIN_HELP = ("accept the Gemma terms on https://huggingface.co/{repo} with your account, then log in with "
              "`hf auth login` (older huggingface_hub: `huggingface-cli login`) or set the HF_TOKEN environment "
              "variable; or download the files elsewhere and pass load() the local directory")


def is_hub_id(name: str) -> bool:
    """'org/name' with Hub-legal characters (a path that exists locally always wins over this)."""
    return _HUB_ID.match(name) is not None


def missing_files(directory: Path) -> list[str]:
    """What a snapshot still lacks for minigemma to load it (empty when complete)."""
    missing = [f for f in ("config.json", "tokenizer.model") if not (directory / f).is_file()]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError):
            return missing + [index.name]
        missing += sorted(s for s in shards if not (directory / s).is_file())
    elif not (directory / "model.safetensors").is_file():
        missing.append("model.safetensors")
    return missing


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
    log.info("%s: not (fully) in the local cache, downloading %s", repo_id, ", ".join(HUB_FILES))
    try:
        # The token comes from the usual places: HF_TOKEN, or the one `hf auth login` saved.
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES, local_files_only=False))
    except GatedRepoError as e:
        raise ValueError(f"{repo_id} is gated and this machine has no token with access to it: "
                         + LOGIN_HELP.format(repo=repo_id)) from e
    except RepositoryNotFoundError as e:  # the Hub answers "not found" for private repos without a token too
        raise ValueError(f"the Hub has no repository {repo_id!r} visible to you: check the spelling "
                         f"(e.g. google/gemma-2b, google/gemma-7b-it, google/gemma-1.1-2b-it); if it is private or "
                         "gated, " + LOGIN_HELP.format(repo=repo_id)) from e
    except LocalEntryNotFoundError as e:  # offline, HF_HUB_OFFLINE=1, or the Hub unreachable
        raise ValueError(f"{repo_id} is not in the local Hugging Face cache and the Hub cannot be reached ({e}). "
                         "Connect to the network (and unset HF_HUB_OFFLINE), or download the files on another "
                         "machine and pass load() the local directory") from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise ValueError(f"the Hub refused access to {repo_id} ({status}): "
                             + LOGIN_HELP.format(repo=repo_id)) from e
        raise ValueError(f"downloading {repo_id} failed ({e}); try again later, or pass a local directory") from e
    if missing := missing_files(path):
        raise ValueError(f"{repo_id} has no {', '.join(missing)}: minigemma needs a Gemma repository with "
                         "safetensors weights, config.json and tokenizer.model")
    return path
