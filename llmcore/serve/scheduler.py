"""Which sequences run: a bounded waiting queue, admission into the running batch at every
step while slots are free (a slot that holds the start of the prompt saves computing it),
a bounded number of prompt tokens prefilled per step, and removal of finished or
cancelled sequences (their slots freed at once).
"""

from __future__ import annotations

import threading
from collections import deque

from llmcore.serve.kv_slots import SlotCache
from llmcore.serve.schemas import ApiError
from llmcore.serve.sequence import Sequence


class Scheduler:
    """Waiting and running sequences of one engine; thread-safe ``submit``/``cancel``."""

    def __init__(self, cache: SlotCache, max_batch: int, max_queue: int) -> None:
        self.cache, self.max_batch, self.max_queue = cache, max_batch, max_queue
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue the choices of one request together, or answer 429 when the queue is full."""
        with self.lock:
            if len(self.waiting) + len(seqs) > self.max_queue:
                raise ApiError(
                    429, f"the server queue is full ({self.max_queue} waiting); retry later"
                )
            self.waiting.extend(seqs)
        self.wake.set()

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def plan(self) -> None:
        """Take out the finished and cancelled, then admit waiting sequences into free slots."""
        keep = []
        for seq in self.running:
            if seq.done or seq.cancelled:
                self.cache.release(seq.slot)
                seq.slot = None
                if not seq.done:
                    seq.finish_cancelled()
            else:
                keep.append(seq)
        self.running = keep
        with self.lock:
            while self.waiting and self.waiting[0].cancelled:
                self.waiting.popleft().finish_cancelled()
            while self.waiting and len(self.running) < self.max_batch:
                seq = self.waiting[0]
                # the prompt's log-probabilities need every prompt position computed
                got = self.cache.alloc(seq.history, reuse=not seq.want_prompt_lp)
                if got is None:
                    break
                self.waiting.popleft()
                seq.slot, seq.filled = got
                self.running.append(seq)

    def prefilling(self, budget: int) -> list[tuple[Sequence, int]]:
        """``(sequence, tokens)`` to prefill this step: the admitted sequences whose prompt
        is not yet in their slot, first come first, while ``rows x the longest chunk``
        stays within ``budget`` (the first one always gets a chunk)."""
        out: list[tuple[Sequence, int]] = []
        longest = 0
        for s in self.running:
            if s.prefilled or s.cancelled:
                continue
            n = min(len(s.prompt) - s.filled, budget)
            if out and (len(out) + 1) * max(longest, n) > budget:
                break
            out.append((s, n))
            longest = max(longest, n)
        return out

    def decoding(self) -> list[Sequence]:
        """The running sequences with logits waiting to be sampled."""
        return [s for s in self.running if s.logits is not None and not s.cancelled]
