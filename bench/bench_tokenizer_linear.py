"""Encode time of long runs of one unit (spaces, letters, digits, CJK, combining marks), the
inputs that make a naive BPE merge loop quadratic: the time for 8x the input should stay near
8-16x (n log n plus cache misses), never 64x. Medians of 5, one thread.

    python bench/bench_tokenizer_linear.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from llmcore.tokenizers import load_tokenizer

FIX = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tokenizers"

UNITS = [" ", "a", "1", "\n", "é", "日", ".", " a", "\u0301", "ab"]


def median_time(tok, text: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tok.encode(text)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    for name in ("gpt2", "cl100k_base", "o200k_base"):
        tok = load_tokenizer(FIX / ("gpt2" if name == "gpt2" else f"{name}.tiktoken"))
        for unit in UNITS:
            small, big = median_time(tok, unit * 50_000), median_time(tok, unit * 400_000)
            print(
                f"{name:12} {unit!r:10} 50k {small * 1e3:8.2f} ms  400k {big * 1e3:8.2f} ms  "
                f"ratio {big / small:5.1f}"
            )


if __name__ == "__main__":
    main()
