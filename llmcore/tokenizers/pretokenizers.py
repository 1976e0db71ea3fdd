"""The pre-tokenizers llama.cpp names in GGUF's ``tokenizer.ggml.pre``, as regex sequences.

Each name stands for a sequence of regexes applied one after another, every one cutting the
pieces of the previous step into its matches and the stretches between them (Hugging Face's
``Split`` with ``behavior="Isolated"``), as llama.cpp's ``unicode_regex_split`` does. The
sequences a hand-written C++ splitter reproduces (:data:`CPP_SPLITTER`) run in the C++ core;
the others run on the ``regex`` package (:mod:`llmcore.builtin.bpe.regex_core`).
"""

from __future__ import annotations

from llmcore.errors import TokenizerError

#: GPT-2's regex (Hugging Face's ByteLevel pre-tokenizer with ``use_regex=True``)
GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Greek letters that NFC would rewrite are escaped so that no editor or tool changes them
_DEEPSEEK_LETTERS = (
    "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚ"
    "Ḁ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿ"
    "ⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃"
)
_GPT2_NO_TAIL = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"""

#: ``tokenizer.ggml.pre`` name -> the regexes applied in turn (llama.cpp's llama-vocab.cpp)
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "default": (GPT2_REGEX,),
    "gpt2": (GPT2_REGEX,),
    "gpt-2": (GPT2_REGEX,),  # llama.cpp's own spelling (LLAMA_VOCAB_PRE_TYPE_GPT2)
    "llama-bpe": (LLAMA3_REGEX,),
    "qwen2": (QWEN2_REGEX,),
    "smollm": (r"\p{N}", _GPT2_NO_TAIL),
    "starcoder": (r"\p{N}", _GPT2_NO_TAIL),
    "deepseek-llm": (
        r"[\r\n]",
        rf"\s?[{_DEEPSEEK_LETTERS}]+",
        r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
        r"\s+$",
        r"[一-龥ࠀ-一가-퟿]+",
        r"\p{N}+",
    ),
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2_NO_TAIL, r"[0-9][0-9][0-9]"),
}
#: names whose regex sequence the C++ splitter family reproduces exactly
CPP_FAMILY = {"default": "gpt2", "gpt2": "gpt2", "gpt-2": "gpt2"}
#: name -> the C++ splitter (``llmcore._C.bpe``) that gives the pieces of its regex sequence
CPP_SPLITTER = {
    **CPP_FAMILY,
    "llama-bpe": "llama3",
    "qwen2": "qwen2",
    "smollm": "gpt2-digits",
    "starcoder": "gpt2-digits",
}


def cpp_splitter(name: str, regexes: tuple[str, ...] | list[str] | None) -> str | None:
    """The C++ splitter of a pre-tokenizer named ``name`` with ``regexes`` (None: the
    name's own), if one reproduces them; None when only the regex package can."""
    fam = CPP_SPLITTER.get(name)
    if fam is None or (regexes is not None and tuple(regexes) != PRE_TOKENIZERS[name]):
        return None
    return fam


def pre_tokenizer_regexes(name: str, where: str = "") -> tuple[str, ...]:
    """The regex sequence of a llama.cpp pre-tokenizer name.

    Raises:
        TokenizerError: an unknown name; the message lists the known ones.
    """
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        raise TokenizerError(
            f"{where or 'tokenizer'}: unknown pre-tokenizer {name!r} (tokenizer.ggml.pre); "
            f"known: {', '.join(PRE_TOKENIZERS)}"
        ) from None
