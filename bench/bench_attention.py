"""Attention benchmark: llmcore's ``native`` kernel side by side with torch SDPA.

Both run in the same process on the same inputs, interleaved repeat by repeat, so a busy
neighbour slows both alike; each figure is the median over repeats of the mean time of a
batch of calls. Peak extra memory of a forward+backward is measured in child processes
(``ru_maxrss``) at growing T to show it grows like T, not T^2.

    python bench/bench_attention.py                      # 2 threads, fp32, default cases
    python bench/bench_attention.py --threads 1 --repeats 11
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

# name, B, H, Hkv, Tq, Tk, D, causal, backward
CASES = [
    ("train fwd+bwd", 8, 6, 6, 256, 256, 64, True, True),
    ("train fwd", 8, 6, 6, 256, 256, 64, True, False),
    ("long fwd", 1, 12, 12, 1024, 1024, 64, True, False),
    ("long fwd+bwd", 1, 12, 12, 1024, 1024, 64, True, True),
    ("decode B=1", 1, 12, 12, 1, 1024, 64, True, False),
    ("decode B=8", 8, 12, 12, 1, 1024, 64, True, False),
    ("decode GQA 12/4 B=8", 8, 12, 4, 1, 1024, 64, True, False),
]


def sdpa(q, k, v, causal):
    """torch SDPA with the contract's bottom-right causal alignment."""
    Tq, Tk = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if Tq == 1 or Tq == Tk or not causal:
        # A single decode query sees the whole cache: is_causal must be False there.
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal and Tq > 1, enable_gqa=gqa)
    raise ValueError("bench cases use Tq == Tk or Tq == 1")


def make_step(fn, q, k, v, causal, backward):
    if backward:
        g = torch.randn_like(q)

        def step():
            for t in (q, k, v):
                t.grad = None
            fn(q, k, v, causal).backward(g)

    else:

        def step():
            with torch.no_grad():
                fn(q, k, v, causal)

    return step


CLOCK = time.perf_counter


def time_batch(step, n):
    t0 = CLOCK()
    for _ in range(n):
        step()
    return (CLOCK() - t0) / n


def run_case(case, impls, repeats, dtype):
    name, B, H, Hkv, Tq, Tk, D, causal, backward = case
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, Tq, D, generator=gen).to(dtype).requires_grad_(backward)
    k = torch.randn(B, Hkv, Tk, D, generator=gen).to(dtype).requires_grad_(backward)
    v = torch.randn(B, Hkv, Tk, D, generator=gen).to(dtype).requires_grad_(backward)
    steps = {n: make_step(f, q, k, v, causal, backward) for n, f in impls.items()}
    # Calls per timed batch: about 30 ms of the slower implementation.
    for s in steps.values():
        s()
    one = max(time_batch(s, 1) for s in steps.values())
    n = max(1, min(2000, int(0.03 / max(one, 1e-7))))
    samples = {impl: [] for impl in steps}
    for _ in range(repeats):
        for impl, s in steps.items():  # interleaved
            samples[impl].append(time_batch(s, n))
    med = {impl: statistics.median(v) for impl, v in samples.items()}
    # Attention FLOPs: 2 matmuls of 2*Tq*Tk*D per head (x0.5 when causal and square),
    # backward 2.5x the forward.
    flops = (
        4 * B * H * Tq * Tk * D * (0.5 if causal and Tq == Tk else 1.0) * (3.5 if backward else 1.0)
    )
    return {
        "case": name, "B": B, "H": H, "Hkv": Hkv, "Tq": Tq, "Tk": Tk, "D": D,
        "causal": causal, "backward": backward, "calls_per_sample": n,
        "ms": {k_: v_ * 1e3 for k_, v_ in med.items()},
        "gflops": {k_: flops / v_ / 1e9 for k_, v_ in med.items()},
        "speedup_vs_sdpa": med["sdpa"] / med["native"],
    }  # fmt: skip


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def memory_child(impl: str, T: int) -> None:
    """Print the extra peak RSS (MiB) of one fwd+bwd at length T, B=1 H=4 D=64."""
    from llmcore.builtin.attention import math_attention
    from llmcore.builtin.native_attention import NativeAttention

    torch.set_num_threads(1)
    q, k, v = (torch.randn(1, 4, T, 64, requires_grad=True) for _ in range(3))
    g = torch.randn(1, 4, T, 64)
    fns = {
        "native": lambda q, k, v: NativeAttention()(q, k, v, causal=True),
        "sdpa": lambda q, k, v: sdpa(q, k, v, True),
        "math": lambda q, k, v: math_attention(q, k, v, causal=True),
    }
    fn = fns[impl]
    small = [t.detach()[:, :, :8].clone().requires_grad_() for t in (q, k, v)]  # warm code paths
    fn(*small).sum().backward()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    fn(q, k, v).backward(g)
    print((_status_kib("VmHWM") - before) / 1024)


