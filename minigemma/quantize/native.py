"""minigemma's own block-quantized matmul (csrc/block_matmul.cpp): built once, checked, or skipped.

The C++ file is compiled the first time it is needed, by PyTorch's own JIT extension builder
(torch.utils.cpp_extension, which calls ninja and the system's C++ compiler), into minigemma's
cache, one folder per PyTorch version and per version of the source:

    <cache>/kernels/torch-<version>-<sha256 of the .cpp and its flags, 12 hex digits>/minigemma_blocks.so

Later processes load that file directly (no compiler needed). Nothing here may break minigemma
where no compiler exists: every failure (no compiler, no ninja, a compile error, a damaged .so,
a kernel that disagrees with the reference) ends in one warning and `kernel_isa() is None`,
and the callers keep using PyTorch's own kernels.

Which of the kernel's code paths runs (`kernel_isa`):
  - the best this CPU supports, asked of the compiled code (CPUID);
  - capped by the code path ATen itself takes (torch.backends.cpu.get_cpu_capability(), set by
    ATEN_CPU_CAPABILITY): "avx2" caps at avx2, "default" at generic. So the project's second
    test pass (tests/cpu_path.py), which sets ATEN_CPU_CAPABILITY=avx2, runs another kernel path;
  - MINIGEMMA_KERNEL_ISA=generic|avx2|avx512vnni forces one path, MINIGEMMA_KERNEL=off none.
Each path is trusted only after a self-check against blocks.block_matmul_reference (PROBES).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

from ..errors import ArgumentError
from ..paths import NATIVE, cache_root
from .blocks import block_matmul_reference, quantize_activation_blocks, quantize_blocks

SOURCE = Path(__file__).parent / "csrc" / "block_matmul.cpp"
LIBRARY = "minigemma_blocks"  # the .so's name and its operators' namespace: torch.ops.minigemma_blocks
ISAS = ("generic", "avx2", "avx512vnni")  # worst to best; the index is the operators' `isa` argument
CFLAGS = ["-O3"]  # no -march=native: each x86 function in the .cpp names its own instructions
# at::parallel_for, inlined from PyTorch's headers, is OpenMP code: without -fopenmp it runs on
# one thread, silently (the kernel's first version did). On Linux, gcc's and clang's -fopenmp link
# libgomp.so.1, the runtime PyTorch's wheel already loaded, so both share one thread pool.
# Elsewhere (macOS's clang has no -fopenmp) the kernel runs on one thread.
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
BUILD_SECONDS = 20  # roughly what the one build takes on a 2-core CPU, for the message
STALE_LOCK_S = 600  # a build lock this old was left by a killed process, not a running build
# ATen's code path -> the best of our paths it allows ("AVX512", and non-x86 paths: no cap).
ATEN_CAPS = {"DEFAULT": "generic", "AVX2": "avx2"}

PROBES: dict[str, bool] = {}  # isa -> passed its self-check (clear it to check again)
_LOADED: bool | None = None  # None: not tried yet in this process
_WARNED: set[str] = set()  # each warning once per process
_FAKES_REGISTERED = False
_ANNOUNCED = False  # the "building..." line, once per process


def build_folder() -> Path:
    """Where the library for this source, these flags and this PyTorch is built and kept (raises
    OSError if the source is unreadable)."""
    digest = hashlib.sha256(SOURCE.read_bytes() + repr(CFLAGS + OPENMP).encode()).hexdigest()[:12]
    return cache_root() / NATIVE / f"torch-{torch.__version__}-{digest}"


def library_loaded() -> bool:
    """Is the compiled library loaded into this process? Builds and loads it on the first call."""
    global _LOADED
    if _LOADED is None:
        _LOADED = _load()
    return _LOADED


def supported_isas() -> tuple[str, ...]:
    """The code paths this CPU can run ((), if the library is unavailable)."""
    if not library_loaded():
        return ()
    mask = torch.ops.minigemma_blocks.supported_isas()  # a bit per entry of ISAS
    return tuple(isa for i, isa in enumerate(ISAS) if mask >> i & 1)


def kernel_isa() -> str | None:
    """The kernel's code path to use here: "avx512vnni", "avx2", "generic", or None (unavailable).

    Raises ArgumentError for a MINIGEMMA_KERNEL or MINIGEMMA_KERNEL_ISA value it cannot follow;
    everything else that goes wrong (the build, the self-check) gives one warning and None.
    """
    switch = os.environ.get("MINIGEMMA_KERNEL", "").strip().lower()
    if switch not in ("", "on", "off"):
        raise ArgumentError(f"MINIGEMMA_KERNEL={switch!r} is not a setting; use MINIGEMMA_KERNEL=off to "
                            "turn minigemma's block kernel off, or leave it unset")
    if switch == "off":
        return None
    forced = os.environ.get("MINIGEMMA_KERNEL_ISA", "").strip().lower()
    if forced and forced not in ISAS:
        raise ArgumentError(f"MINIGEMMA_KERNEL_ISA={forced!r} is not a code path of minigemma's block kernel; "
                            f"choose one of {', '.join(ISAS)}, or unset it to pick the best automatically")
    supported = supported_isas()
    if not supported:  # the library could not be built or loaded (already warned)
        return None
    if forced:
        if forced not in supported:
            raise ArgumentError(f"MINIGEMMA_KERNEL_ISA={forced!r}, but this CPU runs only {', '.join(supported)} "
                                "of minigemma's block kernel; choose one of those, or unset it")
        isa = forced  # a forced path is not capped by ATen's: it is what the user asked for
    else:
        cap = ATEN_CAPS.get(torch.backends.cpu.get_cpu_capability().upper(), ISAS[-1])
        isa = max((i for i in supported if ISAS.index(i) <= ISAS.index(cap)), key=ISAS.index)
    return isa if self_check(isa) else None


def block_matmul(x2d: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bits: int,
                 isa: str | None = None) -> torch.Tensor:
    """x (M, in) times block-quantized w (out, in) -> (M, out) float32, by the compiled kernel.

    q and scales as blocks.quantize_blocks makes them. `isa` defaults to kernel_isa(); a caller
    under torch.compile should pass it (resolved once, outside the compiled code). Raises
    RuntimeError where the kernel is unavailable: check kernel_isa() first.
    """
    isa = isa or kernel_isa()
    if isa is None or not library_loaded():
        raise RuntimeError("minigemma's block kernel is unavailable here (kernel_isa() is None); "
                           "use blocks.block_matmul_reference or PyTorch's kernels instead")
    return torch.ops.minigemma_blocks.block_matmul(x2d.float().contiguous(), q.contiguous(), scales.contiguous(),
                                                   bits, ISAS.index(isa))


def quantize_activations(x2d: torch.Tensor, isa: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's own rounding of x (M, in) float32 to int8 blocks (for checks against the reference)."""
    if not library_loaded():
        raise RuntimeError("minigemma's block kernel is unavailable here (kernel_isa() is None)")
    return torch.ops.minigemma_blocks.quantize_activations(x2d.float().contiguous(), ISAS.index(isa))


