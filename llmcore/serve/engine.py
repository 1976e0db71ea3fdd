"""The step loop of the server, in a background thread.

Each step: the scheduler takes finished and cancelled sequences out and admits waiting
ones; at most one prompt chunk is prefilled (so a long prompt delays the running rows by
one chunk, never by its whole length); every sequence with fresh logits samples its next
token; then one batched forward pass of one token per row computes every live row's next
logits, each row at its own position in its own KV slot.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from llmcore.serve.kv_slots import SlotCache
from llmcore.serve.metrics import Metrics
from llmcore.serve.scheduler import Scheduler
from llmcore.serve.sequence import Sequence

log = logging.getLogger("llmcore.serve")

#: prompt tokens prefilled per step
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
    """Continuous batching over ``max_batch`` KV slots of ``block_size`` positions."""

    def __init__(self, served: Served, *, max_batch: int = 16, max_queue: int = 256) -> None:
        self.served = served
        self.model = served.model.eval()
        self.context = self.model.config.block_size
        self.cache = SlotCache(self.model, max_batch, self.context)
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
        seq = sched.prefilling()
        if seq is not None:
            self._prefill_chunk(seq)
        rows = sched.decoding()
        for s in rows:
            s.choose()
        live = [s for s in rows if not s.done and not s.cancelled]
        full = [s for s in live if self.cache.lengths[s.slot] >= self.context]
        for s in full:  # the slot is full: the context ends here
            s.finish_now("length")
        live = [s for s in live if not s.done]
        if live:
            self._decode(live)
        self.metrics.observe_step(len(sched.waiting), len(sched.running), len(rows))

    def _prefill_chunk(self, seq: Sequence) -> None:
        a = seq.filled
        ids = seq.prompt[a : a + PREFILL_CHUNK]
        view = self.cache.batch([seq.slot], len(ids))
        dev = self.model.lm_head.weight.device
        inp = torch.tensor([ids], device=dev)  # (1, T)
        x = self.model.hidden_states(inp, positions=view.positions, cache=view, mask=view.mask)
        view.commit()
        seq.filled += len(ids)
        if seq.want_prompt_lp:  # echo with logprobs: score every prompt token after the first
            lp = torch.log_softmax(self.model.lm_head(x[0]).float(), dim=-1)  # (T, V)
            nxt = seq.prompt[a + 1 : a + 1 + len(ids)]
            seq.prompt_lp += lp[torch.arange(len(nxt)), torch.tensor(nxt)].tolist()
        if seq.prefilled:
            if seq.max_new == 0:
                seq.finish_now("length")
            else:
                seq.logits = self.model.lm_head(x[0, -1])  # (V,)

    def _decode(self, rows: list[Sequence]) -> None:
        by_slot = {s.slot: s for s in rows}
        view = self.cache.decode_view(sorted(by_slot))  # neighbouring slots: one view
        dev = self.model.lm_head.weight.device
        tokens = [[by_slot[s].history[-1] if s in by_slot else 0] for s in view.slots]
        inp = torch.tensor(tokens, device=dev)  # (B, 1), a gap's row reads token 0
        x = self.model.hidden_states(inp, positions=view.positions, cache=view, mask=view.mask)
        view.commit()
        logits = self.model.lm_head(x[:, -1])  # (B, V)
        for b, slot in enumerate(view.slots):
            if slot in by_slot:
                by_slot[slot].logits = logits[b]
