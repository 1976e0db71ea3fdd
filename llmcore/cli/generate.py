"""``llmcore generate RUN_OR_CHECKPOINT --prompt TEXT [...]``: stream text from a trained model."""

from __future__ import annotations

import argparse
import sys


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a trained run or checkpoint")
    p.add_argument("run", help="run folder or checkpoint folder")
    p.add_argument(
        "--prompt", default=None, help="prompt text (default: the config's generate.prompt)"
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a generate.* value",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.checkpoint import load_checkpoint
    from llmcore.components import build_sampler
    from llmcore.config import Component, config_from_dict
    from llmcore.generate import stream

    loaded = load_checkpoint(args.run)
    raw = loaded.config.to_dict()
    cfg = config_from_dict(raw)
    if args.overrides:
        from llmcore.config import _apply_override

        for item in args.overrides:
            _apply_override(raw, item)
        cfg = config_from_dict(raw)
    g = cfg.generate
    if args.temperature is not None or args.top_k is not None or args.top_p is not None:
        g.samplers = []
        if args.temperature is not None:
            g.samplers.append(Component("temperature", {"temperature": args.temperature}))
        if args.top_k is not None:
            g.samplers.append(Component("top_k", {"k": args.top_k}))
        if args.top_p is not None:
            g.samplers.append(Component("top_p", {"p": args.top_p}))
    if args.greedy:
        g.samplers, g.decoder = [], Component("greedy")
    samplers, decoder = build_sampler(cfg)
    prompt = g.prompt if args.prompt is None else args.prompt
    n = g.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens
    seed = g.seed if args.seed is None else args.seed
    tok = loaded.tokenizer
    sys.stdout.write(prompt)
    pending: list[int] = []
    for token in stream(
        loaded.model, tok, prompt, max_new_tokens=n, samplers=samplers, decoder=decoder, seed=seed
    ):
        pending.append(token)
        piece = tok.decode_bytes(pending)
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError:
            continue  # wait for the rest of a multi-byte character
        sys.stdout.write(text)
        sys.stdout.flush()
        pending.clear()
    if pending:
        sys.stdout.write(tok.decode(pending))
    sys.stdout.write("\n")
    return 0
