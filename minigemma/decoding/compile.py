"""`minigemma.compile(model)`: record one decoding step with torch.compile, on the same model.

Decoding one token runs ~40 small PyTorch operations per layer (norms, RoPE, the attention
arithmetic) between the matmuls, and each costs microseconds of Python and dispatch. Inductor,
torch.compile's compiler, fuses them into a few generated kernels. Because `Gemma.forward_at`
depends on the position only through a tensor and writes the KV cache in place (attention.py),
one compilation serves every decoding step. On a CUDA GPU the step is also recorded as a CUDA
graph (mode="reduce-overhead"): one launch per token instead of hundreds, which at batch 1 is
the limit there, not memory.

Prefill (a prompt of many tokens) stays eager: it is one call per prompt, and its shapes change
with every prompt length. Hooks switch the compiled step off (`Gemma.hooked`): a hook registered
after compilation would never be called by the recorded step.

Inductor keeps the kernels it generates on disk and reuses them in later runs. Its default folder
(/tmp/torchinductor_<user>) is one for every torch version and CPU code path, and in torch 2.13
its key misses the code path: kernels written for AVX-512 were reused under
ATEN_CPU_CAPABILITY=avx2 and the 270M's greedy text went wrong after one token. So minigemma
gives inductor a folder per torch version and code path, in its own cache (`kernel_cache_dir`;
docs/pitfalls.md, performance notes), unless you point TORCHINDUCTOR_CACHE_DIR elsewhere.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from ..errors import ArgumentError
from ..loading.cache import usable_root
from ..model.gemma import Gemma
from ..paths import KERNELS


def kernel_cache_dir() -> Path:
    """Where inductor's generated kernels go: one folder per torch version and ATen CPU code path."""
    path = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if path and os.path.abspath(path) != os.path.abspath(default_cache_dir()):
        return Path(path)  # the user's choice (torch also writes its default here once it has run)
    capability = torch.backends.cpu.get_cpu_capability().lower()  # honours ATEN_CPU_CAPABILITY
    return usable_root() / KERNELS / f"torch-{torch.__version__}-{capability}"


def compile(model: Gemma, *, cuda_graphs: bool | None = None, verbose: bool = True) -> Gemma:
    """Compile `model`'s decoding step in place and return the model (generate takes it as before).

    The first step after this compiles (a minute or two on a CPU; printed). cuda_graphs: record the
    step as a CUDA graph (default: on a CUDA device). Then `new_cache` hands out one cache kept on
    the model, since a graph replays fixed memory addresses: one generation at a time.
    """
    device = model.device
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda"
    if cuda_graphs and device.type != "cuda":
        raise ArgumentError(f"CUDA graphs need the model on a CUDA GPU, and this one is on {device}; "
                            "move it with model.to('cuda') first, or pass cuda_graphs=False")
    # One eager step first: quantized layers prepare their kernel layouts on first use, Python
    # bookkeeping that should not be traced into the graph.
    with torch.inference_mode():
        model(torch.zeros(1, 1, dtype=torch.long, device=device), cache=model.new_cache(1, 1))
    kernels = kernel_cache_dir()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(kernels)  # read by inductor at each cache access
    model.compiled_step = torch.compile(model.forward_at, dynamic=False,
                                        mode="reduce-overhead" if cuda_graphs else None)
    model.cuda_graphs = cuda_graphs
    if verbose:
        print(f"compiling the decoding step (torch.compile; a minute or two on a CPU; kernels kept in {kernels})...",
              file=sys.stderr, flush=True)
    start = time.perf_counter()
    with torch.inference_mode():
        cache = model.new_cache(1, 2)
        for _ in range(2 if cuda_graphs else 1):  # CUDA graphs are recorded on the second call
            model(torch.zeros(1, 1, dtype=torch.long, device=device), cache=cache, last_only=True)
    if verbose:
        print(f"compiled in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return model
