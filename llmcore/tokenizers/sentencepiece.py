"""SentencePiece models: reading ``tokenizer.model`` protobuf files without the sentencepiece
package, and the :class:`~llmcore.tokenizers.vocab.Vocabulary` they become.

A ``tokenizer.model`` is a serialized ``ModelProto`` (sentencepiece_model.proto). Only the
fields that change how text becomes ids are read: the pieces (text, score, type), the trainer
spec's model type, byte fallback and special ids, and the normalizer spec (its precompiled
character map and whitespace options). :func:`from_pieces` builds the same vocabulary from
plain lists, as GGUF files carry them (``tokenizer.ggml.model = llama``).
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmcore.errors import TokenizerError

from .vocab import SENTENCEPIECE, Vocabulary

MODEL_FILE = "tokenizer.model"

# piece types, the SentencePiece / GGUF enum
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
PIECE_TYPES = (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE)
MODEL_TYPES = {1: "unigram", 2: "bpe"}  # TrainerSpec.model_type; word and char are not read


# ---- protobuf wire format ---------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of every field of one protobuf message: ints for
    varints, bytes for length-delimited fields, 4 or 8 raw bytes for fixed-width ones."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError(f"field {num} runs past the end")
            value, pos = buf[pos : pos + n], pos + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if pos + n > len(buf):
                raise ValueError(f"field {num} runs past the end")
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"unsupported wire type {wire} (field {num})")
        out.append((num, wire, value))
    return out


def _piece(buf: bytes) -> tuple[str, float, int]:
    text, score, kind = "", 0.0, NORMAL
    for num, wire, value in fields(buf):
        if num == 1 and wire == 2:
            text = value.decode("utf-8")
        elif num == 2 and wire == 5:
            score = struct.unpack("<f", value)[0]
        elif num == 3 and wire == 0:
            kind = value
    return text, score, kind


# TrainerSpec field -> option name (the ones that change encoding or name special ids)
_TRAINER_INTS = {3: "model_type", 35: "byte_fallback", 40: "unk_id", 41: "bos_id", 42: "eos_id"}
_TRAINER_INTS.update({43: "pad_id", 24: "treat_whitespace_as_suffix"})
_NORMALIZER_BOOLS = {3: "add_dummy_prefix", 4: "remove_extra_whitespaces", 5: "escape_whitespaces"}


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v  # int32 -1 is written as 10 bytes


def parse_model_proto(buf: bytes) -> dict[str, Any]:
    """The fields of a serialized ``ModelProto`` that llmcore uses, with proto defaults.

    Raises:
        ValueError: the bytes are not a protobuf message of that shape.
    """
    opts: dict[str, Any] = dict(
        model_type=1, byte_fallback=0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        treat_whitespace_as_suffix=0, unk_surface=" \u2047 ", add_dummy_prefix=1,
        remove_extra_whitespaces=1, escape_whitespaces=1, charsmap=b"", normalizer="",
    )  # fmt: skip
    pieces: list[tuple[str, float, int]] = []
    for num, wire, value in fields(buf):
        if num == 1 and wire == 2:
            pieces.append(_piece(value))
        elif num == 2 and wire == 2:
            for n, w, v in fields(value):
                if n in _TRAINER_INTS and w == 0:
                    opts[_TRAINER_INTS[n]] = _signed(v)
                elif n == 44 and w == 2:
                    opts["unk_surface"] = v.decode("utf-8")
        elif num == 3 and wire == 2:
            for n, w, v in fields(value):
                if n in _NORMALIZER_BOOLS and w == 0:
                    opts[_NORMALIZER_BOOLS[n]] = v
                elif n == 2 and w == 2:
                    opts["charsmap"] = bytes(v)
                elif n == 1 and w == 2:
                    opts["normalizer"] = v.decode("utf-8")
    if not pieces:
        raise ValueError("no pieces")
    opts["pieces"] = pieces
    return opts


def read_model_file(path: Path) -> Vocabulary:
    """The vocabulary of a SentencePiece ``tokenizer.model`` file (or of the one in a folder).

    Raises:
        TokenizerError: the file is missing, not a SentencePiece ModelProto, or of a model
            type other than BPE and unigram.
    """
    file = path / MODEL_FILE if path.is_dir() else path
    try:
        buf = file.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"{file}: cannot read the SentencePiece model: {exc}") from None
    try:
        opts = parse_model_proto(buf)
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise TokenizerError(
            f"{file}: not a SentencePiece model (a serialized ModelProto protobuf): {exc}"
        ) from None
    if opts["model_type"] not in MODEL_TYPES:
        raise TokenizerError(
            f"{file}: SentencePiece model_type {opts['model_type']} is not supported; "
            "supported: 1 (unigram), 2 (bpe)"
        )
    pieces = opts.pop("pieces")
    model = MODEL_TYPES[opts.pop("model_type")]
    return _vocabulary(pieces, model, opts, str(file))


def _id_or_none(i: int | None, n: int) -> int | None:
    return i if i is not None and 0 <= i < n else None


def _vocabulary(
    pieces: Sequence[tuple[str, float, int]], model: str, opts: dict[str, Any], source: str
) -> Vocabulary:
    n = len(pieces)
    for i, (text, _, kind) in enumerate(pieces):
        if kind not in PIECE_TYPES:
            raise TokenizerError(f"{source}: piece {i} {text!r} has unknown type {kind}")
    specials = {t: i for i, (t, _, k) in enumerate(pieces) if k in (CONTROL, UNKNOWN)}
    extra: dict[str, Any] = {
        "model": model,
        "scores": [float(s) for _, s, _ in pieces],
        "types": [int(k) for _, _, k in pieces],
        "byte_fallback": bool(opts.get("byte_fallback")),
        "add_dummy_prefix": bool(opts.get("add_dummy_prefix", True)),
        "remove_extra_whitespaces": bool(opts.get("remove_extra_whitespaces", True)),
        "escape_whitespaces": bool(opts.get("escape_whitespaces", True)),
        "treat_whitespace_as_suffix": bool(opts.get("treat_whitespace_as_suffix")),
        "unk_surface": opts.get("unk_surface", " \u2047 "),
        "charsmap": opts.get("charsmap", b""),
        "add_bos": bool(opts.get("add_bos", False)),
        "add_eos": bool(opts.get("add_eos", False)),
    }
    for name in ("unk_id", "bos_id", "eos_id", "pad_id"):
        extra[name] = _id_or_none(opts.get(name), n)
    if extra["unk_id"] is None:
        extra["unk_id"] = next((i for i, (_, _, k) in enumerate(pieces) if k == UNKNOWN), None)
    tokens = [t.encode("utf-8") for t, _, _ in pieces]
    return Vocabulary(
        tokens, list(range(n)), specials, None, kind=SENTENCEPIECE, source=source, extra=extra
    )


def from_pieces(
    pieces: Sequence[str],
    scores: Sequence[float],
    types: Sequence[int],
    *,
    model: str = "bpe",
    bos_id: int | None = None,
    eos_id: int | None = None,
    unk_id: int | None = None,
    pad_id: int | None = None,
    add_bos: bool = False,
    add_eos: bool = False,
) -> Any:
    """The SentencePiece tokenizer of plain lists (GGUF's ``tokenizer.ggml.tokens``,
    ``.scores`` and ``.token_type``): piece ``i`` is id ``i``; ``types`` use the enum 1
    normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.

    The text is normalized as Llama-style models do: no character map, a ``▁`` prefix,
    spaces written as ``▁`` and kept as they are; byte fallback is on when there are byte
    pieces. ``add_bos``/``add_eos`` are the tokenizer's defaults for ``encode(...,
    add_special=None)``.
    """
    if not len(pieces) == len(scores) == len(types):
        raise TokenizerError(
            f"sentencepiece pieces: {len(pieces)} pieces, {len(scores)} scores and "
            f"{len(types)} types must be as many"
        )
    if model not in MODEL_TYPES.values():
        raise TokenizerError(f"sentencepiece model {model!r}: valid are 'bpe', 'unigram'")
    opts = dict(
        byte_fallback=any(int(t) == BYTE for t in types), unk_id=unk_id, bos_id=bos_id,
        eos_id=eos_id, pad_id=pad_id, add_bos=add_bos, add_eos=add_eos,
        remove_extra_whitespaces=False,
    )  # fmt: skip
    triples = [(str(p), float(s), int(t)) for p, s, t in zip(pieces, scores, types)]
    vocab = _vocabulary(triples, model, opts, "sentencepiece pieces")
    from .load import tokenizer_class_for

    return tokenizer_class_for(SENTENCEPIECE, vocab.source).from_vocabulary(vocab)


# ---- llmcore's save format --------------------------------------------------------------
def saved_meta(vocab: Vocabulary) -> dict[str, Any]:
    """The JSON-ready fields of a SentencePiece vocabulary for a saved folder's marker."""
    extra = dict(vocab.extra)
    extra["charsmap"] = base64.b64encode(extra.get("charsmap", b"")).decode("ascii")
    return {"pieces": [t.decode("utf-8") for t in vocab.tokens], **extra}


