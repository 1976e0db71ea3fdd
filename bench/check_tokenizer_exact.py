"""Check that llmcore's BPE gives tiktoken's ids on every corpus file (whole file per call)
and on generated hostile text. Not a timed test: run by hand, prints one line per case.

    python bench/check_tokenizer_exact.py [--data ../shared/data] [--encodings gpt2,cl100k_base,o200k_base]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

from llmcore.builtin.bpe import BPETokenizer

RANK_FILES = {
    "gpt2": None,
    "cl100k_base": "cl100k_base.tiktoken",
    "o200k_base": "o200k_base.tiktoken",
}


def load_pair(name: str, tokdir: Path):
    if name == "gpt2":
        tok = BPETokenizer.load(tokdir / "gpt2_tokenizer.json")
        ranks = {tok.token_bytes(i): i for i in range(50256)}
    else:
        tok = BPETokenizer.load(tokdir / RANK_FILES[name])
        ranks = load_tiktoken_bpe(str(tokdir / RANK_FILES[name]))
    enc = tiktoken.Encoding(
        name, pat_str=tok.pat_str, mergeable_ranks=ranks, special_tokens=tok.special_tokens
    )
    return tok, enc


def first_diff(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--encodings", default="gpt2,cl100k_base,o200k_base")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="also every code point U+0000..U+10FFFF in context, and 2000 hostile texts",
    )
    ap.add_argument("--skip-corpus", action="store_true")
    args = ap.parse_args()
    data = Path(args.data)
    files = sorted((data / "corpus").glob("*.txt")) + [data / "tinyshakespeare.txt"]
    bad = 0
    for name in args.encodings.split(","):
        tok, enc = load_pair(name, data / "tokenizers")
        if args.sweep:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            import random

            from tests.test_bpe_common import codepoint_sweep, hostile_text

            for lo in range(0, 0x110000, 0x10000):
                text = codepoint_sweep(lo, lo + 0x10000)
                ok = tok.encode(text) == enc.encode_ordinary(text)
                bad += not ok
                print(
                    f"{name:12s} sweep U+{lo:06X}..U+{lo + 0xFFFF:06X} {'OK' if ok else 'MISMATCH'}",
                    flush=True,
                )
            rng = random.Random(2024)
            n_bad = 0
            for _ in range(2000):
                text = hostile_text(rng, rng.randint(1, 300))
                n_bad += tok.encode(text) != enc.encode_ordinary(text)
            bad += n_bad
            print(f"{name:12s} 2000 hostile texts: {n_bad} mismatches", flush=True)
        for f in [] if args.skip_corpus else files:
            text = f.read_text(encoding="utf-8")
            ours, ref = tok.encode(text), enc.encode_ordinary(text)
            ok = ours == ref
            bad += not ok
            msg = "" if ok else f" first diff at token {first_diff(ours, ref)}"
            print(
                f"{name:12s} {f.name:28s} {len(ref):9d} tokens {'OK' if ok else 'MISMATCH'}{msg}",
                flush=True,
            )
    print("all identical" if not bad else f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
