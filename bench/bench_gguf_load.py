"""Loading GGUF files: llmcore against the gguf package and transformers.

1. Dequantization of one ``rows x cols`` matrix per tensor type: ``llmcore.ops.quant.dequantize``
   (multi-threaded C++ over the bytes) against ``gguf.quants.dequantize`` (NumPy), the path
   transformers' GGUF loader takes.
2. A whole file: ``llmcore.load(file.gguf)`` against transformers'
   ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`` on the same file (a random
   Llama model written the way llama.cpp's converter writes one), each in a fresh child
   process; seconds (median) and peak resident memory (``ru_maxrss``) are quoted, and the
   fp32 logits of the two loads compared.

    python bench/bench_gguf_load.py                     # writes bench/results/gguf_load.json
    python bench/bench_gguf_load.py --hidden 1024 --types Q8_0,Q4_K --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_dequantize(types: list[str], rows: int, cols: int, repeats: int) -> dict:
    import gguf
    import numpy as np
    import torch

    from llmcore.ops import quant
    from tests.test_gguf import encode

    rng = np.random.default_rng(0)
    w = rng.standard_normal((rows, cols), dtype=np.float32) * 0.02
    out = {}
    for name in types:
        qt = gguf.GGMLQuantizationType[name]
        raw = np.ascontiguousarray(encode(w, qt, rng))
        times = {"llmcore": [], "gguf_numpy": []}
        for _ in range(repeats):
            t = time.perf_counter()
            ours = quant.dequantize(name.lower(), raw, (rows, cols), torch.float32)
            times["llmcore"].append(time.perf_counter() - t)
            t = time.perf_counter()
            ref = gguf.quants.dequantize(raw, qt)
            times["gguf_numpy"].append(time.perf_counter() - t)
        same = bool(np.array_equal(ours.numpy(), ref.reshape(rows, cols)))
        med = {k: statistics.median(v) for k, v in times.items()}
        out[name] = {**med, "speedup": med["gguf_numpy"] / med["llmcore"], "bit_identical": same}
        print(
            f"dequantize {name:5s} {rows}x{cols}: llmcore {med['llmcore'] * 1e3:7.1f} ms, "
            f"gguf {med['gguf_numpy'] * 1e3:7.1f} ms ({out[name]['speedup']:.1f}x), same={same}"
        )
    return out


def child(kind: str, path: str) -> None:
    """Load once, print seconds, peak RSS growth (MB) and the logits of a fixed prompt."""
    import torch

    if kind == "hf":
        import transformers

        transformers.logging.set_verbosity_error()
    import llmcore

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    if kind == "llmcore":
        model = llmcore.load(path).model
    else:
        p = Path(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(p.parent), gguf_file=p.name, dtype=torch.float32
        )
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    with torch.no_grad():
        out = model(torch.arange(8).unsqueeze(0))
    logits = (out[0] if isinstance(out, tuple) else getattr(out, "logits", out))[0, -1]
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "logits": logits.tolist()}))


def bench_load(types: list[str], hidden: int, repeats: int) -> dict:
    import gguf

    from tests.test_gguf import hf_model, write_gguf

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in types:
            path = write_gguf(
                hf_model("llama", hidden=hidden),
                Path(tmp) / f"{name}.gguf",
                gguf.GGMLQuantizationType[name],
            )
            runs: dict[str, list[dict]] = {"llmcore": [], "hf": []}
            for _ in range(repeats):
                for kind in runs:  # alternate, so both see the same page cache
                    res = subprocess.run(
                        [sys.executable, __file__, "--child", kind, str(path)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    runs[kind].append(json.loads(res.stdout.strip().splitlines()[-1]))
            sec = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
            peak = {k: statistics.median(r["peak_mb"] for r in v) for k, v in runs.items()}
            a, b = runs["llmcore"][0]["logits"], runs["hf"][0]["logits"]
            rel = max(abs(x - y) for x, y in zip(a, b)) / max(abs(y) for y in b)
            out[name] = {
                "seconds": sec,
                "peak_mb": peak,
                "ratio": sec["llmcore"] / sec["hf"],
                "max_rel_logit_diff": rel,
            }
            print(
                f"load {name:5s}: llmcore {sec['llmcore']:.2f} s, transformers {sec['hf']:.2f} s "
                f"({out[name]['ratio']:.2f}x), peak MB {peak['llmcore']:.0f} vs "
                f"{peak['hf']:.0f}, logits rel diff {rel:.1e}"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--types", default="F16,BF16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K,Q5_K,Q6_K")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=1024, help="hidden size of the loaded model")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gguf_load.json"))
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    types = args.types.split(",")
    quantized = [t for t in types if t not in ("F16", "BF16", "F32")]
    result = {
        "machine": platform.processor() or platform.machine(),
        "dequantize": bench_dequantize(quantized, args.rows, args.cols, args.repeats),
        "load": bench_load(types, args.hidden, args.repeats),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
