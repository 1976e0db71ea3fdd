"""Direct preference optimisation against a frozen reference whose log-probabilities of
every chosen and rejected answer are computed once, before training."""

from __future__ import annotations

from pathlib import Path

import torch

from llmcore.config import Config
from llmcore.errors import DataError
from llmcore.finetune.data import PairExample, pad_responses, preference_examples
from llmcore.finetune.losses import dpo_loss, token_logprobs
from llmcore.finetune.models import check_same_architecture, freeze, load_finetuned
from llmcore.finetune.session import Session


def pair_logprobs(
    model, pairs: list[PairExample], with_nll: bool = False
) -> tuple[torch.Tensor, ...]:
    """Summed log-probs (B,) of the chosen and of the rejected answers, in one forward;
    with ``with_nll`` also the mean token NLL of the chosen answers."""
    device = model.wte.weight.device
    prompts = [p.prompt for p in pairs] * 2
    answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    x, y, _ = pad_responses(prompts, answers)
    y = y.to(device)
    tok = token_logprobs(model(x.to(device)), y)  # (2B, T)
    lp = tok.sum(-1)
    n = len(pairs)
    if not with_nll:
        return lp[:n], lp[n:]
    nll = -tok[:n].sum() / (y[:n] >= 0).sum().clamp(min=1)
    return lp[:n], lp[n:], nll


@torch.no_grad()
def reference_logprobs(model, pairs: list[PairExample], batch: int) -> torch.Tensor:
    """(N, 2) log-probs of (chosen, rejected) of every pair under the frozen ``model``."""
    out = []
    for i in range(0, len(pairs), batch):
        c, r = pair_logprobs(model, pairs[i : i + batch])
        out.append(torch.stack([c, r], 1).cpu())
    return torch.cat(out)


def load_reference(s: Session):
    """The frozen reference: ``finetune.reference`` or the base run; same architecture."""
    path = s.cfg.finetune.reference
    if path is None:
        ref = load_finetuned(s.cfg.finetune.base, device=s.device, merge=True)
    else:
        ref = load_finetuned(path, device=s.device, merge=True)
        check_same_architecture(
            s.cfg, s.tokenizer, ref.config, ref.tokenizer, "reference", ref.path
        )
    return freeze(ref.model)


def run_dpo(
    cfg: Config, *, out_dir: str | Path | None = None, progress: bool = True
) -> tuple[Path, dict]:
    """DPO of ``finetune.base`` on the preference pairs of ``finetune.data``."""
    s = Session(cfg, "dpo", out_dir=out_dir, progress=progress)
    try:
        t, d = cfg.train, cfg.finetune.dpo
        train = preference_examples(s.train_records, s.chat, s.max_len, s.skipped)
        val = preference_examples(s.val_records, s.chat, s.max_len, s.skipped)
        s.note_skipped()
        if not train:
            raise DataError(f"{cfg.finetune.data}: no preference pair fits in {s.max_len} tokens")
        reference = load_reference(s)
        ref_train = reference_logprobs(reference, train, t.batch_size)
        ref_val = reference_logprobs(reference, val, t.batch_size)
        del reference  # computed once: the reference is not needed any more
        model = s.adapt(s.base.model)
        opt, schedule = s.optimizer(model)
        batches = s.batches(len(train), t.batch_size)
        last: dict = {}
        for step in range(t.max_iters + 1):
            if step % t.eval_interval == 0 or step == t.max_iters:
                model.eval()
                with torch.no_grad():
                    accs, losses = [], []
                    for i in range(0, len(val), t.batch_size):
                        c, r = pair_logprobs(model, val[i : i + t.batch_size])
                        ref = ref_val[i : i + t.batch_size].to(s.device)
                        loss, rc, rr = dpo_loss(
                            c, r, ref[:, 0], ref[:, 1], d.beta, d.label_smoothing
                        )
                        losses.append(float(loss) * len(c))
                        accs.append(float((rc > rr).float().sum()))
                last = {
                    "step": step,
                    "val_loss": sum(losses) / len(val),
                    "val_reward_accuracy": sum(accs) / len(val),
                }
                last.update(s.score_samples(model))
                s.log(last)
                model.train()
            if step == t.max_iters:
                break
            idx = next(batches)
            c, r, nll = pair_logprobs(model, [train[i] for i in idx], with_nll=True)
            ref = ref_train[idx].to(s.device)
            loss, rc, rr = dpo_loss(c, r, ref[:, 0], ref[:, 1], d.beta, d.label_smoothing)
            if d.rpo_alpha:  # keeps the chosen answers likely, not only likelier than rejected
                loss = loss + d.rpo_alpha * nll
            value = s.step(loss, model, opt, schedule)
            if (step + 1) % t.log_interval == 0:
                s.log(
                    {
                        "step": step + 1,
                        "train_loss": value,
                        "reward_margin": float((rc - rr).mean()),
                        "reward_accuracy": float((rc > rr).float().mean()),
                        "lr": schedule.get_last_lr()[0],
                    }
                )
        s.save(model, t.max_iters)
    finally:
        s.close()
    return s.run_dir, last
