"""``llmcore generate RUN_OR_CHECKPOINT --prompt TEXT [...]``: stream text from a trained model.

Sampling flags replace the config's sampler chain with, in this order, repetition
penalty, temperature, top-k, top-p and min-p (Hugging Face's order); ``--temperature 0`` or
``--greedy`` decodes greedily. ``--prompt-file`` decodes every line of a file as one batch.

Prompt text is plain text by default: ``<|endoftext|>`` typed into a prompt is encoded as
those characters, the safe reading of user input. ``--allow-special`` encodes special-token
text as the special id instead, as Hugging Face tokenizers do by default.

A ``.gguf`` file runs with its quantized matrices kept as stored (``llmcore.load(path,
quantized=True)``, see :mod:`llmcore.quant`); ``--no-keep-quantized`` dequantizes them.

Generation stops at the model's end-of-turn and eos ids (``stop_ids`` of an HF folder's
generation_config.json or a GGUF file's metadata) and at the tokenizer's end-of-text id.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmcore.cli.options import add_set_option


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The flags shared by ``generate`` and ``chat``."""
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--stop", action="append", default=None, metavar="TEXT", help="stop string (repeatable)"
    )
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    add_set_option(p, "'generate.samplers=[{name: typical, p: 0.9}]'")
    p.add_argument(
        "--keep-quantized",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run a GGUF file's quantized matrices as they are stored (the default for .gguf "
        "files: 2-8x less memory); --no-keep-quantized dequantizes them to float32",
    )


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a trained run or checkpoint")
    p.add_argument("run", help="run or checkpoint folder, Hugging Face folder or .gguf file")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--prompt", default=None, help="prompt text (default: the config's generate.prompt)"
    )
    src.add_argument(
        "--prompt-file", default=None, help="a text file: each non-empty line is one prompt"
    )
    p.add_argument(
        "--allow-special",
        action="store_true",
        help="encode special-token text in the prompt (such as <|endoftext|>) as the special "
        "token's id; by default a prompt is plain text",
    )
    add_sampling_args(p)
    p.set_defaults(func=run)


def load(args: argparse.Namespace):
    """The checkpoint of ``args.run`` and its config with overrides and sampling flags."""
    from llmcore.config import Component, _apply_override, config_from_dict
    from llmcore.loading import load as load_model

    keep = getattr(args, "keep_quantized", None)
    if keep is None:  # the default: a GGUF file runs quantized, other sources hold no blocks
        from llmcore.loading import source_kind

        keep = source_kind(args.run) == "gguf"
    loaded = load_model(args.run, quantized=keep)
    raw = loaded.config.to_dict()
    for item in args.overrides:
        _apply_override(raw, item)
    cfg = config_from_dict(raw)
    g = cfg.generate
    flags = [
        ("repetition_penalty", args.repetition_penalty, "penalty"),
        ("temperature", args.temperature, "temperature"),
        ("top_k", args.top_k, "k"),
        ("top_p", args.top_p, "p"),
        ("min_p", args.min_p, "p"),
    ]
    if any(v is not None for _, v, _ in flags):
        g.samplers = [
            Component(name, {param: value})
            for name, value, param in flags
            if value is not None and not (name == "temperature" and value == 0)
        ]
        if g.decoder.name == "greedy" and not args.greedy:
            g.decoder = Component("multinomial")
    if args.greedy or args.temperature == 0:
        g.samplers = [c for c in g.samplers if c.name.endswith("penalty")]
        g.decoder = Component("greedy")
    if args.max_new_tokens is not None:
        g.max_new_tokens = args.max_new_tokens
    if args.seed is not None:
        g.seed = args.seed
    if args.stop is not None:
        g.stop = list(args.stop)
    return loaded, cfg


def run(args: argparse.Namespace) -> int:
    from llmcore.generation import generate, stream

    loaded, cfg = load(args)
    model, tok = loaded.model, loaded.tokenizer
    allowed = "all" if args.allow_special else ()
    stop_ids = list(loaded.stop_ids)  # the model's own end of turn, where it names one
    if args.prompt_file is not None:
        prompts = _read_prompts(args.prompt_file)
        ids = [tok.encode(p, allowed_special=allowed) for p in prompts]
        results = generate(model, tok, ids, config=cfg, stop_ids=stop_ids)
        for i, (prompt, g) in enumerate(zip(prompts, results)):
            sys.stdout.write(("\n" if i else "") + f"--- {i + 1}\n{prompt}{g.text}\n")
        return 0
    prompt = cfg.generate.prompt if args.prompt is None else args.prompt
    ids = tok.encode(prompt, allowed_special=allowed)
    tokens = stream(model, tok, ids, config=cfg, stop_ids=stop_ids)  # checks the settings first
    sys.stdout.write(prompt)
    sys.stdout.flush()
    for token in tokens:
        if token.text:  # empty while a multi-byte character is incomplete
            sys.stdout.write(token.text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _read_prompts(path: str) -> list[str]:
    """The non-empty lines of the UTF-8 text file ``path``."""
    from llmcore.errors import GenerationError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise GenerationError(f"{path}: cannot read prompts: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GenerationError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "--prompt-file takes a text file with one prompt per line"
        ) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # universal newlines
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise GenerationError(f"{path}: no prompts (every line is empty)")
    return prompts
