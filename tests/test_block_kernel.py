"""The block-quantized matmul: the format and its reference (quantize/blocks.py) worked by hand, the
C++ kernel's code paths against the reference (quantize/native.py), and every way it falls back.

No timing here: speed is measured by benchmarks/block_kernel.py, never asserted.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minigemma.errors import ArgumentError
from minigemma.quantize import native
from minigemma.quantize.blocks import (BLOCK, block_matmul_reference, dequantize_blocks, quantize_activation_blocks,
                                       quantize_blocks, unpack_nibbles)

ROOT = Path(__file__).resolve().parents[1]


def blocky(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Random values whose blocks of 32 differ in size by ~300x, as real weights' blocks do."""
    gen = torch.Generator().manual_seed(seed)
    size = 10 ** (torch.rand(rows, cols // BLOCK, 1, generator=gen) * 2.5 - 1.5)  # 0.03 .. 10
    return (torch.randn(rows, cols // BLOCK, BLOCK, generator=gen) * size).reshape(rows, cols)


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The kernel's integer parts are exact; only its float sum over blocks runs in another order."""
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


# ---------------------------------------------------------------- the format, by hand

@pytest.mark.parametrize("bits", [8, 4])
def test_round_trip_error_is_half_a_step(bits):
    w = blocky(64, 320)
    q, scales = quantize_blocks(w, bits)
    assert scales.dtype == torch.float16 and scales.shape == (64, 10)
    assert q.shape == ((64, 320) if bits == 8 else (64, 160))
    ints = q if bits == 8 else unpack_nibbles(q)
    step = scales.float().abs().repeat_interleave(BLOCK, dim=1)  # (out, in): each weight's |d|
    error = (w - dequantize_blocks(q, scales, bits)).abs()
    slack = 1e-6 * w.abs()  # float32 rounding of w / d
    if bits == 8:
        assert ints.min() >= -127 and ints.max() <= 127
        assert (error <= step / 2 + slack).all()
        assert (ints.abs().amax(dim=1) == 127).all()  # each row's largest value uses the whole grid
    else:
        assert ints.min() >= -8 and ints.max() <= 7
        # The largest-magnitude value lands on -8; a value of the other sign as large would round to
        # +8 and is clamped to +7: up to one step off, but only there.
        clamped = ints == 7
        assert (error[~clamped] <= step[~clamped] / 2 + slack[~clamped]).all()
        assert (error[clamped] <= 1.01 * step[clamped]).all()
        assert (ints.reshape(64, 10, BLOCK).min(dim=-1).values == -8).all()


@pytest.mark.parametrize("bits", [8, 4])
def test_zero_blocks_get_scale_zero_and_no_nan(bits):
    w = blocky(3, 96)
    w[1, 32:64] = 0
    q, scales = quantize_blocks(w, bits)
    assert scales[1, 1] == 0 and (scales[[0, 2]] != 0).all()
    deq = dequantize_blocks(q, scales, bits)
    assert not deq.isnan().any() and (deq[1, 32:64] == 0).all()
    if bits == 4:
        assert (q[1, 16:32] == 0x88).all()  # q = 0 stored as 0 + 8 in both nibbles
    x = torch.randn(2, 96)
    x[0, :32] = 0  # an all-zero activation block: scale 0, no 0/0
    qx, sx = quantize_activation_blocks(x)
    assert sx[0, 0] == 0 and (qx[0, :32] == 0).all() and (sx[:, 1:] > 0).all()
    assert not block_matmul_reference(x, q, scales, bits).isnan().any()


def test_int4_packing_layout_by_hand():
    # Elements 0..15 are -8..7 and elements 16..31 are 7..-8, in steps of 0.5: the extreme is -4.
    levels = torch.cat([torch.arange(-8, 8), torch.arange(7, -9, -1)]).float()
    for sign, scale in ((1, 0.5), (-1, -0.5)):  # extreme -4 -> d = 0.5; extreme +4 -> d = -0.5
        q, scales = quantize_blocks(sign * 0.5 * levels[None], bits=4)
        assert scales.item() == scale
        # Byte j: element j (stored as q + 8 = j) low, element j + 16 (stored as 15 - j) high.
        assert q[0].tolist() == [j | (15 - j) << 4 for j in range(16)]
        assert torch.equal(unpack_nibbles(q)[0], levels.to(torch.int8))
        assert torch.equal(dequantize_blocks(q, scales, bits=4)[0], sign * 0.5 * levels)


def test_activation_rounding_by_hand():
    x = torch.zeros(1, 64)
    x[0, :6] = torch.tensor([127.0, -63.5, 0.5, 1.5, 2.5, -3.7])  # amax 127: d = 1, inv = 1
    x[0, 32:36] = torch.tensor([-254.0, 1.0, 3.0, 5.0])  # amax 254: d = 2, inv = 0.5
    qx, sx = quantize_activation_blocks(x)
    assert sx.tolist() == [[1.0, 2.0]]
    # Ties go to the even neighbour (-63.5 -> -64, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2), as nearbyintf does.
    assert qx[0, :6].tolist() == [127, -64, 0, 2, 2, -4]
    assert qx[0, 32:36].tolist() == [-127, 0, 2, 2]  # 1 * 0.5 = 0.5 -> 0, 1.5 -> 2, 2.5 -> 2


@pytest.mark.parametrize("bits", [8, 4])
def test_reference_is_the_dequantized_product(bits):
    # Summing integers first is only an order of operations: the result is the float product of
    # the dequantized x and w, up to float rounding.
    x, w = blocky(3, 256, seed=1), blocky(40, 256, seed=2)
    q, scales = quantize_blocks(w, bits)
    qx, sx = quantize_activation_blocks(x)
    x_deq = (qx.float().reshape(3, -1, BLOCK) * sx[..., None]).reshape(3, 256)
    expected = F.linear(x_deq.double(), dequantize_blocks(q, scales, bits).double()).float()
    close(block_matmul_reference(x, q, scales, bits), expected)
    # And a single block worked by hand: x = 127 everywhere (d = 1), so y = d_w * 127 * sum(q).
    one_q, one_s = quantize_blocks(w[:1, :32], bits)
    y = block_matmul_reference(torch.full((1, 32), 127.0), one_q, one_s, bits)
    ints = one_q if bits == 8 else unpack_nibbles(one_q)
    assert y.item() == pytest.approx(one_s.float().item() * 127 * ints.sum().item(), rel=1e-6)


def test_bad_shapes_and_bits():
    with pytest.raises(ArgumentError, match="found 100 columns, expected a multiple of 32"):
        quantize_blocks(torch.randn(4, 100), 8)
    with pytest.raises(ArgumentError, match="found 48 columns"):
        quantize_activation_blocks(torch.randn(1, 48))
    with pytest.raises(ArgumentError, match="bits=8 or bits=4"):
        quantize_blocks(torch.randn(4, 64), 3)


# ---------------------------------------------------------------- the kernel's code paths

def runnable(isa: str) -> str | None:
    """Why `isa` cannot run here, or None if it can."""
    if not native.library_loaded():
        return "minigemma's block kernel could not be built here (no C++ compiler?)"
    if isa not in native.supported_isas():
        return f"this CPU cannot run the {isa} code path"
    return None


@pytest.fixture(params=native.ISAS)
def isa(request):
    reason = runnable(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


SHAPES = [(1, 32), (7, 160), (37, 640), (1031, 2048), (4099, 96)]  # N odd; 4099 rows are split over threads


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("m", [1, 2, 5])
def test_kernel_matches_reference(isa, bits, m):
    for n, k in SHAPES:
        x, w = blocky(m, k, seed=n), blocky(n, k, seed=k)
        x[0, :32] = 0  # an all-zero input block
        w[n // 2, -32:] = 0  # and an all-zero weight block
        q, scales = quantize_blocks(w, bits)
        close(native.block_matmul(x, q, scales, bits, isa), block_matmul_reference(x, q, scales, bits))


def test_activation_rounding_is_bit_exact(isa):
    x = blocky(5, 2048, seed=3)
    x[1, :4] = torch.tensor([127.0, 0.5, -1.5, 2.5])  # ties, with d = 1 exactly
    x[2, 32:64] = 0
    qx, sx = native.quantize_activations(x, isa)
    ref_q, ref_s = quantize_activation_blocks(x)
    assert torch.equal(sx, ref_s)
    assert torch.equal(qx, ref_q)


def test_kernel_rejects_bad_inputs(isa):
    q, scales = quantize_blocks(torch.randn(8, 64), 8)
    with pytest.raises(RuntimeError, match="q must be contiguous int8"):
        native.block_matmul(torch.randn(1, 64), q.to(torch.uint8), scales, 8, isa)
    with pytest.raises(RuntimeError, match="scales must be contiguous float16"):
        native.block_matmul(torch.randn(1, 64), q, scales.float(), 8, isa)
    with pytest.raises(RuntimeError, match="not a multiple of 32"):
        native.block_matmul(torch.randn(1, 48), q, scales, 8, isa)


def test_torch_compile_traces_the_operator():
    if runnable("generic"):
        pytest.skip(runnable("generic"))
    q, scales = quantize_blocks(blocky(37, 160), 8)
    x = torch.randn(2, 160)

    def f(x):
        return native.block_matmul(x * 2, q, scales, 8, "generic") + 1

    # aot_eager traces with fake tensors (register_fake's shapes) without inductor's C++ compile.
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x), rtol=0, atol=0)


# ---------------------------------------------------------------- the real 270M

@pytest.mark.numerics
def test_every_matrix_of_the_real_270m(gemma3_270m):
    isa = native.kernel_isa()
    if isa is None:
        pytest.skip("minigemma's block kernel is unavailable here")
    model, _ = gemma3_270m
    matrices = {"embed": model.embed.weight}
    matrices |= {name: mod.weight for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert len(matrices) == 1 + 7 * model.config.num_layers  # q k v o gate up down per layer
    gen = torch.Generator().manual_seed(0)
    for name, w in matrices.items():
        x = torch.randn(1, w.shape[1], generator=gen)
        for bits in (8, 4):
            with torch.no_grad():
                q, scales = quantize_blocks(w.detach(), bits)
            got = native.block_matmul(x, q, scales, bits, isa)
            # The 262144 x 640 embedding by slices of rows: the reference's int32 copy of it whole is 670 MB.
            expected = torch.cat([block_matmul_reference(x, q[i:i + 32768], scales[i:i + 32768], bits)
                                  for i in range(0, q.shape[0], 32768)], dim=1)
            close(got, expected)


# ---------------------------------------------------------------- choosing, and falling back

@pytest.fixture
def fresh_state(monkeypatch):
    """The module's memory of checks and warnings, emptied for this test and restored after it."""
    monkeypatch.setattr(native, "PROBES", {})
    monkeypatch.setattr(native, "_WARNED", set())
    monkeypatch.delenv("MINIGEMMA_KERNEL", raising=False)
    monkeypatch.delenv("MINIGEMMA_KERNEL_ISA", raising=False)


def test_best_path_is_chosen_and_capped_by_aten(fresh_state, monkeypatch):
    if runnable("generic"):
        pytest.skip(runnable("generic"))
    supported = native.supported_isas()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert native.kernel_isa() == supported[-1]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert native.kernel_isa() == ("avx2" if "avx2" in supported else "generic")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert native.kernel_isa() == "generic"


def test_environment_switches(fresh_state, monkeypatch):
    if runnable("generic"):
        pytest.skip(runnable("generic"))
    monkeypatch.setenv("MINIGEMMA_KERNEL", "off")
    assert native.kernel_isa() is None
    monkeypatch.setenv("MINIGEMMA_KERNEL", "maybe")
    with pytest.raises(ArgumentError, match="'maybe'.*MINIGEMMA_KERNEL=off"):
        native.kernel_isa()
    monkeypatch.delenv("MINIGEMMA_KERNEL")
    monkeypatch.setenv("MINIGEMMA_KERNEL_ISA", "generic")
    assert native.kernel_isa() == "generic"
    monkeypatch.setenv("MINIGEMMA_KERNEL_ISA", "sse9")
    with pytest.raises(ArgumentError, match="'sse9'.*generic, avx2, avx512vnni"):
        native.kernel_isa()
    monkeypatch.setattr(native, "supported_isas", lambda: ("generic",))  # a CPU without AVX2
    monkeypatch.setenv("MINIGEMMA_KERNEL_ISA", "avx2")
    with pytest.raises(ArgumentError, match="'avx2', but this CPU runs only generic"):
        native.kernel_isa()


def test_a_kernel_failing_its_self_check_is_not_used(fresh_state, monkeypatch):
    if runnable("generic"):
        pytest.skip(runnable("generic"))
    monkeypatch.setenv("MINIGEMMA_KERNEL_ISA", "generic")
    real = native.block_matmul_reference
    monkeypatch.setattr(native, "block_matmul_reference", lambda *args: real(*args) * 1.001)  # 0.1% off
    with pytest.warns(RuntimeWarning, match="generic code path.*failed its self-check.*PyTorch's own kernels"):
        assert native.kernel_isa() is None
    assert native.PROBES == {"generic": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call: the same answer, and no second warning
        assert native.kernel_isa() is None


def test_the_build_folder_is_in_minigemmas_cache(tmp_path, monkeypatch):
    from minigemma.loading.cache import cache_root

    for variable, value in (("MINIGEMMA_CACHE", tmp_path / "a"), ("XDG_CACHE_HOME", tmp_path / "b")):
        monkeypatch.setenv(variable, str(value))
        folder = native.build_folder()
        assert folder.parents[1] == cache_root() and folder.parent.name == "kernels"
        assert folder.name.startswith(f"torch-{torch.__version__}-") and len(folder.name.rsplit("-", 1)[1]) == 12
        monkeypatch.delenv("MINIGEMMA_CACHE", raising=False)


# In a fresh process: a library loaded into this one cannot be unloaded, and a failing build must
# be seen from the start. Each prints the choice twice and the number of warnings it gave.
CHILD = """
import warnings
from minigemma.quantize import native
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print(native.kernel_isa(), native.kernel_isa(), len(caught))
    for w in caught:
        print("WARNING", w.message)
"""


def run_child(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("MINIGEMMA_KERNEL", "MINIGEMMA_KERNEL_ISA")}
    return subprocess.run([sys.executable, "-c", CHILD], env=clean | env, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_a_failing_build_warns_once_and_falls_back(tmp_path):
    child = run_child({"CXX": "/bin/false", "MINIGEMMA_CACHE": str(tmp_path)})
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "None None 1", child.stdout + child.stderr
    assert "block int8 kernel is unavailable: building it failed" in lines[1]
    assert "'/bin/false' works" in lines[1] and "PyTorch's own kernels are used instead" in lines[1]
    assert child.stderr.count("building minigemma's block int8 kernel (once, about") == 1
    assert "Traceback" not in child.stderr
    assert list((tmp_path / "kernels").iterdir()) == []  # the failed build's folder was removed


def test_a_damaged_library_is_removed(tmp_path, monkeypatch):
    # A truncated .so where the build goes: loading it fails, the folder is deleted and rebuilt;
    # the rebuild fails too here (no compiler), which must still end in one warning, not a crash.
    monkeypatch.setenv("MINIGEMMA_CACHE", str(tmp_path))
    folder = native.build_folder()
    folder.mkdir(parents=True)
    (folder / "minigemma_blocks.so").write_bytes(b"\x7fELF truncated")
    child = run_child({"CXX": "/bin/false", "MINIGEMMA_CACHE": str(tmp_path)})
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines()[0] == "None None 1", child.stdout + child.stderr
    assert "Could not load this library" in child.stdout or "building it failed" in child.stdout
    assert child.stderr.count("building minigemma's block int8 kernel") == 1  # the rebuild was tried
    assert not (folder / "minigemma_blocks.so").exists()


def test_an_unusable_cache_warns_once_and_falls_back(tmp_path):
    (tmp_path / "a-file").write_text("")  # a cache "directory" that is a file: nothing can be created in it
    child = run_child({"MINIGEMMA_CACHE": str(tmp_path / "a-file")})
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "None None 1", child.stdout + child.stderr
    assert "no folder to be built in" in lines[1] and "MINIGEMMA_CACHE" in lines[1]
