"""Learning-rate schedule plugins: ``cosine`` (linear warmup, cosine decay to ``min_lr``,
nanoGPT's) and ``constant`` (with optional warmup)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from llmcore.hookspecs import hookimpl


def cosine_lr(it: int, *, lr: float, warmup_iters: int, decay_iters: int, min_lr: float) -> float:
    """The learning rate at optimizer step ``it`` (0-based)."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def cosine(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_iters: int = 100,
    decay_iters: int = 2000,
    min_lr: float = 1e-4,
) -> LambdaLR:
    """Linear warmup for ``warmup_iters`` steps, then cosine decay to ``min_lr`` at
    ``decay_iters``, then constant ``min_lr``. ``min_lr`` is absolute, the peak is each
    group's initial ``lr``."""
    peaks = [g["lr"] for g in optimizer.param_groups]

    def factor(group: int):
        peak = peaks[group]
        return lambda it: (
            cosine_lr(
                it, lr=peak, warmup_iters=warmup_iters, decay_iters=decay_iters, min_lr=min_lr
            )
            / peak
        )

    return LambdaLR(optimizer, [factor(i) for i in range(len(peaks))])


def constant(optimizer: torch.optim.Optimizer, *, warmup_iters: int = 0) -> LambdaLR:
    """The initial ``lr``, after an optional linear warmup."""
    return LambdaLR(
        optimizer, lambda it: min(1.0, (it + 1) / (warmup_iters + 1)) if warmup_iters else 1.0
    )


@hookimpl
def register_schedules(register):
    register("cosine", cosine)
    register("constant", constant)
