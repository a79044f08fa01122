"""Another CPU code path on the same machine, for the second test run of `make test`.

Saved notebook outputs and test expectations must not depend on the last bits of float arithmetic,
and those bits depend on the CPU: MKL (PyTorch's float32 matmul), oneDNN and PyTorch's own kernels
each pick AVX-512, AVX2 or older code at run time, and each sums in its own order. An output
that holds only on the machine that wrote it fails elsewhere. Three environment variables make
the libraries take another path here:

  ATEN_CPU_CAPABILITY      PyTorch's own kernels: softmax, GELU, random numbers, the int8 matmul
  MKL_ENABLE_INSTRUCTIONS  MKL: F.linear, batched matmul, exp
  MKL_CBWR                 MKL too: MKL takes its AVX-512 code only on Intel CPUs, so on an AMD
                           one capping its instructions changes nothing (measured on an EPYC);
                           its reproducible mode for a given ISA sums in another order everywhere
  ONEDNN_MAX_CPU_ISA       oneDNN: the float32 output projection (quantize.OneDNNUnembedding)

On an AVX-512 machine they select the AVX2 code, nearly as fast; on any other, PyTorch's generic
code and MKL's and oneDNN's SSE4 code, which is slower.

    python tests/cpu_path.py           # the assignments, for `env $(python tests/cpu_path.py) ...`
    python tests/cpu_path.py --show    # how far float results move under them, here
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import torch

VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")


def other_path() -> dict[str, str]:
    """The variables for a code path this machine does not take by itself."""
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2",
                "ONEDNN_MAX_CPU_ISA": "AVX2"}
    return {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "SSE4_2",
            "ONEDNN_MAX_CPU_ISA": "SSE41"}


def probe() -> dict[str, torch.Tensor]:
    """Float results of a few operations on fixed inputs, one per library."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)  # torch.rand draws the same numbers on every path (randn does not)
    x, w, z = torch.rand(7, 640, generator=g) - 0.5, torch.rand(2048, 640, generator=g) - 0.5, torch.rand(7, 5000, generator=g)
    return {
        "F.linear (MKL)": F.linear(x, w),
        "softmax (ATen)": (20 * z).softmax(-1),
        "oneDNN linear": torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""),
    }


def run_probe(env: dict[str, str]) -> dict[str, torch.Tensor]:
    """probe() in a fresh process (the libraries read the variables once, at start-up)."""
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    code = "import sys, torch; sys.path.insert(0, 'tests'); import cpu_path; torch.save(cpu_path.probe(), sys.stdout.buffer)"

    out = subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return torch.load(io.BytesIO(out.stdout), weights_only=True)  # tensors only: never unpickle code


def main() -> None:
    env = other_path()
    if sys.argv[1:] == ["--show"]:
        native, other = run_probe({}), run_probe(env)
        print("this machine:", torch.backends.cpu.get_cpu_capability(), "| other path:",
              " ".join(f"{k}={v}" for k, v in env.items()))
        for name in native:
            diff = (native[name] - other[name]).abs()
            print(f"  {name:16s} max |difference| {diff.max():.1e}, {(diff > 0).float().mean():.0%} of entries differ")
    else:
        print(" ".join(f"{k}={v}" for k, v in env.items()))


if __name__ == "__main__":
    main()
