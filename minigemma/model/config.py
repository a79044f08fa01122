"""Model hyper-parameters: one dataclass, named presets (after google/gemma_pytorch).

Gemma 1 numbers come from the Gemma technical report (Table 1, "Key model parameters");
Gemma 3 270M numbers come from its GGUF metadata. Everything the architecture needs to
know is a field here, so the modules never derive a size on their own (see `head_dim`).
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class GemmaConfig:
    name: str = "custom"
    architecture: str = "gemma"  # "gemma" (Gemma 1 layout) or "gemma3" (extra norms, QK-norm, local layers)
    vocab_size: int = 256_000
    hidden_size: int = 2048
    intermediate_size: int = 16_384  # width of each of the gate and up projections
    num_layers: int = 18
    num_heads: int = 8
    num_kv_heads: int = 1  # 1: multi-query (2B); == num_heads: multi-head (7B); between: grouped-query
    # Pitfall 8: head_dim is its own field. Gemma 7B has 16 heads of 256 = 4096 != hidden 3072.
    head_dim: int = 256
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000.0
    # Pitfall 9: Gemma 1 scales scores by 1/sqrt(head_dim); Gemma 2/3 by 1/sqrt(query_pre_attn_scalar).
    query_pre_attn_scalar: float | None = None
    # Gemma 3 only: every `sliding_window_pattern`-th layer is global, the rest see a local window.
    sliding_window: int | None = None
    sliding_window_pattern: int = 1  # 1 means every layer is global (Gemma 1)
    rope_local_theta: float = 10_000.0
    # Gemma 3: RMSNorm on q and k per head, and norms after attention and after the MLP.
    qk_norm: bool = False
    post_norms: bool = False
    bos_id: int = 2
    eos_id: int = 1
    pad_id: int = 0

    @property
    def attn_scale(self) -> float:
        scalar = self.query_pre_attn_scalar if self.query_pre_attn_scalar is not None else self.head_dim
        return scalar ** -0.5

    def is_local_layer(self, layer: int) -> bool:
        """Gemma 3 interleaves 5 local (sliding-window) layers with 1 global one: layers 5, 11, 17 are global."""
        if self.sliding_window is None or self.sliding_window_pattern <= 1:
            return False
        return (layer + 1) % self.sliding_window_pattern != 0

    def replace(self, **changes) -> "GemmaConfig":
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        check_fields(vars(self))  # before any module is built from these numbers


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # True is an int to Python, never a size


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _size(limit: int) -> tuple[Callable[[object], bool], str]:
    # The limits are far above any Gemma's (vocabulary 262k, 62 layers) but keep a typo such as
    # 10**20 layers from building modules for minutes or overflowing torch's 64-bit sizes.
    return (lambda v: is_int(v) and 0 < v <= limit, f"a positive int up to {limit:,}")


_POSITIVE_NUMBER = (lambda v: is_number(v) and v > 0, "a positive number")
_TOKEN_ID = (lambda v: is_int(v) and v >= 0, "a token id (an int >= 0)")
_FLAG = (lambda v: isinstance(v, bool), "a bool")
_LENGTH = _size(2**24)  # positions, in tokens
# field: (test, what the field must be)
_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "architecture": (lambda v: v in ("gemma", "gemma3"), "'gemma' or 'gemma3'"),
    "vocab_size": _size(2**20), "hidden_size": _size(2**17), "intermediate_size": _size(2**17),
    "num_layers": _size(512), "num_heads": _size(1024), "num_kv_heads": _size(1024),
    "head_dim": (lambda v: _size(4096)[0](v) and v % 2 == 0, "a positive even int up to 4,096 (RoPE rotates pairs)"),
    "max_position_embeddings": _LENGTH,
    "rms_norm_eps": _POSITIVE_NUMBER, "rope_theta": _POSITIVE_NUMBER, "rope_local_theta": _POSITIVE_NUMBER,
    "query_pre_attn_scalar": (lambda v: v is None or _POSITIVE_NUMBER[0](v), "a positive number or null"),
    "sliding_window": (lambda v: v is None or _LENGTH[0](v), f"{_LENGTH[1]} (tokens) or null"),
    "sliding_window_pattern": _LENGTH,
    "qk_norm": _FLAG, "post_norms": _FLAG,
    "bos_id": _TOKEN_ID, "eos_id": _TOKEN_ID, "pad_id": _TOKEN_ID,
}


def check_fields(fields: Mapping[str, object], where: str = "GemmaConfig", keys: Mapping[str, str] | None = None,
                 fix: str = "") -> None:
    """Raise a ConfigError for the first field of the wrong type, out of range, or inconsistent.

    `where` names the source (a config.json path), `keys` the fields as that source names them
    (config.json's 'num_hidden_layers' is our num_layers), so that the message speaks its language;
    `fix` is appended. A bad value caught here would otherwise surface much later as a
    ZeroDivisionError while building the model, or a TypeError deep inside generate.
    """
    keys = keys or {}
    fields = {f.name: f.default for f in dataclasses.fields(GemmaConfig)} | dict(fields)  # a source may omit some

    def bad(field: str, expected: str) -> ConfigError:
        return field_error(where, keys.get(field, field), fields[field], expected, fix)

    for field, (ok, expected) in _RULES.items():
        if not ok(fields[field]):
            raise bad(field, expected)
    if fields["num_heads"] % fields["num_kv_heads"]:
        raise bad("num_kv_heads", f"a divisor of {keys.get('num_heads', 'num_heads')!r} ({fields['num_heads']}): "
                                  "each key/value head is shared by a whole group of query heads")
    for field in ("bos_id", "eos_id", "pad_id"):
        if fields[field] >= fields["vocab_size"]:
            raise bad(field, f"an id below {keys.get('vocab_size', 'vocab_size')!r} ({fields['vocab_size']})")


def field_error(where: str, key: str, value: object, expected: str, fix: str = "") -> ConfigError:
    """The ConfigError "<where>: 'key' is <value>, expected <expected>. <fix>", for every bad field alike."""
    message = f"{where}: {key!r} is {reprlib.repr(value)}, expected {expected}."  # reprlib: a long list is cut
    return ConfigError(f"{message} {fix}" if fix else message)


PRESETS: dict[str, GemmaConfig] = {
    # Gemma report, Table 1: 2B uses multi-query attention (one key/value head).
    "gemma-2b": GemmaConfig(name="gemma-2b"),
    # 7B uses ordinary multi-head attention, 16 heads of 256 each.
    "gemma-7b": GemmaConfig(
        name="gemma-7b", hidden_size=3072, intermediate_size=24_576, num_layers=28,
        num_heads=16, num_kv_heads=16,
    ),
    # Gemma 3 270M, values read from the embedded GGUF.
    "gemma3-270m": GemmaConfig(
        name="gemma3-270m", architecture="gemma3", vocab_size=262_144, hidden_size=640,
        intermediate_size=2048, num_layers=18, num_heads=4, num_kv_heads=1, head_dim=256,
        max_position_embeddings=32_768, rope_theta=1_000_000.0, rope_local_theta=10_000.0,
        query_pre_attn_scalar=256, sliding_window=512, sliding_window_pattern=6,
        qk_norm=True, post_norms=True,
    ),
    # Tiny configurations for tests: same code paths, a few thousand parameters.
    "tiny-gemma": GemmaConfig(
        name="tiny-gemma", vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=1, head_dim=16, max_position_embeddings=128,
    ),
    "tiny-gemma-mha": GemmaConfig(
        name="tiny-gemma-mha", vocab_size=512, hidden_size=48, intermediate_size=96, num_layers=2,
        num_heads=4, num_kv_heads=4, head_dim=16, max_position_embeddings=128,
    ),
    "tiny-gemma3": GemmaConfig(
        name="tiny-gemma3", architecture="gemma3", vocab_size=512, hidden_size=64,
        intermediate_size=128, num_layers=6, num_heads=4, num_kv_heads=2, head_dim=16,
        max_position_embeddings=256, rope_theta=1_000_000.0, rope_local_theta=10_000.0,
        query_pre_attn_scalar=16, sliding_window=8, sliding_window_pattern=3,
        qk_norm=True, post_norms=True,
    ),
    # Notebook 14 pretrains this from scratch on a CPU in well under a minute: the 270M's Gemma 3
    # layout (QK-norm, sandwich norms, one key/value head, local layers with their own RoPE base
    # and one global layer) at hidden 128 and a 1,024-piece vocabulary of its own, 0.69M parameters.
    "tiny-pretrain": GemmaConfig(
        name="tiny-pretrain", architecture="gemma3", vocab_size=1024, hidden_size=128,
        intermediate_size=256, num_layers=4, num_heads=4, num_kv_heads=1, head_dim=32,
        max_position_embeddings=256, rope_theta=1_000_000.0, rope_local_theta=10_000.0,
        query_pre_attn_scalar=32, sliding_window=32, sliding_window_pattern=4,
        qk_norm=True, post_norms=True,
    ),
}


def get_config(name: str) -> GemmaConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None


def matching_preset(config: GemmaConfig, ignore: Iterable[str] = ()) -> GemmaConfig | None:
    """The preset equal to `config` in every field but the name and those in `ignore`, if any.

    Loaders name what they read after it, so that a model read from any file is "gemma-2b" again.
    """
    own = {field: getattr(config, field) for field in ("name", *ignore)}
    return next((preset for preset in PRESETS.values() if preset.replace(**own) == config), None)
