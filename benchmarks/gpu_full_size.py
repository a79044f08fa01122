"""Full-size Gemma 2B and 7B on a GPU: minigemma beside transformers, on the same files.

Writes random weights (normal, small std) in the exact Hugging Face layout and shapes of
google/gemma-2b and google/gemma-7b (config.json, bf16 safetensors in ~5 GB shards with
model.safetensors.index.json, and a tokenizer.model), then loads them with minigemma and with
transformers on CUDA and records, for each model:

- logits agreement in bf16 on one random prompt: max |difference|, top-1 agreement per position;
- load time, peak GPU memory (torch.cuda.max_memory_allocated) and the peak host RSS the load added;
- greedy decode speed, 128 new tokens, batch 1: minigemma's generation loop
  (`minigemma.decoding.generate.generate_ids`, the engine under `minigemma.generate`, run without stop
  tokens so both sides decode exactly 128 tokens: random weights emit <eos> at random) against
  transformers' `generate` (do_sample=False, eos disabled);

and prints a markdown table with the date and the device name. Random weights make the numbers
about the implementations, not about text quality; no real weights are downloaded.

    python benchmarks/gpu_full_size.py                        # gemma-2b and gemma-7b on CUDA
    python benchmarks/gpu_full_size.py --preset gemma-2b --keep --dir /tmp/g2b
    python benchmarks/gpu_full_size.py --device cpu --preset tiny-gemma   # smoke test, any machine

Needs transformers (and accelerate for its device_map loading), as the tests do.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import minigemma  # noqa: E402
from minigemma.decoding.generate import generate_ids  # noqa: E402
from minigemma.loading.names import hf_names  # noqa: E402
from minigemma.tokenizer import modelproto_from_gguf_vocab  # noqa: E402

SHARD_BYTES = 5_000_000_000  # transformers' shard size when the Gemma repositories were written
GiB = 2**30


# ------------------------------------------------------------------------------ the checkpoint

def hf_config_json(config: minigemma.GemmaConfig) -> dict:
    """config.json as in google/gemma-2b / gemma-7b (Gemma 1 only: that is what the Hub layout here covers)."""
    return {
        "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim, "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps, "rope_theta": config.rope_theta,
        "bos_token_id": config.bos_id, "eos_token_id": config.eos_id, "pad_token_id": config.pad_id,
        # The original files say "gelu", though the model uses the tanh approximation (pitfall 1;
        # minigemma always uses tanh). Name the tanh form so that transformers computes the same function.
        "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }


def synthetic_tokenizer(vocab_size: int) -> bytes:
    """A valid SentencePiece BPE model with `vocab_size` pieces and Gemma's special ids.

    Real vocabularies are gated like the weights; decoding speed does not depend on the pieces,
    only on the ids being in range: specials, 256 byte pieces, printable characters, then filler.
    """
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [3, 3, 3, 2] + [6] * 256
    chars = ["\u2581"] + [chr(c) for c in range(33, 127)]
    tokens += chars + [f"\u2581w{i}" for i in range(vocab_size - len(tokens) - len(chars))]
    types += [1] * (vocab_size - len(types))
    if len(tokens) != vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte-fallback tokenizer (needs >= 356)")
    scores = [0.0] * 260 + [-float(i) for i in range(vocab_size - 260)]
    return modelproto_from_gguf_vocab(tokens, scores, types, bos_id=2, eos_id=1, unk_id=3, pad_id=0)


def write_checkpoint(config: minigemma.GemmaConfig, directory: Path, std: float, seed: int,
                     device: torch.device) -> None:
    """Random bf16 weights under transformers' names, sharded like the Hub files."""
    directory.mkdir(parents=True, exist_ok=True)
    shapes = dict(minigemma_meta(config).named_parameters())
    names = list(hf_names(config).items())
    groups, current, size = [], [], 0
    for ours, theirs in names:  # consecutive tensors fill a shard up to SHARD_BYTES
        nbytes = shapes[ours].numel() * 2
        if current and size + nbytes > SHARD_BYTES:
            groups.append(current)
            current, size = [], 0
        current.append((ours, theirs))
        size += nbytes
    groups.append(current)
    generator = torch.Generator(device=device).manual_seed(seed)
    weight_map = {}
    for k, group in enumerate(groups, start=1):
        shard = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for ours, theirs in group:  # generated on the device (fast on a GPU), saved from the host
            t = torch.randn(tuple(shapes[ours].shape), generator=generator, device=device) * std
            tensors[theirs] = t.to(torch.bfloat16).cpu()
            weight_map[theirs] = shard
        save_file(tensors, directory / shard, metadata={"format": "pt"})
        del tensors
    total = sum(shapes[o].numel() * 2 for o, _ in names)
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (directory / "config.json").write_text(json.dumps(hf_config_json(config), indent=2))
    (directory / "tokenizer.model").write_bytes(synthetic_tokenizer(config.vocab_size))


def minigemma_meta(config):
    from minigemma.loading.weights import empty_model

    return empty_model(config)


def warm_page_cache(directory: Path) -> None:
    """Read every file once so both libraries load from the page cache, not from a cold disk."""
    for path in sorted(directory.iterdir()):
        with path.open("rb") as f:
            while f.read(1 << 26):
                pass


# ------------------------------------------------------------------------------ measurements

