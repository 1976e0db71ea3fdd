"""``llmcore serve MODEL``: an OpenAI-compatible HTTP server with continuous batching.

Needs the ``llmcore[serve]`` extra (Starlette and uvicorn). Binds 127.0.0.1 unless
``--host`` says otherwise; with ``--api-key`` every request must carry the bearer key.
"""

from __future__ import annotations

import argparse
import logging


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over the OpenAI API")
    p.add_argument("model", help="run folder, checkpoint folder, or any model llmcore loads")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoded together")
    p.add_argument("--max-queue", type=int, default=256, help="waiting sequences before 429")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_false",
        help="do not reuse the keys of a prompt prefix already in a KV slot",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.errors import LLMCoreError

    try:
        import uvicorn

        from llmcore.serve.app import Server
    except ModuleNotFoundError as exc:
        raise LLMCoreError(
            f"llmcore serve needs the serve extra ({exc.name} is missing): "
            "pip install 'llmcore[serve]'"
        ) from None
    from llmcore.serve.engine import Engine
    from llmcore.serve.prepare import load_served

    for flag in ("max_batch", "max_queue", "port"):
        if getattr(args, flag) < 1:
            raise LLMCoreError(f"--{flag.replace('_', '-')} must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    served = load_served(args.model, device=args.device)
    engine = Engine(
        served,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        prefix_cache=args.prefix_cache,
    ).start()
    try:
        app = Server(engine, api_key=args.api_key).app()
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        engine.stop()
    return 0
