"""Quantized inference, llmcore against llama.cpp on the same GGUF files.

1. Speed: random-weight Llama shapes (SmolLM2-135M: 30 layers, width 576, 9/3 heads, vocab
   49,152, ffn 1536, tied; TinyLlama-1.1B: 22 layers, width 2048, 32/4 heads, vocab 32,000,
   ffn 5632, untied) written by llmcore's quantizer as GGUF Q8_0, Q4_0 and Q4_K (llama.cpp's
   choice of types: see llmcore.quant.export). For each file, alternating child processes
   of llmcore (``llmcore.load(file, quantized=True)``, its generation engine, greedy) and
   llama.cpp (llama-cpp-python in its own venv, bench/llamacpp_peer.py, AMX repacking off),
   2 threads each: decode tokens/s at batch 1 (32-token prompt, 128 new tokens), prefill
   tokens/s (512-token prompt), decode at batch 8, peak RSS; medians of --repeats runs.
   Effective weight bandwidth = bytes of weights read per decoded token x tokens/s, against
   the read bandwidth of a 2-thread sum over a large array measured in the same run; the
   time per token beyond those reads (Python dispatch, attention, sampling) is quoted too.
2. Accuracy: a small BPE Llama trained by llmcore on Tiny Shakespeare (its first 90%), written
   as Q8_0 and Q4_0 by ``llmcore quantize``; perplexity on the last 10% for the dense run and
   both files in llmcore, and for an F16 file and the same Q4_0 file in llama.cpp, so that
   llmcore's Q4_0 increase is set against llama.cpp's own.

    python bench/bench_quant.py --smoke                 # tiny shapes, seconds
    python bench/bench_quant.py --shape smollm          # one shape; writes bench/results/quant.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKER = ROOT / "bench" / "bench_quant_workers.py"

SHAPES = {
    "smollm": dict(layers=30, width=576, heads=9, kv=3, vocab=49152, ffn=1536, tied=True),
    "tinyllama": dict(layers=22, width=2048, heads=32, kv=4, vocab=32000, ffn=5632, tied=False),
    "smoke": dict(layers=2, width=256, heads=4, kv=2, vocab=1024, ffn=512, tied=True),
}
TASKS = ("decode", "prefill", "batch8")


def tokenizer():
    """A small byte-level BPE (its unused embedding rows get placeholder tokens in GGUF)."""
    from llmcore.builtin.bpe import BPETokenizer

    text = (ROOT / "llmcore" / "datasets" / "tinyshakespeare.txt").read_text()[:20000]
    return BPETokenizer.train([text], 300, progress=False)


def write_shape(shape: dict, qtypes: list[str], folder: Path) -> dict[str, Path]:
    """The random-weight model of ``shape`` as one GGUF file per type."""
    import torch

    from llmcore.gguf import save_gguf
    from llmcore.hf import archs
    from llmcore.model import build_model
    from llmcore.quant.export import tensor_type

    h = {
        "model_type": "llama", "hidden_size": shape["width"], "intermediate_size": shape["ffn"],
        "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape["kv"], "vocab_size": shape["vocab"],
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": shape["tied"],
    }  # fmt: skip
    torch.manual_seed(0)
    model = build_model(archs.model_config(archs.normalize(h, "bench shape")))
    with torch.no_grad():  # std 0.1, not 0.02: logits spread enough that greedy ids vary,
        for p in model.parameters():  # so the engines' agreement on them means something
            if p.dim() == 2:
                p.mul_(5.0)
    tok = tokenizer()
    files = {}
    for q in qtypes:
        files[q] = folder / f"model-{q}.gguf"
        save_gguf(model, tok, files[q], q, tensor_type=tensor_type(shape["tied"]))
    return files


def weight_bytes(path: Path) -> int:
    """Bytes of weights a decode step reads: every tensor but an untied token embedding
    (of which only one row is gathered)."""
    from llmcore.gguf.reader import GGUFFile

    with GGUFFile(path) as f:
        tied = "output.weight" not in f.tensors
        return sum(
            i.stop - i.start for i in f.tensors.values() if i.name != "token_embd.weight" or tied
        )


def read_bandwidth(threads: int, mib: int) -> float:
    """GB/s of a ``threads``-thread float32 sum over ``mib`` MiB (median of 5)."""
    import torch

    torch.set_num_threads(threads)
    a = torch.ones(mib * (1 << 20) // 4)
    a.sum()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        times.append(time.perf_counter() - t)
    return a.numel() * 4 / statistics.median(times) / 1e9


def worker(engine: str, task: str, path: Path, threads: int, env: dict) -> dict:
    """One child process of ``engine`` running ``task`` on ``path``."""
    if engine == "llmcore":
        python = sys.executable
    else:
        from bench.llamacpp_peer import peer_python

        python = str(peer_python())
    cmd = [python, str(WORKER), engine, task, str(path), str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{engine} {task} on {path.name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def child_env(smoke: bool, threads: int, extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    if smoke:
        env["LLMCORE_BENCH_SMOKE"] = "1"
    return {**env, **(extra or {})}


def bench_speed(args, folder: Path) -> dict:
    engines = ["llmcore"] + ([] if args.no_peer else ["llamacpp"])
    env = child_env(args.smoke, args.threads)
    out = {"read_gb_s": read_bandwidth(args.threads, 64 if args.smoke else 1024), "shapes": {}}
    print(f"read bandwidth ({args.threads} threads): {out['read_gb_s']:.1f} GB/s")
    for name in args.shapes:
        files = write_shape(SHAPES[name], args.types, folder)
        rows = {}
        for q, path in files.items():
            wb = weight_bytes(path)
            row = {"weight_bytes_per_token": wb}
            for task in TASKS:
                runs = {e: [] for e in engines}
                for _ in range(args.repeats):
                    for e in engines:  # alternating, so drifts in load hit both alike
                        runs[e].append(worker(e, task, path, args.threads, env))
                for e in engines:
                    tps = statistics.median(r["tokens_per_s"] for r in runs[e])
                    rss = max(r["peak_rss_mb"] for r in runs[e])
                    row[f"{e}_{task}_tok_s"] = tps
                    row[f"{e}_{task}_peak_rss_mb"] = rss
                    if task == "decode":
                        row[f"{e}_decode_weight_gb_s"] = wb * tps / 1e9
                        # per token, the time beyond reading the weights once at the
                        # measured bandwidth: dispatch, attention, sampling
                        floor = wb / (out["read_gb_s"] * 1e9)
                        row[f"{e}_decode_ms_beyond_reads"] = (1 / tps - floor) * 1e3
                if task == "decode" and "llamacpp" in engines:  # how long the ids agree
                    a, b = runs["llmcore"][0]["ids"], runs["llamacpp"][0]["ids"]
                    row["greedy_ids_agree"] = next(
                        (i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))
                    )
                if "llamacpp" in engines:
                    row[f"{task}_ratio"] = (
                        row[f"llmcore_{task}_tok_s"] / row[f"llamacpp_{task}_tok_s"]
                    )
            rows[q] = row
            print(f"{name} {q}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()))
        out["shapes"][name] = rows
    return out


def train_small(folder: Path, smoke: bool) -> Path:
    """A small BPE Llama trained on Tiny Shakespeare's first 90% (the run folder)."""
    from llmcore.config import config_from_dict
    from llmcore.train import train

    steps = 20 if smoke else 400
    raw = {
        "tokenizer": {"name": "bpe", "vocab_size": 512},
        "model": {
            "block_size": 128, "n_layer": 2 if smoke else 4, "n_head": 4, "n_kv_head": 2,
            "n_embd": 128, "bias": False, "tie_embeddings": True, "norm": "rmsnorm",
            "mlp": "swiglu", "position": "rope",
        },
        "data": {"val_fraction": 0.1},
        "train": {
            "max_iters": steps, "batch_size": 16, "eval_interval": steps, "eval_iters": 2,
            "device": "cpu", "out_dir": str(folder), "name": "ppl", "sample_tokens": 0,
            "schedule": {"name": "cosine", "warmup_iters": steps // 10, "decay_iters": steps,
                         "min_lr": 1e-4},
        },
    }  # fmt: skip
    return train(config_from_dict(raw, "bench_quant"), progress=False)


