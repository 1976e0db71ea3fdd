"""The public encodings: pre-tokenizer family, regex (for tiktoken export), special tokens.

The regexes are never used to encode: llmcore._C.bpe has a hand-written, exact C++ splitter
for each family. They are written into saved tokenizers so that tiktoken can load them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmcore.errors import TokenizerError

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

#: pre-tokenizer family -> tiktoken regex
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

#: accepted pattern names -> family
PATTERN_ALIASES: dict[str, str] = {
    "gpt2": "gpt2",
    "r50k_base": "gpt2",
    "p50k_base": "gpt2",
    "cl100k_base": "cl100k_base",
    "o200k_base": "o200k_base",
}


@dataclass(frozen=True)
class Encoding:
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


def pattern_family(name: str) -> str:
    """The pre-tokenizer family of a pattern or encoding name."""
    try:
        return PATTERN_ALIASES[name]
    except KeyError:
        raise TokenizerError(
            f"unknown pre-tokenizer pattern {name!r} (valid: {', '.join(PATTERN_ALIASES)})"
        ) from None


def get_encoding(name: str) -> Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise TokenizerError(f"unknown encoding {name!r} (valid: {', '.join(ENCODINGS)})") from None


def family_of_regex(pat: str) -> str | None:
    """The family whose tiktoken or Hugging Face regex is ``pat``, if any."""
    for fam, s in PAT_STR.items():
        if pat == s:
            return fam
    legacy = {
        r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""": "gpt2",
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""": "cl100k_base",
    }
    return legacy.get(pat)
