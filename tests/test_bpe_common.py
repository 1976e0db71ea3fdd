"""Shared helpers of the bpe tests (no tests here): fixtures paths, tiktoken references and
the hostile-text generator."""

from __future__ import annotations

import functools
import random
from pathlib import Path

FIX = Path(__file__).parent / "fixtures" / "tokenizers"
ENCODINGS = ("gpt2", "cl100k_base", "o200k_base")


@functools.cache
def ours(name: str):
    from llmcore.builtin.bpe import BPETokenizer

    if name == "gpt2":
        return BPETokenizer.load(FIX / "gpt2")  # encoder.json + vocab.bpe
    return BPETokenizer.load(FIX / f"{name}.tiktoken")


@functools.cache
def reference(name: str):
    """tiktoken's Encoding built from the fixture files, with tiktoken's own constructor
    arguments (tiktoken_ext.openai_public)."""
    import tiktoken
    import tiktoken_ext.openai_public as pub
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe

    if name == "gpt2":
        ranks = data_gym_to_mergeable_bpe_ranks(
            str(FIX / "gpt2" / "vocab.bpe"), str(FIX / "gpt2" / "encoder.json")
        )
        pat, specials = pub.r50k_pat_str, {"<|endoftext|>": 50256}
    else:
        # openai_public's constructor downloads the ranks: hand it the fixture file instead
        import unittest.mock as mock

        ranks = load_tiktoken_bpe(str(FIX / f"{name}.tiktoken"))
        with mock.patch.object(pub, "load_tiktoken_bpe", lambda *a, **k: ranks):
            kw = getattr(pub, name)()
        pat, specials = kw["pat_str"], kw["special_tokens"]
    return tiktoken.Encoding(name, pat_str=pat, mergeable_ranks=ranks, special_tokens=specials)


WHITESPACE = [
    " ",
    "  ",
    "   ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\r",
    "\r\n",
    "\r\n\r\n",
    "\n\r",
    "\x0b",
    "\x0c",
    "\x85",
    "\xa0",
    "\u1680",
    "\u2000",
    "\u2005",
    "\u200a",
    "\u2028",
    "\u2029",
    "\u202f",
    "\u205f",
    "\u3000",
    " \n ",
    "\t \r\n \t",
    "\u200b",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x1f",
    "\ufeff",
]
CONTRACTIONS = [
    "'s",
    "'S",
    "'ſ",
    "'t",
    "'T",
    "'re",
    "'RE",
    "'Re",
    "'rE",
    "'ve",
    "'VE",
    "'m",
    "'M",
    "'ll",
    "'LL",
    "'lL",
    "'d",
    "'D",
    "'",
    "''",
    "'x",
    "’s",
    "I'VE",
    "don't",
    "DON'T",
    "Don'T",
    "it's",
    "IT'S",
    "we'll",
    "o'clock",
    "rock'n'roll",
]
DIGITS = [
    "0",
    "7",
    "42",
    "123",
    "1234",
    "12345678901",
    "٠١٢٣٤٥٦٧٨٩",
    "۰۱۲",
    "०१२३४५",
    "১২৩",
    "๑๒๓",
    "²³¹",
    "¼½¾",
    "ⅠⅡⅢⅧ",
    "ⅷ",
    "①②③",
    "𝟘𝟙𝟚",
    "〇",
    "３４５",
    "1.5",
    "1,000,000",
    "3e10",
]
WORDS = [
    "hello",
    "Hello",
    "HELLO",
    "HELLOworld",
    "helloWORLD",
    "hElLo",
    "ǅemal",
    "ǈ",
    "ʰʲ",
    "ªº",
    "Straße",
    "ΑΒΓαβγ",
    "Привет",
    "мир",
    "日本語",
    "東京タワー",
    "한국어",
    "안녕하세요",
    "ไทย",
    "नमस्ते",
    "हिन्दी",
    "தமிழ்",
    "e\u0301",
    "\u0301\u0302a",
    "a\u0308\u0301",
    "ﬁ",
    "Ǆ",
    "שלום",
    "עולם",
    "مرحبا",
    "بالعالم",
    "\u200f\u202eabc\u202c",
    "ᏣᎳᎩ",
    "ሰላም",
    "x",
    "_",
    "__init__",
    "foo.bar",
    "/baz",
    "a/b/c",
    "https://example.com/a?b=c",
    "C++",
    "e-mail",
]
SYMBOLS = [
    ".",
    ",",
    "!",
    "?",
    "...",
    "—",
    "–",
    "«»",
    "“”",
    "()",
    "[]",
    "{}",
    "<>",
    "#",
    "@",
    "$",
    "%",
    "&&",
    "||",
    "->",
    "=>",
    "//",
    "/*",
    "*/",
    "。",
    "、",
    "！",
    "\x00",
    "\x01",
    "\x7f",
    "\ufffd",
    "👨\u200d👩\u200d👧\u200d👦",
    "🇺🇸",
    "🇫🇷🇩🇪",
    "👍🏽",
    "❤️",
    "🏳️\u200d🌈",
    "©",
    "™",
    "\U0001f600",
    "<|endoftext|>",
    "<|endoftext",
    "endoftext|>",
    "<|fim_prefix|>",
    "<|endofprompt|>",
    "<|im_start|>",
    "<|",
    "|>",
]


def random_codepoint(rng: random.Random) -> str:
    while True:
        r = rng.random()
        if r < 0.5:
            cp = rng.randrange(0x20, 0x3000)
        elif r < 0.8:
            cp = rng.randrange(0x3000, 0x30000)
        else:
            cp = rng.randrange(0x30000, 0x110000)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def hostile_text(rng: random.Random, n_parts: int = 200) -> str:
    pools = [WHITESPACE, CONTRACTIONS, DIGITS, WORDS, SYMBOLS]
    out = []
    for _ in range(n_parts):
        r = rng.random()
        if r < 0.15:
            out.append("".join(random_codepoint(rng) for _ in range(rng.randint(1, 4))))
        else:
            out.append(rng.choice(rng.choice(pools)))
    return "".join(out)


def codepoint_sweep(lo: int, hi: int, step: int = 1) -> str:
    """Every code point of [lo, hi) (surrogates skipped) in contexts that expose its class."""
    parts = []
    for cp in range(lo, hi, step):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        parts.append(f"a{c}b {c}A{c}{c}1{c}'{c} {c}\n")
    return "".join(parts)
