"""The modules `quantize` swaps into the one readable model, each with the interface of what it
replaces (nn.Linear, nn.Embedding, model.Unembedding), so the model's code does not change.

Quantized tensors are frozen parameters, as the float weights were: `model.parameters()` and
`num_parameters()` still count every weight, and the loaders fill them like any other.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .arithmetic import check_int4_shape, dequantize_int4, dequantize_int8, quantize_int4, quantize_int8
from .blocks import BLOCK, dequantize_blocks, quantize_blocks
from .native import block_matmul, kernel_isa
from .kernels import (aligned, dynamic_int8_matmul, fallback_dtype, fbgemm_pack, int4_matmul, int4_pack,
                      int8_matmul, kernel_input_dtype, kernel_works, onednn_linear, use_kernel)


def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


def _by_rows(quantize_fn, w: torch.Tensor, *args, rows: int = 8192) -> tuple[torch.Tensor, ...]:
    """quantize_fn(w, *args) computed a block of rows at a time: every row is quantized on its own,
    so the result is the same, and the float temporaries stay a few MB instead of several copies
    of the 671 MB float32 embedding of the 270M (which made quantizing at load peak at 3.4 GB)."""
    parts = [quantize_fn(w[i:i + rows], *args) for i in range(0, w.shape[0], rows)]
    return tuple(torch.cat(tensors) for tensors in zip(*parts))


class QuantizedLinear(nn.Module):
    """Base class: a bias-free linear layer whose weight is stored in `bits` bits.

    forward(x) takes and returns the model's float dtype. A decode-sized input goes to the kernel
    in the dtype it is fastest with (kernels.kernel_input_dtype), a prompt-sized one through
    dequantize-then-F.linear (kernels.use_kernel). Subclasses give both: `_bind_kernel(dtype)`,
    the kernel call (or None where the shape does not fit it), and `_float_matmul(x2d)`.
    """

    bits: int
    kernel: str  # its name in kernels.KERNELS ("blocks": native.py's)

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # Tensors rearranged for the kernel, made on first use per (device, dtype); the
        # parameters stay the portable form that is saved.
        self._kernel_cache: dict[tuple, object] = {}

    def _apply(self, fn, recurse=True):
        self._kernel_cache = {}  # .to(device) and friends invalidate the kernel's copies
        return super()._apply(fn, recurse)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as a float (out, in) matrix."""
        raise NotImplementedError

    @classmethod
    def cat(cls, layers: list["QuantizedLinear"]) -> "QuantizedLinear":
        """One layer computing all of `layers`' outputs (rows stacked), for layers that read the same
        input: every tensor here has one row per output, so stacking rows stacks the layers."""
        first = layers[0]
        layer = cls.__new__(cls)
        QuantizedLinear.__init__(layer, first.in_features, sum(l.out_features for l in layers))
        layer.__dict__.update({k: v for k, v in vars(first).items() if k in ("group_size", "bits")})
        for name, _ in first.named_parameters(recurse=False):
            setattr(layer, name, _frozen(torch.cat([getattr(l, name) for l in layers])))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)  # (rows, in): the kernels take 2-D inputs
        dtype = kernel_input_dtype(self.kernel, x.device)
        kernel = None
        if use_kernel(self.kernel, x2d.shape[0], x.device, dtype):
            if (x.device, dtype) not in self._kernel_cache:
                self._kernel_cache[x.device, dtype] = self._bind_kernel(dtype)
            kernel = self._kernel_cache[x.device, dtype]
        y = kernel(x2d.to(dtype)) if kernel else self._float_matmul(x2d.to(fallback_dtype(x)))
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)  # (..., out)


