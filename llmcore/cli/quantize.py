"""``llmcore quantize MODEL --type q8_0|q4_0|q4_k --out PATH``: write a quantized GGUF file.

MODEL is anything ``llmcore.load`` reads (a run or checkpoint folder, a Hugging Face folder,
a GGUF file). Norms and biases stay f32; the output matrix (or the tied token embedding) is
q8_0; see :mod:`llmcore.quant.export`. Run the result with ``llmcore generate OUT.gguf``.
"""

from __future__ import annotations

import argparse


def add_to(sub: argparse._SubParsersAction) -> None:
    from llmcore.quant.export import TYPES

    p = sub.add_parser("quantize", help="write a model as a quantized GGUF file")
    p.add_argument("model", help="run or checkpoint folder, Hugging Face folder or .gguf file")
    p.add_argument("--type", required=True, choices=TYPES, help="the matrices' block format")
    p.add_argument("--out", required=True, help="the .gguf file to write")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmcore.cli.output import check_free
    from llmcore.errors import CheckpointError
    from llmcore.quant.export import quantize_model

    check_free(Path(args.out), force=args.force, error=CheckpointError)  # before any loading
    out = quantize_model(args.model, args.type, args.out)
    print(f"wrote {out} ({args.type}) from {args.model}")
    return 0
