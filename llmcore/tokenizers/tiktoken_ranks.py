"""tiktoken rank files (one ``base64(token bytes) rank`` line per token) and the public
tiktoken encodings they hold.

A rank file has no pre-tokenizer or special tokens inside: for the public encodings they come
from :data:`ENCODINGS` (named by ``encoding=`` or by the file name, ``cl100k_base.tiktoken``),
for a custom file from ``pattern=`` and ``special_tokens=``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

from llmcore.errors import TokenizerError
from llmcore.ops.bpe import pattern_family

from .vocab import Vocabulary

#: the file name of the ranks inside a saved llmcore tokenizer folder
RANKS_FILE = "tokenizer.tiktoken"

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class Encoding:
    """One public tiktoken encoding: its pre-tokenizer family, rank count and specials."""

    name: str
    pattern: str
    n_ranks: int  # number of mergeable ranks (0 .. n_ranks-1)
    special_tokens: dict[str, int] = field(default_factory=dict)


ENCODINGS: dict[str, Encoding] = {
    "gpt2": Encoding("gpt2", "gpt2", 50256, {ENDOFTEXT: 50256}),
    "r50k_base": Encoding("r50k_base", "gpt2", 50256, {ENDOFTEXT: 50256}),
    "p50k_base": Encoding("p50k_base", "gpt2", 50280, {ENDOFTEXT: 50256}),
    "cl100k_base": Encoding(
        "cl100k_base",
        "cl100k_base",
        100256,
        {
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": Encoding(
        "o200k_base", "o200k_base", 199998, {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}
    ),
}


def get_encoding(name: str) -> Encoding:
    """The public encoding ``name``; the error lists the valid names."""
    try:
        return ENCODINGS[name]
    except KeyError:
        raise TokenizerError(f"unknown encoding {name!r} (valid: {', '.join(ENCODINGS)})") from None


def infer_encoding(path: Path) -> str | None:
    """The encoding a rank file's name starts with (``cl100k_base.tiktoken``), if any."""
    stem = path.name.split(".")[0]
    for name in sorted(ENCODINGS, key=len, reverse=True):
        if stem == name or stem.startswith(name):
            return name
    return None


def read_ranks(path: Path) -> tuple[list[bytes], list[int]]:
    """``(tokens, ranks)`` of a rank file, in file order.

    Raises:
        TokenizerError: unreadable or empty file, or a line (named) that is not
            ``base64-token rank`` with a rank >= 0.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"{path}: cannot read rank file: {exc.strerror}") from None
    tokens: list[bytes] = []
    ranks: list[int] = []
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(
                f"{path}:{lineno}: expected 'base64-token rank', got {line[:60]!r} "
                "(truncated or not a tiktoken rank file?)"
            )
        try:
            tok = base64.b64decode(parts[0], validate=True)
            rank = int(parts[1])
        except (binascii.Error, ValueError):
            raise TokenizerError(f"{path}:{lineno}: corrupt entry {line[:60]!r}") from None
        if rank < 0:
            raise TokenizerError(f"{path}:{lineno}: negative rank {rank}")
        tokens.append(tok)
        ranks.append(rank)
    if not tokens:
        raise TokenizerError(f"{path}: empty rank file")
    return tokens, ranks


def write_ranks(path: Path, tokens: list[bytes], ranks: list[int]) -> list[int]:
    """Write a rank file in rank order; returns that order (indices into ``tokens``)."""
    order = sorted(range(len(tokens)), key=ranks.__getitem__)
    lines = [base64.b64encode(tokens[i]) + b" " + str(ranks[i]).encode() for i in order]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return order


def read_tiktoken_file(
    path: Path,
    encoding: str | None = None,
    pattern: str | None = None,
    special_tokens: dict[str, int] | None = None,
) -> Vocabulary:
    """The vocabulary of a rank file of ``encoding`` (inferred from the file name when None);
    ``pattern`` and ``special_tokens`` override the encoding's, or describe a custom file.

    Raises:
        TokenizerError: no encoding can be inferred and no pattern is given, or the file has
            the wrong number of ranks for the named encoding.
    """
    tokens, ranks = read_ranks(path)
    name = encoding if encoding is not None else infer_encoding(path)
    if name is None and pattern is None:
        raise TokenizerError(
            f"{path}: cannot infer the encoding from the file name; pass encoding= one of "
            f"{', '.join(ENCODINGS)} (or pattern= and special_tokens= for a custom rank file)"
        )
    if name is not None:
        enc = get_encoding(name)
        if pattern is None and len(tokens) != enc.n_ranks:
            raise TokenizerError(
                f"{path}: {len(tokens)} ranks, but {name} has {enc.n_ranks} (truncated or a "
                "different encoding? pass pattern= for a custom rank file)"
            )
        fam = pattern_family(pattern) if pattern else enc.pattern
        specials = dict(enc.special_tokens) if special_tokens is None else dict(special_tokens)
    else:
        fam = pattern_family(pattern)  # type: ignore[arg-type]
        specials = dict(special_tokens or {})
    return Vocabulary(tokens, ranks, specials, fam, encoding=name, source=str(path))
