"""The exact fallback encoder of byte-level BPE: regex-sequence pre-tokenizers without a
hand-written C++ splitter (deepseek-llm, falcon, custom Split regexes), as Hugging Face
tokenizers encodes them.

The C++ core (:mod:`llmcore.ops.bpe`) covers the pre-tokenizers it splits by hand
(:data:`llmcore.tokenizers.pretokenizers.CPP_SPLITTER`). Everything else splits here: the
pieces come from the ``regex`` package (each regex of the sequence isolating its matches,
Hugging Face's ``Split``), and the C++ core merges them (``Core.encode_pieces``: a byte the
vocabulary lacks is dropped from its piece first, as HF's BPE does with no unknown token;
lowest rank first, leftmost on ties, with its piece cache).
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
        from llmcore.ops.bpe import new_core

        ids = list(ids) if ids is not None else list(ranks)
        # the merging half only: its splitter is never used (encode_pieces)
        self._core = new_core(tokens, ranks, ids, {}, "gpt2", drop_missing_bytes=True)
        self._bytes = {i: t for t, i in zip(tokens, ids)}
        self._bytes.update({i: s.encode() for s, i in special_tokens.items()})
        self._added = dict(added_tokens or {})
        self._bytes.update({i: s.encode() for s, i in self._added.items()})
        self._regexes = [regex.compile(r) for r in regexes]
        # a regex without groups of its own splits in one C call: split() on it in a group
        # gives gap, match, gap, ... (the same matches finditer finds)
        self._splitters = [
            regex.compile(f"({r})") if rx.groups == 0 else None
            for r, rx in zip(regexes, self._regexes)
        ]
        self._special_names = [k for k, _ in sorted(special_tokens.items(), key=lambda kv: kv[1])]
        self._special = dict(special_tokens)
        self.n_vocab = max(self._bytes, default=-1) + 1

    # ---- pieces -------------------------------------------------------------------------
    def split(self, text: str) -> list[str]:
        """The pieces of ``text``: each regex isolates its matches in every piece so far."""
        pieces = [text] if text else []
        for rx, splitter in zip(self._regexes, self._splitters):
            out: list[str] = []
            if splitter is not None:
                split = splitter.split
                pieces = [p for piece in pieces for p in split(piece) if p]
                continue
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

    def _ordinary(self, text: str) -> list[int]:
        pieces = [p.encode("utf-8", errors="surrogateescape") for p in self.split(text)]
        return self._core.encode_pieces(pieces)

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
