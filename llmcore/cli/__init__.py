"""The ``llmcore`` command line: thin parsers that load a config and call a workflow.

Each subcommand lives in its own module of this package and exposes
``add_to(subparsers)``, which adds its parser and sets ``func`` to a handler
``(args) -> int``. Errors of llmcore's own kind print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from llmcore import __version__
from llmcore.errors import LLMCoreError, LLMCoreWarning

#: Subcommand modules of this package, in the order ``--help`` lists them.
COMMANDS = (
    "train",
    "generate",
    "chat",
    "serve",
    "eval",
    "finetune",
    "merge_lora",
    "convert",
    "quantize",
    "tokenizer",
    "config",
    "plugins",
    "inspect",
    "runs",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="llmcore",
        description="Build, train, fine-tune and run decoder-only language models from plugins.",
    )
    parser.add_argument("--version", action="version", version=f"llmcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"llmcore.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"llmcore.cli.{name}":
                continue  # subcommand not part of this build
            raise
        module.add_to(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.formatwarning = _format_warning
            return int(args.func(args) or 0)
    except LLMCoreError as exc:
        print(f"llmcore: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llmcore: interrupted", file=sys.stderr)
        return 130


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """llmcore's own warnings as one ``llmcore: warning:`` line, like its errors."""
    if issubclass(category, LLMCoreWarning):
        return f"llmcore: warning: {message}\n"
    return _PLAIN_FORMAT(message, category, filename, lineno, line)


_PLAIN_FORMAT = warnings.formatwarning
