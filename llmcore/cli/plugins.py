"""``llmcore plugins [--json]``: list plugins, their distributions and components."""

from __future__ import annotations

import argparse
import json


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed plugins and the components they provide")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llmcore.plugins import plugin_infos

    infos = sorted(plugin_infos(), key=lambda i: (i.distribution != "llmcore", i.name))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "distribution": i.distribution,
                        "version": i.version,
                        "components": i.components,
                        **({"error": i.error} if i.error else {}),
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        return 0
    for i in infos:
        print(f"{i.name}  ({i.distribution} {i.version})")
        if i.error:
            print(f"  failed to load: {i.error}")
        for kind, names in i.components.items():
            print(f"  {kind}: {', '.join(names)}")
    return 0