def vocabulary_of_meta(meta: dict[str, Any], source: str) -> Vocabulary:
    """The vocabulary :func:`saved_meta` wrote into a marker."""
    try:
        pieces = list(zip(meta["pieces"], meta["scores"], meta["types"]))
        opts = {k: v for k, v in meta.items() if k not in ("pieces", "scores", "types")}
        opts["charsmap"] = base64.b64decode(meta.get("charsmap", ""))
        vocab = _vocabulary(pieces, str(meta["model"]), opts, source)
        keys = ("merges", "ignore_merges", "prefix_unless_space", "prefix_first_only")
        for key in (*keys, "float64_scores"):
            if key in meta:
                vocab.extra[key] = meta[key]
        return vocab
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenizerError(f"{source}: not a saved sentencepiece tokenizer: {exc}") from None


# ---- Hugging Face tokenizer.json of a SentencePiece-style model -------------------------
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def is_sentencepiece_json(data: dict[str, Any]) -> bool:
    """Whether a ``tokenizer.json`` describes a SentencePiece-style model (Llama 2, Mistral,
    Gemma): the ``▁`` conventions (a Metaspace pre-tokenizer or a normalizer writing ``▁``),
    or a BPE model with byte fallback."""
    model = data.get("model") or {}
    pre = data.get("pre_tokenizer") or {}
    space = pre.get("type") == "Metaspace" or "\u2581" in json.dumps(
        data.get("normalizer"), ensure_ascii=False
    )
    return space or (model.get("type", "BPE") == "BPE" and bool(model.get("byte_fallback")))


