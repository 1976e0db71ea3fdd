"""One choice being generated: its prompt, sampling settings, its slot, its text (through :class:`~llmcore.generation.text.RowText`, which holds back split
characters and possible stop strings), and the callback that hands results to the client.

``emit`` is called from the engine's thread with :class:`Delta` objects; the last one
has ``finish_reason`` set (``stop``, ``length``, or ``cancelled``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llmcore.generation.text import RowText, Token
from llmcore.serve.sampling import RowSampling


@dataclass
class Delta:
    """Text released by one step for one choice; ``tops`` pairs with ``tokens``."""

    index: int
    tokens: list[Token]
    tops: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_logprobs: list[float | None] | None = None


class Sequence:
    """A choice of a request, from its queue entry to its last token."""

    def __init__(
        self,
        index: int,
        prompt: list[int],
        max_new: int,
        sampling: RowSampling,
        text: RowText,
        emit: Callable[[Delta], None],
        *,
        top_logprobs: int = 0,
        prompt_logprobs: bool = False,
    ) -> None:
        self.index, self.prompt, self.max_new = index, prompt, max_new
        self.sampling = sampling
        self.text, self.emit = text, emit
        self.top_logprobs, self.want_prompt_lp = top_logprobs, prompt_logprobs
        self.prompt_lp: list[float | None] = [None]  # the first prompt token has no context
        # prompt and generated ids: for the penalties, and what the slot's keys hold
        self.history = list(prompt)
        self.slot: int | None = None
        self.filled = 0  # prompt tokens already in the slot
        self.logits: torch.Tensor | None = None  # (V,) for the next token
        self.generated = 0
        self.done = False
        self.cancelled = False
        self.t_submit = time.perf_counter()
        self.t_first: float | None = None
        self._tops: deque = deque()

    @property
    def prefilled(self) -> bool:
        return self.filled >= len(self.prompt)

    def cancel(self) -> None:
        """Ask the engine to drop this sequence (its slot is freed at the next step)."""
        self.cancelled = True

    def accept(self, token: int, lp: float | None, tops: list[tuple[int, float]]) -> None:
        """Take the sampled ``token`` (its log-probability and top alternatives when
        asked), release its text, and end at a stop or at ``max_tokens``."""
        self.logits = None
        self.history.append(token)
        self.generated += 1
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if token not in self.text.stop_ids and self.top_logprobs:
            self._tops.append(tops)
        released = self.text.push(token, lp)
        if not self.text.done and self.generated >= self.max_new:
            released += self.text.finish("length")
        self.done = self.text.done
        self._send(released)

    def finish_now(self, reason: str) -> None:
        """End without another token (``max_tokens`` 0, or the context is full)."""
        self._send(self.text.finish(reason))
        self.done = True

    def finish_cancelled(self) -> None:
        self.done = True

    def _send(self, released: list[Token]) -> None:
        tops = [self._tops.popleft() if self._tops else [] for _ in released]
        reason = self.text.finish_reason if self.text.done else None
        if not released and reason is None:
            return
        prompt_lp = self.prompt_lp if self.want_prompt_lp else None
        self.want_prompt_lp = False  # the prompt's log-probabilities go out once
        self.emit(Delta(self.index, released, tops, reason, prompt_lp))
