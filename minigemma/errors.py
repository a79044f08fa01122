"""The errors minigemma raises for a user's mistake, one family so callers can catch them all.

Each message names the thing at fault (a file, a config field, a tensor, an argument), what was
found, what was expected, and the fix. They subclass the built-in exception that fits, so code
written against `ValueError` or `FileNotFoundError` keeps working; the CLI prints any of them
as one line and exits with status 2.
"""

from __future__ import annotations


class MinigemmaError(Exception):
    """Base of every error minigemma raises for a user's input or environment (never for its own bugs)."""


class ConfigError(MinigemmaError, ValueError):
    """A hyper-parameter is missing, of the wrong type, or inconsistent (config.json, GGUF metadata, a preset)."""


class CheckpointError(MinigemmaError, ValueError):
    """A checkpoint file is unreadable, truncated, corrupt, or holds the wrong tensors."""


class ModelNotFoundError(MinigemmaError, ValueError, FileNotFoundError):
    """A model name that is neither a known model, an existing path, nor a reachable Hub id."""


class CacheError(MinigemmaError, ValueError):
    """The cache directory (MINIGEMMA_CACHE) cannot be used."""


class ArgumentError(MinigemmaError, ValueError):
    """A bad argument to a public function: a sampling setting, a device, a length."""