class Int8Linear(QuantizedLinear):
    """int8 weight (out, in) and one float32 scale per output row: w ~= q * s.

    Also the layer of gemma_pytorch's int8 "quant" checkpoints (their `weight_scaler` is `scale`
    here; minigemma/loading/ckpt.py).
    """

    bits, kernel = 8, "int8"

    def __init__(self, in_features: int, out_features: int, device: torch.device | str | None = None):
        super().__init__(in_features, out_features)
        self.weight = _frozen(torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.scale = _frozen(torch.ones(out_features, device=device))  # float32

    @classmethod
    def from_float(cls, w: torch.Tensor) -> "Int8Linear":
        layer = cls(w.shape[1], w.shape[0], device="meta")
        layer.weight, layer.scale = map(_frozen, _by_rows(quantize_int8, w))
        return layer

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int8(self.weight, self.scale, dtype)

    def _bind_kernel(self, dtype: torch.dtype):
        """The kernel call with this layer's tensors in its layout, or None if the shape does not fit."""
        if self.in_features % 16:  # the kernel steps through a row 16 values at a time
            return None
        # The scales in the input's dtype, as the kernel wants; the weight itself, or an aligned
        # copy of it if it was loaded from a file (see kernels.aligned).
        return partial(int8_matmul, q=aligned(self.weight), scale=self.scale.to(dtype))

    def _float_matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        # One scale per output row commutes with the matmul, x (q s)^T = (x q^T) s, so only the
        # int8 -> float cast of this layer's weight is materialized.
        return F.linear(x2d, self.weight.to(x2d.dtype)) * self.scale.to(x2d.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-row"


class Int4Linear(QuantizedLinear):
    """Packed int4 weight (out, in/2) with a bf16 scale and zero per group of `group_size` inputs."""

    bits, kernel = 4, "int4"

    def __init__(self, in_features: int, out_features: int, group_size: int = 64,
                 device: torch.device | str | None = None):
        super().__init__(in_features, out_features)
        check_int4_shape((out_features, in_features), group_size)
        self.group_size = group_size
        n_groups = in_features // group_size
        self.weight = _frozen(torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.scale = _frozen(torch.ones(out_features, n_groups, dtype=torch.bfloat16, device=device))
        self.zero = _frozen(torch.zeros(out_features, n_groups, dtype=torch.bfloat16, device=device))

    @classmethod
    def from_float(cls, w: torch.Tensor, group_size: int = 64) -> "Int4Linear":
        layer = cls(w.shape[1], w.shape[0], group_size, device="meta")
        layer.weight, layer.scale, layer.zero = map(_frozen, _by_rows(quantize_int4, w, group_size))
        return layer

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int4(self.weight, self.scale, self.zero, dtype)

    def _bind_kernel(self, dtype: torch.dtype):
        if self.out_features % 16:  # the CPU kernel packs rows in tiles of 16
            return None
        try:
            weight, scales_and_zeros = int4_pack(self.weight, self.scale, self.zero, dtype)
        except RuntimeError:  # a shape this kernel does not tile: dequantize instead
            return None
        return partial(int4_matmul, weight=weight, group_size=self.group_size, scales_and_zeros=scales_and_zeros)

    def _float_matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        return F.linear(x2d, self.dequantized(x2d.dtype))  # materializes this layer's float weight

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int4 groups of {self.group_size}")


class BlockLinear(QuantizedLinear):
    """Weights in blocks of 32 with a float16 scale each (blocks.py: 8-bit "Q8_0" or 4-bit "Q4_0"),
    multiplied by minigemma's own kernel (csrc/block_matmul.cpp through native.py).

    The kernel also rounds the activations to 8 bits per block of 32, so every product inside a
    block is an integer one: the arithmetic of llama.cpp's Q8_0 x Q8_0 dot product. Rounding per
    block of 32, not per input tensor as fbgemm does, keeps Gemma's few large activation channels from
    coarsening all the others (notebook 13, section 6). Every input goes through the kernel, a
    prompt's too: at 512 rows it was as fast as dequantize-then-F.linear (float32 BLAS) on one
    core, without the float copy of the weight (benchmarks/RESULTS.md), and prompt and decoding
    then share one arithmetic. Where the kernel is unavailable (kernel_isa() is None: no
    compiler, not a CPU), dequantize-then-F.linear.
    """

    kernel = "blocks"

    def __init__(self, in_features: int, out_features: int, bits: int = 8,
                 device: torch.device | str | None = None):
        super().__init__(in_features, out_features)
        self.bits = bits
        shape = (out_features, in_features) if bits == 8 else (out_features, in_features // 2)
        self.weight = _frozen(torch.zeros(shape, dtype=torch.int8 if bits == 8 else torch.uint8, device=device))
        self.scale = _frozen(torch.zeros(out_features, in_features // BLOCK, dtype=torch.float16, device=device))

    @classmethod
    def from_float(cls, w: torch.Tensor, bits: int = 8) -> "BlockLinear":
        layer = cls(w.shape[1], w.shape[0], bits, device="meta")
        layer.weight, layer.scale = map(_frozen, _by_rows(quantize_blocks, w, bits))
        return layer

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_blocks(self.weight, self.scale, self.bits, dtype)

    def isa(self, device: torch.device) -> str | None:
        """The kernel's code path for inputs on `device`, asked once (so a compiled step never asks)."""
        if device not in self._kernel_cache:
            self._kernel_cache[device] = kernel_isa() if device.type == "cpu" else None
        return self._kernel_cache[device]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)  # (rows, in)
        isa = self.isa(x.device)
        if isa is not None:
            y = block_matmul(x2d, self.weight, self.scale, self.bits, isa)  # float32 (rows, out)
        else:
            y = F.linear(x2d.to(fallback_dtype(x)), self.dequantized(fallback_dtype(x)))
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)  # (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.bits}-bit blocks of {BLOCK}"


class QuantizedEmbedding(nn.Module):
    """The tied embedding, quantized once, serving both of its roles.

    forward(ids) looks rows up and dequantizes only those; the output projection is `linear`, the
    quantized matmul (QuantizedUnembedding). `weight` (the float matrix) is still there for code
    that asks for it, but it dequantizes all rows (262k for the 270M) on every access.
    """

    def __init__(self, linear: QuantizedLinear, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.linear = linear  # (vocab, hidden): rows are token vectors, exactly as nn.Embedding's weight
        self.num_embeddings, self.embedding_dim = linear.out_features, linear.in_features
        self.dtype = dtype  # the float dtype the rest of the model runs in

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lin, flat = self.linear, ids.reshape(-1)
        if isinstance(lin, BlockLinear):
            rows = dequantize_blocks(lin.weight[flat], lin.scale[flat], lin.bits, self.dtype)
        elif isinstance(lin, Int8Linear):
            rows = dequantize_int8(lin.weight[flat], lin.scale[flat], self.dtype)
        else:
            rows = dequantize_int4(lin.weight[flat], lin.scale[flat], lin.zero[flat], self.dtype)
        return rows.reshape(*ids.shape, self.embedding_dim)  # (..., hidden)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.dequantized(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int{self.linear.bits}"


class QuantizedUnembedding(nn.Module):
    """logits = x E^T through the quantized embedding's own matmul: E is never made float whole."""

    def forward(self, x: torch.Tensor, embed: QuantizedEmbedding) -> torch.Tensor:
        return embed.linear(x)  # (batch, seq, vocab)


class DynamicInt8Unembedding(QuantizedUnembedding):
    """The output projection by fbgemm's int8 x int8 kernel (kernels.dynamic_int8_matmul), CPU only.

    The input is rounded to 8 bits with one scale for the whole tensor (one token's vector when
    decoding): int8 decoding got ~1.3x faster on a 2-core AVX2 CPU (benchmarks/RESULTS.md). In the
    decoder layers the rounding error of every matmul flows on through the residual stream, and
    Gemma's outlier channels make a shared scale coarse: with it in every layer, scoring a text
    512 tokens at a time (one scale per chunk), perplexity +56% (notebook 13, section 6; notebook
    16 measures per tensor, per vector and per block apart). At the output projection it touches
    only the logits: +1.4% perplexity instead of per-row int8's +0.6%, which is why only the
    unembedding offers it. fbgemm's packed copy of the int8 rows
    costs another 168 MB for the 270M. Without the kernel (or off the CPU): QuantizedUnembedding.
    """

    def __init__(self):
        super().__init__()
        self._packed: dict[torch.device, object] = {}  # fbgemm's packed rows, made on first use

    def _apply(self, fn, recurse=True):
        self._packed = {}  # the embedding moved or changed dtype with the model: pack it again
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, embed: QuantizedEmbedding) -> torch.Tensor:
        if not kernel_works("int8-dynamic", x.device, torch.float32):
            return super().forward(x, embed)
        if x.device not in self._packed:
            self._packed[x.device] = fbgemm_pack(embed.linear.weight, embed.linear.scale)
        return dynamic_int8_matmul(x.float(), self._packed[x.device]).to(x.dtype)  # (batch, seq, vocab)


class OneDNNUnembedding(nn.Module):
    """The float32 output projection through oneDNN on CPU, which uses every core (kernels.onednn_linear).

    F.linear elsewhere: other dtypes and devices, and matrices under 4096 rows, where MKL's
    one-core product is not the bottleneck it is for the 262k-row one. F.linear also when a
    gradient is wanted (training, minigemma.train): the oneDNN op has no autograd formula, and
    backward through it gives no gradient at all, with only a warning.
    """

    def forward(self, x: torch.Tensor, embed: nn.Module) -> torch.Tensor:
        w = embed.weight  # (vocab, hidden)
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
        if (x.dtype == w.dtype == torch.float32 and w.shape[0] >= 4096 and not wants_grad
                and kernel_works("onednn", x.device)):
            return onednn_linear(x, w)  # (batch, seq, vocab)
        return F.linear(x, w)
