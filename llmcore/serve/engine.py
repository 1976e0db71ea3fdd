"""The step loop of the server, in a background thread.

Each step: the scheduler takes finished and cancelled sequences out and admits waiting
ones (reusing a cached prompt prefix where a slot holds one); the prompts being prefilled
advance by one chunk each, batched up to ``PREFILL_CHUNK`` tokens in all (so a long prompt
delays the running rows by one chunk, never by its whole length); every sequence with
fresh logits gets its next token, all rows sampled together
(:func:`~llmcore.serve.sampling.choose_tokens`); then one batched forward pass of one
token per row (:mod:`llmcore.serve.slot_forward`) computes every live row's next logits,
each row at its own position in its own KV slot.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from llmcore.generation.steps import new_generator
from llmcore.serve.kv_slots import SlotCache
from llmcore.serve.metrics import Metrics
from llmcore.serve.sampling import choose_tokens
from llmcore.serve.scheduler import Scheduler
from llmcore.serve.sequence import Sequence
from llmcore.serve.slot_forward import slot_forward

log = logging.getLogger("llmcore.serve")

#: prompt tokens prefilled per step (rows times the longest chunk among them)
PREFILL_CHUNK = 256


@dataclass
class Served:
    """What the server serves: a model, its tokenizer and config, the name clients ask
    for, and the model's own chat template and end-of-turn ids when it has them."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    config: object = None
    chat_template: str | None = None
    stop_ids: tuple[int, ...] = ()
    chat: object = None  # the chat format (llmcore.finetune.chat.chat_for); None: the config's


class Engine:
    """Continuous batching over ``max_batch`` KV slots of ``block_size`` positions;
    ``prefix_cache`` reuses the keys of a prompt prefix that a slot already holds."""

    def __init__(
        self,
        served: Served,
        *,
        max_batch: int = 16,
        max_queue: int = 256,
        prefix_cache: bool = True,
    ) -> None:
        self.served = served
        self.model = served.model.eval()
        self.context = self.model.config.block_size
        self.cache = SlotCache(self.model, max_batch, self.context, prefix_cache=prefix_cache)
        self.forward = slot_forward(self.model, self.cache)
        self.generator = new_generator(self.model, None)  # draws of rows without a seed
        self._last: tuple = (None, [])  # the last decode's (B, V) logits and its rows
        self.scheduler = Scheduler(self.cache, max_batch, max_queue)
        self.metrics = Metrics()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llmcore-serve", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Engine:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.scheduler.wake.set()
        self._thread.join(timeout=30)

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue the choices of one request (429 when the queue is full)."""
        self.scheduler.submit(seqs)

    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                if self.scheduler.idle:
                    self.scheduler.wake.wait(timeout=0.5)
                    self.scheduler.wake.clear()
                    continue
                try:
                    self.step()
                except Exception as exc:  # a bug must not leave clients waiting forever
                    log.exception("serve step failed")
                    self.error = exc
                    for seq in self.scheduler.running + list(self.scheduler.waiting):
                        seq.finish_now("error")
                        seq.cancel()
                    self.scheduler.plan()

    def step(self) -> None:
        """One scheduling step (see the module docstring)."""
        sched = self.scheduler
        sched.plan()
        chunk = sched.prefilling(PREFILL_CHUNK)
        if chunk:
            self._prefill(chunk)
        rows = sched.decoding()
        if rows:
            self._choose(rows)
        live = [s for s in rows if not s.done and not s.cancelled]
        full = [s for s in live if self.cache.lengths[s.slot] >= self.context]
        for s in full:  # the slot is full: the context ends here
            s.finish_now("length")
        live = [s for s in live if not s.done]
        if live:
            self._decode(live)
        self.metrics.observe_step(
            len(sched.waiting),
            len(sched.running),
            len(rows),
            self.cache.used,
            self.cache.reused_tokens,
        )

    def _prefill(self, chunk: list[tuple[Sequence, int]]) -> None:
        """Prefill ``n`` more prompt tokens of each ``(seq, n)`` in one padded pass."""
        chunk = sorted(chunk, key=lambda c: c[0].slot)
        T = max(n for _, n in chunk)
        dev = self.model.lm_head.weight.device
        inp = torch.zeros(len(chunk), T, dtype=torch.long)
        for b, (seq, n) in enumerate(chunk):
            inp[b, :n] = torch.tensor(seq.prompt[seq.filled : seq.filled + n])
        slots, counts = [s.slot for s, _ in chunk], [n for _, n in chunk]
        every = any(s.want_prompt_lp for s, _ in chunk)
        logits, states = self.forward(inp.to(dev), slots, counts, every)
        for b, (seq, n) in enumerate(chunk):
            self.cache.lengths[seq.slot] += n
            a = seq.filled
            seq.filled += n
            if seq.want_prompt_lp:  # echo with logprobs: every prompt token after the first
                lp = torch.log_softmax(self.model.lm_head(states[b, :n]).float(), dim=-1)
                nxt = seq.prompt[a + 1 : a + 1 + n]
                seq.prompt_lp += lp[torch.arange(len(nxt)), torch.tensor(nxt)].tolist()
            if seq.prefilled:
                if seq.max_new == 0:
                    seq.finish_now("length")
                else:
                    seq.logits = logits[b]  # (V,)

    def _choose(self, rows: list[Sequence]) -> None:
        """Sample the next token of every row with fresh logits, all at once."""
        rows = sorted(rows, key=lambda s: s.slot)
        last_logits, last_rows = self._last
        # the rows of the last decode in its order take its (B, V) logits without a copy
        same = rows == last_rows
        logits = last_logits if same else torch.stack([s.logits for s in rows])
        self._last = (None, [])
        chosen = choose_tokens(
            logits,
            [s.sampling for s in rows],
            [s.history for s in rows],
            self.generator,
            logprob_rows=[b for b, s in enumerate(rows) if s.text.want_logprobs],
            top_logprobs=[s.top_logprobs for s in rows],
        )
        for b, s in enumerate(rows):
            s.accept(chosen.tokens[b], chosen.logprobs[b], chosen.tops[b])

    def _decode(self, rows: list[Sequence]) -> None:
        """One token per row through the model; each row gets its next logits."""
        rows = sorted(rows, key=lambda s: s.slot)
        dev = self.model.lm_head.weight.device
        inp = torch.tensor([[s.history[-1]] for s in rows], device=dev)  # (B, 1)
        logits, _ = self.forward(inp, [s.slot for s in rows], [1] * len(rows))
        for b, s in enumerate(rows):
            self.cache.lengths[s.slot] += 1
            s.logits = logits[b]
        self._last = (logits, rows)
