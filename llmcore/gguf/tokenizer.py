"""The tokenizer, chat template and stop ids stored in a GGUF file's metadata.

``tokenizer.ggml.model`` says the kind: ``gpt2`` is a byte-level BPE (tokens in GPT-2's
byte alphabet, ``tokenizer.ggml.merges`` in priority order), built through
:class:`~llmcore.tokenizers.vocab.Vocabulary` by the registered plugin that reads it;
``llama`` is a SentencePiece model (pieces, scores, token types), built by
:mod:`llmcore.tokenizers.sentencepiece`.
"""

from __future__ import annotations

from typing import Any

from llmcore.errors import TokenizerError
from llmcore.gguf.reader import GGUFFile

KINDS = ("gpt2", "llama")
# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# metadata keys of the ids that end a turn, in llama.cpp's order of preference
STOP_KEYS = (
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
)


def _int_list(f: GGUFFile, key: str, n: int | None = None) -> list[Any]:
    value = f.get(key, list)
    if n is not None and len(value) != n:
        raise TokenizerError(f"{f.path}: {key} has {len(value)} entries, tokens {n}")
    return value


def load_tokenizer(f: GGUFFile) -> Any:
    """The llmcore tokenizer of a GGUF file's ``tokenizer.ggml.*`` metadata.

    Raises:
        TokenizerError: no tokenizer, an unknown ``tokenizer.ggml.model`` or pre-tokenizer,
            or tokens/merges that do not make a tokenizer (each naming the file and key).
    """
    kind = f.get("tokenizer.ggml.model", str, None)
    if kind not in KINDS:
        what = "is missing" if kind is None else f"{kind!r} is not supported"
        raise TokenizerError(
            f"{f.path}: tokenizer.ggml.model {what}; supported: {', '.join(KINDS)}"
        )
    tokens = f.get("tokenizer.ggml.tokens", list)
    if not all(isinstance(t, str) for t in tokens):
        raise TokenizerError(f"{f.path}: tokenizer.ggml.tokens must be an array of strings")
    types = (
        _int_list(f, "tokenizer.ggml.token_type", len(tokens))
        if "tokenizer.ggml.token_type" in f.metadata
        else [NORMAL] * len(tokens)
    )
    if kind == "gpt2":
        return _byte_level(f, tokens, types)
    return _sentencepiece(f, tokens, types)


def _byte_level(f: GGUFFile, tokens: list[str], types: list[int]) -> Any:
    """Control tokens are special (matched only when asked for), user-defined ones are
    added tokens (matched in any text); ``tokenizer.ggml.pre`` names the pre-tokenizer."""
    from llmcore.tokenizers.load import tokenizer_class_for
    from llmcore.tokenizers.tokenizer_json import byte_level_vocabulary

    source = f"{f.path} (tokenizer.ggml.tokens)"
    merges = f.get("tokenizer.ggml.merges", list, [])
    if not all(isinstance(m, str) for m in merges):
        raise TokenizerError(f"{f.path}: tokenizer.ggml.merges must be an array of strings")
    specials = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k == CONTROL}
    added = {t: i for i, (t, k) in enumerate(zip(tokens, types)) if k == USER_DEFINED}
    vocab = {t: i for i, t in enumerate(tokens) if t not in specials and t not in added}
    pre = f.get("tokenizer.ggml.pre", str, "default")
    v = byte_level_vocabulary(
        vocab, merges, special_tokens=specials, added_tokens=added, pre=pre, source=source
    )
    return tokenizer_class_for(v.kind, source).from_vocabulary(v)


def _sentencepiece(f: GGUFFile, tokens: list[str], types: list[int]) -> Any:
    try:
        from llmcore.tokenizers.sentencepiece import from_pieces
    except ImportError:
        raise TokenizerError(
            f"{f.path}: tokenizer.ggml.model 'llama' (SentencePiece) needs "
            "llmcore.tokenizers.sentencepiece, which this installation lacks"
        ) from None
    scores = (
        f.get("tokenizer.ggml.scores", list)
        if "tokenizer.ggml.scores" in f.metadata
        else [0.0] * len(tokens)
    )

    def opt_id(key: str) -> int | None:
        return f.get(f"tokenizer.ggml.{key}", int, None)

    return from_pieces(
        tokens,
        scores,
        types,
        model="bpe",  # llama.cpp's "llama" vocabulary merges by score; unigram is "t5"
        bos_id=opt_id("bos_token_id"),
        eos_id=opt_id("eos_token_id"),
        unk_id=opt_id("unknown_token_id"),
        pad_id=opt_id("padding_token_id"),
        add_bos=f.get("tokenizer.ggml.add_bos_token", bool, True),
        add_eos=f.get("tokenizer.ggml.add_eos_token", bool, False),
    )


def chat_template(f: GGUFFile) -> str | None:
    """``tokenizer.chat_template``, or None."""
    return f.get("tokenizer.chat_template", str, None)


def stop_ids(f: GGUFFile) -> tuple[int, ...]:
    """The ids that end the model's turn: eos, end-of-turn, end-of-message (those present)."""
    out: list[int] = []
    for key in STOP_KEYS:
        value = f.get(key, int, None)
        if value is not None and value not in out:
            out.append(value)
    return tuple(out)
