"""``llmcore finetune sft|reward|ppo|dpo [CONFIG] [--set key=value ...] [--out DIR] [--resume DIR]``."""

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
        m.add_argument(
            "config",
            nargs="?",
            help="fine-tuning config (YAML, TOML or JSON); with --resume, the checkpoint's",
        )
        add_set_option(m, "finetune.dpo.beta=0.2")
        m.add_argument("--out", help="run folder (default: runs/<name>)")
        m.add_argument("--resume", metavar="DIR", help="continue the run (or checkpoint) in DIR")
        m.add_argument("--no-progress", action="store_true", help="no per-step log lines")
        m.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.errors import ConfigError
    from llmcore.finetune.session import finetune_config

    if args.resume and not args.config:
        from llmcore.checkpoint import CONFIG_FILE, resolve_checkpoint
        from llmcore.config import load_config

        # resolved once, so a fallback from a broken checkpoint is reported once
        args.resume = resolve_checkpoint(args.resume, resumable=True)
        cfg = load_config(args.resume / CONFIG_FILE, args.overrides)
    elif args.config:
        cfg = finetune_config(args.config, args.overrides)
    else:
        raise ConfigError(f"finetune {args.method}: name a fine-tuning config (or --resume DIR)")
    import sys

    from llmcore.train.signals import TrainingInterrupted

    module = importlib.import_module(f"llmcore.finetune.{args.method}")
    try:
        run_dir, metrics = getattr(module, f"run_{args.method}")(
            cfg, out_dir=args.out, progress=not args.no_progress, resume=args.resume
        )
    except TrainingInterrupted as exc:
        print(f"llmcore: {exc}", file=sys.stderr)
        return exc.exit_code
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"run written to {run_dir}" + (f" ({shown})" if shown else ""))
    return 0
