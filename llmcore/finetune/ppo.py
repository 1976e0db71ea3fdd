"""PPO (Ziegler et al. 2019, Ouyang et al. 2022): rollouts from the policy, a score from a
reward model or a ``reward`` plugin, a per-token KL penalty against a frozen reference,
GAE, and several epochs of clipped policy and value updates per rollout batch."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from llmcore.components import create
from llmcore.config import Config
from llmcore.errors import ConfigError, DataError
from llmcore.finetune.chat import Chat, chat_template_of
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
from llmcore.finetune.models import PolicyWithValue, freeze, load_reward_model
from llmcore.finetune.session import Session, check_scores


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
        self.chat = Chat(chat_template_of(loaded.config), loaded.tokenizer)
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


def _reward(s: Session):
    p = s.cfg.finetune.ppo
    if (p.reward is None) == (p.reward_model is None):
        raise ConfigError(
            "finetune.ppo: set exactly one of reward (a reward plugin) and reward_model (a run)"
        )
    if p.reward is not None:
        fn = create("reward", p.reward, "finetune.ppo.reward")
        return p.reward.name, lambda prompts, texts, ended: fn(prompts, texts)
    return "reward_model", RewardModelScorer(p.reward_model, s.device)


def run_ppo(
    cfg: Config, *, out_dir: str | Path | None = None, progress: bool = True
) -> tuple[Path, dict]:
    """PPO of ``finetune.base`` on the prompts of ``finetune.data``; ``train.max_iters`` is
    the number of rollout batches."""
    s = Session(cfg, "ppo", out_dir=out_dir, progress=progress)
    try:
        t, p = cfg.train, cfg.finetune.ppo
        prompts = s.answerable([field_of(r, "prompt") for r in s.train_records], "prompts")
        if not prompts:
            raise DataError(f"{cfg.finetune.data}: no prompts that leave room for an answer")
        reward_name, reward_fn = _reward(s)
        reference = load_reference(s)
        policy = PolicyWithValue(s.adapt(s.base.model)).to(s.device)
        for param in policy.value_head.parameters():
            param.requires_grad_(True)
        opt, schedule = s.optimizer(policy)
        kl_ctl = AdaptiveKL(p.kl_coef, p.kl_target, p.kl_horizon)
        last: dict = {}
        for step in range(t.max_iters + 1):
            if step % t.eval_interval == 0 or step == t.max_iters:
                evaluation = {"step": step, **s.score_samples(policy.model)}
                if len(evaluation) > 1:
                    s.log(evaluation)
                last.update(evaluation)
            if step == t.max_iters:
                break
            pick = torch.randint(len(prompts), (p.rollout_batch,), generator=s.gen).tolist()
            batch = [prompts[i] for i in pick]
            answers, texts = s.sample(policy.model, batch, p.max_new_tokens)
            ended = [s.chat.strip_end(a)[1] for a in answers]
            # a bad score rejects the step before anything is updated
            scores = check_scores(reward_fn(batch, texts, ended), len(batch), reward_name, texts)
            if p.missing_end_penalty is not None:  # a cut answer is out of the reward's domain
                scores = [x if e else x - p.missing_end_penalty for x, e in zip(scores, ended)]
            stats = ppo_step(s, policy, reference, opt, schedule, kl_ctl, batch, answers, scores)
            record = {"step": step + 1, "mean_score": sum(scores) / len(scores), **stats}
            if (step + 1) % t.log_interval == 0 or step == 0:
                s.log(record)
            last.update(record)
        s.save(policy.model, t.max_iters)
    finally:
        s.close()
    return s.run_dir, last


def ppo_step(s: Session, policy, reference, opt, schedule, kl_ctl, prompts, answers, scores):
    """One PPO update on a rollout batch; returns its statistics."""
    p = s.cfg.finetune.ppo
    dev = s.device
    prompt_ids = [s.chat.prompt_text(q) for q in prompts]
    x, y, _ = pad_responses(prompt_ids, answers)  # (B, T), answers marked in y
    x, y = x.to(dev), y.to(dev)
    B, Ta = len(answers), max(len(a) for a in answers)
    start = torch.tensor([len(q) - 1 for q in prompt_ids], device=dev)[:, None]
    ar = torch.arange(Ta, device=dev)[None, :]
    idx = (start + ar).clamp(max=x.shape[1] - 1)  # (B, Ta) positions predicting answer ids
    mask = (ar < torch.tensor([len(a) for a in answers], device=dev)[:, None]).float()

    def gather(t: torch.Tensor) -> torch.Tensor:
        return t.gather(1, idx)

    with torch.no_grad():
        policy.eval()
        logits, values = policy(x)
        old_lp = gather(token_logprobs(logits, y)) * mask
        old_v = gather(values) * mask
        ref_lp = gather(token_logprobs(reference(x), y)) * mask
        score_t = torch.tensor(scores, device=dev)
        if p.score_clip is not None:
            score_t = score_t.clamp(-p.score_clip, p.score_clip)
        rewards, kl = kl_penalised_rewards(score_t, old_lp, ref_lp, mask, kl_ctl.value)
        adv, returns = gae(rewards, old_v, mask, p.gamma, p.lam)
        if p.whiten_advantages:
            adv = masked_whiten(adv, mask) * mask
    policy.train()
    sums = {
        "policy_loss": 0.0,
        "value_loss": 0.0,
        "clip_frac": 0.0,
        "approx_kl": 0.0,
        "entropy": 0.0,
    }
    n = 0
    for _ in range(p.epochs):
        order = torch.randperm(B, generator=s.gen).tolist()
        for i in range(0, B, p.minibatch):
            mb = torch.tensor(order[i : i + p.minibatch], device=dev)
            logits, values = policy(x[mb])
            lp = token_logprobs(logits, y[mb]).gather(1, idx[mb])
            v = values.gather(1, idx[mb])
            out = ppo_losses(
                lp, old_lp[mb], adv[mb], v, old_v[mb], returns[mb], mask[mb], p.clip, p.value_clip
            )
            s.step(out["policy_loss"] + p.value_coef * out["value_loss"], policy, opt, schedule)
            with torch.no_grad():
                ent = entropy_from_logits(
                    logits.gather(1, idx[mb, :, None].expand(-1, -1, logits.shape[-1]))
                )
                out["entropy"] = masked_mean(ent, mask[mb])
            for k in sums:
                sums[k] += float(out[k].detach())
            n += 1
    seq_kl = float(kl.sum(1).mean())
    kl_coef = kl_ctl.value
    kl_ctl.update(seq_kl, B)
    stats = {k: v / n for k, v in sums.items()}
    if not math.isfinite(stats["policy_loss"]):
        from llmcore.errors import TrainingError

        raise TrainingError("ppo: the policy loss became non-finite; lower the learning rate")
    return {
        "kl": seq_kl,
        "kl_coef": kl_coef,
        "answer_length": float(mask.sum(1).mean()),
        **stats,
    }
