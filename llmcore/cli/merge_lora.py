"""``llmcore merge-lora RUN [--out DIR]``: fold a run's LoRA adapter into plain weights."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge-lora", help="write a LoRA run's merged weights as a plain checkpoint")
    p.add_argument("run", help="run or checkpoint folder trained with finetune.adapter")
    p.add_argument("--out", help="run folder to write (default: RUN-merged)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.finetune.merge import merge_lora

    out = Path(args.out) if args.out else Path(str(Path(args.run)).rstrip("/") + "-merged")
    path = merge_lora(args.run, out)
    print(f"merged weights written to {path}")
    return 0
