"""PPO (Ziegler et al. 2019, Ouyang et al. 2022): rollouts from the policy, a score from a
reward model or a ``reward`` plugin, a per-token KL penalty against a frozen reference,
GAE, and several epochs of clipped policy and value updates per rollout batch."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from llmcore.components import create
from llmcore.config import Config
from llmcore.errors import ConfigError, DataError, TrainingError
from llmcore.finetune.chat import chat_for
from llmcore.finetune.data import field_of, pad_responses, pad_sequences
from llmcore.finetune.dpo import load_reference
from llmcore.finetune.losses import (
    AdaptiveKL,
    entropy_from_logits,
    gae,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    ppo_losses,
    token_logprobs,
)
from llmcore.finetune.models import PolicyWithValue, freeze, load_head, load_reward_model
from llmcore.finetune.session import FinetuneWorkflow, check_scores, run_workflow
from llmcore.train import distributed as D

#: the value head's weights in a checkpoint, beside the policy's
VALUE_HEAD_FILE = "value_head.safetensors"


class RewardModelScorer:
    """Scores answers with a trained reward model, through its own chat format.

    Every answer is scored as a complete one, its end marker appended: the reward model was
    trained reading the position of that marker, and its score at any other position (the
    last id of an answer cut by ``max_new_tokens``) is unconstrained, which a policy learns
    to exploit; ``missing_end_penalty`` is what tells a cut answer apart.

    The scores are normalised: the first batch scored (the policy's first rollouts, the
    reference's answers) fixes a shift and scale that give it mean 0 and standard deviation
    1, applied to every later batch. A Bradley-Terry model's scores have no fixed origin
    and their scale grows with training; normalised, they weigh against the KL penalty the
    same whichever reward model gives them.
    """

    def __init__(self, path: str, device) -> None:
        rm, loaded = load_reward_model(path, device)
        self.rm = freeze(rm)
        self.chat = chat_for(loaded)
        self.device = device
        self.shift: float | None = None
        self.scale = 1.0

    @torch.no_grad()
    def raw(self, prompts, responses) -> torch.Tensor:
        """The reward model's scores (B,) of the answers, each ended by the end marker."""
        seqs = [self.chat.prompt_text(p) + self.chat.answer(r) for p, r in zip(prompts, responses)]
        ids, last = pad_sequences(seqs)
        return self.rm(ids.to(self.device), last.to(self.device)).float().cpu()

    def __call__(self, prompts, responses, ended) -> list[float]:
        scores = self.raw(prompts, responses)
        if self.shift is None:
            self.shift, self.scale = normalisation(scores)
        return ((scores - self.shift) / self.scale).tolist()


def normalisation(scores: torch.Tensor) -> tuple[float, float]:
    """Shift and scale giving ``scores`` mean 0 and (population) standard deviation 1; scale
    1 when they are (nearly) all equal."""
    shift = float(scores.mean())
    std = float(scores.std(correction=0)) if scores.numel() > 1 else 0.0
    return shift, (std if std > 1e-6 else 1.0)


def _reward(wf: FinetuneWorkflow):
    p = wf.cfg.finetune.ppo
    if (p.reward is None) == (p.reward_model is None):
        raise ConfigError(
            "finetune.ppo: set exactly one of reward (a reward plugin) and reward_model (a run)"
        )
    if p.reward is not None:
        fn = create("reward", p.reward, "finetune.ppo.reward")
        return p.reward.name, lambda prompts, texts, ended: fn(prompts, texts)
    return "reward_model", RewardModelScorer(p.reward_model, wf.device)


class PPOLoss(nn.Module):
    """``forward(x, y, idx, mask, old_lp, old_v, adv, returns)`` on a minibatch of rollouts:
    PPO's clipped policy loss plus ``value_coef`` times its value loss, and their stats.

    ``idx`` (B, Ta) are the positions predicting each answer id, ``mask`` (B, Ta) marks the
    answer tokens; the other tensors are (B, Ta) too."""

    def __init__(self, policy: PolicyWithValue, p) -> None:
        super().__init__()
        self.model = policy
        self.clip, self.value_clip, self.value_coef = p.clip, p.value_clip, p.value_coef

    def forward(self, x, y, idx, mask, old_lp, old_v, adv, returns):
        logits, values = self.model(x)
        lp = token_logprobs(logits, y).gather(1, idx)
        v = values.gather(1, idx)
        out = ppo_losses(lp, old_lp, adv, v, old_v, returns, mask, self.clip, self.value_clip)
        with torch.no_grad():
            picked = logits.gather(1, idx[:, :, None].expand(-1, -1, logits.shape[-1]))
            out["entropy"] = masked_mean(entropy_from_logits(picked), mask)
        return out["policy_loss"] + self.value_coef * out["value_loss"], out


class PPO(FinetuneWorkflow):
    """PPO of ``finetune.base`` on the prompts of ``finetune.data``; ``train.max_iters`` is
    the number of rollout batches, each followed by ``epochs`` passes of minibatch updates."""

    name = "ppo"
    log_first_step = True  # the first batch's scores show the reward's normalisation

    def prepare(self, engine) -> None:
        cfg, p = self.cfg, self.cfg.finetune.ppo
        prompts = [field_of(r, "prompt") for r in self.train_records]
        self.prompts = self.answerable(prompts, "prompts")
        if not self.prompts:
            raise DataError(f"{cfg.finetune.data}: no prompts that leave room for an answer")
        self.reward_name, self.reward_fn = _reward(self)
        self.reference = load_reference(self)
        self.policy = PolicyWithValue(self.adapt(self.base.model)).to(self.device)
        for param in self.policy.value_head.parameters():
            param.requires_grad_(True)
        self.model, self.saved = self.policy, self.policy.model
        self.loss_module = PPOLoss(self.policy, p)
        self.kl_ctl = AdaptiveKL(p.kl_coef, p.kl_target, p.kl_horizon)
        self.eval_prompts = self.answerable(self.prompt_texts(self.val_records), "eval_prompts")

    def train_step(self, engine) -> dict[str, float]:
        p = self.cfg.finetune.ppo
        pick = torch.randint(len(self.prompts), (p.rollout_batch,), generator=self.gen).tolist()
        batch = [self.prompts[i] for i in pick]
        # rank 0 samples and scores (a reward may be costly or not repeatable), every rank
        # trains on its share of that rollout batch
        answers, scores = D.gathered(
            engine.wrapped, self.env, D.on_main, self.env, self.rollouts, batch
        )
        stats = ppo_step(self, engine, batch, answers, scores)
        return {"mean_score": sum(scores) / len(scores), **stats}

    def rollouts(self, batch: list[str]) -> tuple[list[list[int]], list[float]]:
        """The policy's sampled answers (ids) to ``batch`` and their scores."""
        p = self.cfg.finetune.ppo
        answers, texts = self.sample(self.policy.model, batch, p.max_new_tokens)
        ended = [self.chat.strip_end(a)[1] for a in answers]
        # a bad score rejects the step before anything is updated
        scores = self.reward_fn(batch, texts, ended)
        scores = check_scores(scores, len(batch), self.reward_name, texts)
        if p.missing_end_penalty is not None:  # a cut answer is out of the reward's domain
            scores = [x if e else x - p.missing_end_penalty for x, e in zip(scores, ended)]
        return answers, scores

    def evaluate(self, engine) -> dict[str, float]:
        return self.score_samples(engine, self.policy.model)

    def extra_files(self) -> dict[str, dict[str, torch.Tensor]]:
        return {VALUE_HEAD_FILE: D.full_state(self.policy.value_head, self.env)}

    def load_weights(self, path: Path) -> None:
        super().load_weights(path)
        load_head(self.policy.value_head, path / VALUE_HEAD_FILE, "value head")

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "kl_coef": self.kl_ctl.value}
        if isinstance(self.reward_fn, RewardModelScorer) and self.reward_fn.shift is not None:
            state["score_shift"] = self.reward_fn.shift
            state["score_scale"] = self.reward_fn.scale
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.kl_ctl.value = float(state["kl_coef"])
        if "score_shift" in state:
            self.reward_fn.shift = float(state["score_shift"])
            self.reward_fn.scale = float(state["score_scale"])