def bench_ppl(args, folder: Path) -> dict:
    import llmcore
    from llmcore.gguf import save_gguf
    from llmcore.quant.export import quantize_model

    run = train_small(folder, args.smoke)
    loaded = llmcore.load(run)
    text = (ROOT / "llmcore" / "datasets" / "tinyshakespeare.txt").read_text()
    held_out = text[int(len(text) * 0.9) :]
    ids = loaded.tokenizer.encode(held_out[:4000] if args.smoke else held_out)
    ids_file = folder / "held_out_ids.json"
    ids_file.write_text(json.dumps(ids))
    ctx = loaded.config.model.block_size
    env = child_env(args.smoke, args.threads, {"LLMCORE_BENCH_IDS": str(ids_file),
                                               "LLMCORE_BENCH_CTX": str(ctx)})  # fmt: skip
    files = {q: quantize_model(run, q, folder / f"ppl-{q}.gguf") for q in ("q8_0", "q4_0")}
    f16 = save_gguf(loaded.model, loaded.tokenizer, folder / "ppl-f16.gguf", "f16")
    out = {"tokens": len(ids), "llmcore_dense": worker("llmcore", "ppl", run, 1, env)["ppl"]}
    for q, path in files.items():
        out[f"llmcore_{q}"] = worker("llmcore", "ppl", path, args.threads, env)["ppl"]
        out[f"llmcore_{q}_increase"] = out[f"llmcore_{q}"] / out["llmcore_dense"] - 1
    if not args.no_peer:
        out["llamacpp_f16"] = worker("llamacpp", "ppl", f16, args.threads, env)["ppl"]
        out["llamacpp_q4_0"] = worker("llamacpp", "ppl", files["q4_0"], args.threads, env)["ppl"]
        out["llamacpp_q4_0_increase"] = out["llamacpp_q4_0"] / out["llamacpp_f16"] - 1
    print("perplexity: " + ", ".join(f"{k}={v:.4g}" for k, v in out.items()))
    return out


def shown_path(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it (results name no machine)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def cpu() -> dict:
    """The CPU the figures come from: its model and the instruction sets the kernels use."""
    info: dict = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")
    info.update(
        model=fields.get("model name", ""),
        family=fields.get("cpu family", ""),
        model_number=fields.get("model", ""),
        isa=[f for f in wanted if f in flags],
    )
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and runs (seconds)")
    ap.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    ap.add_argument("--types", default="q8_0,q4_0,q4_k")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="llmcore only")
    ap.add_argument("--no-ppl", action="store_true", help="skip the perplexity check")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quant.json")
    args = ap.parse_args()
    if args.smoke:
        args.shapes, args.repeats = ["smoke"], 1
    else:
        args.shapes = ["smollm", "tinyllama"] if args.shape == "both" else [args.shape]
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        result = {"args": {k: str(v) for k, v in vars(args).items()}, "cpu": cpu()}
        result["args"]["out"] = shown_path(args.out)
        result["speed"] = bench_speed(args, Path(tmp))
        if not args.no_ppl:
            result["perplexity"] = bench_ppl(args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
