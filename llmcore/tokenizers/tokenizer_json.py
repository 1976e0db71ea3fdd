"""Hugging Face ``tokenizer.json``: reading it into a :class:`Vocabulary` and writing one.

Two shapes are read and written: byte-level BPE (GPT-2, Llama 3, Qwen2 style: a ByteLevel
pre-tokenizer, or a Split regex followed by ByteLevel) and a vocabulary of whole characters
(a BPE model with no merges, no pre-tokenizer and a ``Fuse`` decoder), which is how llmcore
writes ``char`` vocabularies. ``tokenizer_config.json`` beside it tells transformers'
``AutoTokenizer`` which class to use and the end-of-text token.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llmcore.errors import TokenizerError
from llmcore.ops.bpe import PAT_STR, PATTERN_ALIASES, pattern_family

from .bytelevel import merges_of_ranks, ranks_of_merges, to_text
from .pretokenizers import CPP_FAMILY, GPT2_REGEX, PRE_TOKENIZERS, pre_tokenizer_regexes
from .sentencepiece import bos_eos_of, is_sentencepiece_json, read_sentencepiece_json
from .vocab import BYTE_LEVEL_BPE, CHARACTERS, Vocabulary

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SUPPORTED_MODELS = ("BPE",)

# The non-possessive regexes written into exported tokenizer.json files (what HF's own files
# carry); gpt2's is built into the ByteLevel pre-tokenizer. Read back, they run as HF runs
# them (llmcore.builtin.bpe.regex_core), which differs from tiktoken's at a few whitespace edges.
HF_SPLIT_REGEX = {
    "cl100k_base": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}


def family_of_regex(regex: str) -> str | None:
    """The C++ pre-tokenizer family whose tiktoken regex is ``regex`` (written in a Split
    step, it means tiktoken's pieces), if any."""
    return next((fam for fam, s in PAT_STR.items() if regex == s), None)


# ---- reading ----------------------------------------------------------------------------
def read_json(file: Path) -> dict[str, Any]:
    """The parsed ``tokenizer.json``; a missing file, bad JSON or no ``model`` is an error."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"{file}: no such tokenizer file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TokenizerError(f"{file}: not a valid tokenizer.json: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise TokenizerError(f"{file}: not a Hugging Face tokenizer.json (no 'model' object)")
    kind = data["model"].get("type", "BPE")  # old files (GPT-2's) leave it out
    if kind not in SUPPORTED_MODELS and not is_sentencepiece_json(data):
        raise TokenizerError(
            f"{file}: tokenizer model type {kind!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_MODELS)} (byte-level), and {kind} is not BPE"
        )
    return data


def _is_char_vocab(data: dict[str, Any]) -> bool:
    model = data["model"]
    decoder = data.get("decoder") or {}
    return (
        not model.get("merges")
        and data.get("pre_tokenizer") is None
        and decoder.get("type") == "Fuse"
        and all(len(k) == 1 for k in model.get("vocab", {}))
    )


def read_tokenizer_json(path: Path, pattern: str | None = None) -> Vocabulary:
    """The vocabulary of a ``tokenizer.json`` file (or of the one in folder ``path``).

    ``pattern`` overrides the pre-tokenizer of a byte-level BPE: a C++ family name or a
    llama.cpp pre-tokenizer name (:mod:`.pretokenizers`). Added tokens that are not special
    are matched in any text, as Hugging Face tokenizers does; single bytes missing from the
    vocabulary are dropped when encoding, as it does too.

    Raises:
        TokenizerError: not a tokenizer.json, a model other than BPE, subword prefixes, bad
            vocab or merges, or a pre-tokenizer that is neither a known family nor a
            sequence of ``Split``/``ByteLevel``/``Digits`` steps.
    """
    file = path / TOKENIZER_FILE if path.is_dir() else path
    data = read_json(file)
    if is_sentencepiece_json(data):
        return read_sentencepiece_json(data, file)
    if _is_char_vocab(data):
        return _char_vocab(data["model"]["vocab"], file)
    model = data["model"]
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokenizerError(f"{file}: subword prefixes/suffixes are not byte-level BPE")
    vocab = model.get("vocab")
    raw_merges = model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(raw_merges, list):
        raise TokenizerError(f"{file}: model.vocab / model.merges missing")
    merges: list[tuple[str, str]] = []
    for i, m in enumerate(raw_merges):
        parts = m.split(" ") if isinstance(m, str) else list(m)
        if len(parts) != 2:
            raise TokenizerError(f"{file}: merge {i} {m!r} is not two symbols")
        merges.append((parts[0], parts[1]))
    added = data.get("added_tokens") or []
    specials = {t["content"]: int(t["id"]) for t in added if t.get("special", True)}
    plain = {t["content"]: int(t["id"]) for t in added if not t.get("special", True)}
    if pattern:
        name, regexes = _named(pattern, str(file))
    else:
        name, regexes = _pre_tokenizer_of(data.get("pre_tokenizer"), file)
    out = _byte_level(vocab, merges, specials, plain, name, regexes, str(file))
    out.extra.update(bos_eos_of(data, file, {**specials, **plain}))
    return out


def byte_level_vocabulary(
    vocab: dict[str, int],
    merges: list[tuple[str, str]] | list[str],
    *,
    special_tokens: dict[str, int] | None = None,
    added_tokens: dict[str, int] | None = None,
    pre: str = "default",
    source: str = "",
) -> Vocabulary:
    """A byte-level BPE vocabulary from token lists, as GGUF files carry them
    (``tokenizer.ggml.model = gpt2``).

    ``vocab`` maps each token, written in GPT-2's byte-level alphabet, to its id; ``merges``
    are ``"a b"`` strings or pairs in priority order. ``special_tokens`` (control tokens:
    matched only when ``allowed_special`` asks) and ``added_tokens`` (user-defined ones:
    matched in any text) map raw text to ids. ``pre`` is a llama.cpp pre-tokenizer name
    (``tokenizer.ggml.pre``) or a C++ family name; ``source`` names the file for errors.

    Raises:
        TokenizerError: an unknown ``pre`` (the message lists the known names), a merge that
            is not two symbols, or a token outside the byte-level alphabet.
    """
    where = source or "byte-level vocabulary"
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(merges):
        parts = m.split(" ") if isinstance(m, str) else list(m)
        if len(parts) != 2:
            raise TokenizerError(f"{where}: merge {i} {m!r} is not two symbols")
        pairs.append((parts[0], parts[1]))
    name, regexes = _named(pre, where)
    return _byte_level(
        vocab, pairs, dict(special_tokens or {}), dict(added_tokens or {}), name, regexes, where
    )


def _byte_level(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    specials: dict[str, int],
    plain: dict[str, int],
    name: str,
    regexes: tuple[str, ...] | None,
    where: str,
) -> Vocabulary:
    skip = {**specials, **plain}
    tokens, ranks, ids = ranks_of_merges(vocab, merges, skip, where, all_bytes=False)
    # Hugging Face tokenizers drops a byte its vocabulary lacks (no unknown token)
    extra: dict[str, Any] = {"missing_bytes": "drop"}
    if regexes is not None:
        extra["split_regexes"] = list(regexes)
    if plain:
        extra["added_tokens"] = plain
    return Vocabulary(tokens, ranks, specials, name, ids=ids, source=where, extra=extra)


def _char_vocab(vocab: dict[str, int], file: Path) -> Vocabulary:
    chars = sorted(vocab, key=vocab.__getitem__)
    if [vocab[c] for c in chars] != list(range(len(chars))):
        raise TokenizerError(f"{file}: character vocabulary ids are not 0..{len(chars) - 1}")
    n = len(chars)
    tokens = [c.encode("utf-8") for c in chars]
    return Vocabulary(tokens, list(range(n)), {}, None, kind=CHARACTERS, source=str(file))


def _named(pattern: str, where: str) -> tuple[str, tuple[str, ...] | None]:
    """``(pattern, regexes or None)`` of a C++ family or llama.cpp pre-tokenizer name."""
    if pattern in PATTERN_ALIASES:
        return pattern_family(pattern), None
    if pattern in CPP_FAMILY:
        return CPP_FAMILY[pattern], None
    return pattern, pre_tokenizer_regexes(pattern, where)


def _steps(pre: dict, file: Path) -> list[str]:
    """The regex sequence of a pre-tokenizer made of Split, ByteLevel and Digits steps."""
    kind = pre.get("type")
    if kind == "Sequence":
        return [r for p in pre.get("pretokenizers", []) for r in _steps(p, file)]
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise TokenizerError(f"{file}: ByteLevel add_prefix_space=true is not supported")
        return [GPT2_REGEX] if pre.get("use_regex", True) else []
    if kind == "Digits":
        return [r"\p{N}" if pre.get("individual_digits") else r"\p{N}+"]
    if kind == "Split":
        pat = pre.get("pattern") or {}
        regex = pat.get("Regex") if "Regex" in pat else re.escape(str(pat.get("String", "")))
        if str(pre.get("behavior", "Isolated")).lower() != "isolated" or pre.get("invert"):
            raise TokenizerError(
                f"{file}: Split pre-tokenizer with behavior {pre.get('behavior')!r} "
                f"invert={pre.get('invert')} is not supported (only Isolated, not inverted)"
            )
        return [regex]
    raise TokenizerError(
        f"{file}: pre-tokenizer {kind!r} is not supported; supported: ByteLevel, Split "
        "(Isolated), Digits and Sequences of them; or pass pattern="
    )


def _pre_tokenizer_of(pre: dict | None, file: Path) -> tuple[str, tuple[str, ...] | None]:
    """``(pattern name, regexes)``: regexes None when a C++ splitter family reproduces
    Hugging Face's pieces exactly (GPT-2's ByteLevel regex), else the regex sequence."""
    if not pre:
        raise TokenizerError(f"{file}: no pre_tokenizer; pass pattern=")
    regexes = tuple(_steps(pre, file))
    if regexes == (GPT2_REGEX,):
        return "gpt2", None
    fam = family_of_regex(regexes[0]) if len(regexes) == 1 else None
    if fam is not None:
        return fam, None
    name = next((n for n, r in PRE_TOKENIZERS.items() if r == regexes), "regex")
    return name, regexes


# ---- writing ----------------------------------------------------------------------------
def tokenizer_json(
    vocab: dict[str, int],
    merges: list[list[str]],
    *,
    added_tokens: list[dict[str, Any]] = (),
    pre_tokenizer: dict[str, Any] | None = None,
    post_processor: dict[str, Any] | None = None,
    decoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Hugging Face ``tokenizer.json`` of a BPE model with the given parts."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": list(added_tokens),
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def _pre_tokenizer(pattern: str | None) -> dict[str, Any] | None:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    if pattern == "gpt2":
        return {**byte_level, "use_regex": True}
    regex = HF_SPLIT_REGEX.get(str(pattern)) or PAT_STR.get(str(pattern), "")
    if not regex or "++" in regex or "?+" in regex:  # possessive: HF would split otherwise
        return None
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, {**byte_level, "use_regex": False}]}


def _added(special_tokens: dict[str, int]) -> list[dict[str, Any]]:
    flags = dict(single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
    return [
        {"id": i, "content": s, **flags}
        for s, i in sorted(special_tokens.items(), key=lambda kv: kv[1])
    ]


def to_tokenizer_json(vocab: Vocabulary) -> dict[str, Any] | None:
    """The ``tokenizer.json`` of ``vocab``, or None when it cannot be expressed (a
    pre-tokenizer HF's regex engine cannot reproduce, or an unknown kind)."""
    if vocab.kind == CHARACTERS:
        chars = {t.decode("utf-8"): i for t, i in zip(vocab.tokens, vocab.id_list())}
        return tokenizer_json(chars, [], decoder={"type": "Fuse"})
    pre = _pre_tokenizer(vocab.pattern)
    if vocab.kind != BYTE_LEVEL_BPE or pre is None:
        return None
    byte_level = {"type": "ByteLevel", "add_prefix_space": False}
    return tokenizer_json(
        {**{to_text(t): i for t, i in zip(vocab.tokens, vocab.id_list())}, **vocab.special_tokens},
        merges_of_ranks(vocab.tokens, vocab.ranks),
        added_tokens=_added(vocab.special_tokens),
        pre_tokenizer=pre,
        post_processor={**byte_level, "trim_offsets": False},
        decoder={**byte_level, "trim_offsets": True},
    )


def write_tokenizer_json(out: Path, vocab: Vocabulary, eot_id: int | None = None) -> str | None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into the folder ``out``.

    Returns None when written, else a sentence saying why ``vocab`` cannot be written.
    """
    data = to_tokenizer_json(vocab)
    if data is None:
        return (
            f"a {vocab.kind} vocabulary with pre-tokenizer {vocab.pattern!r} cannot be "
            "written as a Hugging Face tokenizer.json"
        )
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(1e30),
        "clean_up_tokenization_spaces": False,
    }
    token = next((t for t, i in vocab.special_tokens.items() if i == eot_id), None)
    if eot_id is not None and token is not None:
        config.update(bos_token=token, eos_token=token)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / TOKENIZER_FILE).write_text(
            json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        (out / TOKENIZER_CONFIG_FILE).write_text(
            json.dumps(config, indent=2) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise TokenizerError(f"{out}: cannot write the tokenizer: {exc}") from None
    return None


def save_hf_tokenizer(tokenizer: Any, out_dir: str | Path) -> str | None:
    """Write ``tokenizer`` as ``tokenizer.json`` + ``tokenizer_config.json`` for transformers'
    ``AutoTokenizer``, from its :meth:`~llmcore.contracts.Tokenizer.vocabulary`.

    Returns None when written, else a sentence saying why this tokenizer cannot be exported
    (the model weights are still usable with another tokenizer).
    """
    name = getattr(tokenizer, "name", type(tokenizer).__name__)
    vocabulary = getattr(tokenizer, "vocabulary", None)  # a tokenizer outside the contract
    if vocabulary is None:
        return (
            f"the {name!r} tokenizer cannot be written as a Hugging Face tokenizer.json "
            "(it has no vocabulary()); only the model was exported"
        )
    note = write_tokenizer_json(Path(out_dir), vocabulary(), tokenizer.eot_id)
    return None if note is None else f"the {name!r} tokenizer: {note}; only the model was exported"
