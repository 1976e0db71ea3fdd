"""Pretrain, SFT, reward model, DPO and PPO on the Shakespeare speaker task; curves as PNG.

    python examples/rlhf_shakespeare/run.py [--out runs/rlhf_shakespeare] [--names 8]

Every stage runs through the ``llmcore`` command line with the YAML configs beside this
script; the scores are exact (``format`` and ``names_character`` rewards on sampled answers).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = [
    "ROMEO",
    "JULIET",
    "GLOUCESTER",
    "MENENIUS",
    "PETRUCHIO",
    "ISABELLA",
    "LEONTES",
    "CORIOLANUS",
]


def cli(*argv: str) -> None:
    from llmcore.cli import main

    print("$ llmcore " + " ".join(argv), flush=True)
    start = time.perf_counter()
    if main(list(argv)) != 0:
        raise SystemExit(f"llmcore {argv[0]} failed")
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


def rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def series(rs: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rs if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(run: Path, keys: list[str], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = rows(run)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys):
        x, y = series(rs, key)
        ax.plot(x, y, "o-" if len(x) < 30 else "-", ms=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_summary(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(summary)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.38
    for i, key in enumerate(["sample_format", "sample_names_character"]):
        xs = [j + (i - 0.5) * width for j in range(len(stages))]
        ax.bar(xs, [summary[s][key] for s in stages], width, label=key)
    ax.set_xticks(range(len(stages)), stages, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.axhline(1 / len(NAMES), color="gray", ls="--", lw=1, label="chance of naming right")
    ax.legend(fontsize=8)
    ax.set_title("sampled answers: format accuracy and true score")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/rlhf_shakespeare", help="folder of all runs")
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # small ops: more threads only wait on each other
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    from llmcore.datasets import tinyshakespeare_path
    from llmcore.finetune.demo import make_task

    files = make_task(tinyshakespeare_path().read_text(), out / "data", names=NAMES, seed=0)
    runs = {k: out / k for k in ("base", "sft", "reward", "dpo", "ppo", "ppo_rm")}
    if not (runs["base"] / "ckpt").exists():
        cli("train", str(HERE / "pretrain.yaml"), "--out", str(runs["base"]), "--no-progress")
    stages = [
        ("sft", "sft", runs["base"], files["sft"], []),
        ("reward", "reward", runs["sft"], files["pairs"], []),
        ("dpo", "dpo", runs["sft"], files["pairs"], []),
        ("ppo", "ppo", runs["sft"], files["prompts"], []),
        (
            "ppo_rm",
            "ppo",
            runs["sft"],
            files["prompts"],
            [f"finetune.ppo.reward_model={runs['reward']}"],
        ),
    ]
    for name, method, base, data, extra in stages:
        if (runs[name] / "ckpt").exists():
            continue
        sets = [f"finetune.base={base}", f"finetune.data={data}", *extra]
        cli("finetune", method, str(HERE / f"{name}.yaml"), "--out", str(runs[name]), "--no-progress",
            *[a for s in sets for a in ("--set", s)])  # fmt: skip
    if (runs["dpo"] / "ckpt").exists() and not (out / "dpo-merged" / "ckpt").exists():
        cli("merge-lora", str(runs["dpo"]), "--out", str(out / "dpo-merged"))

    evals = {
        k: [r for r in rows(runs[k]) if "sample_names_character" in r]
        for k in ("sft", "dpo", "ppo", "ppo_rm")
    }
    # DPO and PPO sample held-out prompts of their own data: their step 0 is the SFT model
    summary = {"pretrained": evals["sft"][0], "SFT": evals["sft"][-1]}
    for key, label in (("dpo", "DPO"), ("ppo", "PPO exact"), ("ppo_rm", "PPO RM")):
        summary[f"{label}: before"] = evals[key][0]
        summary[f"{label}: after"] = evals[key][-1]
    summary = {
        k: {m: v[m] for m in ("sample_format", "sample_names_character")}
        for k, v in summary.items()
    }
    rm = [r for r in rows(runs["reward"]) if "val_accuracy" in r][-1]["val_accuracy"]
    ppo_kl = {k: max(r["kl"] for r in rows(runs[k]) if "kl" in r) for k in ("ppo", "ppo_rm")}
    result = {"scores": summary, "reward_model_val_accuracy": rm, "ppo_max_kl": ppo_kl}
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))

    plot_run(
        runs["sft"],
        ["val_loss", "sample_format", "sample_names_character"],
        "SFT",
        HERE / "sft.png",
    )
    plot_run(
        runs["reward"],
        ["train_loss", "val_loss", "val_accuracy"],
        "reward model",
        HERE / "reward.png",
    )
    plot_run(
        runs["dpo"],
        ["train_loss", "reward_margin", "sample_format", "sample_names_character"],
        "DPO (LoRA)",
        HERE / "dpo.png",
    )
    ppo_keys = ["mean_score", "sample_names_character", "kl", "entropy", "clip_frac", "value_loss"]
    plot_run(runs["ppo"], ppo_keys, "PPO against the exact reward", HERE / "ppo.png")
    plot_run(runs["ppo_rm"], ppo_keys, "PPO against the reward model", HERE / "ppo_rm.png")
    plot_summary(summary, HERE / "summary.png")


if __name__ == "__main__":
    main()
