"""What each precision costs in quality, on the embedded Gemma 3 270M.

    python benchmarks/quality.py                  # ~2 minutes on 2 cores
    python benchmarks/quality.py --group-sizes 32,64,128,256

For every weight format that benchmarks/speed.py times, scores the whole of
`assets/perplexity_text.txt` (an original text, ~700 tokens) and prints:
  perplexity   exp(mean negative log-likelihood of each next token); lower is better
  agreement    the fraction of positions whose top-1 next token equals the float32 model's
  MB           bytes of weights as stored (integers, scales, float norms)
The float32 model is the reference: it holds the GGUF's weights dequantized exactly. With
llama-cpp-python installed, llama.cpp's own run of the GGUF (its quantized kernels, activations
rounded to 8 bits inside its dot products) is scored on the same tokens.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))  # speed.py's helpers

import minigemma  # noqa: E402
from minigemma.quantize import TextScore, agreement, quantize, score_text, weight_bytes  # noqa: E402


def llama_cpp_score(ids: list[int]) -> tuple[TextScore, int] | None:
    """llama.cpp's perplexity and top-1 predictions on `ids`, or None without llama-cpp-python."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    import numpy as np

    from minigemma.loading import embedded_gguf_path
    from speed import gguf_tensor_bytes

    path = embedded_gguf_path()
    llm = Llama(model_path=str(path), n_ctx=len(ids) + 8, n_batch=len(ids), n_ubatch=len(ids),
                logits_all=True, verbose=False)
    llm.eval(ids)
    logits = torch.from_numpy(np.array(llm.scores[: len(ids) - 1], dtype=np.float32))  # (n - 1, vocab)
    targets = torch.tensor(ids[1:])
    nll = -logits.log_softmax(-1).gather(1, targets[:, None]).mean()
    return TextScore(perplexity=float(nll.exp()), predictions=logits.argmax(-1)), gguf_tensor_bytes()


def int8_activations_per_tensor(model: torch.nn.Module) -> torch.nn.Module | None:
    """A copy whose linear layers are PyTorch's x86 int8 x int8 kernel (fbgemm): int8 weights per
    row, and each input tensor rounded to 8 bits with one scale, on the fly (score_text's chunks
    are 512 tokens: one scale for all of them). The embedding stays float. None where this PyTorch has no such kernel (torch.ao quantization is deprecated)."""
    import warnings

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    except (ImportError, RuntimeError, AttributeError):
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group-sizes", default="32,64,128", help="int4 group sizes to score")
    args = p.parse_args(argv)
    torch.manual_seed(0)

    model, tok = minigemma.load("gemma3-270m", progress=False)
    text = (ROOT / "assets" / "perplexity_text.txt").read_text()
    ids = tok.encode(text, add_bos=True)
    reference = score_text(model, ids)

    # label -> (model, how it was made)
    variants: dict[str, tuple[torch.nn.Module, str]] = {
        "fp32": (model, "minigemma.load (the GGUF dequantized)"),
        "bf16": (copy.deepcopy(model).to(torch.bfloat16), "model.to(torch.bfloat16)"),
        "int8": (quantize(copy.deepcopy(model), bits=8), "quantize(model, bits=8)"),
    }
    for g in (int(x) for x in args.group_sizes.split(",")):
        variants[f"int4 g{g}"] = (quantize(copy.deepcopy(model), bits=4, group_size=g),
                                  f"quantize(model, bits=4, group_size={g})")
    variants["int8 + int4 g64 embedding"] = (
        quantize(copy.deepcopy(model), layer_bits=8, embedding_bits=4, group_size=64),
        "quantize(model, layer_bits=8, embedding_bits=4)")
    variants["fp32 + int8 embedding"] = (
        quantize(copy.deepcopy(model), layer_bits=None, embedding_bits=8),
        "quantize(model, layer_bits=None, embedding_bits=8)")

    # The fastest int8 on a CPU: the output projection by fbgemm's int8 x int8 kernel (its packed
    # copy of the int8 rows, 168 MB more in memory, is not counted: it is made on first use).
    variants["int8, int8-dynamic output projection"] = (
        quantize(copy.deepcopy(model), bits=8, unembedding="int8-dynamic"),
        'quantize(model, 8, unembedding="int8-dynamic")')

    # minigemma's own block kernel (quantize/native.py): weights and activations in blocks of 32, as
    # llama.cpp's Q8_0 / Q4_0 dot products; every row, the prompt's too, goes through the kernel.
    for bits in (8, 4):
        blocked = quantize(copy.deepcopy(model), bits=bits, blocks=True)
        variants[f"int{bits} blocks of 32, activations per block"] = (
            blocked, f"quantize(model, {bits}, blocks=True)")

    dynamic = int8_activations_per_tensor(model)
    if dynamic is not None:
        variants["int8 layers, int8 activations per tensor (fbgemm; one scale per 512-token chunk)"] = (
            dynamic, "torch.ao.quantization.quantize_dynamic(model, per-channel qint8)")

    rows = []
    for label, (m, how) in variants.items():
        score = reference if m is model else score_text(m, ids)
        nbytes = None if m is dynamic else weight_bytes(m)  # its packed weights are not torch buffers
        rows.append((f"minigemma {label}", how, nbytes, score))
    llama = llama_cpp_score(ids)
    if llama is not None:
        score, nbytes = llama
        rows.append(("llama.cpp, the GGUF as is", "Llama(model_path=...).eval(ids)", nbytes, score))

    print(f"# quality on assets/perplexity_text.txt: {len(ids)} tokens, torch {torch.__version__}")
    print()
    print("| weights | made by | MB | perplexity | vs fp32 | top-1 agreement with fp32 |")
    print("|---|---|---|---|---|---|")
    for label, how, nbytes, score in rows:
        mb = "-" if nbytes is None else f"{nbytes / 1e6:.0f}"
        print(f"| {label} | `{how}` | {mb} | {score.perplexity:.3f} | "
              f"{100 * (score.perplexity / reference.perplexity - 1):+.1f}% | {agreement(score, reference):.1%} |")
    if llama is None:
        print("\n(llama-cpp-python is not installed: llama.cpp's row left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
