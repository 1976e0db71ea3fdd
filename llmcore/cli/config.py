"""``llmcore config show PRESET_OR_FILE``: print the resolved config."""

from __future__ import annotations

import argparse

from llmcore.cli.options import add_set_option


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show configs and presets")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser(
        "show", help="print a preset or config file with every default filled in"
    )
    show.add_argument(
        "source", nargs="?", default="shakespeare-char", help="preset name or config file"
    )
    add_set_option(show, "model.n_layer=4")
    show.set_defaults(func=show_config)
    lst = csub.add_parser("presets", help="list the shipped presets")
    lst.set_defaults(func=list_presets)


def show_config(args: argparse.Namespace) -> int:
    from llmcore.components import validate_components
    from llmcore.config import dump_yaml, load_config

    cfg = load_config(args.source, args.overrides)
    validate_components(cfg)
    print(dump_yaml(cfg), end="")
    return 0


def list_presets(args: argparse.Namespace) -> int:
    from llmcore.config import presets

    print("\n".join(presets()))
    return 0