# ---------------------------------------------------------------- the self-check

def self_check(isa: str) -> bool:
    """Does code path `isa` agree with blocks.block_matmul_reference? Checked once, kept in PROBES."""
    if isa not in PROBES:
        try:
            problem = _probe(isa)
        except (RuntimeError, ValueError) as e:  # the operator itself refused or failed
            problem = f"it raised {type(e).__name__}: {_first_line(e)}"
        PROBES[isa] = problem is None
        if problem:
            _warn_once(f"check:{isa}", f"minigemma's block kernel ({isa} code path) failed its self-check: {problem}. "
                       "PyTorch's own kernels are used instead; please report this with your CPU model")
    return PROBES[isa]


def _probe(isa: str) -> str | None:
    """None if the kernel matches the reference on a few awkward shapes, else what went wrong.

    N prime (so the last tile of rows is a partial one), K = 32 * odd, M = 1 and 3 (a pair of
    input rows and a single one), and one matrix large enough to be split over threads. The
    integer parts are exact, so only the float sum over blocks may differ, by rounding: a
    tolerance of 1e-5 of the largest output, where a wrong index or scale is off by ~100%.
    """
    gen = torch.Generator().manual_seed(0)
    for bits in (8, 4):
        for m, n, k in ((1, 1031, 32 * 21), (3, 37, 32 * 5)):
            w, x = torch.randn(n, k, generator=gen), torch.randn(m, k, generator=gen)
            q, scales = quantize_blocks(w, bits)
            expected = block_matmul_reference(x, q, scales, bits)
            got = block_matmul(x, q, scales, bits, isa)
            if got.shape != expected.shape:
                return f"{bits}-bit, shape {tuple(got.shape)} instead of {tuple(expected.shape)}"
            error = (got - expected).abs().max().item()  # NaN if got has NaNs: fails the test below
            if not error <= 1e-5 * expected.abs().max().item():
                return f"{bits}-bit, M={m} N={n} K={k}: off by {error:.3g} (outputs up to {expected.abs().max():.3g})"
    x = torch.randn(3, 32 * 5, generator=gen)
    if any(not torch.equal(a, b) for a, b in zip(quantize_activations(x, isa), quantize_activation_blocks(x))):
        return "its rounding of the activations differs from the reference's"
    return None


# ---------------------------------------------------------------- building and loading

