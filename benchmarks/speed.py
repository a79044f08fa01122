"""How fast and how big: minigemma's one model at each precision, eager and compiled, beside transformers.

    python benchmarks/speed.py                       # the embedded Gemma 3 270M on this CPU
    python benchmarks/speed.py --variants int8-dynamic-compiled,hf-fp32 --repeats 5
    python benchmarks/speed.py --device cuda --preset gemma-2b   # random full-size weights, GPU

Every variant runs in its own fresh Python process, one after the other, so load time and peak
memory are its own. For each it prints:
  load      seconds from nothing to a model ready to run: minigemma.load(..., quantize=scheme)
            (quantization included), then minigemma.compile for the compiled variants
  prefill   tokens/s for a 512-token prompt into an empty KV cache, logits of the last position only
  decode    tokens/s of greedy decoding, 128 new tokens at batch 1 (minigemma: the loop of
            minigemma.generate's engine; transformers: its `generate`, timed between tokens)
  peak mem  peak resident memory of the process (CPU) or peak allocated GPU memory
  % bound   decode speed / (memory read bandwidth / weight bytes read per token): how close to
            the limit set by reading every weight once per token (bandwidth measured here, before
            and after the runs)
llama.cpp (the `llamacpp` variant: the embedded GGUF through llama-cpp-python) joins the default
CPU table when llama-cpp-python is installed. Timings are medians over --repeats runs. Other processes on the machine slow everything down:
the machine's load average before and after is printed with the table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tests"))  # tests/reference.py: transformers' config for our config

import minigemma  # noqa: E402

# name -> (library, dtype of the float parts, minigemma.load's quantize= scheme, path)
VARIANTS = {
    "fp32": ("minigemma", "fp32", None, "eager"),  # what a plain minigemma.load("gemma3-270m") gives
    "bf16": ("minigemma", "bf16", None, "eager"),
    "int8": ("minigemma", "fp32", "int8", "eager"),  # int8-blocks where our kernel runs (apply_scheme)
    "int8-rows": ("minigemma", "fp32", "int8-rows", "eager"),
    "int8-dynamic": ("minigemma", "fp32", "int8-dynamic", "eager"),
    "int4": ("minigemma", "fp32", "int4", "eager"),
    "int8-blocks": ("minigemma", "fp32", "int8-blocks", "eager"),  # our C++ block kernel (quantize/native.py)
    "int4-blocks": ("minigemma", "fp32", "int4-blocks", "eager"),
    "fp32-compiled": ("minigemma", "fp32", None, "compiled"),
    "bf16-compiled": ("minigemma", "bf16", None, "compiled"),
    "int8-compiled": ("minigemma", "fp32", "int8", "compiled"),
    "int8-dynamic-compiled": ("minigemma", "fp32", "int8-dynamic", "compiled"),
    "int4-compiled": ("minigemma", "fp32", "int4", "compiled"),
    "hf-fp32": ("transformers", "fp32", None, "eager generate"),
    "hf-bf16": ("transformers", "bf16", None, "eager generate"),
    # The embedded GGUF itself, run by llama.cpp (C++, hand-written SIMD kernels for its formats).
    "llamacpp": ("llama.cpp", "Q4_K_M GGUF", None, "llama-cpp-python"),
}
DEFAULT_CPU = ["fp32", "bf16", "int8", "int8-rows", "int8-dynamic", "int4", "int4-blocks", "fp32-compiled", "int8-compiled",
               "int8-dynamic-compiled", "int4-compiled", "hf-fp32", "hf-bf16", "llamacpp"]


def llama_cpp_installed() -> bool:
    """llama-cpp-python is optional: PyPI has only its source (a C++ build of a few minutes)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None
DEFAULT_GPU = ["bf16", "int8", "int4", "bf16-compiled", "int8-compiled", "hf-bf16"]


