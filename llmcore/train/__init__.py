"""Training: the one engine (:mod:`llmcore.train.engine`) that pretraining and every
fine-tuning workflow run on, the workflow contract, pretraining data and setup."""

from __future__ import annotations

from pathlib import Path

from llmcore.config import Config
from llmcore.train.engine import Engine
from llmcore.train.loop import Pretraining, Trainer
from llmcore.train.signals import TrainingInterrupted
from llmcore.train.workflow import MicroBatch, Update, Workflow


def train(
    cfg: Config,
    *,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train the model of ``cfg``; returns the run folder."""
    return Trainer(cfg, out_dir=out_dir, resume=resume, progress=progress).run()


__all__ = [
    "Engine",
    "MicroBatch",
    "Pretraining",
    "Trainer",
    "TrainingInterrupted",
    "Update",
    "Workflow",
    "train",
]