def peak_memory(lengths):
    rows = []
    for T in lengths:
        row = {"T": T}
        for impl in ("native", "sdpa", "math"):
            if impl == "math" and T > 4096:
                continue  # T^2 scores: 4 heads x 8192^2 x 4 bytes is 1 GiB per copy
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", impl, str(T)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            row[impl] = float(out.stdout.strip().splitlines()[-1])
        row["qkv_grads_mib"] = 6 * 4 * T * 64 * 4 / 2**20  # q, k, v and their grads
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: perf_counter; cpu: process CPU time, robust on a shared machine with --threads 1",
    )
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument("--memory-lengths", default="1024,2048,4096,8192")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attention.json")
    ap.add_argument("--memory-child", nargs=2, metavar=("IMPL", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return

    from llmcore import plugins

    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    native = plugins.create("attention", "native")
    impls = {
        "native": lambda q, k, v, causal: native(q, k, v, causal=causal),
        "sdpa": sdpa,
    }
    dtype = getattr(torch, args.dtype)
    results = []
    print(
        f"threads={args.threads} dtype={args.dtype} clock={args.clock} repeats={args.repeats} (median ms per call)"
    )
    print(
        f"{'case':24s} {'shape (B,H/Hkv,Tq,Tk,D)':26s} {'native':>9s} {'sdpa':>9s} {'sdpa/native':>11s} {'GFLOP/s':>8s}"
    )
    for case in CASES:
        if args.only and args.only not in case[0]:
            continue
        r = run_case(case, impls, args.repeats, dtype)
        results.append(r)
        shape = f"{r['B']},{r['H']}/{r['Hkv']},{r['Tq']},{r['Tk']},{r['D']}"
        print(
            f"{r['case']:24s} {shape:26s} {r['ms']['native']:9.3f} {r['ms']['sdpa']:9.3f} "
            f"{r['speedup_vs_sdpa']:10.2f}x {r['gflops']['native']:8.1f}"
        )
    mem = []
    if args.memory_lengths:
        mem = peak_memory([int(t) for t in args.memory_lengths.split(",")])
        print(
            "\nextra peak RSS of one causal fwd+bwd, B=1 H=4 D=64 (MiB): native and sdpa O(T), textbook math O(T^2)"
        )
        for row in mem:
            textbook = f"{row['math']:8.1f}" if "math" in row else "       -"
            print(
                f"  T={row['T']:6d}  native {row['native']:8.1f}  sdpa {row['sdpa']:8.1f}  math {textbook}"
                f"  (q,k,v,grads {row['qkv_grads_mib']:.1f})"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "bench": "attention",
        "command": "python bench/bench_attention.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": args.threads,
        "clock": args.clock,
        "load_average": list(os.getloadavg()),
        "dtype": args.dtype,
        "repeats": args.repeats,
        "cases": results,
        "peak_memory_mib": mem,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
