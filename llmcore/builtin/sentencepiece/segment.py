"""Segmenting normalized bytes into SentencePiece ids: BPE by piece score, unigram by Viterbi.

Both follow sentencepiece's own encoders (bpe_model.cc, unigram_model.cc) step by step, so
ties break the same way: BPE merges the adjacent pair whose merged piece scores highest,
the leftmost first; unigram keeps the first best path, with scores summed in float32.
Unknown stretches become the unknown id (consecutive ones merged into one) or, with byte
fallback, the ``<0xXX>`` pieces of their bytes.
"""

from __future__ import annotations

import heapq
import re
import struct
from collections.abc import Sequence

from .normalize import _char_len

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_F32 = struct.Struct("<f")


_SPACE = "\u2581".encode()
# a run of ▁ and the characters up to the next ▁ (bytes of ▁ never occur inside another
# character's UTF-8, so the lookahead cannot cut a character)
_CHUNK = re.compile(rb"(?:\xe2\x96\x81)+(?:(?!\xe2\x96\x81).)*|(?:(?!\xe2\x96\x81).)+", re.S)


def _space_only_leads(piece: bytes) -> bool:
    """Whether ``piece`` has ▁ only in a leading run (``▁▁ab``, not ``a▁b``)."""
    while piece.startswith(_SPACE):
        piece = piece[len(_SPACE) :]
    return _SPACE not in piece


def f32(x: float) -> float:
    """``x`` rounded to float32, as sentencepiece's scores and sums are."""
    return _F32.unpack(_F32.pack(x))[0]


