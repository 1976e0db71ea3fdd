"""Supervised fine-tuning: next-token cross-entropy on the assistant's answers only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmcore.config import Config
from llmcore.errors import DataError
from llmcore.finetune.data import SFTExample, pack_sft, pad_sft, sft_examples
from llmcore.finetune.losses import sft_loss
from llmcore.finetune.session import FinetuneWorkflow, run_workflow
from llmcore.train.workflow import Update


class SFTLoss(nn.Module):
    """``forward(x, y[, positions, mask])``: the mean cross-entropy over the answer tokens
    (targets ``y`` other than -100) of a padded or packed batch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if positions is None:
            return sft_loss(self.model(x), y)
        return sft_loss(self.model(x, positions=positions, mask=mask), y)


def sft_tensors(batch: list[SFTExample], packing: bool, block: int, device) -> tuple:
    """The loss module's arguments for ``batch``, on ``device``."""
    if packing:
        return tuple(t.to(device) for t in pack_sft(batch, block))
    return tuple(t.to(device) for t in pad_sft(batch))


def targets_of(example: SFTExample) -> int:
    """How many answer tokens of ``example`` are trained on (its weight in a batch)."""
    return sum(example.train[1:])  # the first id is never predicted


def sft_batch_loss(model, batch: list[SFTExample], packing: bool, block: int) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of ``batch``."""
    device = model.wte.weight.device
    return SFTLoss(model)(*sft_tensors(batch, packing, block, device))


class SFT(FinetuneWorkflow):
    """Supervised fine-tuning of ``finetune.base`` on ``finetune.data``."""

    name = "sft"

    def prepare(self, engine) -> None:
        self.model = self.saved = self.adapt(self.base.model)
        self.loss_module = SFTLoss(self.model)
        self.train_examples = sft_examples(
            self.train_records, self.chat, self.max_len, self.skipped
        )
        self.val_examples = sft_examples(self.val_records, self.chat, self.max_len, self.skipped)
        self.note_skipped()
        if not self.train_examples:
            raise DataError(f"{self.cfg.finetune.data}: no SFT example keeps an answer token")
        self.eval_prompts = self.answerable(self.prompt_texts(self.val_records), "eval_prompts")
        self.batches = self.shuffled(len(self.train_examples))

    def next_update(self, engine) -> Update:
        batch = [self.train_examples[i] for i in self.batches()]
        packing, block = self.cfg.finetune.sft.packing, self.cfg.model.block_size
        return self.micro_batches(
            batch, targets_of, lambda part: sft_tensors(part, packing, block, self.device)
        )

    def evaluate(self, engine) -> dict[str, float]:
        bs, block, val = self.cfg.train.batch_size, self.cfg.model.block_size, self.val_examples
        self.model.eval()
        with torch.no_grad(), engine.autocast():  # through the wrapped module, as FSDP needs
            losses = [
                float(engine.forward(*sft_tensors(val[i : i + bs], False, block, self.device)))
                for i in range(0, len(val), bs)
            ]
        out = {"val_loss": sum(losses) / max(len(losses), 1)}
        out.update(self.score_samples(engine, self.model))
        self.model.train()
        return out


def run_sft(
    cfg: Config,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
) -> tuple[Path, dict]:
    """Fine-tune ``finetune.base`` on ``finetune.data``; returns the run folder and the last
    metrics (the last evaluation's among them)."""
    return run_workflow(cfg, SFT(), out_dir=out_dir, progress=progress, resume=resume)
