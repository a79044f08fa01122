"""Weight-only quantization: int8 per output channel and int4 in groups.

Decoding one token at batch 1 reads every weight once and does only two flops per weight read,
so its speed is set by how many bytes the weights take, not by arithmetic (notebook 13 measures
this). Storing weights in fewer bits is the most direct speed-up there is. The Gemma 3 report
(section 2.3, "Quantization Aware Training") ships its models as per-channel int4, per-block
int4 and switched fp8, fine-tuned for a few thousand steps with the quantization in the loop.
Here we do the simplest post-training version, round-to-nearest, with no retraining:

  int8, one scale per output row (symmetric, "per-channel"):
      w[r, :] ~= q[r, :] * s[r]                     q in [-127, 127]
  int4, one scale and one zero per group of `group_size` inputs of a row ("per-block"):
      w[r, g] ~= (q[r, g] - 8) * s[r, g] + z[r, g]   q in [0, 15], z = the group's middle

Only the linear layers and the embedding are quantized; norms stay in float (they are tiny and
sensitive). Activations stay in float too: this is "weight-only" quantization.

The tied embedding is both a lookup table (token id -> row) and the output projection (the
262k x 640 matrix that is 60% of the 270M's parameters, and ~half of its decode time). One
quantized copy serves both: the lookup dequantizes only the rows it needs, the output
projection goes through the same matmul as any quantized linear layer.

Where PyTorch has a kernel that reads the small integers directly (`_weight_int8pack_mm`, and
`_weight_int4pack_mm` / `_weight_int4pack_mm_for_cpu`), we use it; elsewhere we dequantize the
weight and call F.linear (correct everywhere, but it materializes one float weight at a time).
Each kernel is checked once per device against the dequantized reference before it is trusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .loading.int8 import dequantize_rows, quantize_rows

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what PyTorch's int4 kernels accept


# ---------------------------------------------------------------------------------------------
# The arithmetic: float matrix <-> small integers plus scales
# ---------------------------------------------------------------------------------------------

# int8 per row is exactly what gemma_pytorch's int8 checkpoints use: its loader (loading/int8.py,
# notebook 08) already has the two functions, so we use them rather than write them twice.
quantize_int8 = quantize_rows  # (out, in) float -> int8 (out, in), float32 scales (out,)
dequantize_int8 = dequantize_rows  # int8 (out, in), scales (out,) -> float (out, in)


def quantize_int4(w: torch.Tensor, group_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, in) float -> packed uint8 (out, in/2), bf16 scales and zeros (out, in/group_size).

    Asymmetric min-max per group: the group's minimum maps to level 0 and its maximum to 15, so
    all 16 levels are used even when a group is lopsided. Written as w ~= (q - 8) * s + z, where
    z is the value of the middle level 8: the convention of PyTorch's int4 kernels, so the same
    numbers feed the kernel and the readable dequantization. s and z are kept in bf16 (2 x 16
    bits per group: 4.5 bits per weight with groups of 64) and q is rounded against those
    bf16 values, so the error per entry stays about half a step, s / 2 = (max - min) / 30.
    Two 4-bit values share a byte: column 2j in the low nibble, column 2j+1 in the high one.
    """
    check_int4_shape(w.shape, group_size)
    out_features, in_features = w.shape
    groups = w.float().reshape(out_features, in_features // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (out, n_groups)
    constant = high == low  # such a group is all z: every q is 8, whatever the scale
    scale = torch.where(constant, 1.0, (high - low) / 15.0).to(torch.bfloat16)
    zero = torch.where(constant, low, low + 8 * scale.float()).to(torch.bfloat16)
    # round((w - z) / s) + 8, in place on one copy (2x faster than a new tensor per step).
    q = groups.clone().sub_(zero.float()[..., None]).div_(scale.float()[..., None]).round_().add_(8)
    q = q.clamp_(0, 15).to(torch.uint8).reshape(out_features, in_features)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)  # (out, in/2)
    return packed, scale, zero


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (out, in/2) -> uint8 values 0..15 (out, in)."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    out_features, n_groups = scale.shape
    w = unpack_int4(packed).float().reshape(out_features, n_groups, -1)  # (out, n_groups, group_size)
    # In place: the same (q - 8) * s + z, but ~10x faster than new tensors with broadcast operands.
    w.sub_(8).mul_(scale.float()[..., None]).add_(zero.float()[..., None])
    return w.reshape(out_features, -1).to(dtype)


