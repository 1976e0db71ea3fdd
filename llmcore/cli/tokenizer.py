"""``llmcore tokenizer encode|decode|train|info``: use and train byte-level BPE tokenizers.

TOKENIZER arguments are anything ``llmcore.load_tokenizer`` reads: a saved llmcore folder, a
``.tiktoken`` rank file, a Hugging Face ``tokenizer.json``, or a folder with GPT-2's
``encoder.json`` + ``vocab.bpe``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from llmcore.errors import TokenizerError


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="encode, decode, train or inspect a tokenizer")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    e = tsub.add_parser("encode", help="print the token ids of a text")
    e.add_argument("tokenizer", help="tokenizer file or folder")
    e.add_argument("text", nargs="?", help="text to encode (default: --file or stdin)")
    e.add_argument("--file", help="read the text from this file")
    e.add_argument("--encoding", help="encoding name for a .tiktoken file (gpt2, cl100k_base, ...)")
    e.add_argument("--allow-special", action="store_true", help="recognise special-token text")
    e.add_argument("--json", action="store_true", help="print a JSON list")
    e.set_defaults(func=run_encode)

    d = tsub.add_parser("decode", help="print the text of token ids")
    d.add_argument("tokenizer", help="tokenizer file or folder")
    d.add_argument(
        "ids", nargs="*", help="ids (default: --file or stdin; spaces, commas or a JSON list)"
    )
    d.add_argument("--file", help="read the ids from this file")
    d.add_argument("--encoding", help="encoding name for a .tiktoken file")
    d.set_defaults(func=run_decode)

    t = tsub.add_parser("train", help="train a byte-level BPE tokenizer on text files")
    t.add_argument("files", nargs="+", help="UTF-8 text files")
    t.add_argument(
        "--vocab-size", type=int, required=True, help="vocabulary size, special tokens included"
    )
    t.add_argument(
        "--out", required=True, help="output folder (llmcore format + tokenizer.tiktoken)"
    )
    t.add_argument(
        "--pattern", default="cl100k_base", help="pre-tokenizer: gpt2, cl100k_base or o200k_base"
    )
    t.add_argument(
        "--special-token",
        action="append",
        default=[],
        metavar="TEXT",
        help="add a special token (repeatable), e.g. '<|endoftext|>'",
    )
    t.add_argument("--threads", type=int, default=0, help="threads for counting (0: all cores)")
    t.set_defaults(func=run_train)

    i = tsub.add_parser("info", help="describe a tokenizer")
    i.add_argument("tokenizer", help="tokenizer file or folder")
    i.add_argument("--encoding", help="encoding name for a .tiktoken file")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)


def _load(args: argparse.Namespace):
    from llmcore.tokenizers import load_tokenizer

    return load_tokenizer(args.tokenizer, encoding=getattr(args, "encoding", None))


def _read(path: str | None) -> str:
    if path is None:
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{path}: cannot read: {exc}") from None


def run_encode(args: argparse.Namespace) -> int:
    tok = _load(args)
    text = args.text if args.text is not None else _read(args.file)
    ids = tok.encode(text, allowed_special="all" if args.allow_special else ())
    print(json.dumps(ids) if args.json else " ".join(map(str, ids)))
    return 0


def run_decode(args: argparse.Namespace) -> int:
    tok = _load(args)
    raw = " ".join(args.ids) if args.ids else _read(args.file)
    try:
        ids = [int(x) for x in re.split(r"[\s,\[\]]+", raw) if x]
    except ValueError:
        raise TokenizerError(f"token ids must be integers, got {raw[:60]!r}") from None
    sys.stdout.write(tok.decode(ids))
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from llmcore.tokenizers import train_tokenizer

    for f in args.files:
        if not Path(f).is_file():
            raise TokenizerError(f"{f}: no such training file")
    tok = train_tokenizer(
        [Path(f) for f in args.files],
        args.vocab_size,
        pattern=args.pattern,
        special_tokens=args.special_token,
        num_threads=args.threads,
        out=args.out,
    )
    print(f"trained {tok.vocab_size} tokens ({args.pattern}) -> {args.out}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    tok = _load(args)
    info = {
        "type": getattr(tok, "name", type(tok).__name__),
        "vocab_size": tok.vocab_size,
        "pattern": getattr(tok, "pattern", None),
        "encoding": getattr(tok, "encoding", None),
        "eot_id": tok.eot_id,
        "special_tokens": tok.special_tokens,
    }
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0
