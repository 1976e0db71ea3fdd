"""Supervised fine-tuning: next-token cross-entropy on the assistant's answers only."""

from __future__ import annotations

from pathlib import Path

import torch

from llmcore.config import Config
from llmcore.finetune.data import SFTExample, pack_sft, pad_sft, sft_examples
from llmcore.finetune.losses import sft_loss
from llmcore.finetune.session import Session


def sft_batch_loss(model, batch: list[SFTExample], packing: bool, block: int) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens of ``batch``."""
    device = model.wte.weight.device
    if packing:
        x, y, pos, mask = pack_sft(batch, block)
        logits = model(x.to(device), positions=pos.to(device), mask=mask.to(device))
    else:
        x, y = pad_sft(batch)
        logits = model(x.to(device))
    return sft_loss(logits, y.to(device))


def run_sft(
    cfg: Config, *, out_dir: str | Path | None = None, progress: bool = True
) -> tuple[Path, dict]:
    """Fine-tune ``finetune.base`` on ``finetune.data``; returns the run folder and the last
    evaluation's metrics."""
    s = Session(cfg, "sft", out_dir=out_dir, progress=progress)
    try:
        t = cfg.train
        model = s.adapt(s.base.model)
        train = sft_examples(s.train_records, s.chat, s.max_len, s.skipped)
        val = sft_examples(s.val_records, s.chat, s.max_len, s.skipped)
        s.note_skipped()
        if not train:
            from llmcore.errors import DataError

            raise DataError(f"{cfg.finetune.data}: no SFT example keeps an answer token")
        opt, schedule = s.optimizer(model)
        packing, block = cfg.finetune.sft.packing, cfg.model.block_size
        batches = s.batches(len(train), t.batch_size)
        last: dict = {}
        for step in range(t.max_iters + 1):
            if step % t.eval_interval == 0 or step == t.max_iters:
                model.eval()
                with torch.no_grad():
                    losses = [
                        float(sft_batch_loss(model, val[i : i + t.batch_size], False, block))
                        for i in range(0, len(val), t.batch_size)
                    ]
                last = {"step": step, "val_loss": sum(losses) / max(len(losses), 1)}
                last.update(s.score_samples(model))
                s.log(last)
                model.train()
            if step == t.max_iters:
                break
            batch = [train[i] for i in next(batches)]
            loss = s.step(sft_batch_loss(model, batch, packing, block), model, opt, schedule)
            if (step + 1) % t.log_interval == 0:
                s.log({"step": step + 1, "train_loss": loss, "lr": schedule.get_last_lr()[0]})
        s.save(model, t.max_iters)
    finally:
        s.close()
    return s.run_dir, last
