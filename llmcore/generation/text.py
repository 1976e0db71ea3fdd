"""Token ids -> released text for one row: complete UTF-8 characters only, text that may
begin a stop string held back, the cut at a stop string, and the end at an end marker.

Joining the ``text`` of every released :class:`Token` gives the row's final text.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass
class Token:
    """One streamed token: its id, the text it adds, and its log-probability if asked.

    ``text`` may be empty while a multi-byte character is incomplete; joining the texts of
    every streamed token gives the final text.
    """

    id: int
    text: str
    logprob: float | None = None


class RowText:
    """Turns one row's token ids into released text: waits for complete UTF-8 characters,
    holds back text that may be the start of a stop string, and cuts at a stop string.
    ``end_ids`` (a sequence of ids) ends the row once its ids end with it, the marker kept.

    ``push`` returns the tokens released by one new id; ``finish`` flushes the rest.
    ``ids``, ``text``, ``logprobs``, ``finish_reason`` and ``score`` (a search decoder's
    score of the row, else None) hold the row's result.
    """

    def __init__(
        self,
        tokenizer,
        stop_ids: set[int],
        stop: list[str],
        logprobs: bool,
        end_ids: list[int] | None = None,
    ) -> None:
        self.tok, self.stop_ids, self.stop, self.want_logprobs = tokenizer, stop_ids, stop, logprobs
        self.end = list(end_ids or ())
        self.tail: list[int] = []  # the last len(end) ids pushed
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.pending: list[list] = []  # [id, start, end, logprob] not yet released
        self.released = 0  # characters of self.text already released
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.done = False
        self.finish_reason = "length"
        self.score: float | None = None
        self.longest = max((len(x) for x in stop), default=0)

    def push(self, token: int, logprob: float | None) -> list[Token]:
        if token in self.stop_ids:
            return self.finish("stop")
        start = len(self.text)
        self.text += self.utf8.decode(self.tok.decode_bytes([token]))
        self.pending.append([token, start, len(self.text), logprob])
        if self.stop:
            lo = max(0, start - self.longest + 1)
            hits = [i for i in (self.text.find(x, lo) for x in self.stop) if i >= 0]
            if hits:
                return self._release(min(hits), "stop")
        if self.end:
            self.tail = (self.tail + [token])[-len(self.end) :]
            if self.tail == self.end:
                return self.finish("stop")
        if self.utf8.getstate()[0]:
            return []  # the bytes of a character are still incomplete
        return self._release(len(self.text) - self._held(), None)

    def _held(self) -> int:
        """Length of the longest end of the text that begins some stop string."""
        t = self.text
        for n in range(min(self.longest - 1, len(t)), 0, -1):
            if any(x.startswith(t[-n:]) for x in self.stop):
                return n
        return 0

    def _release(self, upto: int | None, reason: str | None) -> list[Token]:
        """Release held tokens: those ending by ``upto``; at a stop string (``reason``)
        those beginning before it, their text cut there; ``upto`` None: all of them."""
        out = []
        while self.pending:
            tid, a, b, lp = self.pending[0]
            if upto is not None and not (a < upto if reason else b <= upto):
                break
            self.pending.pop(0)
            end = b if upto is None else min(b, upto)
            piece = self.text[max(a, self.released) : end]
            self.released = max(self.released, end)
            self.ids.append(tid)
            if lp is not None:
                self.logprobs.append(lp)
            out.append(Token(tid, piece, lp))
        if reason is not None:
            if upto is not None:
                self.text = self.text[:upto]
            self.pending.clear()
            self.done, self.finish_reason = True, reason
        return out

    def finish(self, reason: str) -> list[Token]:
        """Flush the incomplete bytes and release everything held back."""
        self.text += self.utf8.decode(b"", final=True)
        if self.pending:
            self.pending[-1][2] = len(self.text)
        out = self._release(None, reason)
        if len(self.text) > self.released and out:  # flushed text after the last release
            out[-1].text += self.text[self.released :]
            self.released = len(self.text)
        return out