def weights_label(dtype: str, scheme: str | None) -> str:
    return scheme or dtype


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------------------------
# Measuring helpers
# --------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def read_bandwidth(device: torch.device, gib: float = 1.0, repeats: int = 7) -> float:
    """GB/s of summing a big float32 tensor: every byte read once, almost no arithmetic."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    x.sum()  # first touch
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        x.sum()
        sync(device)
        times.append(time.perf_counter() - t)
    return x.numel() * 4 / statistics.median(times) / 1e9


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    # VmHWM: this process's peak resident memory. (getrusage's ru_maxrss would also count the
    # parent's memory at fork time: Linux keeps it across exec.)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB elsewhere on Linux


def weight_bytes_per_token(model) -> int:
    """Bytes read from memory to decode one token: every matrix once, only one embedding row.

    A tied embedding is read in full as the output projection, so counting its matrix once is right.
    """
    from minigemma.quantize import QuantizedEmbedding

    total = 0
    seen = set()
    for module in model.modules():
        if isinstance(module, QuantizedEmbedding):
            continue  # its tensors are those of its `linear`, counted there
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if t is not None and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------------
# Building each variant (inside its worker process)
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules directly in `dtype` (7B in float32 first would need 34 GB)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def random_model(preset: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """Full-size Gemma with random weights, built straight on the device (no file, no host copy)."""
    config = minigemma.get_config(preset)
    torch.manual_seed(seed)
    with torch.device(device), default_dtype(dtype):
        model = minigemma.Gemma(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.zero_()
            else:
                p.normal_(0, 0.02)
    return model


def build(variant: str, args) -> tuple[object, object]:
    """(model to time, tokenizer or None). Everything here counts as load time, quantization included."""
    library, dtype, scheme, path = VARIANTS[variant]
    device = torch.device(args.device)
    if library == "transformers":
        return build_transformers(dtype, args), None
    if library == "llama.cpp":
        return build_llama_cpp(args), None  # the prompts' tokenizer is fetched after the timer
    tok = None
    if args.preset == "gemma3-270m":
        model, tok = minigemma.load("gemma3-270m", device=device, dtype=DTYPES[dtype], progress=False,
                                    quantize=scheme, group_size=args.group_size)
    else:
        from minigemma.quantize import apply_scheme

        model = apply_scheme(random_model(args.preset, device, DTYPES[dtype]), scheme, args.group_size)
    if path == "compiled":
        minigemma.compile(model, verbose=False)  # compiles here: its minute or two counts as load time
    return model, tok


def embedded_tokenizer():
    """The 270M's tokenizer from the converted GGUF in the cache (written by minigemma.load)."""
    from minigemma.loading import embedded_gguf_path
    from minigemma.loading.cache import converted_gguf_dir
    from minigemma.tokenizer import load_tokenizer

    return load_tokenizer(converted_gguf_dir(embedded_gguf_path(), progress=False) / "tokenizer.model")


def build_llama_cpp(args):
    """llama.cpp reading the embedded GGUF as it is (its own Q4_K_M kernels, no conversion)."""
    from llama_cpp import Llama

    from minigemma.loading import embedded_gguf_path

    threads = args.threads or os.cpu_count()
    return Llama(model_path=str(embedded_gguf_path()), n_ctx=args.prefill + args.decode + 64, n_batch=args.prefill,
                 n_ubatch=args.prefill, n_threads=threads, n_threads_batch=threads, verbose=False)


def gguf_tensor_bytes() -> int:
    """Bytes of every tensor in the embedded GGUF: what llama.cpp reads per decoded token."""
    from gguf import GGUFReader

    from minigemma.loading import embedded_gguf_path

    return sum(int(t.n_bytes) for t in GGUFReader(embedded_gguf_path()).tensors)


def build_transformers(precision: str, args):
    """transformers' model holding the same weights as ours (or reading the GGUF itself)."""
    import transformers

    dtype = DTYPES[precision]
    if args.preset == "gemma3-270m":
        if args.hf_load == "gguf":
            from minigemma.loading import embedded_gguf_path

            gguf = embedded_gguf_path()
            return transformers.AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=dtype).to(args.device).eval()
        # Its usual path: a directory in its own layout (written once by prepare_hf_dir, untimed).
        return transformers.AutoModelForCausalLM.from_pretrained(args.hf_dir, dtype=dtype).to(args.device).eval()
    # Random full-size weights: built on the device, then given exactly our random values.
    device = torch.device(args.device)
    ours = random_model(args.preset, device, dtype)
    hf = hf_from_ours(ours, device)
    del ours
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return hf


def hf_from_ours(ours, device: torch.device):
    import transformers

    from minigemma.loading.names import hf_names
    from reference import hf_config

    config = hf_config(ours.config)
    cls = transformers.GemmaForCausalLM if ours.config.architecture == "gemma" else transformers.Gemma3ForCausalLM
    dtype = ours.embed.weight.dtype
    with torch.device(device), default_dtype(dtype):
        hf = cls(config)
    state = ours.state_dict()
    missing, unexpected = hf.load_state_dict(
        {theirs: state[mine] for mine, theirs in hf_names(ours.config).items()}, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)  # lm_head is tied
    return hf.eval()


