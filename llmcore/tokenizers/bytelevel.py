"""GPT-2's byte-level alphabet, and converting between vocab + merges and merge ranks.

Byte-level vocabularies (GPT-2's ``encoder.json``, Hugging Face ``tokenizer.json``) write each
byte as a printable character (:func:`bytes_to_unicode`) and list merges in priority order;
tiktoken files instead give each token's bytes a rank. tiktoken-style BPE merges any adjacent
pair whose concatenation is a token, lowest rank first; HF's BPE applies listed merges, lowest
merge index first. Listing, for every token in rank order, each split of it into two tokens
(:func:`merges_of_ranks`) makes the two agree, the way transformers converts tiktoken files.
"""

from __future__ import annotations

from functools import cache

from llmcore.errors import TokenizerError


@cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:  # unprintable bytes get the characters from U+0100 on, in byte order
            table[b] = chr(256 + extra)
            extra += 1
    return table


@cache
def unicode_to_bytes() -> dict[str, int]:
    """The inverse of :func:`bytes_to_unicode`."""
    return {c: b for b, c in bytes_to_unicode().items()}


def to_text(token: bytes) -> str:
    """A token's bytes in GPT-2's byte-level alphabet."""
    table = bytes_to_unicode()
    return "".join(table[x] for x in token)


def to_bytes(text: str, where: str) -> bytes:
    """The bytes of a token written in GPT-2's byte-level alphabet; ``where`` names it."""
    dec = unicode_to_bytes()
    try:
        return bytes(dec[c] for c in text)
    except KeyError as exc:
        raise TokenizerError(
            f"{where}: token {text!r} is not in GPT-2's byte-level alphabet ({exc})"
        ) from None


def _merge_ranks(merges: list[tuple[str, str]], where: str) -> tuple[dict[bytes, int], int]:
    # merge priority: single bytes first (by byte value), then the merges in order
    rank_of: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    nxt = 256
    for i, (a, b) in enumerate(merges):
        tok = to_bytes(a, f"{where} merge {i}") + to_bytes(b, f"{where} merge {i}")
        if tok not in rank_of:
            rank_of[tok] = nxt
            nxt += 1
    return rank_of, nxt


def ranks_of_merges(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    specials: dict[str, int] | set[str],
    where: str,
    *,
    all_bytes: bool = True,
) -> tuple[list[bytes], list[int], list[int] | None]:
    """``(tokens, ranks, ids)`` of a byte-level vocab (text -> id) and its merge list.

    ``ids`` is None when every id equals its rank. Special (and added) tokens, the keys of
    ``specials``, are left out. ``all_bytes=False`` accepts a vocabulary that lacks some of
    the 256 single bytes (Hugging Face tokenizers drops such bytes when encoding).

    Raises:
        TokenizerError: a token outside the alphabet, a duplicate id or token, a bad id, or
            (``all_bytes``) fewer than 256 tokens; ``where`` names the file.
    """
    rank_of, nxt = _merge_ranks(merges, where)
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
        b = to_bytes(s, where)
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
    if all_bytes and len(tokens) < 256:
        raise TokenizerError(
            f"{where}: only {len(tokens)} tokens; a byte-level BPE needs all 256 bytes"
        )
    return tokens, ranks, (None if ids == ranks else ids)


def merges_of_ranks(tokens: list[bytes], ranks: list[int]) -> list[list[str]]:
    """The merge list, in byte-level text, that makes HF's BPE agree with these ranks."""
    rank_of = dict(zip(tokens, ranks))
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for tok, rank in rank_of.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in rank_of and right in rank_of:
                merges.append((rank, rank_of[left], rank_of[right], left, right))
    merges.sort()
    return [[to_text(m[3]), to_text(m[4])] for m in merges]
