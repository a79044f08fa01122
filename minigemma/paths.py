"""Where minigemma writes: one cache directory, and the folders in it that are not converted models.

The rule lives here, below every other module, because three layers keep files there: quantize
(its compiled block kernel), loading (converted checkpoints, adapters) and decoding
(torch.compile's kernels). loading/cache.py manages the directory and its entries.
"""

from __future__ import annotations

import os
from pathlib import Path

# Folders of the cache that are not entries (no manifest, nothing checksummed): see
# loading/cache.py (`other_folders`, `clear`) for what `minigemma cache` says and does with them.
KERNELS = "inductor"  # torch.compile's generated kernels (decoding/compile.py)
NATIVE = "kernels"  # minigemma's own compiled block kernel (quantize/native.py)
ADAPTERS = "adapters"  # adapters `minigemma tune` trained (loading/adapter.py)


def cache_root() -> Path:
    """MINIGEMMA_CACHE, else $XDG_CACHE_HOME/minigemma, else ~/.cache/minigemma."""
    if os.environ.get("MINIGEMMA_CACHE"):
        return Path(os.environ["MINIGEMMA_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "minigemma"
    return Path.home() / ".cache" / "minigemma"
