"""Loading GGUF files: llmcore against the gguf package and transformers.

1. Dequantization of one ``rows x cols`` matrix per tensor type: ``llmcore.ops.quant.dequantize``
   (multi-threaded C++ over the bytes) against ``gguf.quants.dequantize`` (NumPy), the path
   transformers' GGUF loader takes.
2. A whole file: ``llmcore.load(file.gguf)`` against transformers'
   ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=..., dtype=float32)`` on the same
   file (a random Llama of about 150M parameters at the default shape, written the way
   llama.cpp's converter writes one, per ``--load-types``), both loading into float32 and
   dequantizing on load. Each load runs in a fresh child process, alternating llmcore and
   transformers; medians of ``--repeats`` are quoted with the child's peak resident memory
   (``VmHWM``), and the fp32 logits of the two loads compared. Target: llmcore at most
   0.5x transformers' time.

    python bench/bench_gguf_load.py                     # writes bench/results/gguf_load.json
    python bench/bench_gguf_load.py --types Q8_0 --rows 256 --cols 256 --hidden 256 \
        --layers 2 --vocab 1000 --load-types F16,Q8_0 --out /tmp/smoke.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_rss import peak_rss_mb  # noqa: E402  (bench/, run as a script)

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
    """Load once and print seconds, the child's peak resident memory (``VmHWM``: the
    whole process, and its growth over the imports) and the logits of a fixed prompt."""
    import torch

    if kind == "hf":
        import transformers

        transformers.logging.set_verbosity_error()
        from transformers import LlamaForCausalLM  # noqa: F401 - imported before the clock
    import llmcore

    llmcore.available("attention")  # plugin discovery before the clock, as HF's imports
    base = peak_rss_mb()
    t = time.perf_counter()
    if kind == "llmcore":
        model = llmcore.load(path).model
    else:
        p = Path(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(p.parent), gguf_file=p.name, dtype=torch.float32
        )
    seconds = time.perf_counter() - t
    peak = peak_rss_mb()
    with torch.no_grad():
        out = model(torch.arange(8).unsqueeze(0))
    logits = (out[0] if isinstance(out, tuple) else getattr(out, "logits", out))[0, -1]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": peak,
                "peak_rss_growth_mb": peak - base,
                "logits": logits.tolist(),
            }
        )
    )


def llama(hidden: int, layers: int, vocab: int):
    """A random Llama of about 150M parameters at the defaults (GQA 16/4, untied head)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75),
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def bench_load(types: list[str], model, repeats: int) -> dict:
    import gguf

    from tests.test_gguf import write_gguf

    out = {"params": sum(p.numel() for p in model.parameters())}
    with tempfile.TemporaryDirectory() as tmp:
        for name in types:
            path = write_gguf(model, Path(tmp) / f"{name}.gguf", gguf.GGMLQuantizationType[name])
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
            med = {
                key: {k: statistics.median(r[key] for r in v) for k, v in runs.items()}
                for key in ("seconds", "peak_rss_mb", "peak_rss_growth_mb")
            }
            sec, peak = med["seconds"], med["peak_rss_mb"]
            a, b = runs["llmcore"][0]["logits"], runs["hf"][0]["logits"]
            rel = max(abs(x - y) for x, y in zip(a, b)) / max(abs(y) for y in b)
            out[name] = {
                **med,
                "seconds_each": {k: [round(r["seconds"], 3) for r in v] for k, v in runs.items()},
                "file_mb": round(path.stat().st_size / 2**20, 1),
                "ratio": sec["llmcore"] / sec["hf"],
                "max_rel_logit_diff": rel,
            }
            print(
                f"load {name:5s} ({out[name]['file_mb']:.0f} MB): llmcore {sec['llmcore']:.2f} s, "
                f"transformers {sec['hf']:.2f} s ({out[name]['ratio']:.2f}x; target <= 0.5x), "
                f"peak RSS MB {peak['llmcore']:.0f} vs {peak['hf']:.0f} (growth "
                f"{med['peak_rss_growth_mb']['llmcore']:.0f} vs "
                f"{med['peak_rss_growth_mb']['hf']:.0f}), logits rel diff {rel:.1e}"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--types", default="F16,BF16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K,Q5_K,Q6_K")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--load-types", default="F32,F16,BF16,Q8_0,Q4_0")
    ap.add_argument("--hidden", type=int, default=1024, help="hidden size of the loaded model")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gguf_load.json"))
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    quantized = [t for t in args.types.split(",") if t not in ("F16", "BF16", "F32")]
    result = {
        "machine": platform.processor() or platform.machine(),
        "command": " ".join(sys.argv[1:]),
        "dequantize": bench_dequantize(quantized, args.rows, args.cols, args.repeats),
        "load": bench_load(
            [t for t in args.load_types.split(",") if t],
            llama(args.hidden, args.layers, args.vocab),
            args.repeats,
        ),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
