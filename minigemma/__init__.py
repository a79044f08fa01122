"""minigemma: Google's Gemma, rebuilt from scratch one idea at a time, running the real weights."""

from .config import PRESETS, GemmaConfig, get_config
from .model import Gemma
from .loading import load
from .generate import generate
from .compile import compile

__all__ = ["GemmaConfig", "PRESETS", "get_config", "Gemma", "load", "generate", "compile"]
__version__ = "0.1.0"
