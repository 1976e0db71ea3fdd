"""Reward model: the LM backbone with a scalar head, trained with the Bradley-Terry loss on
preference pairs; reports pairwise accuracy on the held-out pairs."""

from __future__ import annotations

from pathlib import Path

import torch

from llmcore.config import Config
from llmcore.errors import DataError
from llmcore.finetune.data import PairExample, pad_sequences, preference_examples
from llmcore.finetune.losses import bradley_terry_loss
from llmcore.finetune.models import RewardModel, save_reward_head
from llmcore.finetune.session import Session


def pair_scores(rm: RewardModel, pairs: list[PairExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B,) of the chosen and of the rejected answers, in one forward."""
    device = rm.head.linear.weight.device
    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    ids, last = pad_sequences(seqs)
    scores = rm(ids.to(device), last.to(device))
    return scores[: len(pairs)], scores[len(pairs) :]


def run_reward(
    cfg: Config, *, out_dir: str | Path | None = None, progress: bool = True
) -> tuple[Path, dict]:
    """Train a reward model from ``finetune.base`` on the pairs of ``finetune.data``."""
    s = Session(cfg, "reward", out_dir=out_dir, progress=progress)
    try:
        t = cfg.train
        train = preference_examples(s.train_records, s.chat, s.max_len - 1, s.skipped)
        val = preference_examples(s.val_records, s.chat, s.max_len - 1, s.skipped)
        s.note_skipped()
        if not train:
            raise DataError(f"{cfg.finetune.data}: no preference pair fits in {s.max_len} tokens")
        rm = RewardModel(s.adapt(s.base.model), cfg.finetune.reward.head_init_std).to(s.device)
        opt, schedule = s.optimizer(rm)
        batches = s.batches(len(train), t.batch_size)
        last: dict = {}
        for step in range(t.max_iters + 1):
            if step % t.eval_interval == 0 or step == t.max_iters:
                rm.eval()
                with torch.no_grad():
                    c, r = zip(
                        *(
                            pair_scores(rm, val[i : i + t.batch_size])
                            for i in range(0, len(val), t.batch_size)
                        )
                    )
                    loss, acc = bradley_terry_loss(torch.cat(c), torch.cat(r))
                last = {"step": step, "val_loss": float(loss), "val_accuracy": float(acc)}
                s.log(last)
                rm.train()
            if step == t.max_iters:
                break
            c, r = pair_scores(rm, [train[i] for i in next(batches)])
            loss, acc = bradley_terry_loss(c, r)
            value = s.step(loss, rm, opt, schedule)
            if (step + 1) % t.log_interval == 0:
                s.log({"step": step + 1, "train_loss": value, "train_accuracy": float(acc)})
        path = s.save(rm.backbone, t.max_iters)
        save_reward_head(path, rm.head)
    finally:
        s.close()
    return s.run_dir, last
