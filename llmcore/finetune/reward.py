"""Reward model: the LM backbone with a scalar head, trained with the Bradley-Terry loss on
preference pairs; reports pairwise accuracy on the held-out pairs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmcore import checkpoint as ckpt
from llmcore.config import Config
from llmcore.errors import DataError
from llmcore.finetune.data import PairExample, pad_sequences, preference_examples
from llmcore.finetune.losses import bradley_terry_loss
from llmcore.finetune.models import REWARD_HEAD_FILE, RewardModel, load_head
from llmcore.finetune.session import FinetuneWorkflow, run_workflow
from llmcore.train import distributed as D
from llmcore.train.workflow import Update


def pair_ids(pairs: list[PairExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen then the rejected sequences (2B, T), right-padded, and their last ids."""
    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    return pad_sequences(seqs)


def pair_scores(rm: RewardModel, pairs: list[PairExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B,) of the chosen and of the rejected answers, in one forward."""
    device = rm.head.linear.weight.device
    ids, last = pair_ids(pairs)
    scores = rm(ids.to(device), last.to(device))
    return scores[: len(pairs)], scores[len(pairs) :]


class BradleyTerryLoss(nn.Module):
    """``forward(ids, last)`` on chosen-then-rejected rows: the Bradley-Terry loss and the
    pairwise accuracy."""

    def __init__(self, rm: RewardModel) -> None:
        super().__init__()
        self.model = rm

    def forward(self, ids: torch.Tensor, last: torch.Tensor):
        scores = self.model(ids, last)  # (2B,)
        n = ids.shape[0] // 2
        loss, acc = bradley_terry_loss(scores[:n], scores[n:])
        return loss, {"train_accuracy": acc}


class Reward(FinetuneWorkflow):
    """A reward model from ``finetune.base`` on the pairs of ``finetune.data``."""

    name = "reward"

    def prepare(self, engine) -> None:
        cfg = self.cfg
        self.train_pairs = preference_examples(
            self.train_records, self.chat, self.max_len - 1, self.skipped
        )
        self.val_pairs = preference_examples(
            self.val_records, self.chat, self.max_len - 1, self.skipped
        )
        self.note_skipped()
        if not self.train_pairs:
            raise DataError(
                f"{cfg.finetune.data}: no preference pair fits in {self.max_len} tokens"
            )
        rm = RewardModel(self.adapt(self.base.model), cfg.finetune.reward.head_init_std)
        head = rm.backbone.lm_head.weight
        if head is not rm.backbone.wte.weight:  # unused by the scalar head: DDP wants no idle
            head.requires_grad_(False)  # trainable parameter (it gets no gradient anyway)
        self.model, self.saved = rm.to(self.device), rm.backbone
        self.loss_module = BradleyTerryLoss(rm)
        self.batches = self.shuffled(len(self.train_pairs))

    def next_update(self, engine) -> Update:
        batch = [self.train_pairs[i] for i in self.batches()]
        return self.micro_batches(
            batch, lambda _: 1, lambda part: tuple(t.to(self.device) for t in pair_ids(part))
        )

    def extra_files(self) -> dict[str, dict[str, torch.Tensor]]:
        return {REWARD_HEAD_FILE: D.full_state(self.model.head, self.env)}

    def load_weights(self, path: Path) -> None:
        ckpt.load_state_dict_strict(self.saved, path / ckpt.MODEL_FILE)
        load_head(self.model.head, path / REWARD_HEAD_FILE, "reward head")

    def evaluate(self, engine) -> dict[str, float]:
        """Loss and pairwise accuracy over every held-out pair, by the reward model itself
        (its weights gathered under FSDP)."""
        return D.gathered(engine.wrapped, self.env, self._evaluate, engine)

    def _evaluate(self, engine) -> dict[str, float]:
        bs, val, rm = self.cfg.train.batch_size, self.val_pairs, self.model
        rm.eval()
        with engine.autocast():
            c, r = zip(*(pair_scores(rm, val[i : i + bs]) for i in range(0, len(val), bs)))
            loss, acc = bradley_terry_loss(torch.cat(c), torch.cat(r))
        rm.train()
        return {"val_loss": float(loss), "val_accuracy": float(acc)}


def run_reward(
    cfg: Config,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
) -> tuple[Path, dict]:
    """Train a reward model from ``finetune.base`` on the pairs of ``finetune.data``."""
    return run_workflow(cfg, Reward(), out_dir=out_dir, progress=progress, resume=resume)
