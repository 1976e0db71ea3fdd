"""Speed under a competing load: llmcore's kernels and a training step, idle and with one
busy process per CPU, under four OpenMP wait policies: llmcore's default (spin 10,000 times,
then sleep), sleeping at once (``OMP_WAIT_POLICY=PASSIVE``), libgomp's own long spin
(``GOMP_SPINCOUNT=300000``) and a spin of 30,000. Idle speed and loaded speed pull apart:
the policy is the one that keeps both.

The OpenMP runtime reads its wait policy once, when torch loads it, so each measurement runs
in a fresh child process with its own environment. The busy processes are plain Python
``while`` loops, bounded in time and killed at the end, also on Ctrl-C or SIGTERM.

Measured, each as a median over ``--repeats`` calls after a warm-up:
  attention   the ``native`` attention plugin, forward + backward (causal)
  loss        llmcore's fused softmax cross-entropy kernel, with gradients
  gelu        llmcore's tanh GELU kernel, forward + backward
  train_step  forward + fused loss + backward + clip + AdamW of the default preset's model
              (shakespeare-char), in its configured dtype

    python bench/bench_under_load.py                       # the full measurement
    python bench/bench_under_load.py --repeats 2 --tiny    # a quick smoke test

Target: ``train_step`` loaded/idle at most 3 with the default policy. Writes a table and
``bench/results/under_load.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = {
    # name: environment of the child (None: the variable is removed, so llmcore's default holds)
    "llmcore": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},  # llmcore's: a 10000 spin
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"},  # sleep at once
    "spin": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "300000"},  # libgomp's own default
    "spin30k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "30000"},
}
BUSY_LOOP = (
    "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
)


def _kernel(candidates: list[tuple[str, str]]):
    """The first ``module.attribute`` of ``candidates`` that imports: the kernels' Python
    faces are moving between modules (``llmcore.ops``), and the bench should run on either."""
    for module, attr in candidates:
        with contextlib.suppress(ImportError, AttributeError):
            return getattr(importlib.import_module(module), attr)
    names = ", ".join(f"{m}.{a}" for m, a in candidates)
    raise SystemExit(f"bench_under_load: none of {names} exists; update _kernel's candidates")


# -- the child: one policy, one load, one thread count -----------------------------------------
def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _kernel_cases(tiny: bool) -> dict:
    import torch

    import llmcore

    gelu = _kernel([("llmcore.ops.activation", "gelu"), ("llmcore.builtin.activations", "gelu")])
    xent = _kernel(
        [
            ("llmcore.ops.loss", "softmax_xent_"),
            ("llmcore.ops.loss", "_softmax_xent_"),
            ("llmcore.model", "_softmax_xent_"),
        ]
    )
    attention = llmcore.create("attention", "native")
    # the default preset's shapes: (batch, heads, seq, head_dim) 12, 4, 64, 32; vocabulary 65
    b, h, t, d = (2, 2, 16, 8) if tiny else (12, 4, 64, 32)
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    go = torch.randn(b, h, t, d)

    def attend():
        attention(q, k, v, causal=True, scale=d**-0.5).backward(go)

    rows, vocab = b * t, 65  # (tokens, vocabulary)
    logits0 = torch.randn(rows, vocab)
    logits = torch.empty_like(logits0)
    targets = torch.randint(0, vocab, (rows,))

    def loss():
        logits.copy_(logits0)
        xent(logits, targets, -100, True)

    x = torch.randn(b * t, 4 * h * d, requires_grad=True)  # the MLP's hidden activations
    gy = torch.randn_like(x)

    def act():
        gelu(x, approximate="tanh").backward(gy)

    return {"attention": attend, "loss": loss, "gelu": act}


def _train_step(tiny: bool):
    import torch

    import llmcore
    from llmcore.train.setup import autocast_dtype

    extra = ["model.n_layer=1", "model.n_embd=32", "model.block_size=16"] if tiny else []
    cfg = llmcore.load_config("shakespeare-char", extra)
    model = llmcore.build_model(cfg, 65)
    optimizer = llmcore.build_optimizer(cfg, model)
    dtype = autocast_dtype(cfg.train.dtype, torch.device("cpu"))
    shape = (cfg.train.batch_size, cfg.model.block_size)
    x, y = torch.randint(0, 65, shape), torch.randint(0, 65, shape)

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = model.loss(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, str(dtype or torch.float32).removeprefix("torch.")


def child(args: argparse.Namespace) -> None:
    # llmcore first, so its OpenMP wait policy is set before torch loads libgomp
    import llmcore  # noqa: F401, I001
    import torch

    if args.threads[0]:
        torch.set_num_threads(args.threads[0])
    cases = _kernel_cases(args.tiny)
    step, dtype = _train_step(args.tiny)
    cases["train_step"] = step
    ms = {name: _median_ms(fn, args.repeats) for name, fn in cases.items()}
    print(json.dumps({"ms": ms, "threads": torch.get_num_threads(), "train_dtype": dtype}))


# -- the parent: busy processes and children ---------------------------------------------------
@contextlib.contextmanager
def busy_processes(n: int, seconds: float):
    """``n`` busy-loop processes, each ending by itself after ``seconds`` and killed on exit."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUSY_LOOP.format(seconds=seconds)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]
    try:
        time.sleep(0.5)  # let them reach their loops before the measurement starts
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _child_env(policy: str) -> dict[str, str]:
    env = dict(os.environ, OMP_DISPLAY_ENV="VERBOSE")
    for key, value in POLICIES[policy].items():
        env.pop(key, None)
        if value is not None:
            env[key] = value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _openmp_settings(stderr: str) -> dict[str, str]:
    """What the OpenMP runtime reported it uses (its OMP_DISPLAY_ENV block)."""
    out = {}
    for line in stderr.splitlines():
        key, _, value = line.strip().partition(" = ")
        if key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
            out.setdefault(key, value.strip("'"))
    return out