def prepare_hf_dir(args) -> str:
    """The 270M in transformers' own file layout, written once from our weights (not timed)."""
    directory = Path(args.workdir) / "gemma3-270m-hf"
    if not (directory / "config.json").is_file():
        print(f"writing transformers' layout of the 270M to {directory} (once)", file=sys.stderr)
        ours, _ = minigemma.load("gemma3-270m", progress=False)
        hf_from_ours(ours, torch.device("cpu")).save_pretrained(directory)
    return str(directory)


# --------------------------------------------------------------------------------------------
# Timing (inside the worker)
# --------------------------------------------------------------------------------------------

def prompts(tok, config, args) -> tuple[list[int], list[int]]:
    """A 512-token prompt for prefill and a short one to decode from, both starting with BOS."""
    if tok is not None:
        text = (ROOT / "assets" / "perplexity_text.txt").read_text()
        long_ids = tok.encode(text * 2, add_bos=True)[: args.prefill]
        short_ids = tok.encode("The capital of France is", add_bos=True)
    else:
        g = torch.Generator().manual_seed(0)
        long_ids = [config.bos_id] + torch.randint(4, config.vocab_size, (args.prefill - 1,), generator=g).tolist()
        short_ids = long_ids[:8]
    return long_ids, short_ids


def time_minigemma(model, long_ids, short_ids, args) -> dict:
    device = torch.device(args.device)
    prefill, decode = [], []
    with torch.inference_mode():
        for r in range(args.repeats + 1):  # the first round warms up (allocations, kernel choice)
            cache = model.new_cache(1, len(long_ids))
            ids = torch.tensor([long_ids], device=device)
            sync(device)
            t = time.perf_counter()
            model(ids, cache=cache, last_only=True)
            sync(device)
            prefill.append(len(long_ids) / (time.perf_counter() - t))
            # Decode: greedy, the loop of minigemma.decoding.generate.generate_ids (written out here so
            # that nothing but the model runs between the timestamps).
            cache = model.new_cache(1, len(short_ids) + args.decode + 1)
            logits = model(torch.tensor([short_ids], device=device), cache=cache, last_only=True)
            next_id = logits[:, -1].argmax(-1)
            int(next_id)  # waits for the GPU, as generate_ids does for every token
            t = time.perf_counter()
            for _ in range(args.decode):
                logits = model(next_id[:, None], cache=cache, last_only=True)
                next_id = logits[:, -1].argmax(-1)
                int(next_id)
            decode.append(args.decode / (time.perf_counter() - t))
    return {"prefill": statistics.median(prefill[1:]), "decode": statistics.median(decode[1:])}


def time_transformers(model, long_ids, short_ids, args) -> dict:
    import transformers

    device = torch.device(args.device)

    class Stamps(transformers.LogitsProcessor):
        """Called once per new token, inside generate: records when each step's logits exist."""

        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            sync(device)
            self.times.append(time.perf_counter())
            return scores

    prefill, decode = [], []
    with torch.inference_mode():
        for r in range(args.repeats + 1):
            ids = torch.tensor([long_ids], device=device)
            sync(device)
            t = time.perf_counter()
            model(ids, use_cache=True, logits_to_keep=1)  # their last-position-only prefill
            sync(device)
            prefill.append(len(long_ids) / (time.perf_counter() - t))
            stamps = Stamps()
            model.generate(torch.tensor([short_ids], device=device), max_new_tokens=args.decode + 1,
                           do_sample=False, eos_token_id=None, pad_token_id=0,
                           logits_processor=transformers.LogitsProcessorList([stamps]))
            decode.append(args.decode / (stamps.times[-1] - stamps.times[0]))
    return {"prefill": statistics.median(prefill[1:]), "decode": statistics.median(decode[1:])}


def time_llama_cpp(llm, long_ids, short_ids, args) -> dict:
    """The same measurements through llama-cpp-python's low-level `eval` (no sampler chain):
    greedy is the argmax of the last position's logits, read from llama.cpp's buffer."""
    import numpy as np

    vocab = llm.n_vocab()

    def next_id() -> int:
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))
        return int(logits.argmax())

    prefill, decode = [], []
    for r in range(args.repeats + 1):
        llm.reset()
        t = time.perf_counter()
        llm.eval(long_ids)
        prefill.append(len(long_ids) / (time.perf_counter() - t))
        llm.reset()
        llm.eval(short_ids)
        token = next_id()
        t = time.perf_counter()
        for _ in range(args.decode):
            llm.eval([token])
            token = next_id()
        decode.append(args.decode / (time.perf_counter() - t))
    return {"prefill": statistics.median(prefill[1:]), "decode": statistics.median(decode[1:])}


