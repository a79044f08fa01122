"""int8 weights read back from a file reach PyTorch's int8 kernel safely (issue #12).

`load_quantized` returns tensors that live inside the memory-mapped safetensors file, at its
offsets: not on a 64-byte boundary. PyTorch's AVX-512 int8 kernel reads with aligned vector
loads, so such a weight crashed the process with SIGSEGV (quantize.aligned explains it). The
end-to-end test runs in a subprocess: a crash then fails one test instead of killing pytest.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from minigemma.quantize import aligned

ROOT = Path(__file__).resolve().parents[1]


def off_boundary(t: torch.Tensor, offset_bytes: int) -> torch.Tensor:
    """A contiguous copy of t that starts `offset_bytes` past a 64-byte boundary, as a loaded tensor can."""
    nbytes = t.numel() * t.element_size()
    buffer = torch.empty(nbytes + 128, dtype=torch.uint8)
    start = -buffer.data_ptr() % 64 + offset_bytes
    view = buffer[start:start + nbytes].view(t.dtype).view(t.shape)
    return view.copy_(t)


def test_aligned_keeps_a_good_tensor_and_copies_a_bad_one():
    t = torch.arange(64 * 48, dtype=torch.int8).reshape(64, 48)
    assert aligned(t) is t  # PyTorch's own allocations are 64-byte aligned: no copy
    for bad in (off_boundary(t, 24), off_boundary(t, 8), t.t()):  # as loaded from a file; a transpose
        fixed = aligned(bad)
        assert fixed.data_ptr() % 64 == 0 and fixed.is_contiguous()
        assert torch.equal(fixed, bad)


def test_saved_int8_model_loads_and_generates(tmp_path):
    """save_quantized -> load_quantized -> generate, in a fresh process.

    Prompts of 4 to 32 tokens are what crashed: the kernel takes up to 32 rows, and its 4-row
    blocks are where the aligned weight loads are. The tokens must equal those of the same
    int8 model before saving, and a weight placed off a boundary by hand must give the same
    product as one in PyTorch's own memory.
    """
    script = textwrap.dedent(f"""
        import torch
        from test_int8_roundtrip import off_boundary
        from minigemma import Gemma, get_config
        from minigemma.decoding.generate import generate_ids
        from minigemma.quantize import Int8Linear, load_quantized, quantize, save_quantized

        torch.manual_seed(0)  # random weights (tests/reference.py's random_model, without importing transformers)
        model = Gemma(get_config("tiny-gemma3")).eval()
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.1)
        model = quantize(model, bits=8)
        save_quantized(model, {str(tmp_path)!r})
        loaded = load_quantized({str(tmp_path)!r})
        print("offsets", sorted({{t.data_ptr() % 64 for t in loaded.state_dict().values()}}))
        for n in (1, 3, 4, 6, 32, 40):
            prompt = [2] + list(range(10, 10 + n - 1))
            got = list(generate_ids(loaded, prompt, max_new_tokens=6))
            assert got == list(generate_ids(model, prompt, max_new_tokens=6)), n
        good = Int8Linear.from_float(torch.randn(96, 256))
        moved = Int8Linear(256, 96)
        moved.weight = torch.nn.Parameter(off_boundary(good.weight, 24), requires_grad=False)  # shares its memory
        moved.scale = good.scale
        assert moved.weight.data_ptr() % 64 == 24
        x = torch.randn(6, 256).bfloat16()
        assert torch.equal(moved(x), good(x))
        assert torch.equal(good(off_boundary(x, 8)), good(x))  # inputs are checked too
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT / "tests",
                         timeout=300)
    crashed = f" (killed by signal {-out.returncode})" if out.returncode < 0 else ""
    assert out.returncode == 0, f"exit status {out.returncode}{crashed}\n{out.stdout}\n{out.stderr[-3000:]}"
    assert out.stdout.strip().endswith("ok")