def measure(args: argparse.Namespace, policy: str, threads: int, loaded: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--repeats", str(args.repeats)]
    cmd += ["--threads", str(threads)] + (["--tiny"] if args.tiny else [])
    n_busy = len(os.sched_getaffinity(0)) if loaded else 0
    with busy_processes(n_busy, args.timeout):
        proc = subprocess.run(
            cmd, env=_child_env(policy), capture_output=True, text=True, timeout=args.timeout
        )
    if proc.returncode != 0:
        raise SystemExit(f"bench_under_load: the child failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["openmp"] = _openmp_settings(proc.stderr)
    result["busy_processes"] = n_busy
    return result


def _interrupt(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so the busy processes are killed either way."""
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per case")
    ap.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="0: torch's default")
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (a smoke test)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "under_load.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    signal.signal(signal.SIGTERM, _interrupt)
    variants: dict = {}
    for policy in args.policies:
        for threads in args.threads:
            idle = measure(args, policy, threads, loaded=False)
            loaded = measure(args, policy, threads, loaded=True)
            ratio = {k: loaded["ms"][k] / idle["ms"][k] for k in idle["ms"]}
            variants[f"{policy}/threads={idle['threads']}"] = {
                "idle": idle,
                "loaded": loaded,
                "loaded_over_idle": ratio,
            }
            print(f"{policy:8s} threads={idle['threads']} ({idle['openmp']})")
            for k in idle["ms"]:
                print(
                    f"  {k:11s} idle {idle['ms'][k]:9.2f} ms  loaded {loaded['ms'][k]:9.2f} ms"
                    f"  x{ratio[k]:.2f}"
                )
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "repeats": args.repeats,
        "tiny": args.tiny,
        "target": "train_step loaded/idle <= 3 under one busy process per CPU",
        "variants": variants,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
