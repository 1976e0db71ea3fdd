"""Optimizer plugins: ``adamw`` (torch's, fused where available) and ``sgd``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from llmcore.hookspecs import hookimpl


def decay_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict]:
    """Two parameter groups: 2-D (and larger) weights decay, biases/norms/1-D do not."""
    decay, no_decay = [], []
    for _, p in named_params:
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float = 3e-4,
    betas: Sequence[float] = (0.9, 0.95),
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """``torch.optim.AdamW`` with decay only on 2-D weights; ``fused`` None picks the fused
    kernel when every parameter lives on a device that has one (CPU and CUDA do)."""
    groups = decay_groups(named_params, weight_decay)
    if fused is None:
        fused = all(
            p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
            for g in groups
            for p in g["params"]
        )
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)


def sgd(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` with decay only on 2-D weights."""
    return torch.optim.SGD(
        decay_groups(named_params, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov
    )


@hookimpl
def register_optimizers(register):
    register("adamw", adamw)
    register("sgd", sgd)
