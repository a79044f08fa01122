"""Every fast kernel minigemma can use for a matmul, each trusted only after it passes a self-check
(`kernel_works`, whose answers are kept in one dict, PROBES).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .arithmetic import dequantize_int4, dequantize_int8, quantize_int4, quantize_int8, unpack_int4

PROBES: dict[tuple[str, str, torch.dtype], bool] = {}  # (kernel, device type, input dtype) -> passed
KERNELS = ("int8", "int4", "onednn", "int8-dynamic")  # the last two: CPU only, float32 inputs


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


def int8_matmul(x2d: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return _int8_matmul(x2d, q, scale)  # a plain function in front: layers keep it, and deepcopy copies it


# A custom operator, not a plain function: torch.compile treats it as one opaque call. Traced as
# Python, `aligned`'s data_ptr() check broke the compiled graph at every int8 layer (and the pieces
# between breaks were recompiled per layer until dynamo gave up), which made compile slower than eager.
@torch.library.custom_op("minigemma::int8_matmul", mutates_args=())
def _int8_matmul(x2d: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # (M, in) x int8 (out, in) with per-row scales (in x's dtype) -> (M, out), no float weight.
    # `in` must be a multiple of 16 (the kernel steps through a row 16 values at a time), and
    # every tensor aligned (see `aligned`): the only layout this kernel was seen to handle safely.
    return torch._weight_int8pack_mm(aligned(x2d), aligned(q), aligned(scale))


@_int8_matmul.register_fake
def _(x2d: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x2d.new_empty(x2d.shape[0], q.shape[0])  # what the compiler needs to know: shape and dtype


def int4_pack(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
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


def int4_matmul(x2d: torch.Tensor, weight: torch.Tensor, group_size: int,
                scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """(M, in) x int4 weight in `int4_pack`'s layout -> (M, out)."""
    if x2d.device.type == "cpu":
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2d, weight, group_size, scales_and_zeros)
    return torch.ops.aten._weight_int4pack_mm(x2d, weight, group_size, scales_and_zeros)


@torch.compiler.disable  # inductor lowers this operator only for weights it froze as constants: run eagerly
def onednn_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (..., in) float32 times w (out, in)^T through oneDNN, on every core.

    For one row times a wide float32 matrix, F.linear goes to MKL's matrix-vector product, which
    runs on one core: the 262k x 640 output projection took 63.5 ms with F.linear, 37.0 ms with
    oneDNN on a 2-core AVX2 CPU (benchmarks/RESULTS.md, "One matrix, every kernel").
    """
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")


def fbgemm_pack(q: torch.Tensor, scale: torch.Tensor):
    """fbgemm's own packed layout of int8 rows q (out, in) with per-row scales (out,)."""
    with warnings.catch_warnings():
        # PyTorch has deprecated its quantized tensors (pytorch/pytorch#184982); where they are
        # gone, kernel_works("int8-dynamic", ...) is False and the weight-only int8 kernel is used.
        warnings.simplefilter("ignore")
        zeros = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
        return torch.ops.quantized.linear_prepack(qweight, None)


# fbgemm's packed weight is a C++ object torch.compile cannot trace through: this one call (the
# output projection, once per step) runs eagerly, after the compiled layers.
@torch.compiler.disable
def dynamic_int8_matmul(x: torch.Tensor, packed) -> torch.Tensor:
    """x (..., in) float32, rounded to 8 bits with one scale for the whole tensor (one vector when
    decoding one token), times fbgemm's packed int8 rows.

    Each dot product is then int8 x int8 summed in int32: AVX2 does 32 of those multiply-adds per
    instruction, where the weight-only kernel first unpacks every weight into a float: 11.9 ms
    against 29.7 ms for the 262k x 640 output projection (benchmarks/RESULTS.md).
    """
    # reduce_range=False: all 8 bits for the activations (True keeps 7; it scored worse here).
    return torch.ops.quantized.linear_dynamic(x, packed, False)


def kernel_works(kernel: str, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Does `kernel` (one of KERNELS) exist here for inputs of `dtype`, and agree with plain float math?

    These are private operators whose support varies by device, dtype and version, so instead of
    trusting a table: a 64 x 256 product against the float matmul of the same (de)quantized
    weight, once per (kernel, device type, dtype), kept in PROBES (clear it to probe again).
    Tolerance: 0.1% relative for float32 inputs, 5% where the kernel rounds its input to bf16 or
    8 bits (a wrong layout or scale gives ~100%).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; one of {KERNELS}")
    key = (kernel, device.type, dtype)
    if key not in PROBES:
        try:
            PROBES[key] = _probe(kernel, device, dtype)
        except (RuntimeError, NotImplementedError, AttributeError):  # no such operator or dtype here
            PROBES[key] = False
    return PROBES[key]


def _probe(kernel: str, device: torch.device, dtype: torch.dtype) -> bool:
    if kernel in ("onednn", "int8-dynamic") and (device.type != "cpu" or dtype != torch.float32):
        return False
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(64, 256, generator=gen), torch.randn(3, 256, generator=gen)
    if kernel == "int4":
        packed, scale, zero = quantize_int4(w, 64)
        expected = F.linear(x, dequantize_int4(packed, scale, zero))
        weight, scales_and_zeros = int4_pack(packed.to(device), scale.to(device), zero.to(device), dtype)
        got = int4_matmul(x.to(device, dtype), weight, 64, scales_and_zeros)
    elif kernel == "onednn":
        expected, got = F.linear(x, w), onednn_linear(x, w)
    else:
        q, scale = quantize_int8(w)
        expected = F.linear(x, dequantize_int8(q, scale))
        if kernel == "int8":
            got = int8_matmul(x.to(device, dtype), q.to(device), scale.to(device, dtype))
        else:
            got = dynamic_int8_matmul(x, fbgemm_pack(q, scale))
    exact = dtype == torch.float32 and kernel != "int8-dynamic"
    error = (got.float().cpu() - expected).norm() / expected.norm()
    return bool(error < (1e-3 if exact else 0.05))


def kernel_input_dtype(kernel: str, device: torch.device) -> torch.dtype:
    """The dtype activations are cast to before an int8/int4 kernel.

    PyTorch's int8/int4 kernels are vectorized for bf16 inputs on CPUs without AVX-512 (float32
    inputs take a scalar loop, ~10x slower); its CUDA int8 kernel takes only float32. So: bf16
    where the kernel accepts it, else float32 (where the layer may still fall back, see use_kernel).
    """
    return torch.bfloat16 if kernel_works(kernel, device, torch.bfloat16) else torch.float32


def use_kernel(kernel: str, rows: int, device: torch.device, dtype: torch.dtype) -> bool:
    """Kernel for decode-sized inputs of `rows` rows in `dtype`, dequantize-then-matmul for prompt-sized ones.

    The int8/int4 kernels are built for a few rows (batch-1 decoding reads the weight once per
    token); for a long prompt, turning the weight back to float once and calling the BLAS matmul
    is faster (measured: benchmarks/RESULTS.md). With float32 inputs on a CPU the kernels are
    not vectorized, so only a single row goes through them.
    """
    max_rows = 1 if dtype == torch.float32 else 32
    return rows <= max_rows and kernel_works(kernel, device, dtype)


def fallback_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the dequantize-then-matmul fallback for input x."""
    # CPUs without bf16 units run float32 matmuls faster: bf16 prefill was 5x slower (benchmarks/RESULTS.md).
    return torch.float32 if x.device.type == "cpu" else x.dtype
