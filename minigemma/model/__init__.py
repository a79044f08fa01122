"""The model, in reading order: config, hooks, norm, rope, attention (and its KV cache), mlp, block, gemma."""

from .attention import KVCache
from .config import PRESETS, GemmaConfig, get_config
from .gemma import Gemma, Unembedding

__all__ = ["Gemma", "GemmaConfig", "KVCache", "PRESETS", "Unembedding", "get_config"]
