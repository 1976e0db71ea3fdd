"""Pretraining: data preparation, the training loop and its setup."""

from __future__ import annotations

from pathlib import Path

from llmcore.config import Config
from llmcore.train.loop import Trainer


def train(
    cfg: Config,
    *,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train the model of ``cfg``; returns the run folder."""
    return Trainer(cfg, out_dir=out_dir, resume=resume, progress=progress).run()


__all__ = ["Trainer", "train"]
