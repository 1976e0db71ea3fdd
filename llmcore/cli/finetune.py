"""``llmcore finetune sft|reward|ppo|dpo CONFIG [--set key=value ...] [--out DIR]``."""

from __future__ import annotations

import argparse
import importlib

from llmcore.cli.options import add_set_option

METHODS = {
    "sft": "supervised fine-tuning on prompt/response or messages JSONL",
    "reward": "a reward model (scalar head, Bradley-Terry) on prompt/chosen/rejected JSONL",
    "ppo": "PPO against a reward model or a reward plugin, KL-penalised to a reference",
    "dpo": "direct preference optimisation on prompt/chosen/rejected JSONL",
}


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a trained run: sft, reward, ppo or dpo")
    methods = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name, text in METHODS.items():
        m = methods.add_parser(name, help=text)
        m.add_argument("config", help="fine-tuning config (YAML, TOML or JSON)")
        add_set_option(m, "finetune.dpo.beta=0.2")
        m.add_argument("--out", help="run folder (default: runs/<name>)")
        m.add_argument("--no-progress", action="store_true", help="no per-step log lines")
        m.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.finetune.session import finetune_config

    cfg = finetune_config(args.config, args.overrides)
    module = importlib.import_module(f"llmcore.finetune.{args.method}")
    run_dir, metrics = getattr(module, f"run_{args.method}")(
        cfg, out_dir=args.out, progress=not args.no_progress
    )
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"run written to {run_dir}" + (f" ({shown})" if shown else ""))
    return 0
