"""GPU check of the ``native`` attention's CUDA kernels: correctness against ``math`` and
throughput against torch SDPA (FlashAttention), in one short run.

Needs a CUDA build of torch and llmcore built where nvcc was found
(``llmcore._C.has_cuda_attention``). Writes bench/results/attention_gpu.json (and a copy
under $OUT when that is set).

    python bench/gpu_attention_check.py                 # checks + T=4096, D=128, bf16
    python bench/gpu_attention_check.py --skip-correctness --repeats 50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

# (B, H, Hkv, Tq, Tk, D, causal, extras)
CHECKS = [
    (2, 8, 8, 128, 128, 64, True, {}),
    (1, 8, 2, 200, 200, 128, True, {}),
    (2, 4, 1, 77, 77, 32, False, {}),
    (1, 8, 8, 1, 1000, 128, True, {}),  # decode against a cache
    (2, 6, 3, 5, 300, 80, True, {}),
    (2, 4, 2, 96, 160, 64, True, {"window": 33}),
    (2, 4, 4, 64, 64, 64, False, {"kv_lens": [64, 21]}),
    (1, 4, 4, 64, 64, 64, False, {"mask": True}),
    (1, 4, 4, 130, 130, 256, True, {"no_grad": True}),  # forward-only head dim
]


def check_correctness(dtype: torch.dtype) -> list[dict]:
    from llmcore.builtin.attention import math_attention
    from llmcore.builtin.native_attention import NativeAttention

    attn = NativeAttention()
    rows = []
    for B, H, Hkv, Tq, Tk, D, causal, extra in CHECKS:
        g = torch.Generator(device="cuda").manual_seed(0)
        grad = not extra.get("no_grad")
        q, k, v = (
            torch.randn(B, h, t, D, device="cuda", generator=g).to(dtype).requires_grad_(grad)
            for h, t in ((H, Tq), (Hkv, Tk), (Hkv, Tk))
        )
        kw: dict = {"causal": causal}
        ref_kw: dict = {"causal": causal}
        if "window" in extra:
            kw["window"] = ref_kw["window"] = extra["window"]
        if "mask" in extra:
            m = torch.randn(1, H, Tq, Tk, device="cuda", generator=g)
            kw["mask"] = ref_kw["mask"] = m
        if "kv_lens" in extra:
            lens = torch.tensor(extra["kv_lens"], device="cuda")
            kw["kv_lens"] = lens
            keep = torch.arange(Tk, device="cuda")[None, :] < lens[:, None]  # (B, Tk)
            ref_kw["mask"] = keep[:, None, None, :]
        out = attn(q, k, v, **kw)
        leaves = [t.detach().float().requires_grad_(grad) for t in (q, k, v)]
        want = math_attention(*leaves, **ref_kw)
        errs = {"out": (out.float() - want).abs().max().item()}
        if grad:
            go = torch.randn(want.shape, device="cuda", generator=g)
            out.backward(go.to(dtype))
            want.backward(go)
            for n, t, r in zip(("dq", "dk", "dv"), (q, k, v), leaves):
                errs[n] = (t.grad.float() - r.grad).abs().max().item()
        scale = max(1.0, want.abs().max().item())
        ok = all(e <= 3e-2 * scale * (4 if n != "out" else 1) for n, e in errs.items())
        rows.append(
            {
                "shape": [B, H, Hkv, Tq, Tk, D],
                "causal": causal,
                **{k_: str(v_) for k_, v_ in extra.items()},
                "max_abs_err": errs,
                "ok": ok,
            }
        )
        print(
            f"  {dtype} B={B} H={H}/{Hkv} Tq={Tq} Tk={Tk} D={D} causal={causal} {extra}: {'ok' if ok else 'FAIL'} {errs}"
        )
    return rows


def cuda_time(fn, repeats: int) -> float:
    """Median milliseconds of fn over repeats, timed with CUDA events."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def throughput(B: int, H: int, T: int, D: int, causal: bool, backward: bool, repeats: int) -> dict:
    from llmcore.builtin.native_attention import NativeAttention

    attn = NativeAttention()
    q, k, v = (
        torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
        for _ in range(3)
    )
    go = torch.randn_like(q)
    impls = {
        "native": lambda: attn(q, k, v, causal=causal),
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
    }
    flops = 4 * B * H * T * T * D * (0.5 if causal else 1.0) * (3.5 if backward else 1.0)
    row = {"B": B, "H": H, "T": T, "D": D, "causal": causal, "backward": backward}
    for name, f in impls.items():
        if backward:

            def step(f=f):
                for t in (q, k, v):
                    t.grad = None
                f().backward(go)
        else:

            def step(f=f):
                with torch.no_grad():
                    f()

        ms = cuda_time(step, repeats)
        row[name] = {"ms": ms, "tflops": flops / ms / 1e9}
    row["native_over_sdpa"] = row["native"]["tflops"] / row["sdpa"]["tflops"]
    print(
        f"  B={B} H={H} T={T} D={D} causal={causal} {'fwd+bwd' if backward else 'fwd'}: "
        f"native {row['native']['tflops']:.1f} TFLOP/s, sdpa {row['sdpa']['tflops']:.1f} TFLOP/s "
        f"({row['native_over_sdpa']:.2f}x)"
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-correctness", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attention_gpu.json")
    args = ap.parse_args()
    from llmcore import _C

    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch")
    if not _C.has_cuda_attention:
        sys.exit("llmcore was built without its CUDA kernels (no nvcc at build time)")
    torch.backends.cuda.matmul.allow_tf32 = False
    report: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    t0 = time.time()
    if not args.skip_correctness:
        print("correctness against math (fp32 reference on the same bf16/fp16 inputs)")
        report["correctness"] = check_correctness(torch.bfloat16) + check_correctness(torch.float16)
    print("throughput, bf16 (median of CUDA-event timings)")
    report["throughput"] = [
        throughput(4, 16, 4096, 128, True, False, args.repeats),
        throughput(4, 16, 4096, 128, False, False, args.repeats),
        throughput(4, 16, 4096, 128, True, True, max(5, args.repeats // 4)),
    ]
    report["seconds"] = time.time() - t0
    text = json.dumps(report, indent=2) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], args.out.name).write_text(text)
    bad = [r for r in report.get("correctness", []) if not r["ok"]]
    print(f"wrote {args.out}; {len(bad)} correctness failures")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
