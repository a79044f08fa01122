"""minigemma's block int8/int4 kernel, per code path, beside PyTorch's int8 kernels, on the 270M's shapes.

    python benchmarks/block_kernel.py              # ~1-2 minutes
    python benchmarks/block_kernel.py --rows 4     # a few input rows instead of one
    python benchmarks/block_kernel.py --threads 1  # one core (on a busy machine, waiting for a
                                                   # second one can cost a scheduler time slice)

One input row (batch-1 decoding) times each distinct weight shape of the embedded 270M (read from
the model: q/k/v/o, gate/up/down and the 262144 x 640 output projection), through:
  - minigemma_blocks (quantize/native.py), 8-bit and 4-bit blocks of 32, on each code path this CPU
    runs (generic C loops, AVX2, AVX-512 VNNI);
  - torch._weight_int8pack_mm, PyTorch's weight-only int8 kernel, as Int8Linear calls it (the input
    cast to the dtype the project picks for it, kernels.kernel_input_dtype);
  - fbgemm's int8 x int8 product, as DynamicInt8Unembedding calls it, where it exists.
GB/s is the bytes of weights and scales each kernel reads, over its median time: at batch 1 every
byte is read once, so this is comparable to the machine's read bandwidth (printed first). Random
weights: the time does not depend on the values.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

import minigemma  # noqa: E402
from minigemma.quantize import native  # noqa: E402
from minigemma.quantize.arithmetic import quantize_int8  # noqa: E402
from minigemma.quantize.blocks import quantize_blocks  # noqa: E402
from minigemma.quantize.kernels import (dynamic_int8_matmul, fbgemm_pack, int8_matmul, kernel_input_dtype,  # noqa: E402
                                        kernel_works)
from kernels import median_ms  # noqa: E402  (benchmarks/kernels.py: the same timing)
from speed import read_bandwidth  # noqa: E402


def model_shapes() -> dict[tuple[int, int], str]:
    """(out, in) -> the names of the 270M's matrices of that shape."""
    model, _ = minigemma.load("gemma3-270m", progress=False)
    names = {"embed": model.embed.weight} | {
        name.rsplit(".", 1)[-1]: mod.weight for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    shapes: dict[tuple[int, int], list[str]] = {}
    for name, w in names.items():
        shapes.setdefault(tuple(w.shape), [])
        if name not in shapes[tuple(w.shape)]:
            shapes[tuple(w.shape)].append(name)
    return {shape: "/".join(n) for shape, n in shapes.items()}


def kernels_for(w: torch.Tensor, x: torch.Tensor) -> list[tuple[str, object, int]]:
    """(name, call, bytes read) for each kernel that runs here, on weight w (out, in) and input x."""
    out = w.shape[0]
    rows = []
    for bits in (8, 4):
        q, scales = quantize_blocks(w, bits)
        for isa in native.supported_isas():
            rows.append((f"blocks int{bits}, {isa}", lambda q=q, s=scales, b=bits, i=isa: native.block_matmul(x, q, s, b, i),
                         q.numel() + 2 * scales.numel()))
    q, scale = quantize_int8(w)
    dtype = kernel_input_dtype("int8", x.device)
    if kernel_works("int8", x.device, dtype):
        xd, sd = x.to(dtype), scale.to(dtype)
        rows.append((f"_weight_int8pack_mm, {str(dtype).removeprefix('torch.')} input",
                     lambda: int8_matmul(xd, q, sd), q.numel() + out * sd.element_size()))
    if kernel_works("int8-dynamic", x.device):
        packed = fbgemm_pack(q, scale)
        rows.append(("fbgemm int8 x int8", lambda: dynamic_int8_matmul(x, packed), q.numel() + 4 * out))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1, help="input rows M (default 1: batch-1 decoding)")
    parser.add_argument("--repeats", type=int, default=0, help="timed calls per kernel (default: by size)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    if native.kernel_isa() is None:
        print("minigemma's block kernel is unavailable here (see the warning above); nothing to time")
        return 1
    torch.manual_seed(0)
    shapes = model_shapes()
    bandwidth = max(read_bandwidth(torch.device("cpu")) for _ in range(3))
    print(f"# {args.rows} input row(s) x each weight shape of the 270M, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU path {torch.backends.cpu.get_cpu_capability()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"read bandwidth (sum of a 1 GiB tensor, highest of 3 medians of 7): {bandwidth:.1f} GB/s")
    print()
    print("| matrix | out x in | kernel | MB read | ms (median) | GB/s |")
    print("|---|---|---|---|---|---|")
    with torch.inference_mode():
        for (out, k), name in sorted(shapes.items(), key=lambda item: item[0][0] * item[0][1]):
            w = torch.randn(out, k) * 0.02
            x = torch.randn(args.rows, k)
            repeats = args.repeats or (15 if out * k > 10_000_000 else 200)
            for kernel, fn, nbytes in kernels_for(w, x):
                ms = median_ms(fn, repeats)
                print(f"| {name} | {out} x {k} | {kernel} | {nbytes / 1e6:.2f} | {ms:.3f} | {nbytes / ms / 1e6:.1f} |",
                      flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