def _load() -> bool:
    """Load the library, building it first if needed; on failure, warn once and return False."""
    if _registered():  # loaded earlier in this process (a library can be loaded only once)
        _register_fakes()
        return True
    try:
        folder = build_folder()
    except OSError as e:  # the .cpp is not where the package should have put it
        _warn_unavailable(f"its source {SOURCE} cannot be read ({e.strerror or e})", "Reinstall minigemma")
        return False
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only or misnamed cache directory
        _warn_unavailable(f"it has no folder to be built in: {folder.parent} cannot be created ({e.strerror or e})",
                          "Point MINIGEMMA_CACHE at a directory you can write")
        return False
    _remove_stale_lock(folder)
    failure: Exception | None = None
    for _ in range(2):  # a second try from an empty folder: a killed build or a bad copy leaves debris
        try:
            _build_and_load(folder)
            _register_fakes()
            return True
        except Exception as e:  # noqa: BLE001 - a compiler, ninja, a linker, a bad .so: never crash
            failure = e
            shutil.rmtree(folder, ignore_errors=True)
            _forget_build()
    _warn_unavailable(f"building it failed ({_first_line(failure)})", _fix_for_build())
    return False


def _build_and_load(folder: Path) -> None:
    global _ANNOUNCED
    library = folder / (LIBRARY + (".pyd" if sys.platform == "win32" else ".so"))
    if library.exists():  # built by an earlier process: no compiler or ninja needed
        torch.ops.load_library(str(library))
        return
    from torch.utils import cpp_extension

    if not _ANNOUNCED:
        _ANNOUNCED = True
        print(f"building minigemma's block int8 kernel (once, about {BUILD_SECONDS} s) in {folder}...",
              file=sys.stderr, flush=True)
    _put_ninja_on_path()
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # cpp_extension warns about compiler versions it does not recognise; what matters is
        # whether the build works, and a failure is reported in our one warning.
        warnings.simplefilter("ignore")
        cpp_extension.load(name=LIBRARY, sources=[str(SOURCE)], extra_cflags=CFLAGS + OPENMP,
                           extra_ldflags=OPENMP, build_directory=str(folder),
                           is_python_module=False, verbose=False)  # builds, then torch.ops.load_library


def _registered() -> bool:
    return hasattr(getattr(torch.ops, LIBRARY), "supported_isas")


def _put_ninja_on_path() -> None:
    """cpp_extension runs `ninja` from PATH; the pip package `ninja` ships one next to Python."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _remove_stale_lock(folder: Path) -> None:
    # cpp_extension serializes builds with a `lock` file and waits, forever, while it exists: a
    # build killed mid-way would block every later process. A lock this old is such debris.
    lock = folder / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        pass  # no lock: the usual case


def _forget_build() -> None:
    # cpp_extension remembers each extension it was asked to build in this process and, asked
    # again with the same inputs, skips the build step: the retry would only reload what failed.
    # Its record is private, so look it up defensively; without it the retry just fails again.
    from torch.utils import cpp_extension

    entries = getattr(getattr(cpp_extension, "JIT_EXTENSION_VERSIONER", None), "entries", None)
    if isinstance(entries, dict):
        entries.pop(LIBRARY, None)


def _fix_for_build() -> str:
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "cl" if sys.platform == "win32" else "c++")
    if not shutil.which(compiler):
        return "Install a C++ compiler (g++ or clang), or point CXX at one"
    _put_ninja_on_path()
    if not cpp_extension.is_ninja_available():
        return "Install ninja (pip install ninja)"
    return f"Check that the C++ compiler {compiler!r} works (or set CXX to another one)"


def _register_fakes() -> None:
    """Shapes and dtypes of the operators' outputs, all torch.compile needs to trace through them."""
    global _FAKES_REGISTERED
    if _FAKES_REGISTERED:
        return
    try:
        @torch.library.register_fake(f"{LIBRARY}::block_matmul")
        def _(x, q, scales, bits, isa):
            return x.new_empty(x.shape[0], q.shape[0])  # (M, N) float32

        @torch.library.register_fake(f"{LIBRARY}::quantize_activations")
        def _(x, isa):
            return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[0], x.shape[1] // 32)
    except RuntimeError:  # registered already (this module was reloaded)
        pass
    _FAKES_REGISTERED = True


# ---------------------------------------------------------------- messages

def _first_line(e: BaseException | None) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _warn_unavailable(what: str, fix: str) -> None:
    fix = f" {fix}." if fix else ""
    _warn_once("build", f"minigemma's block int8 kernel is unavailable: {what}.{fix} PyTorch's own kernels "
                        "are used instead (MINIGEMMA_KERNEL=off skips the kernel and this warning)")


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
