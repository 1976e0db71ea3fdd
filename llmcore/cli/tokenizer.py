"""``llmcore tokenizer encode|decode|train|info``: use and train byte-level BPE tokenizers.

TOKENIZER arguments are anything ``llmcore.load_tokenizer`` reads (a saved llmcore folder, a
``.tiktoken`` rank file, a Hugging Face ``tokenizer.json``, or a folder with GPT-2's
``encoder.json`` + ``vocab.bpe``), a run or checkpoint folder (its checkpoint's tokenizer), or
the name of an encoding bundled with llmcore (``gpt2``).

``train`` refuses an existing ``--out`` unless ``--force``, writes nothing on any failure, and
fails when the text cannot give the vocabulary asked for unless ``--allow-smaller-vocab``.
"""

from __future__ import annotations

import argparse
import codecs
import json
import re
import sys
import warnings
from pathlib import Path

from llmcore.errors import TokenizerError, TokenizerWarning

TOKENIZER_HELP = "tokenizer file or folder, run or checkpoint folder, or a bundled name (gpt2)"

#: How much of each training file is checked to be text before the native trainer reads it.
TEXT_PROBE_BYTES = 1 << 20


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="encode, decode, train or inspect a tokenizer")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    e = tsub.add_parser("encode", help="print the token ids of a text")
    e.add_argument("tokenizer", help=TOKENIZER_HELP)
    e.add_argument("text", nargs="?", help="text to encode (default: --file or stdin)")
    e.add_argument("--file", help="read the text from this file")
    e.add_argument("--encoding", help="encoding name for a .tiktoken file (gpt2, cl100k_base, ...)")
    e.add_argument(
        "--allow-special",
        action="store_true",
        help="map special-token text (e.g. '<|endoftext|>') to its id; without it, it is plain text",
    )
    e.add_argument("--json", action="store_true", help="print a JSON list")
    e.set_defaults(func=run_encode)

    d = tsub.add_parser("decode", help="print the text of token ids")
    d.add_argument("tokenizer", help=TOKENIZER_HELP)
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
    t.add_argument("--force", action="store_true", help="replace an existing --out")
    t.add_argument(
        "--allow-smaller-vocab",
        action="store_true",
        help="keep a smaller vocabulary (with a warning) when the text has too few merges",
    )
    t.set_defaults(func=run_train)

    i = tsub.add_parser("info", help="describe a tokenizer")
    i.add_argument("tokenizer", help=TOKENIZER_HELP)
    i.add_argument("--encoding", help="encoding name for a .tiktoken file")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)


def _load(args: argparse.Namespace):
    """The tokenizer ``args.tokenizer`` names: a run or checkpoint folder's, a file or folder
    ``load_tokenizer`` reads, or an encoding bundled with llmcore."""
    from llmcore import checkpoint as ckpt
    from llmcore import plugins
    from llmcore.tokenizers import load_tokenizer

    path = Path(args.tokenizer)
    if path.is_dir() and ((path / ckpt.MODEL_FILE).exists() or (path / "ckpt").is_dir()):
        return load_tokenizer(ckpt.resolve_checkpoint(path) / ckpt.TOKENIZER_DIR)
    if not path.exists() and path.name == args.tokenizer and not path.suffix:
        try:  # a bare name: an encoding whose files ship with llmcore
            return plugins.factory("tokenizer", "bpe")(encoding=args.tokenizer)
        except TokenizerError as exc:
            raise TokenizerError(
                f"{args.tokenizer}: no such tokenizer file or folder, run folder or bundled "
                f"encoding ({exc})"
            ) from None
    return load_tokenizer(path, encoding=getattr(args, "encoding", None))


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
    from llmcore.cli.output import replacing
    from llmcore.tokenizers import train_tokenizer

    files = [Path(f) for f in args.files]
    for f in files:
        _check_text_file(f)
    with replacing(args.out, force=args.force, error=TokenizerError) as tmp:
        tok = train_tokenizer(
            files,
            args.vocab_size,
            pattern=args.pattern,
            special_tokens=args.special_token,
            num_threads=args.threads,
        )
        if tok.vocab_size < args.vocab_size:
            _smaller_vocab(tok.vocab_size, args, files)
        tok.save(tmp)
    print(f"trained {tok.vocab_size} tokens ({args.pattern}) -> {args.out}")
    return 0


def _check_text_file(file: Path) -> None:
    """TokenizerError naming ``file`` when it is missing or not UTF-8 text (its first MiB: the
    native trainer reads the rest, and would count binary bytes as text)."""
    if not file.is_file():
        raise TokenizerError(f"{file}: no such training file")
    try:
        with file.open("rb") as f:
            head = f.read(TEXT_PROBE_BYTES)
    except OSError as exc:
        raise TokenizerError(f"{file}: cannot read: {exc}") from None
    nul = head.find(b"\0")
    if nul >= 0:
        raise TokenizerError(
            f"{file}: a binary file (NUL byte at offset {nul}); tokenizer train needs UTF-8 text"
        )
    try:  # final=False: the probe may end inside a multi-byte character
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise TokenizerError(
            f"{file}: not UTF-8 text (byte {head[exc.start]:#04x} at offset {exc.start}); "
            "tokenizer train needs UTF-8 text"
        ) from None


def _smaller_vocab(got: int, args: argparse.Namespace, files: list[Path]) -> None:
    """The text held fewer distinct merges than ``--vocab-size`` needs: an error, or with
    ``--allow-smaller-vocab`` a warning."""
    size = sum(f.stat().st_size for f in files)
    names = ", ".join(map(str, files))
    why = "empty" if size == 0 else f"{size} bytes of text hold too few repeated pairs"
    what = f"{names}: gave only {got} of the {args.vocab_size} tokens asked for ({why})"
    if not args.allow_smaller_vocab:
        raise TokenizerError(
            f"{what}; train on more text, ask for --vocab-size {got} or less, or pass "
            "--allow-smaller-vocab to keep the smaller vocabulary"
        )
    warnings.warn(f"{what}; keeping the {got}-token vocabulary", TokenizerWarning, stacklevel=2)


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
