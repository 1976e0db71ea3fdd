"""Training speed, side by side with the peers, in one run.

1. End to end: nanoGPT's documented CPU baby-GPT command (``train.py
   config/train_shakespeare_char.py --device=cpu --compile=False ...``, run in a temporary
   copy of ``--nanogpt-dir``) and ``llmcore train --preset shakespeare-char``, alternating,
   ``--repeats`` times each: wall time, ratio, and the val loss at iteration 2000.
2. Training steps (forward + loss + backward + clip + fused AdamW) of llmcore's Transformer and
   Hugging Face ``GPT2LMHeadModel`` at the same shapes, fp32 and bf16 autocast: tokens/s,
   peak memory (RSS of a fresh child process per measurement) and MFU against a matmul
   ceiling measured here. Children alternate llmcore / HF so both see the same machine.

    python bench/bench_train.py --nanogpt-dir PATH/TO/nanoGPT
    python bench/bench_train.py --skip-e2e            # only the step benchmark

Writes a table and ``bench/results/train.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NANOGPT_ARGS = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
]
SHAPES = {
    # name: (n_layer, n_head, n_embd, vocab, block, batch)
    "gpt2-124M": (12, 12, 768, 50257, 256, 4),
    "6x384-v50304": (6, 6, 384, 50304, 256, 8),
}


# -- end to end ----------------------------------------------------------------------------------
def _nanogpt_copy(src: Path, text: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("out*", ".git", "__pycache__"))
    data = dest / "data" / "shakespeare_char"
    if not (data / "train.bin").exists():
        if not (data / "input.txt").exists():
            shutil.copy(text, data / "input.txt")
        subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    return dest


def _env(threads: int | None) -> dict[str, str]:
    """The environment of every child; ``threads`` (the same for both sides) pins the
    OpenMP/torch thread count, which keeps a shared machine's noise down."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_nanogpt(copy: Path, threads: int | None = None) -> dict:
    shutil.rmtree(copy / "out-shakespeare-char", ignore_errors=True)
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "train.py", *NANOGPT_ARGS],
        cwd=copy,
        capture_output=True,
        text=True,
        env=_env(threads),
    )
    wall = time.perf_counter() - t0
    if res.returncode:
        raise RuntimeError(f"nanoGPT failed:\n{res.stderr[-2000:]}")
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", res.stdout)
    step, train, val = evals[-1]
    iters = [float(m) for m in re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms", res.stdout)]
    return {
        "wall_s": wall,
        "step": int(step),
        "train_loss": float(train),
        "val_loss": float(val),
        "median_iter_ms": statistics.median(iters) if iters else None,
    }


#: ``llmcore train --preset shakespeare-char`` with nanoGPT's own recipe: float32, torch SDPA
#: and nanoGPT's learning rate (the preset uses bf16 autocast where native, its own kernels
#: and 3e-3). Run with ``--recipe-run`` to separate the implementation from those choices.
NANOGPT_RECIPE = ["train.dtype=float32", "model.attention=sdpa", "train.optimizer.lr=1e-3"]


def run_llmcore(
    work: Path, cache: Path, threads: int | None = None, overrides: list[str] | tuple = ()
) -> dict:
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "llmcore", "train", "--preset", "shakespeare-char"]
    cmd += ["--out", str(out), "--no-progress", "--set", f"data.cache_dir={cache}"]
    for item in overrides:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=_env(threads))
    wall = time.perf_counter() - t0
    if res.returncode:
        raise RuntimeError(f"llmcore train failed:\n{res.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r.get("val_loss") is not None][-1]
    return {
        "wall_s": wall,
        "step": last["step"],
        "train_loss": last["eval_train_loss"],
        "val_loss": last["val_loss"],
    }


def bench_e2e(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        from llmcore.datasets import tinyshakespeare_path

        copy = _nanogpt_copy(Path(args.nanogpt_dir), tinyshakespeare_path(), tmp / "nanogpt")
        work = tmp / "llmcore"
        work.mkdir()
        cache = tmp / "cache"
        names = ["nanogpt", "llmcore"] + (["llmcore_nanogpt_recipe"] if args.recipe_run else [])
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for i in range(args.repeats):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                if name == "nanogpt":
                    r = run_nanogpt(copy, args.threads)
                elif name == "llmcore":
                    r = run_llmcore(work, cache, args.threads)
                else:
                    r = run_llmcore(work, cache, args.threads, NANOGPT_RECIPE)
                runs[name].append(r)
                print(f"  e2e {name:8s} run {i + 1}: {r['wall_s']:.1f} s, val {r['val_loss']:.4f}")
        med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
        ratios = {
            name: [a["wall_s"] / b["wall_s"] for a, b in zip(runs[name], runs["nanogpt"])]
            for name in names[1:]
        }
        return {
            "nanogpt_command": "python train.py " + " ".join(NANOGPT_ARGS),
            "llmcore_command": "llmcore train --preset shakespeare-char",
            "llmcore_nanogpt_recipe_overrides": NANOGPT_RECIPE if args.recipe_run else None,
            "runs": runs,
            "median_wall_s": med,
            "median_val_loss": {
                k: statistics.median(r["val_loss"] for r in v) for k, v in runs.items()
            },
            "ratio_per_pair": ratios["llmcore"],
            "median_ratio": statistics.median(ratios["llmcore"]),
            "median_ratio_nanogpt_recipe": (
                statistics.median(ratios["llmcore_nanogpt_recipe"]) if args.recipe_run else None
            ),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parity(nanogpt_dir: str, steps: int = 100) -> dict:
    """Same initial weights, same batches, same schedule: llmcore's shakespeare-char model and
    optimizer against nanoGPT's GPT and AdamW, step by step (so a gap in the final val loss
    is the trajectory's chaos, not a different recipe)."""
    import math

    import torch

    sys.path.insert(0, str(Path(nanogpt_dir).resolve()))
    try:
        from model import GPT, GPTConfig  # nanoGPT's model.py
    finally:
        sys.path.pop(0)
    from llmcore.components import build_optimizer, build_schedule
    from llmcore.config import load_config
    from llmcore.model import build_model

    torch.manual_seed(0)
    cfg = load_config("shakespeare-char", NANOGPT_RECIPE)
    ours = build_model(cfg, 65)
    peer = GPT(
        GPTConfig(
            block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False
        )
    )
    names = {
        "wte.weight": "transformer.wte.weight",
        "position.wpe.weight": "transformer.wpe.weight",
        "norm_f.weight": "transformer.ln_f.weight",
    }
    pairs = [
        ("norm1", "ln_1"),
        ("attn.qkv", "attn.c_attn"),
        ("attn.proj", "attn.c_proj"),
        ("norm2", "ln_2"),
        ("mlp.fc", "mlp.c_fc"),
        ("mlp.proj", "mlp.c_proj"),
    ]
    for i in range(4):
        for a, b in pairs:
            names[f"blocks.{i}.{a}.weight"] = f"transformer.h.{i}.{b}.weight"
    sd = peer.state_dict()
    ours.load_state_dict({k: sd[v] for k, v in names.items()}, strict=False)
    opt, sched = build_optimizer(cfg, ours), None
    sched = build_schedule(cfg, opt)
    popt = peer.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")

    def peer_lr(it, lr=1e-3, warm=100, decay=2000, low=1e-4):
        if it < warm:
            return lr * (it + 1) / (warm + 1)
        r = (it - warm) / (decay - warm)
        return low + 0.5 * (1 + math.cos(math.pi * r)) * (lr - low)

    text = (Path(nanogpt_dir) / "data" / "shakespeare_char" / "input.txt").read_text()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text[:200_000]])
    gen = torch.Generator().manual_seed(1)
    diffs = []
    for it in range(steps):
        ix = torch.randint(len(data) - 65, (12,), generator=gen)
        rows = data[ix[:, None] + torch.arange(65)]
        x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
        a = ours.loss(x, y)
        a.backward()
        torch.nn.utils.clip_grad_norm_(list(ours.parameters()), 1.0)
        opt.step()
        opt.zero_grad()
        sched.step()
        for g in popt.param_groups:
            g["lr"] = peer_lr(it)
        _, b = peer(x, y)
        b.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
        popt.step()
        popt.zero_grad()
        diffs.append(abs(a.item() - b.item()))
    return {
        "steps": steps,
        "max_abs_loss_diff": max(diffs),
        "final_loss_llmcore": a.item(),
        "final_loss_nanogpt": b.item(),
    }


# -- training steps ------------------------------------------------------------------------------
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(impl: str, shape: str, attention: str = "native"):
    """The model of ``impl`` at ``shape`` and its ``loss(x, y)`` (``attention``: llmcore's
    attention plugin; HF uses torch SDPA)."""
    import torch

    n_layer, n_head, n_embd, vocab, block, batch = SHAPES[shape]
    torch.manual_seed(0)
    if impl == "llmcore":
        from llmcore.config import Component, Config, ModelConfig
        from llmcore.model import build_model

        cfg = Config(
            model=ModelConfig(
                vocab_size=vocab,
                block_size=block,
                n_layer=n_layer,
                n_head=n_head,
                n_embd=n_embd,
                bias=True,
                dropout=0.0,
                tie_embeddings=True,
                attention=Component(attention),
            )
        )
        cfg.model.mlp.params["approximate"] = "tanh"
        model = build_model(cfg)

        def loss_fn(x, y):
            return model.loss(x, y)

    else:
        from transformers import GPT2Config, GPT2LMHeadModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        conf = GPT2Config(
            vocab_size=vocab,
            n_positions=block,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        conf._attn_implementation = "sdpa"  # torch's fused attention, as llmcore uses
        model = GPT2LMHeadModel(conf)

        def loss_fn(x, y):
            return model(input_ids=x, labels=x).loss  # HF shifts the labels itself

    return model, loss_fn


def _amp(dtype: str):
    """The autocast context factory of ``dtype`` on CPU."""
    import contextlib

    import torch

    if dtype == "bfloat16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _timed_step(loss_fn, opt, params, amp, x, y) -> float:
    """Seconds of one training step: forward + loss, backward, clip, AdamW."""
    import torch

    t0 = time.perf_counter()
    with amp():
        loss = loss_fn(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def interleaved(shape: str, dtype: str, steps: int, attention: str) -> None:
    """Both models in one process, steps alternating llmcore / HF (the machine's load drifts
    over minutes; alternating steps sees both through the same drift)."""
    import torch

    n_layer, n_head, n_embd, vocab, block, batch = SHAPES[shape]
    amp = _amp(dtype)
    runners = {}
    for impl in ("llmcore", "hf"):
        model, loss_fn = build(impl, shape, attention)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        runners[impl] = (loss_fn, opt, list(model.parameters()))
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"llmcore": [], "hf": []}
    for i in range(steps + 1):
        for impl in ("llmcore", "hf") if i % 2 == 0 else ("hf", "llmcore"):
            loss_fn, opt, params = runners[impl]
            x = torch.randint(vocab, (batch, block), generator=gen)
            y = torch.randint(vocab, (batch, block), generator=gen)
            dt = _timed_step(loss_fn, opt, params, amp, x, y)
            if i:
                times[impl].append(dt)
    print(json.dumps({"step_s": times, "tokens_per_step": batch * block}))


def child(impl: str, shape: str, dtype: str, steps: int, attention: str) -> None:
    """One measurement in a fresh process (so peak RSS is this model's alone)."""
    import torch

    torch.manual_seed(0)
    n_layer, n_head, n_embd, vocab, block, batch = SHAPES[shape]
    base = _rss_mb()
    if impl == "both":
        return interleaved(shape, dtype, steps, attention)
    model, loss_fn = build(impl, shape, attention)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    params = list(model.parameters())
    amp = _amp(dtype)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 1):  # the first step warms up allocators and kernels
        x = torch.randint(vocab, (batch, block), generator=gen)
        y = torch.randint(vocab, (batch, block), generator=gen)
        dt = _timed_step(loss_fn, opt, params, amp, x, y)
        if i:
            times.append(dt)
    n_params = sum(p.numel() for p in model.parameters()) - block * n_embd  # no wpe
    flops_per_token = 6 * n_params + 12 * n_layer * n_embd * block
    print(
        json.dumps(
            {
                "step_s": times,
                "peak_rss_mb": _rss_mb(),
                "rss_before_model_mb": base,
                "flops_per_step": flops_per_token * batch * block,
                "tokens_per_step": batch * block,
            }
        )
    )


def matmul_ceiling(dtype_name: str, n: int = 2048, reps: int = 9) -> float:
    """Best GFLOP/s of an n x n x n matmul over ``reps`` tries: what the machine's matmul
    reaches when nothing slows it (a median would move with the load of the moment)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


def _run_child(impl: str, shape: str, dtype: str, args) -> dict:
    """Run one ``--child`` measurement (``impl`` llmcore, hf or both) and return its JSON."""
    cmd = [sys.executable, __file__, "--child", impl, shape, dtype]
    cmd += ["--steps", str(args.steps), "--attention", args.attention]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(args.threads))
    if res.returncode:
        raise RuntimeError(f"{impl} {shape} {dtype} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_steps(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # the ceiling under the children's thread count
    ceil = {d: matmul_ceiling(d) for d in ("float32", "bfloat16")}  # again at the end
    out: dict = {"matmul_ceiling_gflops": ceil, "llmcore_attention": args.attention, "results": {}}
    for shape in args.shapes:
        for dtype in ("float32", "bfloat16"):
            samples: dict[str, list[dict]] = {"llmcore": [], "hf": []}
            for rep in range(args.step_repeats):
                order = ("llmcore", "hf") if rep % 2 == 0 else ("hf", "llmcore")
                for impl in order:
                    samples[impl].append(_run_child(impl, shape, dtype, args))
            row = {}
            for impl, runs in samples.items():
                step = statistics.median(t for r in runs for t in r["step_s"])
                r0 = runs[0]
                gflops = r0["flops_per_step"] / step / 1e9
                row[impl] = {
                    "median_step_s": step,
                    "tokens_per_s": r0["tokens_per_step"] / step,
                    "gflops": gflops,
                    "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                    "model_rss_mb": statistics.median(
                        r["peak_rss_mb"] - r["rss_before_model_mb"] for r in runs
                    ),
                    "all_step_s": [t for r in runs for t in r["step_s"]],
                }
            row["speedup"] = row["llmcore"]["tokens_per_s"] / row["hf"]["tokens_per_s"]
            if args.interleave:  # both models in one process, alternating steps
                both = _run_child("both", shape, dtype, args)
                med = {k: statistics.median(v) for k, v in both["step_s"].items()}
                row["interleaved"] = {
                    "median_step_s": med,
                    "tokens_per_s": {k: both["tokens_per_step"] / v for k, v in med.items()},
                    "speedup": med["hf"] / med["llmcore"],
                    "all_step_s": both["step_s"],
                }
                print(
                    f"  {shape:14s} {dtype:9s} interleaved in one process: "
                    f"x{row['interleaved']['speedup']:.2f}"
                )
            out["results"][f"{shape}/{dtype}"] = row
            print(
                f"  {shape:14s} {dtype:9s} llmcore {row['llmcore']['tokens_per_s']:7.0f} tok/s "
                f"({row['llmcore']['peak_rss_mb']:.0f} MB)  HF {row['hf']['tokens_per_s']:7.0f} "
                f"tok/s ({row['hf']['peak_rss_mb']:.0f} MB)  x{row['speedup']:.2f}"
            )
    # MFU against the better of the ceilings measured before and after the runs.
    for d in ceil:
        ceil[d] = max(ceil[d], matmul_ceiling(d))
    print(f"  matmul ceiling: fp32 {ceil['float32']:.0f} GFLOP/s, bf16 {ceil['bfloat16']:.0f}")
    for key, row in out["results"].items():
        for impl in ("llmcore", "hf"):
            row[impl]["mfu"] = row[impl]["gflops"] / ceil[key.split("/")[1]]
        print(f"  {key:24s} MFU llmcore {row['llmcore']['mfu']:.2f}  HF {row['hf']['mfu']:.2f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nanogpt-dir", help="a nanoGPT checkout (needed for the end-to-end part)")
    p.add_argument("--repeats", type=int, default=2, help="end-to-end runs of each")
    p.add_argument("--step-repeats", type=int, default=2, help="child processes per config")
    p.add_argument("--steps", type=int, default=3, help="timed steps per child")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every child (both sides)")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="also time both models in one process, alternating steps",
    )
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--parity-only", action="store_true", help="only the step-by-step check")
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument(
        "--attention",
        default="native",
        choices=("native", "sdpa"),
        help="llmcore's attention plugin in the step benchmark (HF uses torch SDPA)",
    )
    p.add_argument(
        "--recipe-run",
        action="store_true",
        help="also run llmcore with nanoGPT's recipe (float32, sdpa, lr 1e-3) end to end",
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    p.add_argument("--child", nargs=3, metavar=("IMPL", "SHAPE", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, args.steps, args.attention)
        return

    import torch

    result: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads or torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg(),
        }
    }
    if not args.skip_e2e:
        if not args.nanogpt_dir:
            p.error("--nanogpt-dir is needed for the end-to-end comparison (or --skip-e2e)")
        print("end to end: nanoGPT baby GPT vs llmcore train --preset shakespeare-char")
        result["parity"] = parity(args.nanogpt_dir)
        print(
            f"  parity over {result['parity']['steps']} steps: max |loss diff| "
            f"{result['parity']['max_abs_loss_diff']:.2e}"
        )
        if args.parity_only:
            args.skip_steps = True
        else:
            result["e2e"] = bench_e2e(args)
    if "e2e" in result:
        e = result["e2e"]
        print(
            f"  median wall: nanoGPT {e['median_wall_s']['nanogpt']:.1f} s, llmcore "
            f"{e['median_wall_s']['llmcore']:.1f} s, ratio {e['median_ratio']:.2f}"
        )
        if e["median_ratio_nanogpt_recipe"] is not None:
            print(
                "  llmcore with nanoGPT's recipe (float32, sdpa, lr 1e-3): median ratio "
                f"{e['median_ratio_nanogpt_recipe']:.2f}"
            )
    if not args.skip_steps:
        print("training steps: llmcore Transformer vs HF GPT2LMHeadModel")
        result["steps"] = bench_steps(args)
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