def run_ppo(
    cfg: Config,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
) -> tuple[Path, dict]:
    """PPO of ``finetune.base`` on the prompts of ``finetune.data``; ``train.max_iters`` is
    the number of rollout batches."""
    return run_workflow(cfg, PPO(), out_dir=out_dir, progress=progress, resume=resume)


@torch.no_grad()
def rollout_targets(wf: PPO, engine, prompts, answers, scores):
    """Everything the updates of a rollout batch need, computed once without gradients:
    inputs, targets, answer positions and mask, old log-probs and values, advantages and
    returns (each (B, Ta) but ``x`` and ``y``), and the per-token KL. The forwards run in
    the updates' precision (``train.dtype``), so the first update's ratio is 1."""
    p, dev, policy = wf.cfg.finetune.ppo, wf.device, wf.policy
    prompt_ids = [wf.chat.prompt_text(q) for q in prompts]
    x, y, _ = pad_responses(prompt_ids, answers)  # (B, T), answers marked in y
    x, y = x.to(dev), y.to(dev)
    Ta = max(len(a) for a in answers)
    start = torch.tensor([len(q) - 1 for q in prompt_ids], device=dev)[:, None]
    ar = torch.arange(Ta, device=dev)[None, :]
    idx = (start + ar).clamp(max=x.shape[1] - 1)  # (B, Ta) positions predicting answer ids
    mask = (ar < torch.tensor([len(a) for a in answers], device=dev)[:, None]).float()
    policy.eval()
    with engine.autocast():
        logits, values = policy(x)
        ref_logits = wf.reference(x)
    old_lp = token_logprobs(logits, y).gather(1, idx) * mask
    old_v = values.float().gather(1, idx) * mask
    ref_lp = token_logprobs(ref_logits, y).gather(1, idx) * mask
    score_t = torch.tensor(scores, device=dev)
    if p.score_clip is not None:
        score_t = score_t.clamp(-p.score_clip, p.score_clip)
    rewards, kl = kl_penalised_rewards(score_t, old_lp, ref_lp, mask, wf.kl_ctl.value)
    adv, returns = gae(rewards, old_v, mask, p.gamma, p.lam)
    if p.whiten_advantages:
        adv = masked_whiten(adv, mask) * mask
    policy.train()
    return (x, y, idx, mask, old_lp, old_v, adv, returns), kl