def check_int4_shape(shape: torch.Size | tuple[int, ...], group_size: int) -> None:
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group_size must be one of {INT4_GROUP_SIZES} (PyTorch's int4 kernels "
                         f"accept only these), got {group_size}")
    if shape[1] % group_size != 0:
        raise ValueError(f"a weight with {shape[1]} input features cannot be cut into groups of "
                         f"{group_size}; pick a group_size that divides {shape[1]}")


# ---------------------------------------------------------------------------------------------
# Fast kernels, each trusted only after it reproduces the dequantized reference on this device
# ---------------------------------------------------------------------------------------------

_KERNEL_OK: dict[tuple, bool] = {}


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` if it is contiguous and starts on a 64-byte boundary, else a copy that does.

    PyTorch's AVX-512 int8 kernel reads its inputs with aligned vector loads (`_mm_load_si128`
    on 16 int8 weights, `_mm256_load_si256` on 16 bf16 inputs), which crash the whole process
    (SIGSEGV, no Python error) on an address that is not a multiple of 16 or 32 bytes. Memory that
    PyTorch allocates is 64-byte aligned; a tensor read from a file by `load_quantized` is not:
    safetensors maps the file and each tensor starts at its offset there (24 bytes past a
    boundary in our files). The copy is made once per layer (Int8Linear caches it).
    """
    if t.is_contiguous() and t.data_ptr() % 64 == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)  # a fresh allocation: aligned


def _int8_kernel(x2d: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # (M, in) x int8 (out, in) with per-row scales (in x's dtype) -> (M, out), no float weight.
    # `in` must be a multiple of 16 (the kernel steps through a row 16 values at a time), and
    # every tensor aligned (see `aligned`): the only layout this kernel was seen to handle safely.
    return torch._weight_int8pack_mm(aligned(x2d), aligned(q), aligned(scale))


def _int4_pack_for_kernel(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                          dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Our storage -> the layout of PyTorch's int4 kernels ("tinygemm").

    Same numbers, w = (q - 8) * scale + zero, arranged as they want: scales and zeros in one
    (n_groups, out, 2) tensor of the input's dtype; the 0..15 values as int32 (out, in) for the
    CPU kernel to pack, or as bytes with the even column in the high nibble for the CUDA one.
    """
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)
    q = unpack_int4(packed)
    if packed.device.type == "cpu":
        weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    else:
        # The CUDA kernel tiles the input dimension; take the largest tiling that divides it.
        inner_k_tiles = next((t for t in (8, 4, 2) if q.shape[1] % (t * 16) == 0), 2)
        weight = torch.ops.aten._convert_weight_to_int4pack((q[:, 0::2] << 4 | q[:, 1::2]).contiguous(), inner_k_tiles)
    return weight, scales_and_zeros


def _int4_kernel(x2d: torch.Tensor, weight: torch.Tensor, group_size: int, scales_and_zeros: torch.Tensor):
    if x2d.device.type == "cpu":
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2d, weight, group_size, scales_and_zeros)
    return torch.ops.aten._weight_int4pack_mm(x2d, weight, group_size, scales_and_zeros)


def use_kernel(kind: str, x2d: torch.Tensor) -> bool:
    """Kernel for decode-sized inputs, dequantize-then-matmul for prompt-sized ones.

    The int8/int4 kernels are built for a few rows (batch-1 decoding reads the weight once per
    token); for a long prompt, turning the weight back to float once and calling the BLAS matmul
    is faster (measured: benchmarks/RESULTS.md). With float32 inputs on this CPU the kernels are
    not vectorized, so only a single row goes through them.
    """
    max_rows = 1 if x2d.dtype == torch.float32 else 32
    return x2d.shape[0] <= max_rows and kernel_works(kind, x2d.device, x2d.dtype)


def fallback_dtype(x2d: torch.Tensor) -> torch.dtype:
    # CPUs without bf16 units run float32 BLAS several times faster than bf16 (DESIGN.md).
    return torch.float32 if x2d.device.type == "cpu" else x2d.dtype


def kernel_works(kind: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Does PyTorch's int8/int4 matmul exist here and agree with dequantize-then-F.linear?

    The kernels are private ATen operators whose support varies by device, dtype and version, so
    we test instead of trusting a table: a 64 x 256 product, compared with the reference.
    """
    key = (kind, device.type, dtype)
    if key not in _KERNEL_OK:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(64, 256, generator=gen)
        x = torch.randn(3, 256, generator=gen)
        try:
            if kind == "int8":
                q, s = quantize_int8(w)
                expected = F.linear(x, dequantize_int8(q, s))
                got = _int8_kernel(x.to(device, dtype), q.to(device), s.to(device, dtype))
            else:
                packed, s, m = quantize_int4(w, 64)
                expected = F.linear(x, dequantize_int4(packed, s, m))
                weight, sz = _int4_pack_for_kernel(packed.to(device), s.to(device), m.to(device), dtype)
                got = _int4_kernel(x.to(device, dtype), weight, 64, sz)
            tol = 1e-3 if dtype == torch.float32 else 0.1  # bf16 inputs carry 8 significant bits
            ok = torch.allclose(got.float().cpu(), expected, atol=tol * expected.abs().max().item(), rtol=0)
        except (RuntimeError, NotImplementedError, AttributeError):
            ok = False
        _KERNEL_OK[key] = ok
    return _KERNEL_OK[key]


# ---------------------------------------------------------------------------------------------
# Modules that replace nn.Linear and nn.Embedding
# ---------------------------------------------------------------------------------------------

class QuantizedLinear(nn.Module):
    """Base class: a bias-free linear layer whose weight is stored in `bits` bits.

    The matmul runs in the input's dtype: float32 in the readable model; the fast path
    (minigemma/fast.py) casts inputs to whatever the kernel is fastest with.
    """

    bits: int

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # Tensors rearranged for a kernel, made on first use per (device, dtype); the buffers
        # stay the portable form that is saved.
        self._kernel_cache: dict[tuple, object] = {}

    def _apply(self, fn, recurse=True):
        self._kernel_cache = {}  # .to(device) and friends invalidate the kernels' copies
        return super()._apply(fn, recurse)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)  # the kernels take 2-D inputs
        return self.matmul(x2d).reshape(*x.shape[:-1], self.out_features)

    @classmethod
    def cat(cls, layers: list["QuantizedLinear"]) -> "QuantizedLinear":
        """A new layer with all of `layers`' outputs (rows); they must read the same input.

        A single layer gives a new module sharing its tensors."""
        raise NotImplementedError


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)  # one layer: share, don't copy


class Int8Linear(QuantizedLinear):
    bits = 8

    def __init__(self, in_features: int, out_features: int, device=None):
        super().__init__(in_features, out_features)
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(out_features, device=device))  # float32

    @classmethod
    def from_float(cls, w: torch.Tensor) -> "Int8Linear":
        layer = cls(w.shape[1], w.shape[0], device=w.device)
        layer.weight, layer.scale = quantize_int8(w)
        return layer

    @classmethod
    def cat(cls, layers: list["Int8Linear"]) -> "Int8Linear":
        layer = cls(layers[0].in_features, sum(l.out_features for l in layers), device=layers[0].weight.device)
        layer.weight, layer.scale = _cat([l.weight for l in layers]), _cat([l.scale for l in layers])
        return layer

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int8(self.weight, self.scale, dtype)

    def matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        if self.in_features % 16 == 0 and use_kernel("int8", x2d):
            key = (x2d.device, x2d.dtype)
            if key not in self._kernel_cache:
                # The scales in x's dtype, as the kernel wants; the weight itself, or an aligned copy
                # of it if it was loaded from a file (see `aligned`).
                self._kernel_cache[key] = aligned(self.weight), self.scale.to(x2d.dtype)
            return _int8_kernel(x2d, *self._kernel_cache[key])
        # Fallback: one scale per output row commutes with the matmul, x (q s)^T = (x q^T) s,
        # so only the int8 -> float cast of this layer's weight is materialized.
        dtype = fallback_dtype(x2d)
        return (F.linear(x2d.to(dtype), self.weight.to(dtype)) * self.scale.to(dtype)).to(x2d.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-row"


class Int4Linear(QuantizedLinear):
    bits = 4

    def __init__(self, in_features: int, out_features: int, group_size: int = 64, device=None):
        super().__init__(in_features, out_features)
        check_int4_shape((out_features, in_features), group_size)
        self.group_size = group_size
        n_groups = in_features // group_size
        self.register_buffer("weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scale", torch.ones(out_features, n_groups, dtype=torch.bfloat16, device=device))
        self.register_buffer("zero", torch.zeros(out_features, n_groups, dtype=torch.bfloat16, device=device))

    @classmethod
    def from_float(cls, w: torch.Tensor, group_size: int = 64) -> "Int4Linear":
        layer = cls(w.shape[1], w.shape[0], group_size, device=w.device)
        layer.weight, layer.scale, layer.zero = quantize_int4(w, group_size)
        return layer

    @classmethod
    def cat(cls, layers: list["Int4Linear"]) -> "Int4Linear":
        first = layers[0]
        if any(l.group_size != first.group_size for l in layers):
            raise ValueError("can only concatenate int4 layers with the same group_size")
        layer = cls(first.in_features, sum(l.out_features for l in layers), first.group_size, device=first.weight.device)
        layer.weight, layer.scale = _cat([l.weight for l in layers]), _cat([l.scale for l in layers])
        layer.zero = _cat([l.zero for l in layers])
        return layer

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int4(self.weight, self.scale, self.zero, dtype)

    def matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        # The CPU kernel needs the row count to be a multiple of 16 too (it packs rows in tiles).
        if self.out_features % 16 == 0 and use_kernel("int4", x2d):
            key = (x2d.device, x2d.dtype)
            if key not in self._kernel_cache:
                try:
                    self._kernel_cache[key] = _int4_pack_for_kernel(self.weight, self.scale, self.zero, x2d.dtype)
                except RuntimeError:  # a shape this kernel does not tile: dequantize instead
                    self._kernel_cache[key] = None
            if self._kernel_cache[key] is not None:
                weight, scales_and_zeros = self._kernel_cache[key]
                return _int4_kernel(x2d, weight, self.group_size, scales_and_zeros)
        # Fallback: materialize this layer's float weight, then an ordinary matmul.
        dtype = fallback_dtype(x2d)
        return F.linear(x2d.to(dtype), self.dequantized(dtype)).to(x2d.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int4 groups of {self.group_size}")


class QuantizedEmbedding(nn.Module):
    """The tied embedding, quantized once, serving both of its roles.

    forward(ids) looks rows up and dequantizes only those; `unembed(x)` is the output projection
    through the quantized matmul. `weight` (the float matrix) is still available for code that
    asks for it, e.g. the model's own unembedding, but it is dequantized on every access.
    """

    def __init__(self, linear: QuantizedLinear, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.linear = linear  # (vocab, hidden): rows are token vectors, exactly as nn.Embedding's weight
        self.num_embeddings, self.embedding_dim = linear.out_features, linear.in_features
        self.dtype = dtype  # the float dtype the rest of the model runs in

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lin, flat = self.linear, ids.reshape(-1)
        if isinstance(lin, Int8Linear):
            rows = dequantize_int8(lin.weight[flat], lin.scale[flat], self.dtype)
        else:
            rows = dequantize_int4(lin.weight[flat], lin.scale[flat], lin.zero[flat], self.dtype)
        return rows.reshape(*ids.shape, self.embedding_dim)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.dequantized(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int{self.linear.bits}"


# ---------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------

def quantize_weight(w: torch.Tensor, bits: int, group_size: int = 64) -> QuantizedLinear:
    if bits == 8:
        return Int8Linear.from_float(w)
    if bits == 4:
        return Int4Linear.from_float(w, group_size)
    raise ValueError(f"bits must be 8 or 4, got {bits}")


SAME = "same"  # default of layer_bits / embedding_bits: use `bits`


@torch.no_grad()
def quantize(model: nn.Module, bits: int = 8, group_size: int = 64, *,
             layer_bits: int | None | str = SAME, embedding_bits: int | None | str = SAME) -> nn.Module:
    """Replace, in place, the model's linear layers and its tied embedding by quantized ones.

    bits: 8 (int8, one scale per row) or 4 (int4 in groups of `group_size` inputs), for both
    the linear layers and the embedding / output projection, unless `layer_bits` or
    `embedding_bits` says otherwise; None there keeps that part in float. For example
    `quantize(model, 8, layer_bits=None)` quantizes only the embedding, 63% of the 270M's bytes.
    Norms always keep their float dtype. Returns the model.
    """
    layer_bits = bits if layer_bits == SAME else layer_bits
    embedding_bits = bits if embedding_bits == SAME else embedding_bits
    for b in (layer_bits, embedding_bits):
        if b not in (4, 8, None):
            raise ValueError(f"bits must be 8 or 4 (or None to keep float), got {b}")
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)] if layer_bits else []
    for name, module in linears:  # check everything before changing anything
        if module.bias is not None:
            raise ValueError(f"{name} has a bias; Gemma's linear layers have none")
        if layer_bits == 4:
            check_int4_shape(module.weight.shape, group_size)
    quantize_embedding = embedding_bits is not None and isinstance(model.embed, nn.Embedding)
    if quantize_embedding and embedding_bits == 4:
        check_int4_shape(model.embed.weight.shape, group_size)
    for name, module in linears:
        _replace(model, name, quantize_weight(module.weight, layer_bits, group_size))
    if quantize_embedding:
        dtype = model.embed.weight.dtype
        model.embed = QuantizedEmbedding(quantize_weight(model.embed.weight, embedding_bits, group_size), dtype)
    model.quantization = scheme(model)
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def scheme(model: nn.Module) -> dict:
    """What `quantize` did, as JSON-friendly data: saved next to the weights."""
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            layers[name] = {"bits": module.bits, "group_size": getattr(module, "group_size", None)}
    return {"format": "minigemma-quantized", "version": 1, "config": model.config.name, "layers": layers,
            "embedding": isinstance(getattr(model, "embed", None), QuantizedEmbedding)}


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all weights as stored (integers, scales and float parameters)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return total + sum(b.numel() * b.element_size() for b in model.buffers())


def save_quantized(model: nn.Module, directory: str | Path) -> Path:
    """Write `quantized.safetensors` (integers, scales, float norms) and `quantization.json`."""
    import dataclasses

    from safetensors.torch import save_file

    if not any(isinstance(m, QuantizedLinear) for m in model.modules()):
        raise ValueError("this model has no quantized layers; call minigemma.quantize.quantize(model, bits=...) first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, directory / "quantized.safetensors")
    meta = scheme(model) | {"model_config": dataclasses.asdict(model.config)}
    (directory / "quantization.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_quantized(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_quantized`: quantized modules first, then their tensors."""
    from safetensors.torch import load_file

    from .config import GemmaConfig
    from .model import Gemma

    directory = Path(directory)
    meta_path = directory / "quantization.json"
    if not meta_path.is_file():
        raise ValueError(f"{str(directory)!r} has no quantization.json; it was not written by save_quantized")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != "minigemma-quantized" or meta.get("version") != 1:
        raise ValueError(f"{str(meta_path)!r} is not a minigemma quantization scheme (version 1)")
    state = load_file(directory / "quantized.safetensors", device=str(device))
    config = GemmaConfig(**meta["model_config"])
    with torch.device("meta"):
        model = Gemma(config)
    for name, layer in meta["layers"].items():
        if name == "embed.linear":
            continue
        old = model.get_submodule(name)
        _replace(model, name, _empty_quantized(layer, old.in_features, old.out_features))
    if meta["embedding"]:
        layer = meta["layers"]["embed.linear"]
        dtype = next(v.dtype for k, v in state.items() if k.endswith("norm.weight"))
        model.embed = QuantizedEmbedding(_empty_quantized(layer, config.hidden_size, config.vocab_size), dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.quantization = {k: v for k, v in meta.items() if k != "model_config"}
    return model.eval()


def _empty_quantized(layer: dict, in_features: int, out_features: int) -> QuantizedLinear:
    if layer["bits"] == 8:
        return Int8Linear(in_features, out_features, device="meta")
    return Int4Linear(in_features, out_features, layer["group_size"], device="meta")


# ---------------------------------------------------------------------------------------------
# What quantization costs: perplexity and agreement with the float model
# ---------------------------------------------------------------------------------------------

@dataclass
class TextScore:
    perplexity: float        # exp(mean negative log-likelihood of each next token)
    predictions: torch.Tensor  # (len(ids) - 1,) the model's top-1 guess for each next token


@torch.no_grad()
def score_text(model: nn.Module, ids: list[int], chunk: int = 512) -> TextScore:
    """How well `model` predicts each token of `ids` (which should start with BOS) from the ones before.

    The text goes through in chunks of `chunk` tokens with a KV cache, so the (chunk, vocab)
    logits are the only big tensor: 262k float32 logits per token would need ~1 MB each.
    """
    if len(ids) < 2:
        raise ValueError("score_text needs at least two tokens (one to read, one to predict)")
    cache = model.new_cache(batch=1, max_len=len(ids))
    device = model.device
    nll, predictions = 0.0, []
    for start in range(0, len(ids) - 1, chunk):
        piece = ids[start:start + chunk]
        logits = model(torch.tensor([piece], device=device), cache=cache)[0].float()  # (n, vocab)
        targets = torch.tensor(ids[start + 1:start + chunk + 1], device=device)  # the next tokens
        logits = logits[: len(targets)]  # the text's last token predicts nothing
        nll += -logits.log_softmax(-1).gather(1, targets[:, None]).sum().item()
        predictions.append(logits.argmax(-1).cpu())
    predictions = torch.cat(predictions)
    return TextScore(perplexity=float(torch.tensor(nll / len(predictions)).exp()), predictions=predictions)


def agreement(a: TextScore, b: TextScore) -> float:
    """Fraction of positions where two models make the same top-1 next-token prediction."""
    return (a.predictions == b.predictions).float().mean().item()
