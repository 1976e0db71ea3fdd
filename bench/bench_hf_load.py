"""Loading a Hugging Face checkpoint: ``llmcore.load_hf`` against transformers'
``AutoModelForCausalLM.from_pretrained`` on the same sharded safetensors folder.

A random Llama-style model (GQA, untied head; about 150M parameters at the default shape) is
saved by transformers as 100 MB shards in each of ``--dtypes`` and loaded in that dtype. Each load runs in a fresh child process that samples its
anonymous resident memory (``RssAnon``; memory-mapped file pages are page cache, not a copy)
through the load and one 8-token forward pass, and reports the peak growth. Loading bf16 as bf16 should cost the weights once, with no fp32 copy. Runs alternate (ours, HF, ours, HF, ...)
and medians are quoted, with the child's peak RSS (``VmHWM``, which counts mapped file pages
too). The fp32 logits of the two loaded models are compared as well.

    python bench/bench_hf_load.py                 # writes bench/results/hf_load.json
    python bench/bench_hf_load.py --layers 2 --hidden 256 --vocab 1000 --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from peak_rss import peak_rss_mb  # noqa: E402  (bench/, run as a script)

ROOT = Path(__file__).resolve().parents[1]


class AnonPeak:
    """The peak anonymous resident memory (``RssAnon``), sampled every millisecond in a
    thread: file pages of memory-mapped safetensors are page cache, not a copy, so they are
    left out."""

    def __init__(self) -> None:
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> float:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.001)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now())


def child(kind: str, folder: str, dtype: str) -> None:
    """Load once, run one forward pass, and print seconds and the peak anonymous memory
    growth (MB) during the load and during load + forward."""
    import torch

    if kind == "hf":
        import transformers

        transformers.logging.set_verbosity_error()
    import llmcore

    # imports and plugin discovery happen before the baseline, on both sides
    llmcore.available("attention")
    if kind == "hf":
        from transformers import LlamaForCausalLM  # noqa: F401

    base = AnonPeak.now()
    sampler = AnonPeak()
    t = time.perf_counter()
    if kind == "llmcore":
        model, _ = llmcore.load_hf(folder, dtype=dtype)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype)
        )
    seconds = time.perf_counter() - t
    loaded = max(sampler.peak, AnonPeak.now())
    peak_rss = peak_rss_mb()  # mapped file pages too
    # a forward pass touches every weight, also any that are still memory-mapped
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long))
    first_forward = time.perf_counter() - t
    after = sampler.stop()
    params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "seconds": seconds,
                "seconds_to_first_logits": first_forward,
                "rss_mb_load": loaded - base,
                "rss_mb": after - base,
                "peak_rss_mb": peak_rss,
                "params": params,
            }
        )
    )


def run_child(kind: str, folder: Path, dtype: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--dir", str(folder), "--dtype", dtype],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def logits_diff(folder: Path) -> float:
    """Max |logits diff| of the fp32 loads of both on one 128-token sequence."""
    import torch
    import transformers

    import llmcore

    transformers.logging.set_verbosity_error()
    ours, cfg = llmcore.load_hf(folder, dtype="float32")
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.randint(
        0, cfg.model.vocab_size, (1, 128), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        return (ours(ids) - ref(ids).logits).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("llmcore", "hf"))
    parser.add_argument("--dir")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "hf_load.json"))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.dtype)
        return

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 2.75),
        num_hidden_layers=args.layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    results: dict = {
        "machine": platform.processor() or platform.machine(),
        "command": " ".join(sys.argv[1:]),
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
        for dtype in args.dtypes.split(","):  # the checkpoint stored in dtype, loaded as it
            folder = Path(tmp) / dtype
            model.to(getattr(torch, dtype)).save_pretrained(folder, max_shard_size="100MB")
            shards = len(list(folder.glob("*.safetensors")))
            size_mb = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20
            runs: dict[str, list[dict]] = {"llmcore": [], "hf": []}
            for _ in range(args.repeats):
                for kind in runs:
                    runs[kind].append(run_child(kind, folder, dtype))
            results["params"] = runs["llmcore"][0]["params"]
            summary = {}
            for kind, rs in runs.items():
                summary[kind] = {
                    "seconds_median": statistics.median(r["seconds"] for r in rs),
                    "seconds_to_first_logits_median": statistics.median(
                        r["seconds_to_first_logits"] for r in rs
                    ),
                    "rss_mb_median": statistics.median(r["rss_mb"] for r in rs),
                    "rss_mb_after_load_median": statistics.median(r["rss_mb_load"] for r in rs),
                    "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in rs),
                    "seconds": [round(r["seconds"], 3) for r in rs],
                    "rss_mb": [round(r["rss_mb"], 1) for r in rs],
                }
            summary["time_ratio_llmcore_over_hf"] = (
                summary["llmcore"]["seconds_median"] / summary["hf"]["seconds_median"]
            )
            summary["to_logits_ratio_llmcore_over_hf"] = (
                summary["llmcore"]["seconds_to_first_logits_median"]
                / summary["hf"]["seconds_to_first_logits_median"]
            )
            summary["rss_ratio_llmcore_over_hf"] = summary["llmcore"]["rss_mb_median"] / max(
                summary["hf"]["rss_mb_median"], 1e-9
            )
            summary.update(shards=shards, weights_mb=round(size_mb, 1))
            results["runs"][dtype] = summary
            if dtype == "float32":
                results["fp32_max_abs_logits_diff"] = logits_diff(folder)

    print(
        f"{results['params'] / 1e6:.0f}M params, 100 MB shards; {args.repeats} alternating "
        "runs, medians; target: load ratio <= 1.0"
    )
    print(
        f"{'stored/as':<10} {'':<8} {'load s':>8} {'to logits s':>12} {'peak anon MB':>13} "
        f"{'after load':>11} {'peak RSS MB':>13}"
    )
    for dtype, s in results["runs"].items():
        for kind in ("llmcore", "hf"):
            print(
                f"{dtype:<10} {kind:<8} {s[kind]['seconds_median']:>8.2f} "
                f"{s[kind]['seconds_to_first_logits_median']:>12.2f} "
                f"{s[kind]['rss_mb_median']:>13.0f} {s[kind]['rss_mb_after_load_median']:>11.0f} "
                f"{s[kind]['peak_rss_mb_median']:>13.0f}"
            )
        print(
            f"{'':<10} {'ratio':<8} {s['time_ratio_llmcore_over_hf']:>8.2f} "
            f"{s['to_logits_ratio_llmcore_over_hf']:>12.2f} {s['rss_ratio_llmcore_over_hf']:>13.2f}"
        )
    if "fp32_max_abs_logits_diff" in results:
        diff = results["fp32_max_abs_logits_diff"]
        print(f"fp32 max |logits diff| llmcore vs transformers: {diff:.2e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