class PeakRSS:
    """Samples this process's resident memory in a thread; `.added` is the peak above the start."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.added = self.peak - self.start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gpu(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / GiB if device.type == "cuda" else None


def run_minigemma(directory: Path, device, dtype, prompt: list[int], new_tokens: int) -> dict:
    reset_peak(device)
    with PeakRSS() as rss:
        start = time.perf_counter()
        model, _ = minigemma.load(directory, device=device, dtype=dtype, progress=False)
        sync(device)
        load_s = time.perf_counter() - start
    gpu = peak_gpu(device)
    ids = torch.tensor([prompt], device=device)
    with torch.inference_mode():
        logits = model(ids).float().cpu()
    list(generate_ids(model, prompt, max_new_tokens=8))  # warm-up (CUDA kernels, allocator)
    sync(device)
    start = time.perf_counter()
    out = list(generate_ids(model, prompt, max_new_tokens=new_tokens))
    sync(device)
    decode_s = time.perf_counter() - start
    del model
    return dict(load_s=load_s, gpu_gib=gpu, rss_gib=rss.added / GiB, logits=logits, greedy=out,
                tok_s=len(out) / decode_s, name=None)


def run_transformers(directory: Path, device, dtype, prompt: list[int], new_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM

    reset_peak(device)
    with PeakRSS() as rss:
        start = time.perf_counter()
        kwargs = {"device_map": str(device)} if device.type == "cuda" else {}
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **kwargs).eval()
        sync(device)
        load_s = time.perf_counter() - start
    gpu = peak_gpu(device)
    ids = torch.tensor([prompt], device=device)
    settings = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.inference_mode():
        logits = model(ids).logits.float().cpu()
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, **settings)  # warm-up
        sync(device)
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **settings)
        sync(device)
        decode_s = time.perf_counter() - start
    greedy = out[0, len(prompt):].tolist()
    del model
    return dict(load_s=load_s, gpu_gib=gpu, rss_gib=rss.added / GiB, logits=logits, greedy=greedy,
                tok_s=len(greedy) / decode_s)


def compare(ours: dict, theirs: dict) -> dict:
    a, b = ours["logits"], theirs["logits"]
    same_prefix = 0
    for x, y in zip(ours["greedy"], theirs["greedy"]):
        if x != y:
            break
        same_prefix += 1
    return dict(max_abs=(a - b).abs().max().item(), scale=b.abs().max().item(),
                top1=(a.argmax(-1) == b.argmax(-1)).float().mean().item(),
                greedy_prefix=same_prefix, greedy_total=len(theirs["greedy"]))


# ------------------------------------------------------------------------------ main

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {psutil.cpu_count(logical=False)} cores)"


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["gemma-2b", "gemma-7b"], help="minigemma presets (Gemma 1)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--std", type=float, default=0.02, help="std of the random weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_full_size.py needs a CUDA GPU (torch.cuda.is_available() is False here). "
              "For a CPU smoke test: --device cpu --preset tiny-gemma", file=sys.stderr)
        return 2
    for name in args.preset:
        if minigemma.get_config(name).architecture != "gemma":
            parser.error(f"{name} is not a Gemma 1 preset; this benchmark writes the Gemma 1 Hub layout")
    dtype = torch.bfloat16
    root = args.dir or Path(tempfile.mkdtemp(prefix="minigemma-full-size-"))
    rows = []
    try:
        for name in args.preset:
            config = minigemma.get_config(name)
            directory = root / name
            if not (directory / "model.safetensors.index.json").is_file():
                start = time.perf_counter()
                write_checkpoint(config, directory, args.std, args.seed, device)
                print(f"{name}: wrote random weights in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            warm_page_cache(directory)
            g = torch.Generator().manual_seed(args.seed + 1)
            prompt = [config.bos_id] + torch.randint(4, config.vocab_size, (args.prompt_len,), generator=g).tolist()
            new_tokens = min(args.new_tokens, config.max_position_embeddings - len(prompt))
            if new_tokens < args.new_tokens:  # the tiny test presets have a 128-token context
                print(f"{name}: context {config.max_position_embeddings}, decoding {new_tokens} tokens",
                      file=sys.stderr)
            ours = run_minigemma(directory, device, dtype, prompt, new_tokens)
            theirs = run_transformers(directory, device, dtype, prompt, new_tokens)
            rows.append((name, ours, theirs, compare(ours, theirs)))
            print(f"{name}: done", file=sys.stderr)
            if not args.keep and args.dir is None:
                shutil.rmtree(directory)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)

    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    print(f"\n### minigemma vs transformers, random weights in the Hub layout ({today}, {device_name(device)}, "
          f"torch {torch.__version__}, bf16, batch 1, prompt {args.prompt_len + 1} tokens, "
          f"{args.new_tokens} new tokens "
          "or as many as the context allows)\n")
    print("| model | load s (mg / hf) | peak GPU GiB (mg / hf) | host RSS added GiB (mg / hf) | max abs logit diff "
          "(of max abs logit) | top-1 agree | greedy ids equal | decode tok/s (mg / hf) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, ours, theirs, c in rows:
        print(f"| {name} | {ours['load_s']:.1f} / {theirs['load_s']:.1f} "
              f"| {fmt(ours['gpu_gib'])} / {fmt(theirs['gpu_gib'])} "
              f"| {ours['rss_gib']:.2f} / {theirs['rss_gib']:.2f} "
              f"| {c['max_abs']:.3g} ({c['scale']:.3g}) | {c['top1']:.1%} "
              f"| first {c['greedy_prefix']} of {c['greedy_total']} "
              f"| {ours['tok_s']:.1f} / {theirs['tok_s']:.1f} | {ours['tok_s'] / theirs['tok_s']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
