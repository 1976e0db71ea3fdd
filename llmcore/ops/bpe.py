"""The Python face of ``csrc/bpe``: the byte-level BPE core, its pre-tokenizers and trainer.

Every call into ``llmcore._C.bpe`` goes through here, and the arguments are checked here once.
The encode and decode hot paths are methods of the :class:`Core` object itself (C++), so a
tokenizer calls them with no Python layer in between.

The C++ splitter implements three pre-tokenizer *families*, each written by hand to match a
tiktoken regex exactly. The regexes below are that specification; they never run at encode
time, but are written into saved tokenizers so that tiktoken can load them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmcore.errors import TokenizerError
from llmcore.ops import native

#: pre-tokenizer family -> the tiktoken regex its C++ splitter reproduces exactly
PAT_STR: dict[str, str] = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}

#: accepted pattern names (families and the encodings that use them) -> family
PATTERN_ALIASES: dict[str, str] = {
    "gpt2": "gpt2",
    "r50k_base": "gpt2",
    "p50k_base": "gpt2",
    "cl100k_base": "cl100k_base",
    "o200k_base": "o200k_base",
}


def pattern_family(name: str) -> str:
    """The pre-tokenizer family of a pattern or encoding name."""
    try:
        return PATTERN_ALIASES[name]
    except KeyError:
        raise TokenizerError(
            f"unknown pre-tokenizer pattern {name!r} (valid: {', '.join(PATTERN_ALIASES)})"
        ) from None


#: C++ splitters of llama.cpp's regex sequences (not tiktoken regexes; see
#: :mod:`llmcore.tokenizers.pretokenizers`), accepted by :func:`new_core`
SEQUENCE_SPLITTERS = ("llama3", "qwen2", "gpt2-digits")


def _native() -> Any:
    return native("bpe", "the bpe tokenizer")


def new_core(
    tokens: Sequence[bytes],
    ranks: Sequence[int],
    ids: Sequence[int] | None,
    special_tokens: dict[str, int],
    pattern: str,
    added_tokens: dict[str, int] | None = None,
    drop_missing_bytes: bool = False,
) -> Any:
    """The C++ encoder/decoder of one vocabulary.

    ``tokens[i]`` merges with priority ``ranks[i]`` (lower first) and encodes as ``ids[i]``
    (``ids`` None: the id is the rank). ``special_tokens`` are recognised where
    ``encode_special`` allows them, ``added_tokens`` in any text (Hugging Face's non-special
    added tokens). ``pattern`` is a tiktoken family or encoding name or one of
    :data:`SEQUENCE_SPLITTERS`. The C++ side rejects duplicate tokens, ranks or ids and,
    unless ``drop_missing_bytes`` (then such bytes are dropped from the text, as Hugging Face
    tokenizers does), a vocabulary without all 256 bytes, naming the entry.
    """
    if len(tokens) != len(ranks) or (ids is not None and len(ids) != len(tokens)):
        raise TokenizerError(
            f"bpe vocabulary: {len(tokens)} tokens, {len(ranks)} ranks and "
            f"{len(ids) if ids is not None else len(tokens)} ids must be as many"
        )
    specials = sorted(special_tokens.items(), key=lambda kv: kv[1])
    added = sorted((added_tokens or {}).items(), key=lambda kv: kv[1])
    splitter = pattern if pattern in SEQUENCE_SPLITTERS else pattern_family(pattern)
    return _native().Core(
        list(tokens), list(ranks), list(ids or []), specials, splitter, added, drop_missing_bytes
    )


def split(text: str, pattern: str) -> list[str]:
    """Pre-tokenize ``text`` with the C++ splitter of ``pattern``'s family (or one of
    :data:`SEQUENCE_SPLITTERS`)."""
    splitter = pattern if pattern in SEQUENCE_SPLITTERS else pattern_family(pattern)
    return _native().split(splitter, text)


def train(
    texts: list[str],
    files: list[str],
    n_new_tokens: int,
    pattern: str,
    num_threads: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Learn ``n_new_tokens`` merges on ``texts`` and the contents of ``files`` (read in C++).

    Returns ``(vocab, merges)``: every token's bytes in rank order (the 256 bytes first) and
    the merged id pairs. ``progress(done, total)`` is called now and then from C++.
    """
    if n_new_tokens < 0:
        raise TokenizerError(f"bpe training: n_new_tokens must be >= 0, got {n_new_tokens}")
    if num_threads < 0:
        raise TokenizerError(f"bpe training: num_threads must be >= 0, got {num_threads}")
    return _native().train(
        texts, files, n_new_tokens, pattern_family(pattern), num_threads, progress
    )


def unicode_version() -> str:
    """The Unicode version of the C++ pre-tokenizers' character tables."""
    return _native().unicode_version
