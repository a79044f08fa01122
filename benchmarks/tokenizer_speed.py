"""Encode speed: minigemma's pure-Python BPE against the `sentencepiece` library, same run, same text.

    python benchmarks/tokenizer_speed.py [--model tokenizer.model]

Without --model the Gemma 3 vocabulary is rebuilt from the embedded GGUF (slow to read: ~15 s).
Two texts: this repository's own sources and docs (English prose and Python, many repeated words)
and a shuffle of random vocabulary pieces in many scripts (few repeats: the word cache barely
helps). Every Python timing starts from an empty word cache. Prints a table; asserts nothing
about speed (that would be flaky), only that both backends agree on the ids.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import sentencepiece as spm

from minigemma.tokenizer.bpe import BPETokenizer
from minigemma.tokenizer import tokenizer_model_from_gguf

ROOT = Path(__file__).resolve().parents[1]
PAGE_BYTES = 3000


def repository_text() -> str:
    files = sorted((ROOT / "minigemma").rglob("*.py")) + sorted(ROOT.glob("*.md"))
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def random_pieces_text(sp: spm.SentencePieceProcessor, n_bytes: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_bytes:
        i = rng.randrange(494, sp.get_piece_size())  # ordinary pieces of Gemma 3's vocabulary
        if sp.is_control(i):
            continue
        piece = sp.id_to_piece(i).replace("\u2581", " ")
        out.append(piece)
        size += len(piece.encode("utf-8"))
    return "".join(out)


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of `repeat` runs: the least disturbed by whatever else the machine does."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a tokenizer.model (default: build from the embedded GGUF)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    if args.model:
        data = args.model.read_bytes()
    else:
        from minigemma.loading import embedded_gguf_path

        data = tokenizer_model_from_gguf(embedded_gguf_path())
    start = time.perf_counter()
    sp = spm.SentencePieceProcessor(model_proto=data)
    sp_load = time.perf_counter() - start
    start = time.perf_counter()
    py = BPETokenizer(data)
    py_load = time.perf_counter() - start
    py_nocache = BPETokenizer(py.model, cache_size=0)

    texts = {"repository prose+code": repository_text()}
    texts["random pieces, many scripts"] = random_pieces_text(sp, 200_000)

    def python_cold(tok: BPETokenizer, text: str) -> Callable[[], object]:
        def run() -> object:
            tok._cache.clear()  # every run starts from an empty word cache
            return tok.encode(text)

        return run

    print(f"load the 262k vocabulary: sentencepiece {sp_load:.2f} s, pure Python {py_load:.2f} s\n")
    print(f"{'text':30} {'KB':>6} {'sentencepiece':>14} {'python':>10} {'python, no cache':>17} {'ratio':>6}")
    for name, text in texts.items():
        assert py.encode(text) == sp.encode(text), "backends disagree: run the tests"
        mb = len(text.encode("utf-8")) / 1e6
        t_sp = best_of(lambda: sp.encode(text), args.repeat)
        t_py = best_of(python_cold(py, text), args.repeat)
        t_nc = best_of(lambda: py_nocache.encode(text), args.repeat)
        print(f"{name:30} {mb * 1e3:6.0f} {mb / t_sp:9.2f} MB/s {mb / t_py:5.2f} MB/s {mb / t_nc:12.2f} MB/s {t_py / t_sp:5.1f}x")

    # One page of prose, as a user would tokenize a prompt: median over pages, cold cache.
    prose = texts["repository prose+code"]
    pages = [prose[i : i + PAGE_BYTES] for i in range(0, len(prose) - PAGE_BYTES, len(prose) // 20)][:20]
    sp_page = statistics.median(best_of(lambda: sp.encode(p), 1) for p in pages)
    py_page = statistics.median(best_of(python_cold(py, p), 1) for p in pages)
    print(f"\none page (~{PAGE_BYTES // 1000} KB), median of {len(pages)}: sentencepiece {sp_page * 1e3:.2f} ms, "
          f"pure Python {py_page * 1e3:.2f} ms (cold word cache)")


if __name__ == "__main__":
    main()