def worker(variant: str, args) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    model, tok = build(variant, args)
    sync(device)
    load = time.perf_counter() - t
    library = VARIANTS[variant][0]
    if library == "llama.cpp":
        tok = embedded_tokenizer()  # the same vocabulary: identical prompt ids for every library
    config = model.config if library == "minigemma" else minigemma.get_config(args.preset)
    long_ids, short_ids = prompts(tok, config, args)
    if library == "minigemma":
        timing = time_minigemma(model, long_ids, short_ids, args)
    elif library == "llama.cpp":
        timing = time_llama_cpp(model, long_ids, short_ids, args)
    else:
        timing = time_transformers(model, long_ids, short_ids, args)
    peak = peak_memory_gb(device)  # before gguf_tensor_bytes reads the file's header
    nbytes = gguf_tensor_bytes() if library == "llama.cpp" else weight_bytes_per_token(model)
    return {"variant": variant, "load": load, **timing, "peak_gb": peak, "bytes_per_token": nbytes,
            "threads": args.threads or torch.get_num_threads()}


# --------------------------------------------------------------------------------------------
# The parent: prepare quantized files, run each variant in a subprocess, print the table
# --------------------------------------------------------------------------------------------

def run_variant(variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--device", args.device, "--preset", args.preset,
           "--repeats", str(args.repeats), "--prefill", str(args.prefill), "--decode", str(args.decode),
           "--threads", str(args.threads), "--hf-load", args.hf_load, "--group-size", str(args.group_size),
           "--hf-dir", args.hf_dir]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        signal = f" (killed by signal {-out.returncode})" if out.returncode < 0 else ""
        raise RuntimeError(f"variant {variant} failed, exit status {out.returncode}{signal}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def merge_rounds(results: list[dict]) -> dict:
    """One row from a variant's rounds: medians of the speeds and load times, the highest peak memory."""
    row = dict(results[0])
    for key in ("load", "prefill", "decode"):
        row[key] = statistics.median(r[key] for r in results)
    row["peak_gb"] = max(r["peak_gb"] for r in results)
    row["rounds"] = [{k: r[k] for k in ("load", "prefill", "decode")} for r in results]
    return row


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model_name = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model_name}, {os.cpu_count()} logical CPUs, {torch.backends.cpu.get_cpu_capability()}"


def ratio_columns(rows: list[dict], baselines: list[str]) -> tuple[list[str], callable]:
    """Headers and a row formatter for "decode speed / a baseline's decode speed" columns."""
    present = [r for b in baselines for r in rows if r["variant"] == b]
    heads = [f"decode vs {b['variant']}" for b in present]
    return heads, lambda r: [f"{r['decode'] / b['decode']:.1f}x" for b in present]