def _whitespace_options(data: dict[str, Any], file: str) -> dict[str, Any]:
    """The normalizer options of HF's Prepend/Replace normalizers or Metaspace."""
    opts: dict[str, Any] = dict(
        add_dummy_prefix=False, escape_whitespaces=False, remove_extra_whitespaces=False
    )
    norm = data.get("normalizer") or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    for step in (s for s in steps if s):
        kind = step.get("type")
        if kind == "Prepend" and step.get("prepend") == "\u2581":
            opts["add_dummy_prefix"] = True
        elif kind == "Replace" and step.get("content") == "\u2581":
            opts["escape_whitespaces"] = True
        else:
            raise TokenizerError(
                f"{file}: normalizer {kind!r} of a SentencePiece-style model is not supported "
                "(supported: Prepend('▁'), Replace(' ', '▁'))"
            )
    pre = data.get("pre_tokenizer")
    if pre:
        scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space") else "never")
        if pre.get("type") != "Metaspace" or pre.get("split", False):
            raise TokenizerError(
                f"{file}: pre-tokenizer {pre.get('type')!r} (split={pre.get('split')}) of a "
                "SentencePiece-style model is not supported (supported: Metaspace, split=false)"
            )
        opts.update(escape_whitespaces=True, prefix_unless_space=True)
        opts["add_dummy_prefix"] = scheme != "never"
        opts["prefix_first_only"] = scheme == "first"  # not after a special token
    return opts


