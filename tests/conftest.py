"""Shared test fixtures: tiny configs that train in seconds."""

from __future__ import annotations

import pytest

TINY_OVERRIDES = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "train.max_iters=20",
    "train.eval_interval=10",
    "train.eval_iters=2",
    "train.log_interval=5",
    "train.batch_size=4",
    "train.sample_tokens=20",
    "train.schedule.warmup_iters=2",
    "train.schedule.decay_iters=20",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    """``--set`` overrides that shrink the shakespeare-char preset to a seconds-long run."""
    return list(TINY_OVERRIDES)
