"""``llmcore eval RUN_DIR --data FILE``: loss and perplexity of a trained model on any text."""

from __future__ import annotations

import argparse
import json


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="loss and perplexity of a trained model on a text file")
    p.add_argument("run", help="run or checkpoint folder, Hugging Face folder or .gguf file")
    p.add_argument("--data", required=True, help="text file, folder of files, or JSONL file")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.evaluate import evaluate

    res = evaluate(
        args.run, args.data, batch_size=args.batch_size, device=args.device, dtype=args.dtype
    )
    if args.json:
        print(
            json.dumps(
                {
                    "checkpoint": str(res.checkpoint),
                    "loss": res.loss,
                    "perplexity": res.perplexity,
                    "tokens": res.tokens,
                }
            )
        )
    else:
        print(f"checkpoint {res.checkpoint}")
        print(f"tokens     {res.tokens:,}")
        print(f"loss       {res.loss:.4f}")
        print(f"perplexity {res.perplexity:.3f}")
    return 0
