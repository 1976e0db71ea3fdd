"""Readers of the four vocabulary formats into one :class:`BPEData`.

* a tiktoken ``.tiktoken`` rank file (``base64(token) rank`` per line),
* a Hugging Face ``tokenizer.json`` (model type BPE, ByteLevel),
* a folder with GPT-2's ``encoder.json`` and ``vocab.bpe``,
* llmcore's saved folder (``llmcore-tokenizer.json`` + ``tokenizer.tiktoken``).

Every problem is a :class:`~llmcore.errors.TokenizerError` naming the file (and line).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path

from llmcore.errors import TokenizerError

from .encodings import ENCODINGS, PAT_STR, family_of_regex, get_encoding, pattern_family

SAVE_FILE = "llmcore-tokenizer.json"
RANKS_FILE = "tokenizer.tiktoken"
FORMAT_VERSION = 1


@dataclass
class BPEData:
    """Everything a BPE tokenizer is built from.

    ``tokens[i]`` has merge priority ``ranks[i]`` (lower merges first) and output id
    ``ids[i]`` (``ids`` None: the id is the rank, as in every tiktoken encoding).
    """

    tokens: list[bytes]
    ranks: list[int]
    special_tokens: dict[str, int]
    pattern: str
    ids: list[int] | None = None
    encoding: str | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)


# ---- tiktoken ---------------------------------------------------------------------------
def read_tiktoken_ranks(path: Path) -> tuple[list[bytes], list[int]]:
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


def infer_encoding(path: Path) -> str | None:
    stem = path.name.split(".")[0]
    for name in sorted(ENCODINGS, key=len, reverse=True):
        if stem == name or stem.startswith(name):
            return name
    return None


def load_tiktoken_file(
    path: Path,
    encoding: str | None,
    pattern: str | None = None,
    special_tokens: dict[str, int] | None = None,
) -> BPEData:
    tokens, ranks = read_tiktoken_ranks(path)
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
    return BPEData(tokens, ranks, specials, fam, encoding=name, source=str(path))


# ---- GPT-2 byte-level unicode ----------------------------------------------------------
def bytes_to_unicode() -> dict[int, str]:
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _byte_decoder() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _unmap(s: str, dec: dict[str, int], where: str) -> bytes:
    try:
        return bytes(dec[c] for c in s)
    except KeyError as exc:
        raise TokenizerError(
            f"{where}: token {s!r} is not in GPT-2's byte-level alphabet ({exc})"
        ) from None


def _from_vocab_merges(
    vocab: dict[str, int], merges: list[tuple[str, str]], specials: dict[str, int], where: str
) -> tuple[list[bytes], list[int], list[int] | None]:
    dec = _byte_decoder()
    # merge priority: single bytes first (by byte value), then the merges in order
    rank_of: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    nxt = 256
    for i, (a, b) in enumerate(merges):
        tok = _unmap(a, dec, f"{where} merge {i}") + _unmap(b, dec, f"{where} merge {i}")
        if tok not in rank_of:
            rank_of[tok] = nxt
            nxt += 1
    tokens: list[bytes] = []
    ranks: list[int] = []
    ids: list[int] = []
    seen_ids: set[int] = set()
    seen_bytes: set[bytes] = set()
    for s, i in vocab.items():
        if s in specials:
            continue
        if not isinstance(i, int) or i < 0:
            raise TokenizerError(f"{where}: token {s!r} has invalid id {i!r}")
        if i in seen_ids:
            raise TokenizerError(f"{where}: duplicate id {i}")
        b = _unmap(s, dec, where)
        if b in seen_bytes:
            raise TokenizerError(f"{where}: duplicate token {s!r}")
        seen_ids.add(i)
        seen_bytes.add(b)
        r = rank_of.get(b)
        if r is None:  # in the vocabulary but made by no merge: reachable only whole
            r = nxt
            nxt += 1
        tokens.append(b)
        ranks.append(r)
        ids.append(i)
    if len(tokens) < 256:
        raise TokenizerError(
            f"{where}: only {len(tokens)} tokens; a byte-level BPE needs all 256 bytes"
        )
    return tokens, ranks, (None if ids == ranks else ids)


def load_gpt2_folder(folder: Path) -> BPEData:
    enc_p, bpe_p = folder / "encoder.json", folder / "vocab.bpe"
    try:
        vocab = json.loads(enc_p.read_text(encoding="utf-8"))
        lines = bpe_p.read_text(encoding="utf-8").split("\n")
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{folder}: cannot read GPT-2 encoder.json/vocab.bpe: {exc}") from None
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{enc_p}: expected a JSON object token -> id")
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(lines, 1):
        if not line or line.startswith("#version"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(f"{bpe_p}:{lineno}: expected two symbols, got {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    specials = {k: v for k, v in vocab.items() if k == "<|endoftext|>"}
    tokens, ranks, ids = _from_vocab_merges(vocab, merges, specials, str(folder))
    return BPEData(
        tokens,
        ranks,
        specials,
        "gpt2",
        ids=ids,
        encoding="gpt2" if ids is None else None,
        source=str(folder),
    )


def load_hf_tokenizer_json(path: Path, pattern: str | None = None) -> BPEData:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{path}: cannot read tokenizer.json: {exc}") from None
    model = cfg.get("model") or {}
    if model.get("type", "BPE") != "BPE":
        raise TokenizerError(f"{path}: model type {model.get('type')!r} is not BPE")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokenizerError(f"{path}: subword prefixes/suffixes are not byte-level BPE")
    vocab = model.get("vocab")
    raw_merges = model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(raw_merges, list):
        raise TokenizerError(f"{path}: model.vocab / model.merges missing")
    merges: list[tuple[str, str]] = []
    for i, m in enumerate(raw_merges):
        parts = m.split(" ") if isinstance(m, str) else list(m)
        if len(parts) != 2:
            raise TokenizerError(f"{path}: merge {i} {m!r} is not two symbols")
        merges.append((parts[0], parts[1]))
    specials = {
        t["content"]: int(t["id"]) for t in cfg.get("added_tokens") or [] if t.get("special", True)
    }
    fam = pattern_family(pattern) if pattern else _hf_pattern(cfg.get("pre_tokenizer"), path)
    tokens, ranks, ids = _from_vocab_merges(vocab, merges, specials, str(path))
    return BPEData(tokens, ranks, specials, fam, ids=ids, source=str(path))


def _hf_pattern(pre: dict | None, path: Path) -> str:
    if not pre:
        raise TokenizerError(f"{path}: no pre_tokenizer; pass pattern=")
    kind = pre.get("type")
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise TokenizerError(f"{path}: ByteLevel add_prefix_space=true is not supported")
        if pre.get("use_regex", True):
            return "gpt2"
    if kind == "Sequence":
        for p in pre.get("pretokenizers", []):
            if p.get("type") == "Split":
                regex = (p.get("pattern") or {}).get("Regex")
                fam = family_of_regex(regex) if regex else None
                if fam:
                    return fam
            if p.get("type") == "ByteLevel" and p.get("use_regex", True):
                return "gpt2"
    raise TokenizerError(
        f"{path}: pre-tokenizer {kind!r} is not one of the known patterns; pass pattern="
    )


# ---- llmcore's own format ---------------------------------------------------------------
def save(data: BPEData, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(data.tokens)), key=data.ranks.__getitem__)
    lines = [base64.b64encode(data.tokens[i]) + b" " + str(data.ranks[i]).encode() for i in order]
    (folder / RANKS_FILE).write_bytes(b"\n".join(lines) + b"\n")
    meta = {
        "type": "bpe",
        "format_version": FORMAT_VERSION,
        "pattern": data.pattern,
        "pat_str": PAT_STR[data.pattern],
        "encoding": data.encoding,
        "ranks_file": RANKS_FILE,
        "special_tokens": data.special_tokens,
    }
    if data.ids is not None:
        meta["ids"] = [data.ids[i] for i in order]
    meta.update(data.extra)
    (folder / SAVE_FILE).write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def load_saved(folder: Path) -> BPEData:
    meta_p = folder / SAVE_FILE
    try:
        meta = json.loads(meta_p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{meta_p}: cannot read: {exc}") from None
    if meta.get("type") != "bpe":
        raise TokenizerError(f"{meta_p}: type {meta.get('type')!r} is not 'bpe'")
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise TokenizerError(
            f"{meta_p}: format_version {meta['format_version']} is newer than this llmcore"
        )
    fam = pattern_family(str(meta.get("pattern")))
    tokens, ranks = read_tiktoken_ranks(folder / str(meta.get("ranks_file", RANKS_FILE)))
    ids = meta.get("ids")
    if ids is not None and len(ids) != len(tokens):
        raise TokenizerError(f"{meta_p}: 'ids' has {len(ids)} entries for {len(tokens)} tokens")
    specials = meta.get("special_tokens") or {}
    if not isinstance(specials, dict):
        raise TokenizerError(f"{meta_p}: special_tokens must be an object")
    return BPEData(
        tokens,
        ranks,
        {str(k): int(v) for k, v in specials.items()},
        fam,
        ids=ids,
        encoding=meta.get("encoding"),
        source=str(folder),
    )


def load_any(
    path,
    encoding: str | None = None,
    pattern: str | None = None,
    special_tokens: dict[str, int] | None = None,
) -> BPEData:
    p = Path(path)
    if p.is_dir():
        if (p / SAVE_FILE).exists():
            return load_saved(p)
        if (p / "encoder.json").exists() and (p / "vocab.bpe").exists():
            return load_gpt2_folder(p)
        if (p / "tokenizer.json").exists():
            return load_hf_tokenizer_json(p / "tokenizer.json", pattern)
        raise TokenizerError(
            f"{p}: folder has no llmcore-tokenizer.json, tokenizer.json, or encoder.json + vocab.bpe"
        )
    if p.name == SAVE_FILE:
        return load_saved(p.parent)
    if not p.exists():
        raise TokenizerError(f"{p}: no such tokenizer file or folder")
    if p.suffix == ".json":
        return load_hf_tokenizer_json(p, pattern)
    return load_tiktoken_file(p, encoding, pattern, special_tokens)