def ppo_step(wf: PPO, engine, prompts, answers, scores) -> dict[str, float]:
    """The updates of one rollout batch (``epochs`` passes of minibatches, each one optimizer
    step of the engine); returns their mean statistics."""
    p = wf.cfg.finetune.ppo
    tensors, kl = D.gathered(
        engine.wrapped, wf.env, rollout_targets, wf, engine, prompts, answers, scores
    )
    lengths = [len(a) for a in answers]  # answer tokens: the weight of each rollout
    B = len(answers)
    keys = ("train_loss", "policy_loss", "value_loss", "clip_frac", "approx_kl", "entropy")
    sums = dict.fromkeys(keys, 0.0)
    n = 0
    lr = 0.0
    for _ in range(p.epochs):
        order = torch.randperm(B, generator=wf.gen).tolist()
        for i in range(0, B, p.minibatch):
            rows = order[i : i + p.minibatch]

            def collate(part):
                sel = torch.tensor(part, device=wf.device)
                return tuple(t[sel] for t in tensors)

            update = wf.micro_batches(rows, lambda r: lengths[r], collate)
            record = engine.update(update)
            for k in keys:
                sums[k] += record[k]
            lr = record["lr"]
            n += 1
    seq_kl = float(kl.sum(1).mean())
    kl_coef = wf.kl_ctl.value
    wf.kl_ctl.update(seq_kl, B)
    stats = {k: v / n for k, v in sums.items()}
    if not math.isfinite(stats["policy_loss"]):
        raise TrainingError("ppo: the policy loss became non-finite; lower the learning rate")
    answer_length = sum(lengths) / B
    return {"kl": seq_kl, "kl_coef": kl_coef, "answer_length": answer_length, **stats, "lr": lr}