def _pieces_of_json(model: dict[str, Any], added: list[dict], file: str) -> list:
    if model.get("type") == "Unigram":
        pieces = [(str(p), float(s)) for p, s in model.get("vocab", [])]
        unk_id = model.get("unk_id")
        unk = pieces[unk_id][0] if isinstance(unk_id, int) else None
    else:
        vocab = model.get("vocab") or {}
        order = sorted(vocab, key=vocab.__getitem__)
        if [vocab[p] for p in order] != list(range(len(order))):
            raise TokenizerError(f"{file}: vocabulary ids are not 0..{len(order) - 1}")
        pieces = [(p, 0.0) for p in order]
        unk = model.get("unk_token")
    kinds = {t["content"]: CONTROL if t.get("special", True) else USER_DEFINED for t in added}
    out = []
    for text, score in pieces:
        kind = kinds.get(text, NORMAL)
        if text == unk:
            kind = UNKNOWN
        elif kind == NORMAL and _BYTE_PIECE.fullmatch(text):
            kind = BYTE
        out.append((text, score, kind))
    return out


def read_sentencepiece_json(data: dict[str, Any], file: Path) -> Vocabulary:
    """The vocabulary of a SentencePiece-style ``tokenizer.json`` (see
    :func:`is_sentencepiece_json`); bos/eos and ``add_bos_token``/``add_eos_token`` come from
    ``tokenizer_config.json`` beside it when there is one."""
    model = data["model"]
    pieces = _pieces_of_json(model, data.get("added_tokens") or [], str(file))
    opts = _whitespace_options(data, str(file))
    opts["byte_fallback"] = bool(model.get("byte_fallback")) or model.get("type") == "Unigram"
    index = {t: i for i, (t, _, _) in enumerate(pieces)}
    opts.update(bos_eos_of(data, file, index, ("<s>", "</s>")))
    opts["unk_id"] = next((i for i, (_, _, k) in enumerate(pieces) if k == UNKNOWN), None)
    kind = "unigram" if model.get("type") == "Unigram" else "bpe"
    vocab = _vocabulary(pieces, kind, opts, str(file))
    vocab.extra["prefix_unless_space"] = bool(opts.get("prefix_unless_space"))
    vocab.extra["prefix_first_only"] = bool(opts.get("prefix_first_only"))
    vocab.extra["float64_scores"] = True  # HF's Unigram sums scores in float64
    if kind == "bpe":
        merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model.get("merges", [])]
        vocab.extra["merges"] = [tuple(m) for m in merges]
        vocab.extra["ignore_merges"] = bool(model.get("ignore_merges"))
    return vocab


def bos_eos_of(
    data: dict[str, Any], file: Path, ids: dict[str, int], default: tuple[str, str] | None = None
) -> dict[str, Any]:
    """``bos_id``, ``eos_id``, ``add_bos``, ``add_eos`` of a ``tokenizer.json``: the tokens
    and ``add_bos_token``/``add_eos_token`` of ``tokenizer_config.json`` beside it, else
    ``default`` token names and the post-processor's template."""
    config = _config_beside(file)
    out: dict[str, Any] = {}
    for k, name in enumerate(("bos", "eos")):
        token = config.get(f"{name}_token", default[k] if default else None)
        token = token.get("content") if isinstance(token, dict) else token
        out[f"{name}_id"] = ids.get(token) if isinstance(token, str) else None
        out[f"add_{name}"] = bool(config.get(f"add_{name}_token", _in_template(data, token)))
    return out


def _in_template(data: dict[str, Any], token: str | None) -> bool:
    """Whether the post-processor's single-sequence template adds ``token``."""
    post = data.get("post_processor") or {}
    single = post.get("single") or [] if post.get("type") == "TemplateProcessing" else []
    return any((s.get("SpecialToken") or {}).get("id") == token for s in single)


def _config_beside(file: Path) -> dict[str, Any]:
    config = file.parent / "tokenizer_config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