class Segmenter:
    """The piece tables of one model and its two segmentation algorithms."""

    def __init__(
        self,
        pieces: Sequence[bytes],
        scores: Sequence[float],
        types: Sequence[int],
        unk_id: int | None,
        byte_fallback: bool,
        merges: Sequence[tuple[bytes, bytes]] | None = None,
        float64: bool = False,
    ) -> None:
        # float64: Hugging Face's Unigram (float64 sums, byte pieces matched as text)
        # pieces text can match: normal, user-defined and unused ones (as sentencepiece);
        # HF also matches the text of byte pieces ("<0x41>")
        matchable = (NORMAL, USER_DEFINED, UNUSED) + ((BYTE,) if float64 else ())
        self.ids = {p: i for i, p in enumerate(pieces) if types[i] in matchable}
        # sentencepiece sums float32 scores; Hugging Face's Unigram sums float64 ones
        self.round = (lambda x: x) if float64 else f32
        self.scores = [self.round(s) for s in scores]
        self.types = list(types)
        self.unk_id = unk_id
        self.user = sorted((p for i, p in enumerate(pieces) if types[i] == USER_DEFINED), key=len)
        self.user.reverse()
        self.max_len = max((len(p) for p in self.ids), default=1)
        normal = [self.scores[i] for i, t in enumerate(types) if t == NORMAL]
        # sentencepiece starts these at FLT_MAX and FLT_MIN (the least positive float), so
        # a user-defined piece scores about -0.1 when every normal score is negative
        self.min_score = min(normal, default=3.4028234663852886e38)
        self.max_score = max(normal + [1.1754943508222875e-38])
        # a Hugging Face tokenizer.json's merge list: pairs merge by their rank (lowest
        # first), not by the merged piece's score; None for SentencePiece's own models
        self.pair_rank = None if merges is None else {m: r for r, m in enumerate(merges)}
        self.chunkable = all(_space_only_leads(p) for p in self.ids)
        self._cache: dict[bytes, list[tuple[bytes, int | None]]] = {}
        self.byte_ids: dict[int, int] = {}
        if byte_fallback:
            for i, p in enumerate(pieces):
                if types[i] == BYTE and len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
                    self.byte_ids[int(p[3:5], 16)] = i

    # ---- shared -------------------------------------------------------------------------
    def _user_at(self, data: bytes, pos: int) -> int:
        return next((len(u) for u in self.user if data.startswith(u, pos)), 0)

    def finish(self, segments: list[tuple[bytes, int | None]]) -> list[int]:
        """Ids of ``(piece bytes, id or None for unknown)``: byte fallback or merged unknowns."""
        out: list[int] = []
        prev_unk = False
        for piece, i in segments:
            unk = i is None or i == self.unk_id
            if unk and self.byte_ids:
                out.extend(self.byte_ids[b] for b in piece)
            elif unk:
                if not prev_unk and self.unk_id is not None:
                    out.append(self.unk_id)
            else:
                out.append(i)
            prev_unk = unk
        return out

    # ---- BPE ----------------------------------------------------------------------------
    def bpe(self, data: bytes) -> list[int]:
        """Ids of normalized ``data``, merging the best-scoring adjacent pair first."""
        if not self.chunkable:
            return self.finish(self._bpe_segments(data))
        # no piece holds a ▁ after another character, so no merge crosses the start of a
        # "▁*word" chunk: each chunk merges alone, exactly, and repeats come from the cache
        segments: list[tuple[bytes, int | None]] = []
        cache = self._cache
        for chunk in _CHUNK.findall(data):
            hit = cache.get(chunk)
            if hit is None:
                hit = self._bpe_segments(chunk)
                if len(cache) < 200_000:
                    cache[chunk] = hit
            segments += hit
        return self.finish(segments)

    def _bpe_segments(self, data: bytes) -> list[tuple[bytes, int | None]]:
        sym: list[bytes] = []
        frozen: list[bool] = []
        pos = 0
        while pos < len(data):
            n = self._user_at(data, pos)
            frozen.append(n > 0)
            n = n or _char_len(data, pos) or 1
            sym.append(data[pos : pos + n])
            pos += n
        nxt = list(range(1, len(sym) + 1))
        nxt[-1:] = [-1] if sym else []
        prv = list(range(-1, len(sym) - 1))
        heap: list[tuple[float, int, int, int]] = []
        rev: dict[bytes, tuple[bytes, bytes]] = {}

        def add(left: int, right: int) -> None:
            if left < 0 or right < 0 or frozen[left] or frozen[right]:
                return
            merged = sym[left] + sym[right]
            i = self.ids.get(merged)
            if i is None:
                return
            if self.pair_rank is None:  # max score first, then the leftmost
                key = -self.scores[i]
            else:
                rank = self.pair_rank.get((sym[left], sym[right]))
                if rank is None:
                    return
                key = float(rank)
            heapq.heappush(heap, (key, left, right, len(merged)))
            if self.types[i] == UNUSED:
                rev[merged] = (sym[left], sym[right])

        for k in range(1, len(sym)):
            add(k - 1, k)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if not sym[left] or not sym[right] or len(sym[left]) + len(sym[right]) != size:
                continue
            sym[left] += sym[right]
            sym[right] = b""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            add(prv[left], left)
            add(left, nxt[left])
        segments: list[tuple[bytes, int | None]] = []
        k = 0 if sym else -1
        while k >= 0:
            self._resegment(sym[k], rev, segments)
            k = nxt[k]
        return segments

    def _resegment(self, piece: bytes, rev: dict, out: list[tuple[bytes, int | None]]) -> None:
        i = self.ids.get(piece)
        if i is not None and self.types[i] == UNUSED and piece in rev:
            left, right = rev[piece]
            self._resegment(left, rev, out)
            self._resegment(right, rev, out)
        else:
            out.append((piece, i))

    # ---- unigram ------------------------------------------------------------------------
    def unigram(self, data: bytes) -> list[int]:
        """Ids of normalized ``data`` along the best-scoring path (Viterbi)."""
        size = len(data)
        unk_score = self.round(self.min_score - 10.0)
        best = [0.0] * (size + 1)
        start = [-1] * (size + 1)
        ident: list[int | None] = [None] * (size + 1)
        start[0] = 0
        pos = 0
        while pos < size:
            here = best[pos]
            char = min(_char_len(data, pos) or 1, size - pos)
            single = False
            for end in range(pos + 1, min(size, pos + self.max_len) + 1):
                i = self.ids.get(data[pos:end])
                if i is None or self.types[i] == UNUSED:
                    continue
                length = end - pos
                score = (
                    self.round(length * self.max_score - 0.1)
                    if self.types[i] == USER_DEFINED
                    else self.scores[i]
                )
                cand = self.round(score + here)
                if start[end] == -1 or cand > best[end]:
                    best[end], start[end], ident[end] = cand, pos, i
                single = single or length == char
            if not single:
                end = pos + char
                cand = self.round(unk_score + here)
                if start[end] == -1 or cand > best[end]:
                    best[end], start[end], ident[end] = cand, pos, self.unk_id
            pos += char
        segments: list[tuple[bytes, int | None]] = []
        end = size
        while end > 0:
            segments.append((data[start[end] : end], ident[end]))
            end = start[end]
        segments.reverse()
        return self.finish(segments)
