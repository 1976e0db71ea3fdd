"""Quantized matmul kernels (llmcore.ops.quant.matmul) on real model shapes, side by side
with torch's dense float32 and bfloat16 matmul, in one process.

For each weight shape of a SmolLM2-135M-like and a TinyLlama-1B-like model and each type:
one input row (decode) and many (prefill, 512 by default), in llmcore's default 8-bit
activations and, for one row, its exact float32-activation path. K-quants need rows of a
multiple of 256, so they skip SmolLM2's width 576. Each figure is a median
over repeats; calls alternate repeat by repeat, so a busy neighbour slows all alike.

Reported per case: milliseconds, GB/s of weight bytes read (the bytes of the quantized
blocks, or of the dense float32/bfloat16 weight, over the time), that as a fraction of the
machine's read bandwidth measured in the same run (a float32 sum over a buffer far larger
than the caches), and GMAC/s for many rows.

    python bench/bench_quant_kernels.py --threads 2 --repeats 5
    python bench/bench_quant_kernels.py --types q4_0 q8_0 --rows 1   # decode only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from llmcore import _C
from llmcore.ops import quant

ROOT = Path(__file__).resolve().parents[1]
# (model, weight, out_features N, in_features K)
SHAPES = [
    ("smollm2-135m", "q_proj", 576, 576),
    ("smollm2-135m", "gate_up", 1536, 576),
    ("smollm2-135m", "down", 576, 1536),
    ("smollm2-135m", "lm_head", 49152, 576),
    ("tinyllama-1b", "q_proj", 2048, 2048),
    ("tinyllama-1b", "gate_up", 5632, 2048),
    ("tinyllama-1b", "down", 2048, 5632),
    ("tinyllama-1b", "lm_head", 32000, 2048),
]
TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"]
# Byte offsets of each type's fp16 factors in its block (GGUF's layouts).
HALF_FIELDS = {"q4_1": [0, 2], "q5_1": [0, 2], "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}


def random_blocks(name: str, n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Random quants with finite, model-like fp16 factors: what a real weight costs to read."""
    t = quant.quant_type(name)
    nb = n * k // t.block_size
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(nb, t.block_bytes), dtype=np.uint8)
    for off in HALF_FIELDS.get(name, [0]):
        halves = (np.abs(rng.standard_normal(nb)) * 0.01).astype(np.float16)
        raw[:, off : off + 2] = halves.view(np.uint8).reshape(nb, 2)
    return torch.from_numpy(raw.reshape(-1))


def median_ms(fns: dict, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm up (and grow the kernels' scratch)
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def read_bandwidth_gbs(repeats: int, mib: int = 512) -> float:
    """GB/s of a float32 sum over `mib` MiB (larger than any cache), torch's threads."""
    buf = torch.ones(mib * 2**20 // 4)
    ms = median_ms({"sum": lambda: buf.sum()}, max(3, repeats))["sum"]
    return buf.numel() * 4 / ms / 1e6


def bench_shape(n: int, k: int, rows: int, types: list[str], args, bw: float) -> dict:
    torch.manual_seed(0)
    x = torch.randn(rows, k)
    w32 = torch.randn(n, k) * 0.02
    w16 = w32.bfloat16()
    x16 = x.bfloat16()
    fns = {"torch_f32": lambda: x @ w32.T, "torch_bf16": lambda: x16 @ w16.T}
    nbytes = {"torch_f32": w32.numel() * 4, "torch_bf16": w16.numel() * 2}
    for name in types:
        if k % quant.quant_type(name).block_size:
            continue  # e.g. 576 is no multiple of a K-quant's 256 (llama.cpp picks another type)
        raw = random_blocks(name, n, k)
        nbytes[name] = nbytes[f"{name}_f32act"] = raw.numel()
        fns[name] = lambda raw=raw, name=name: quant.matmul(x, name, raw, (n, k), args.threads)
        if rows == 1:  # the exact path, for reference (slow for many rows)
            fns[f"{name}_f32act"] = lambda raw=raw, name=name: quant.matmul(
                x, name, raw, (n, k), args.threads, activations="float32"
            )
    ms = median_ms(fns, args.repeats)
    out = {}
    for case, t in ms.items():
        gbs = nbytes[case] / t / 1e6
        out[case] = {"ms": t, "weight_gbs": gbs, "of_read_bandwidth": gbs / bw}
        if rows > 1:
            out[case]["gmacs"] = rows * n * k / t / 1e6
    return out


def print_case(label: str, res: dict, rows: int) -> None:
    f32 = res["torch_f32"]["ms"]
    print(f"  {label}: torch f32 {f32:.3f} ms, bf16 {res['torch_bf16']['ms']:.3f} ms")
    for case, r in res.items():
        if case.startswith("torch") or case.endswith("_f32act"):
            continue
        extra = f", exact-x path {res[case + '_f32act']['ms']:.3f} ms" if rows == 1 else ""
        rate = f"{r['weight_gbs']:.1f} GB/s ({100 * r['of_read_bandwidth']:.0f}% of read bw)"
        if rows > 1:
            rate = f"{r['gmacs']:.1f} GMAC/s"
        print(f"    {case:5s} {r['ms']:.3f} ms  {rate}  {f32 / r['ms']:.2f}x torch f32{extra}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--types", nargs="+", default=["q8_0", "q4_0", "q4_1", "q4_k", "q6_k"], choices=TYPES
    )
    p.add_argument("--rows", nargs="+", type=int, default=[1, 512])
    p.add_argument(
        "--prefill-lm-head",
        action="store_true",
        help="also run the many-row product on the LM heads (slow; a prefill "
        "only needs the last row's logits)",
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "quant_kernels.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bw = read_bandwidth_gbs(args.repeats)
    print(
        f"read bandwidth {bw:.1f} GB/s ({args.threads} threads); kernels at {_C.isa()}"
        f"{' + VNNI' if _C.quant_vnni() and _C.isa() == 'avx512' else ''}"
    )
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "isa": _C.isa(),
            "vnni": _C.quant_vnni(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg(),
            "read_bandwidth_gbs": bw,
        },
        "cases": {},
    }
    for model, weight, n, k in SHAPES:
        for rows in args.rows:
            if rows > 1 and weight == "lm_head" and not args.prefill_lm_head:
                continue
            label = f"{model} {weight} {n}x{k}, {rows} row{'s' if rows > 1 else ''}"
            res = bench_shape(n, k, rows, args.types, args, bw)
            print_case(label, res, rows)
            result["cases"][f"{model}/{weight}/{n}x{k}/rows{rows}"] = res
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
