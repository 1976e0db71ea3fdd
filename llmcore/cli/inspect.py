"""``llmcore inspect MODEL --text TEXT [--out page.html]``: one self-contained HTML page
showing what the model sees (tokens), weighs (attention), and predicts (next-token
distributions, the logit lens and the sampler chain of its config).

The sampler view shows the config's ``generate.samplers``; change them with ``--set``.
"""

from __future__ import annotations

import argparse
import sys

from llmcore.cli.options import add_set_option


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="write an HTML page showing a model's view of a text")
    p.add_argument("model", help="run folder or checkpoint folder (or a model llmcore.load reads)")
    p.add_argument("--text", required=True, help="the text to trace")
    p.add_argument("--out", default="inspect.html", help="the page to write (default: %(default)s)")
    p.add_argument("--layers", default=None, help="layer indices to show, e.g. 0,2 (default: all)")
    p.add_argument("--heads", default=None, help="head indices to show, e.g. 0,1 (default: all)")
    p.add_argument("--top-k", type=int, default=10, help="candidates per position")
    p.add_argument("--max-positions", type=int, default=512, help="the most tokens traced")
    p.add_argument(
        "--position", type=int, default=None, help="the sampler view's position (default: last)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling pick")
    p.add_argument("--beam-width", type=int, default=3, help="width of the beam pick (1-8)")
    add_set_option(p, "'generate.samplers=[{name: temperature, temperature: 0.7}]'")
    p.set_defaults(func=run)


def load_model(path: str):
    """The model, tokenizer and config of ``path``: through ``llmcore.load`` where this
    build has it (real model files too), else :func:`~llmcore.checkpoint.load_checkpoint`."""
    import llmcore

    load = getattr(llmcore, "load", None) or llmcore.load_checkpoint
    loaded = load(path)
    return loaded.model, loaded.tokenizer, getattr(loaded, "config", None)


def _index_list(value: str | None, flag: str) -> list[int] | None:
    """``"0,2"`` as ``[0, 2]``; None stays None."""
    from llmcore.errors import ConfigError

    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, found {value!r}") from None


def run(args: argparse.Namespace) -> int:
    from llmcore.config import _apply_override, config_from_dict
    from llmcore.inspect import sampler_chain, sampler_view, trace, write_page

    model, tokenizer, cfg = load_model(args.model)
    if cfg is not None and args.overrides:
        raw = cfg.to_dict()
        for item in args.overrides:
            _apply_override(raw, item)
        cfg = config_from_dict(raw)
    model.eval()
    tr = trace(
        model,
        tokenizer,
        args.text,
        layers=_index_list(args.layers, "--layers"),
        heads=_index_list(args.heads, "--heads"),
        top_k=args.top_k,
        max_positions=args.max_positions,
    )
    position = len(tr.tokens) - 1 if args.position is None else args.position
    view = sampler_view(
        model,
        tr.ids,
        position,
        samplers=sampler_chain(cfg),
        seed=args.seed,
        beam_width=args.beam_width,
    )
    out = write_page(args.out, tr, view, tokenizer, title=f"llmcore inspect: {args.model}")
    print(f"wrote {out} ({len(tr.tokens)} tokens)", file=sys.stderr)
    return 0
