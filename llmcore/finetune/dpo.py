"""Direct preference optimisation against a frozen reference whose log-probabilities of
every chosen and rejected answer are computed once, before training."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmcore.config import Config
from llmcore.errors import DataError
from llmcore.finetune.data import PairExample, pad_responses, preference_examples
from llmcore.finetune.losses import dpo_loss, token_logprobs
from llmcore.finetune.models import check_same_architecture, freeze, load_finetuned
from llmcore.finetune.session import FinetuneWorkflow, run_workflow
from llmcore.train import distributed as D
from llmcore.train.workflow import Update


def pair_tensors(pairs: list[PairExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and answer targets (2B, T) of the chosen then the rejected answers."""
    prompts = [p.prompt for p in pairs] * 2
    answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    x, y, _ = pad_responses(prompts, answers)
    return x, y


def logprobs_of(model, x: torch.Tensor, y: torch.Tensor, with_nll: bool = False):
    """Summed log-probs (B,) of the chosen and of the rejected answers of ``pair_tensors``;
    with ``with_nll`` also the mean token NLL of the chosen answers."""
    tok = token_logprobs(model(x), y)  # (2B, T)
    lp = tok.sum(-1)
    n = x.shape[0] // 2
    if not with_nll:
        return lp[:n], lp[n:]
    nll = -tok[:n].sum() / (y[:n] >= 0).sum().clamp(min=1)
    return lp[:n], lp[n:], nll


def pair_logprobs(
    model, pairs: list[PairExample], with_nll: bool = False
) -> tuple[torch.Tensor, ...]:
    """Summed log-probs (B,) of the chosen and of the rejected answers, in one forward;
    with ``with_nll`` also the mean token NLL of the chosen answers."""
    device = model.wte.weight.device
    x, y = pair_tensors(pairs)
    return logprobs_of(model, x.to(device), y.to(device), with_nll)


@torch.no_grad()
def reference_logprobs(model, pairs: list[PairExample], batch: int) -> torch.Tensor:
    """(N, 2) log-probs of (chosen, rejected) of every pair under the frozen ``model``."""
    out = []
    for i in range(0, len(pairs), batch):
        c, r = pair_logprobs(model, pairs[i : i + batch])
        out.append(torch.stack([c, r], 1).cpu())
    return torch.cat(out)


def load_reference(wf: FinetuneWorkflow):
    """The frozen reference: ``finetune.reference`` or the base run; same architecture."""
    path = wf.cfg.finetune.reference
    if path is None:
        ref = load_finetuned(wf.cfg.finetune.base, device=wf.device, merge=True)
    else:
        ref = load_finetuned(path, device=wf.device, merge=True)
        check_same_architecture(
            wf.cfg, wf.tokenizer, ref.config, ref.tokenizer, "reference", ref.path
        )
    return freeze(ref.model)


class DPOLoss(nn.Module):
    """``forward(x, y, ref)``: the DPO loss of pairs (``pair_tensors``) against the
    reference's log-probs ``ref`` (B, 2), plus ``rpo_alpha`` times the chosen answers' NLL."""

    def __init__(self, model: nn.Module, beta: float, smoothing: float, rpo_alpha: float) -> None:
        super().__init__()
        self.model = model
        self.beta, self.smoothing, self.rpo_alpha = beta, smoothing, rpo_alpha

    def forward(self, x: torch.Tensor, y: torch.Tensor, ref: torch.Tensor):
        c, r, nll = logprobs_of(self.model, x, y, with_nll=True)
        loss, rc, rr = dpo_loss(c, r, ref[:, 0], ref[:, 1], self.beta, self.smoothing)
        if self.rpo_alpha:  # keeps the chosen answers likely, not only likelier than rejected
            loss = loss + self.rpo_alpha * nll
        return loss, {
            "reward_margin": (rc - rr).mean(),
            "reward_accuracy": (rc > rr).float().mean(),
        }


class DPO(FinetuneWorkflow):
    """DPO of ``finetune.base`` on the preference pairs of ``finetune.data``."""

    name = "dpo"

    def prepare(self, engine) -> None:
        cfg, d, bs = self.cfg, self.cfg.finetune.dpo, self.cfg.train.batch_size
        self.train_pairs = preference_examples(
            self.train_records, self.chat, self.max_len, self.skipped
        )
        self.val_pairs = preference_examples(
            self.val_records, self.chat, self.max_len, self.skipped
        )
        self.note_skipped()
        if not self.train_pairs:
            raise DataError(
                f"{cfg.finetune.data}: no preference pair fits in {self.max_len} tokens"
            )
        reference = load_reference(self)
        with engine.autocast():
            self.ref_train = reference_logprobs(reference, self.train_pairs, bs)
            self.ref_val = reference_logprobs(reference, self.val_pairs, bs)
        del reference  # computed once: the reference is not needed any more
        self.eval_prompts = self.answerable(self.prompt_texts(self.val_records), "eval_prompts")
        self.model = self.saved = self.adapt(self.base.model)
        self.loss_module = DPOLoss(self.model, d.beta, d.label_smoothing, d.rpo_alpha)
        self.batches = self.shuffled(len(self.train_pairs))

    def next_update(self, engine) -> Update:
        idx = self.batches()
        rows = list(zip(idx, (self.train_pairs[i] for i in idx)))

        def collate(part):
            x, y = pair_tensors([p for _, p in part])
            ref = self.ref_train[[i for i, _ in part]]
            return x.to(self.device), y.to(self.device), ref.to(self.device)

        return self.micro_batches(rows, lambda _: 1, collate)

    def evaluate(self, engine) -> dict[str, float]:
        """DPO loss and reward accuracy over every held-out pair (the policy's weights
        gathered under FSDP), and the sampled answers' scores."""
        out = D.gathered(engine.wrapped, self.env, self._pair_metrics, engine)
        out.update(self.score_samples(engine, self.model))
        return out

    def _pair_metrics(self, engine) -> dict[str, float]:
        d, bs, val = self.cfg.finetune.dpo, self.cfg.train.batch_size, self.val_pairs
        self.model.eval()
        with engine.autocast():
            accs, losses = [], []
            for i in range(0, len(val), bs):
                c, r = pair_logprobs(self.model, val[i : i + bs])
                ref = self.ref_val[i : i + bs].to(self.device)
                loss, rc, rr = dpo_loss(c, r, ref[:, 0], ref[:, 1], d.beta, d.label_smoothing)
                losses.append(float(loss) * len(c))
                accs.append(float((rc > rr).float().sum()))
        self.model.train()
        return {"val_loss": sum(losses) / len(val), "val_reward_accuracy": sum(accs) / len(val)}


def run_dpo(
    cfg: Config,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
) -> tuple[Path, dict]:
    """DPO of ``finetune.base`` on the preference pairs of ``finetune.data``."""
    return run_workflow(cfg, DPO(), out_dir=out_dir, progress=progress, resume=resume)
