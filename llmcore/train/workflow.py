"""What a training workflow plugs into the engine: its modules, batches, loss and evaluation.

The engine (:mod:`llmcore.train.engine`) owns everything every workflow shares: the step,
micro-batching, autocast, compile, DDP/FSDP, the finite guard, clipping, the optimizer and
schedule, the evaluation and checkpoint cadence, logging and exact resume. A workflow
(pretraining, SFT, reward model, DPO, PPO) says only what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llmcore import checkpoint as ckpt

if TYPE_CHECKING:
    from llmcore.train.engine import Engine


@dataclass
class MicroBatch:
    """One forward/backward pass of an update.

    ``args`` go to the loss module's forward. ``weight`` is how much this rank's part counts
    (rows, or target tokens): each micro-batch's mean loss is scaled by ``weight / total``
    of the update, so accumulated micro-batches give the gradient of the whole batch."""

    args: tuple
    weight: float = 1.0


@dataclass
class Update:
    """The micro-batches of one optimizer step and the summed weight of the whole global
    batch (over every rank and micro-batch)."""

    micro: list[MicroBatch]
    total: float
    extra: dict[str, float] = field(default_factory=dict)


class Workflow:
    """Base of the training workflows; subclasses set the attributes in :meth:`setup`.

    Attributes:
        name: shown in messages (``pretrain``, ``sft``, ...).
        model: the module whose trainable parameters the optimizer updates.
        loss_module: the module DDP/FSDP and ``torch.compile`` wrap; its forward returns the
            mean loss of a micro-batch, or ``(loss, stats)`` with a dict of scalar tensors.
        saved: the module whose weights are the checkpoint's ``model.safetensors``.
        tokenizer: saved with every checkpoint.
        tokens_per_step: tokens one update trains on, for the tokens/s figure (None: none).
        notes: records logged once at step 0 of a fresh run (skipped examples and so on).
        log_first_step: also log the first update's record, whatever ``log_interval``.
    """

    name = "train"
    tokens_per_step: int | None = None
    log_first_step = False

    def __init__(self) -> None:
        self.model: nn.Module
        self.loss_module: nn.Module
        self.saved: nn.Module
        self.tokenizer: Any
        self.notes: list[dict[str, Any]] = []

    def setup(self, engine: Engine) -> None:
        """Build the models and data on ``engine.device`` (``engine.resume_from`` is set when
        the run is resumed; the engine loads the weights after this)."""
        raise NotImplementedError

    def next_update(self, engine: Engine) -> Update:
        """The micro-batches of the next optimizer step (this rank's share)."""
        raise NotImplementedError

    def train_step(self, engine: Engine) -> dict[str, float]:
        """One training step; returns its log record (``train_loss`` among it). Most
        workflows make one update; PPO samples rollouts first and makes several."""
        return engine.update(self.next_update(engine))

    def evaluate(self, engine: Engine) -> dict[str, float]:
        """The evaluation metrics of the current weights (may be empty)."""
        return {}

    def describe(self, step: int, metrics: dict[str, float]) -> str:
        """The line printed for an evaluation."""
        shown = ", ".join(
            f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)
        )
        return f"step {step}: {shown}"

    # -- what a checkpoint holds besides the engine's own state ---------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Data position, generators and anything else an exact resume needs."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""

    def extra_files(self) -> dict[str, dict[str, torch.Tensor]]:
        """Further safetensors files of a checkpoint (a reward model's head)."""
        return {}

    def load_weights(self, path: Path) -> None:
        """Load the weights of checkpoint ``path`` before the modules are wrapped."""
        ckpt.load_state_dict_strict(self.saved, path / ckpt.MODEL_FILE)


class Shuffled:
    """Endless batches of ``batch_size`` indices into ``n`` examples, epoch by epoch in a
    seeded random order; its position is part of the checkpoint."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.order: list[int] = []
        self.position = 0

    def __call__(self) -> list[int]:
        bs, n = self.batch_size, self.n
        # the last full batch of an epoch starts at n - bs (one short batch when n < bs)
        if not self.order or self.position > (n - bs if n >= bs else 0):
            self.order = torch.randperm(n, generator=self.generator).tolist()
            self.position = 0
        out = self.order[self.position : self.position + bs]
        self.position += bs
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "order": torch.tensor(self.order, dtype=torch.int64),
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].tolist()
        self.position = int(state["position"])


def split_rows(items: list, parts: int, rank: int, world: int) -> list[list]:
    """``items`` (a global batch) cut into ``parts`` consecutive micro-batches, each then cut
    to this rank's share (rank ``rank`` of ``world``; every rank draws the same global
    batch, so together they train on the batch one process would)."""
    size = -(-len(items) // parts)
    out = []
    for i in range(0, len(items), size):
        chunk = items[i : i + size]
        k = len(chunk) // world
        out.append(chunk[rank * k : (rank + 1) * k])
    return out
