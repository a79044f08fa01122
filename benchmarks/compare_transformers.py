"""minigemma beside transformers on the embedded Gemma 3 270M, same machine, same run.

    python benchmarks/compare_transformers.py              # transformers reads the GGUF itself (~1 min)
    python benchmarks/compare_transformers.py --hf-load ours --repeats 5

Prints one table: load time, prefill tokens/s (512-token prompt, last-position logits), greedy
decode tokens/s (128 tokens, batch 1) and peak memory, for minigemma's model at each precision, eager and compiled,
transformers' eager `generate` in float32 and bfloat16, and llama.cpp on the same GGUF when
llama-cpp-python is installed (benchmarks/README.md says how). Each row runs in its own process;
benchmarks/speed.py does the measuring (see its docstring for the definitions) and has more
variants and columns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed  # noqa: E402

VARIANTS = ["fp32", "int8", "int8-dynamic", "int8-compiled", "int8-dynamic-compiled", "int4", "int4-compiled",
            "hf-fp32", "hf-bf16"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-load", choices=["gguf", "ours"], default="gguf",
                   help="gguf: transformers' own GGUF loader (its real load time); ours: from a copy of our "
                        "weights saved in its layout (faster to run)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1, help="run all variants this many times round-robin (medians)")
    args = p.parse_args(argv)
    variants = VARIANTS + ["llamacpp"] if speed.llama_cpp_installed() else VARIANTS
    if "llamacpp" not in variants:
        print("llama-cpp-python is not installed: llama.cpp left out (see benchmarks/README.md)", file=sys.stderr)
    forwarded = ["--variants", ",".join(variants), "--hf-load", args.hf_load, "--repeats", str(args.repeats), "--rounds", str(args.rounds),
                 "--threads", str(args.threads), "--table", "short", "--baseline", "hf-fp32,hf-bf16"]
    return speed.main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
