"""minigemma: Google's Gemma, rebuilt from scratch one idea at a time, running the real weights."""

from .model.config import PRESETS, GemmaConfig, get_config
from .model.gemma import Gemma
from .loading import load
from .decoding.generate import generate
from .decoding.compile import compile
from .model.lora import add_lora
from .loading.adapter import load_adapter, save_adapter

__all__ = ["GemmaConfig", "PRESETS", "get_config", "Gemma", "load", "generate", "compile", "add_lora",
           "save_adapter", "load_adapter"]
__version__ = "0.1.0"
