"""Tokenizer benchmark: llmcore's C++ BPE vs tiktoken (encode, batch, decode) and vs Hugging
Face tokenizers' BpeTrainer (training), measured side by side in the same run.

    python bench/bench_tokenizer.py [--data ../shared/data] [--out bench/results/tokenizer.json]
                                    [--skip-train] [--train-vocab 8192,32768] [--repeat 2]

Encode: single thread, whole file per call, best of --repeat; llmcore ``encode`` vs tiktoken
``encode_ordinary`` (ids are checked equal). Batch: each file cut into ~16 KiB documents at line
ends, 2 threads, ``encode_batch`` vs ``encode_ordinary_batch``. Decode: ``decode`` of the file's
ids. Training: each trainer runs in a fresh child process on all corpus files; wall time and
peak RSS (the child's VmHWM) are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from peak_rss import peak_rss_mb  # noqa: E402  (bench/, run as a script)

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data"
ENCS = ("gpt2", "cl100k_base", "o200k_base")


def load_pair(name: str, tokdir: Path):
    import tiktoken
    import tiktoken_ext.openai_public as pub
    from tiktoken.load import load_tiktoken_bpe

    from llmcore.builtin.bpe import BPETokenizer

    if name == "gpt2":
        ours = BPETokenizer.load(tokdir / "gpt2_tokenizer.json")
        ranks = {ours.token_bytes(i): i for i in range(50256)}
    else:
        ours = BPETokenizer.load(tokdir / f"{name}.tiktoken")
        ranks = load_tiktoken_bpe(str(tokdir / f"{name}.tiktoken"))
    pat = pub.r50k_pat_str if name == "gpt2" else ours.pat_str
    ref = tiktoken.Encoding(
        name, pat_str=pat, mergeable_ranks=ranks, special_tokens=ours.special_tokens
    )
    return ours, ref


def best(fn, repeat: int) -> tuple[float, object]:
    t, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t = min(t, time.perf_counter() - t0)
    return t, out


def docs_of(text: str, size: int = 16384) -> list[str]:
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


def bench_encode(data: Path, repeat: int) -> list[dict]:
    files = sorted((data / "corpus").glob("*.txt")) + [data / "tinyshakespeare.txt"]
    rows = []
    for name in ENCS:
        ours, ref = load_pair(name, data / "tokenizers")
        for f in files:
            text = f.read_text(encoding="utf-8")
            mb = len(text.encode()) / 1e6
            t_ours, ids = best(lambda o=ours, t=text: o.encode(t), repeat)
            t_ref, ids_ref = best(lambda r=ref, t=text: r.encode_ordinary(t), repeat)
            docs = docs_of(text)
            tb_ours, bids = best(lambda o=ours, d=docs: o.encode_batch(d, num_threads=2), repeat)
            tb_ref, bids_ref = best(
                lambda r=ref, d=docs: r.encode_ordinary_batch(d, num_threads=2), repeat
            )
            td_ours, dec = best(lambda o=ours, i=ids: o.decode(i), repeat)
            td_ref, _ = best(lambda r=ref, i=ids_ref: r.decode(i), repeat)
            row = {
                "encoding": name,
                "file": f.name,
                "mb": round(mb, 3),
                "tokens": len(ids_ref),
                "identical": ids == ids_ref and bids == bids_ref and dec == text,
                "encode_mbs": round(mb / t_ours, 2),
                "tiktoken_encode_mbs": round(mb / t_ref, 2),
                "encode_ratio": round(t_ref / t_ours, 2),
                "batch2_mbs": round(mb / tb_ours, 2),
                "tiktoken_batch2_mbs": round(mb / tb_ref, 2),
                "batch2_ratio": round(tb_ref / tb_ours, 2),
                "decode_mbs": round(mb / td_ours, 1),
                "tiktoken_decode_mbs": round(mb / td_ref, 1),
            }
            rows.append(row)
            print(
                f"{name:12s} {f.name:28s} {mb:6.2f}MB  encode {row['encode_mbs']:6.2f} vs {row['tiktoken_encode_mbs']:6.2f} "
                f"x{row['encode_ratio']:.2f} | batch2 {row['batch2_mbs']:6.2f} vs {row['tiktoken_batch2_mbs']:6.2f} "
                f"x{row['batch2_ratio']:.2f} | decode {row['decode_mbs']:6.1f} vs {row['tiktoken_decode_mbs']:6.1f}"
                f"{'' if row['identical'] else '  IDS DIFFER'}",
                flush=True,
            )
    return rows


def train_child(kind: str, vocab: int, data: Path, pattern: str) -> None:
    files = [str(p) for p in sorted((data / "corpus").glob("*.txt"))] + [
        str(data / "tinyshakespeare.txt")
    ]
    t0 = time.perf_counter()
    if kind == "llmcore":
        from llmcore.builtin.bpe import BPETokenizer

        tok = BPETokenizer.train([Path(f) for f in files], vocab, pattern=pattern, progress=False)
        size = tok.vocab_size
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train(files, trainer)
        size = tok.get_vocab_size()
    wall = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "trainer": kind,
                "vocab_size": vocab,
                "pattern": pattern if kind == "llmcore" else "gpt2 (ByteLevel)",
                "wall_s": round(wall, 2),
                "peak_rss_mb": round(rss_mb, 1),
                "final_vocab": size,
            }
        )
    )


def bench_train(data: Path, vocabs: list[int]) -> list[dict]:
    rows = []
    for vocab in vocabs:
        for kind, pattern in (
            ("llmcore", "gpt2"),
            ("hf_tokenizers", "gpt2"),
            ("llmcore", "cl100k_base"),
        ):
            cmd = [
                sys.executable,
                __file__,
                "--train-child",
                kind,
                "--train-vocab",
                str(vocab),
                "--data",
                str(data),
                "--pattern",
                pattern,
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(f"train {kind} {vocab} failed: {res.stderr[-500:]}", flush=True)
                continue
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"train {row['trainer']:14s} {row['pattern']:18s} vocab {vocab:6d}: {row['wall_s']:7.2f} s, "
                f"peak RSS {row['peak_rss_mb']:7.1f} MB",
                flush=True,
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=str(HERE / "results" / "tokenizer.json"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--train-vocab", default="8192,32768")
    ap.add_argument("--train-child", choices=["llmcore", "hf_tokenizers"])
    ap.add_argument("--pattern", default="gpt2")
    args = ap.parse_args()
    data = Path(args.data)
    if args.train_child:
        train_child(args.train_child, int(args.train_vocab), data, args.pattern)
        return 0
    import os

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        import tiktoken
        import tokenizers

        result["versions"] = {
            "tiktoken": tiktoken.__version__,
            "tokenizers": tokenizers.__version__,
        }
    except ImportError:
        pass
    if not args.skip_encode:
        result["encode"] = bench_encode(data, args.repeat)
    if not args.skip_train:
        result["train"] = bench_train(data, [int(v) for v in args.train_vocab.split(",")])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and (
        args.skip_encode or args.skip_train
    ):  # keep the other half of a previous run
        old = json.loads(out.read_text())
        for key in ("encode", "train"):
            if key not in result and key in old:
                result[key] = old[key]
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