def table(rows: list[dict], bandwidth: float, baselines: list[str]) -> str:
    heads, ratios = ratio_columns(rows, baselines)
    head = ["variant", "library", "weights", "path", "load s", "prefill tok/s", "decode tok/s", "peak mem GB",
            "GB read/token", "bound tok/s", "% of bound", *heads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        library, dtype, scheme, path = VARIANTS[r["variant"]]
        gb = r["bytes_per_token"] / 1e9
        bound = bandwidth / gb
        cells = [r["variant"], library, weights_label(dtype, scheme), path, f"{r['load']:.1f}", f"{r['prefill']:.0f}",
                 f"{r['decode']:.1f}", f"{r['peak_gb']:.2f}", f"{gb:.3f}", f"{bound:.0f}",
                 f"{100 * r['decode'] / bound:.0f}%", *ratios(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def short_table(rows: list[dict], bandwidth: float, baselines: list[str]) -> str:
    """The numbers users compare: load, prefill, decode, peak memory, decode vs baselines and vs the bound."""
    heads, ratios = ratio_columns(rows, baselines)
    head = ["", "load s", "prefill tok/s (512)", "decode tok/s (128)", "peak memory GB", *heads, "% of bound"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        library, dtype, scheme, path = VARIANTS[r["variant"]]
        bound = bandwidth / (r["bytes_per_token"] / 1e9)
        cells = [f"{library} {weights_label(dtype, scheme)}, {path}", f"{r['load']:.1f}", f"{r['prefill']:.0f}",
                 f"{r['decode']:.1f}", f"{r['peak_gb']:.2f}", *ratios(r), f"{100 * r['decode'] / bound:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--preset", default="gemma3-270m",
                   help="gemma3-270m (the embedded real weights) or gemma-2b / gemma-7b (random, for a GPU)")
    p.add_argument("--variants", default=None, help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per process (after one warm-up)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the whole list of variants this many times, round-robin, each in a fresh process; "
                        "the table shows medians over rounds")
    p.add_argument("--prefill", type=int, default=512, help="prompt tokens for the prefill measurement")
    p.add_argument("--decode", type=int, default=128, help="new tokens for the decode measurement")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--group-size", type=int, default=64, help="int4 group size")
    p.add_argument("--hf-load", choices=["ours", "gguf"], default="ours",
                   help="transformers builds its model from our weights (ours, fast) or reads the GGUF "
                        "itself (gguf, ~1 minute, its real load time)")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "minigemma-bench"),
                   help="where transformers' copy of the weights is written once")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--table", choices=["full", "short"], default="full",
                   help="short: only load, prefill, decode and peak memory (compare_transformers.py)")
    p.add_argument("--baseline", default="hf-fp32,hf-bf16",
                   help="comma-separated variants whose decode speed the ratio columns divide by")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--hf-dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was requested but this machine has no CUDA GPU (or this PyTorch "
              "build has no CUDA); run on a GPU machine or use --device cpu", file=sys.stderr)
        return 2
    if args.preset not in ("gemma3-270m", "gemma-2b", "gemma-7b"):
        print(f"error: --preset must be gemma3-270m, gemma-2b or gemma-7b, got {args.preset!r}", file=sys.stderr)
        return 2
    if args.preset != "gemma3-270m" and device.type != "cuda":
        print(f"error: {args.preset} with random weights is meant for a GPU (it needs "
              f"{'10' if args.preset == 'gemma-2b' else '34'}+ GB in fp32 on a CPU); use --device cuda",
              file=sys.stderr)
        return 2
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0

    variants = args.variants.split(",") if args.variants else list(DEFAULT_GPU if device.type == "cuda" else DEFAULT_CPU)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if "llamacpp" in variants and (args.preset != "gemma3-270m" or device.type != "cpu"):
        print("error: the llamacpp variant runs the embedded 270M GGUF on the CPU; drop it for "
              f"--preset {args.preset} --device {args.device}", file=sys.stderr)
        return 2
    if "llamacpp" in variants and not llama_cpp_installed():
        if args.variants:
            print("error: the llamacpp variant needs llama-cpp-python: pip install llama-cpp-python "
                  "(PyPI has only its source; the build takes a few minutes and needs cmake and a C++ compiler)",
                  file=sys.stderr)
            return 2
        print("llama-cpp-python is not installed: leaving llama.cpp out of the table", file=sys.stderr)
        variants.remove("llamacpp")
    if args.preset == "gemma3-270m" and args.hf_load == "ours" and any(v.startswith("hf-") for v in variants):
        args.hf_dir = prepare_hf_dir(args)
    load_before = os.getloadavg()[0]
    bandwidth_before = read_bandwidth(device)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):  # round-robin: slow drifts of a shared machine hit every variant alike
        for v in variants:
            print(f"round {r + 1}/{args.rounds}: running {v} ...", file=sys.stderr, flush=True)
            runs[v].append(run_variant(v, args))
    rows = [merge_rounds(runs[v]) for v in variants]
    load_after = os.getloadavg()[0]
    # A shared machine's bandwidth wanders; the higher of two measurements is closer to what the
    # hardware can do, so the bound (and each "% of bound") errs on the strict side.
    bandwidth = max(bandwidth_before, read_bandwidth(device))

    threads = rows[0]["threads"] if rows else torch.get_num_threads()
    print(f"# minigemma speed, {datetime.date.today().isoformat()}")
    print(f"model: {args.preset}{' (embedded real weights)' if args.preset == 'gemma3-270m' else ' (random weights)'}; "
          f"device: {device_description(device)}; torch {torch.__version__}, {threads} threads")
    print(f"read bandwidth (sum of a 1 GiB tensor, median of 7, higher of before/after the runs): "
          f"{bandwidth:.1f} GB/s; load average before/after: {load_before:.2f}/{load_after:.2f}")
    rounds = f", then the median of {args.rounds} rounds run round-robin" if args.rounds > 1 else ""
    print(f"prefill {args.prefill} tokens (last-position logits), decode {args.decode} tokens greedy, "
          f"batch 1, median of {args.repeats}{rounds}; int4 groups of {args.group_size}")
    print()
    baselines = args.baseline.split(",")
    print(table(rows, bandwidth, baselines) if args.table == "full" else short_table(rows, bandwidth, baselines))
    if args.json:
        Path(args.json).write_text(json.dumps({"bandwidth": bandwidth, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
