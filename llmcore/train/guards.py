"""Checks that stop a run before a non-finite update reaches the weights, with a message that
tells a learning-rate problem apart from a data or precision one."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from llmcore.errors import TrainingError


def grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> float:
    """The total L2 norm of the gradients, clipped to ``max_norm`` when it is above 0.

    Clipping computes the norm anyway; without clipping it is computed alone (one fused
    pass), so that a NaN gradient is seen even when the loss is finite."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(
        params, max_norm if max_norm > 0 else math.inf, foreach=True
    )
    return float(norm)


class FiniteGuard:
    """Remembers the first losses of a run and raises :class:`TrainingError` at the first
    non-finite loss or gradient norm, before the optimizer applies it.

    Args:
        saved_in: where the last good checkpoint lives, named in the message.
    """

    def __init__(self, saved_in: str) -> None:
        self.saved_in = saved_in
        self.first_loss: float | None = None
        self.last_loss: float | None = None

    def _kept(self) -> str:
        return f"nothing was saved over the last good checkpoint in {self.saved_in}"

    def check_loss(self, step: int, loss: float) -> None:
        """Raise if the loss of update ``step`` is not finite."""
        if not math.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss} at step {step}; {self._kept()}. "
                + self._diagnosis()
            )

    def check_grad(self, step: int, loss: float, norm: float) -> None:
        """Raise if the gradient norm of update ``step`` is not finite; else remember ``loss``."""
        kept = self._kept()
        if not math.isfinite(norm):
            raise TrainingError(
                f"the gradients became non-finite (norm {norm}) at step {step} while the loss "
                f"was finite ({loss:.4g}); {kept}. A finite loss with a non-finite gradient is "
                "a numerical fault in the backward pass, not a learning-rate problem: try "
                "train.dtype=float32, and check the data and any custom component for "
                "inf/NaN (LLMCORE_POISON_SCRATCH=1 shows kernels that read unwritten memory)"
            )
        if self.first_loss is None:
            self.first_loss = loss
        self.last_loss = loss

    def _diagnosis(self) -> str:
        first, last = self.first_loss, self.last_loss
        if first is None:
            return (
                "It broke on the first step, before any update: that is the data or the "
                "precision (try train.dtype=float32), not the learning rate"
            )
        if last is not None and last > 1.5 * first:
            return (
                f"The loss grew from {first:.4g} to {last:.4g} before it broke: the run "
                "diverged; lower the learning rate (train.optimizer.lr) or lengthen the warmup"
            )
        return (
            f"The loss was {last:.4g} (from {first:.4g}) just before: a sudden break from a "
            "normal value points to the data or to precision (try train.dtype=float32) "
            "more than to the learning rate"
        )
