"""Small CPU kernels of the training step, side by side with torch in one process.

- GELU (tanh approximation), forward and backward: llmcore's C++ kernel against torch's
  eager ``F.gelu`` / ``gelu_backward``, on the MLP activation of a 124M GPT-2 step.
- The LM head's logits product ``h @ W.T`` written into rows of GPT-2's odd width (50,257)
  and into rows padded to a multiple of 16 elements, as the fused loss now does.

Calls alternate repeat by repeat, so a busy neighbour slows both alike; each figure is a
median over repeats.

    python bench/bench_kernels.py --threads 2 --repeats 11
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fns: dict, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm up
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _per_dtype(case, repeats: int) -> dict:
    """``case(dtype, repeats)`` for float32 and bfloat16, keyed by dtype name."""
    return {
        str(dtype).removeprefix("torch."): case(dtype, repeats)
        for dtype in (torch.float32, torch.bfloat16)
    }


def _gelu_case(dtype: torch.dtype, repeats: int) -> dict:
    from llmcore import _C
    from llmcore.ops.dtypes import CODES

    x = (torch.randn(1024, 3072) * 3).to(dtype)
    g = torch.randn_like(x)
    y, dx = torch.empty_like(x), torch.empty_like(x)
    code, n, threads = CODES[dtype], x.numel(), torch.get_num_threads()
    ms = _median_ms(
        {
            "llmcore_forward": lambda: _C.gelu_tanh_forward(
                code, n, x.data_ptr(), y.data_ptr(), threads
            ),
            "torch_forward": lambda: torch._C._nn.gelu(x, approximate="tanh", out=y),
            "llmcore_backward": lambda: _C.gelu_tanh_backward(
                code, n, g.data_ptr(), x.data_ptr(), dx.data_ptr(), threads
            ),
            "torch_backward": lambda: torch.ops.aten.gelu_backward.grad_input(
                g, x, approximate="tanh", grad_input=dx
            ),
        },
        repeats,
    )
    name = str(dtype).removeprefix("torch.")
    print(
        f"  gelu {name:9s} forward {ms['llmcore_forward']:.2f} ms vs torch "
        f"{ms['torch_forward']:.2f}  backward {ms['llmcore_backward']:.2f} vs "
        f"{ms['torch_backward']:.2f}"
    )
    return {
        "ms": ms,
        "speedup_forward": ms["torch_forward"] / ms["llmcore_forward"],
        "speedup_backward": ms["torch_backward"] / ms["llmcore_backward"],
    }


def _logits_case(dtype: torch.dtype, repeats: int) -> dict:
    from llmcore.ops.loss import _row_stride

    n, c, v = 1024, 768, 50257
    h, w = torch.randn(n, c).to(dtype), torch.randn(v, c).to(dtype)
    dense = torch.empty(n, v, dtype=dtype)
    padded = torch.empty(n, _row_stride(v), dtype=dtype)[:, :v]
    ms = _median_ms(
        {
            "rows_of_50257": lambda: torch.mm(h, w.t(), out=dense),
            f"rows_of_{_row_stride(v)}": lambda: torch.mm(h, w.t(), out=padded),
        },
        repeats,
    )
    flops = 2 * n * c * v
    name = str(dtype).removeprefix("torch.")
    print(
        f"  logits {name:9s} "
        + "  ".join(f"{k}: {flops / t / 1e6:.0f} GFLOP/s" for k, t in ms.items())
    )
    return {k: {"ms": t, "gflops": flops / t / 1e6} for k, t in ms.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "kernels.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg(),
        },
        "gelu_1024x3072": _per_dtype(_gelu_case, args.repeats),
        "lm_head_logits_1024x768x50257": _per_dtype(_logits_case, args.repeats),
    }
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
