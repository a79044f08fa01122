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
"""

from __future__ import annotations

import sys
import time

import torch

from ..errors import ArgumentError
from ..model.gemma import Gemma


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
    model.compiled_step = torch.compile(model.forward_at, dynamic=False,
                                        mode="reduce-overhead" if cuda_graphs else None)
    model.cuda_graphs = cuda_graphs
    if verbose:
        print("compiling the decoding step (torch.compile; a minute or two on a CPU)...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with torch.inference_mode():
        cache = model.new_cache(1, 2)
        for _ in range(2 if cuda_graphs else 1):  # CUDA graphs are recorded on the second call
            model(torch.zeros(1, 1, dtype=torch.long, device=device), cache=cache, last_only=True)
    if verbose:
        print(f"compiled in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return model
