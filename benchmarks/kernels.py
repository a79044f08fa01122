"""One matrix, every kernel: where decoding's time goes on this machine.

    python benchmarks/kernels.py            # ~1 minute

Times one row (batch-1 decoding) times the 270M's 262144 x 640 output projection, the largest
matrix read per token, through each kernel minigemma's paths can use, and prints the effective
read rate (bytes of the weight / time) next to the machine's read bandwidth. A kernel well below
the bandwidth is limited by its arithmetic (unpacking small integers into floats), not by memory.
Random weights: the time does not depend on the values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

from minigemma.quantize import Int4Linear, Int8Linear  # noqa: E402
from minigemma.quantize.kernels import dynamic_int8_matmul, fbgemm_pack, kernel_works, onednn_linear  # noqa: E402
from speed import read_bandwidth  # noqa: E402


def median_ms(fn, repeats: int = 15) -> float:
    fn()  # first call: kernel choice, packing
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    w = torch.randn(262144, 640) * 0.02
    x = torch.randn(1, 640)
    int8 = Int8Linear.from_float(w)
    int4 = Int4Linear.from_float(w, group_size=64)
    xb, wb = x.bfloat16(), w.bfloat16()
    rows = [
        ("fp32, F.linear (MKL)", "unembedding, float32", lambda: F.linear(x, w), w.numel() * 4),
        ("fp32, oneDNN", "OneDNNUnembedding (scheme None)", lambda: onednn_linear(x, w), w.numel() * 4),
        ("bf16, F.linear", "unembedding, bf16", lambda: F.linear(xb, wb), wb.numel() * 2),
        # Int8Linear/Int4Linear cast the float32 row to bf16 for these kernels, and the result back.
        ("int8 weights, bf16 input (_weight_int8pack_mm)", "Int8Linear", lambda: int8(x), int8.weight.numel()),
        # packed 4-bit values plus a bf16 scale and zero per group of 64
        ("int4 g64, bf16 input (_weight_int4pack_mm_for_cpu)", "Int4Linear", lambda: int4(x),
         int4.weight.numel() + 2 * 2 * int4.scale.numel()),
    ]
    if kernel_works("int8-dynamic", torch.device("cpu")):
        packed = fbgemm_pack(int8.weight, int8.scale)
        rows.append(("int8 weights x int8 input (fbgemm)", "DynamicInt8Unembedding (int8-dynamic)",
                     lambda: dynamic_int8_matmul(x, packed), int8.weight.numel()))
    # The highest of three: a shared machine's bandwidth wanders, and the bound should be the hardware's.
    bandwidth = max(read_bandwidth(torch.device("cpu")) for _ in range(3))
    print(f"# one row x (262144 x 640), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"read bandwidth (sum of a 1 GiB tensor, highest of 3 medians of 7): {bandwidth:.1f} GB/s")
    print()
    print("| kernel | used by | MB read | ms | GB/s | % of bandwidth |")
    print("|---|---|---|---|---|---|")
    with torch.inference_mode():
        for name, used_by, fn, nbytes in rows:
            ms = median_ms(fn)
            rate = nbytes / ms / 1e6
            print(f"| {name} | {used_by} | {nbytes / 1e6:.0f} | {ms:.1f} | {rate:.1f} | {100 * rate / bandwidth:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
