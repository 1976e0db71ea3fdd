"""The exact fallback encoder of byte-level BPE: regex-sequence pre-tokenizers without a
hand-written C++ splitter (deepseek-llm, falcon, custom Split regexes), as Hugging Face
tokenizers encodes them.

The C++ core (:mod:`llmcore.ops.bpe`) covers the pre-tokenizers it splits by hand
(:data:`llmcore.tokenizers.pretokenizers.CPP_SPLITTER`). Everything else runs here: the
pieces come from the ``regex`` package (each regex of the sequence isolating its matches,
Hugging Face's ``Split``), a byte the vocabulary lacks is dropped from its piece before
merging (what HF's BPE does with no unknown token), and each piece is merged lowest rank first, leftmost on ties, with a piece cache.
:class:`RegexCore` has the methods of the C++ ``Core`` that the tokenizer calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

from llmcore.errors import TokenizerError


class RegexCore:
    """Encoder/decoder of one byte-level vocabulary with a regex-sequence pre-tokenizer."""

    def __init__(
        self,
        tokens: Sequence[bytes],
        ranks: Sequence[int],
        ids: Sequence[int] | None,
        special_tokens: dict[str, int],
        regexes: Sequence[str],
        added_tokens: dict[str, int] | None = None,
    ) -> None:
        ids = list(ids) if ids is not None else list(ranks)
        self._rank = dict(zip(tokens, ranks))
        self._id = dict(zip(tokens, ids))
        self._bytes = {i: t for t, i in zip(tokens, ids)}
        self._bytes.update({i: s.encode() for s, i in special_tokens.items()})
        self._added = dict(added_tokens or {})
        self._bytes.update({i: s.encode() for s, i in self._added.items()})
        self._regexes = [regex.compile(r) for r in regexes]
        self._special_names = [k for k, _ in sorted(special_tokens.items(), key=lambda kv: kv[1])]
        self._special = dict(special_tokens)
        self._cache: dict[bytes, list[int]] = {}
        self.n_vocab = max(self._bytes, default=-1) + 1

    # ---- pieces -------------------------------------------------------------------------
    def split(self, text: str) -> list[str]:
        """The pieces of ``text``: each regex isolates its matches in every piece so far."""
        pieces = [text] if text else []
        for rx in self._regexes:
            out: list[str] = []
            for piece in pieces:
                pos = 0
                for m in rx.finditer(piece):
                    if m.start() > pos:
                        out.append(piece[pos : m.start()])
                    if m.end() > m.start():
                        out.append(m.group())
                    pos = m.end()
                if pos < len(piece):
                    out.append(piece[pos:])
            pieces = out
        return pieces

    def _merge(self, piece: bytes) -> list[int]:
        hit = self._cache.get(piece)
        if hit is not None:
            return hit
        rank = self._rank
        parts = [bytes([b]) for b in piece if bytes([b]) in rank]  # HF drops unknown bytes
        while len(parts) > 1:
            best, at = None, -1
            for k in range(len(parts) - 1):
                r = rank.get(parts[k] + parts[k + 1])
                if r is not None and (best is None or r < best):
                    best, at = r, k
            if best is None:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        ids = [self._id[p] for p in parts]
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def _ordinary(self, text: str) -> list[int]:
        out: list[int] = []
        for piece in self.split(text):
            out += self._merge(piece.encode("utf-8", errors="surrogateescape"))
        return out

    def _encode(self, text: str, allowed: set[str]) -> list[int]:
        names = sorted(set(self._added) | allowed, key=len, reverse=True)
        if not names:
            return self._ordinary(text)
        table = {**self._added, **{s: self._special[s] for s in allowed}}
        out: list[int] = []
        pos = 0
        for m in regex.finditer("|".join(map(regex.escape, names)), text):
            out += self._ordinary(text[pos : m.start()])
            out.append(table[m.group()])
            pos = m.end()
        return out + self._ordinary(text[pos:])

    # ---- the methods of the C++ Core ----------------------------------------------------
    def encode_ordinary(self, text: str) -> list[int]:
        return self._encode(text, set())

    def encode_special(self, text: str, allowed: Sequence[bool]) -> list[int]:
        return self._encode(text, {n for n, ok in zip(self._special_names, allowed) if ok})

    def encode_bytes(self, data: bytes) -> list[int]:
        return self._encode(data.decode("utf-8", errors="surrogateescape"), set())

    def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
        return [self.encode_ordinary(t) for t in texts]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        try:
            return b"".join(self._bytes[int(i)] for i in ids)
        except KeyError as exc:
            raise TokenizerError(f"token id {exc.args[0]} is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.decode_bytes([token_id])
