"""Options that several subcommands share, each defined once."""

from __future__ import annotations

import argparse


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """Add ``--set KEY=VALUE`` (repeatable): config overrides, in order, in ``args.overrides``.

    ``example`` is an override shown in the help, one that fits the subcommand.
    """
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value (repeatable), e.g. --set {example}",
    )
