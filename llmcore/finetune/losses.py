"""The losses of fine-tuning, written on plain tensors so each can be checked by hand.

Shapes: B = rows, T = tokens. ``mask`` tensors are 1.0 (or True) where a token counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is set (all of them, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x - mean) / std`` over the masked positions (unbiased variance, as TRL does)."""
    mean = masked_mean(x, mask)
    m = mask.to(x.dtype)
    n = m.sum()
    var = ((x - mean) ** 2 * m).sum() / (n - 1).clamp(min=1.0)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log p(targets[b, t] | logits[b, t])``: (B, T, V) and (B, T) -> (B, T) in float32.

    Targets that are negative (padding) give 0.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    safe = targets.clamp(min=0)
    out = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return out.masked_fill(targets < 0, 0.0)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` per position: (..., V) -> (...)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Masked next-token cross-entropy: the mean over targets that are not ``ignore_index``.

    Args:
        logits: (B, T, V).
        targets: (B, T), ``ignore_index`` where no loss is taken (prompt, padding).
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=ignore_index
    )


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise preference loss ``-log sigmoid(r_chosen - r_rejected)``, averaged.

    Returns:
        the loss and the pairwise accuracy (fraction with ``r_chosen > r_rejected``).
    """
    diff = chosen.float() - rejected.float()
    return -F.logsigmoid(diff).mean(), (diff > 0).float().mean()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct preference optimisation (Rafailov et al. 2023), with conservative smoothing.

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: (B,) summed log-probs of
            each response under the policy and under the frozen reference.
        beta: strength of the implicit KL constraint.
        label_smoothing: probability that a label is flipped (0: plain DPO).

    Returns:
        the mean loss, and the implicit rewards ``beta * (log pi - log ref)`` of the chosen
        and the rejected responses (B,).
    """
    chosen_logratio = policy_chosen.float() - ref_chosen.float()
    rejected_logratio = policy_rejected.float() - ref_rejected.float()
    z = beta * (chosen_logratio - rejected_logratio)
    loss = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return (
        loss.mean(),
        (beta * chosen_logratio).detach(),
        (beta * rejected_logratio).detach(),
    )


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response tokens of each row.

    Args:
        rewards, values: (B, T) per-token reward and value estimate.
        mask: (B, T), 1 on the tokens of the response (a prefix of each row); the value after
            the last token is 0 (the episode ends there).

    Returns:
        advantages and returns ``advantages + values`` (B, T), 0 outside the mask.
    """
    m = mask.to(values.dtype)
    values = values * m
    rewards = rewards * m
    T = rewards.shape[1]
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (m[:, t + 1] if t + 1 < T else 0.0)
        adv[:, t] = last
    adv = adv * m
    return adv, (adv + values) * m


def ppo_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    value_clip: float | None = 0.2,
) -> dict[str, torch.Tensor]:
    """PPO's clipped surrogate and clipped value losses over masked tokens (B, T).

    policy loss = mean(max(-A r, -A clip(r, 1 - clip, 1 + clip))), r = exp(logp - old_logp);
    value loss = 0.5 mean(max((v - R)^2, (old_v + clip(v - old_v, +-value_clip) - R)^2)).

    Returns:
        ``policy_loss``, ``value_loss``, ``clip_frac`` (tokens whose ratio was clipped) and
        ``approx_kl`` (mean of ``0.5 (logp - old_logp)^2``).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    policy_loss = masked_mean(torch.maximum(pg1, pg2), mask)
    vf1 = (values - returns) ** 2
    if value_clip is not None:
        clipped = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
        vf = torch.maximum(vf1, (clipped - returns) ** 2)
    else:
        vf = vf1
    value_loss = 0.5 * masked_mean(vf, mask)
    with torch.no_grad():
        clip_frac = masked_mean((pg2 > pg1).float(), mask)
        approx_kl = masked_mean(0.5 * log_ratio**2, mask)
    return {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "clip_frac": clip_frac,
        "approx_kl": approx_kl,
    }


def kl_penalised_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: ``-kl_coef * (logp - ref_logp)`` on each response token, plus the
    sequence score on its last token.

    Returns:
        rewards (B, T) and the per-token KL estimate ``logp - ref_logp`` (B, T), 0 off-mask.
    """
    m = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * m
    rewards = -kl_coef * kl
    last = (m.sum(1).long() - 1).clamp(min=0)  # responses are a prefix of each row
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype) * (m.sum(1) > 0).to(rewards.dtype)
    return rewards, kl


class AdaptiveKL:
    """Ziegler et al.'s KL controller: moves ``value`` so the sequence KL nears ``target``.

    ``target`` None keeps the coefficient fixed.
    """

    def __init__(self, init: float, target: float | None, horizon: int) -> None:
        self.value = init
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, n_steps: int) -> None:
        """Adjust after a batch of ``n_steps`` rollouts whose mean sequence KL was ``kl``."""
        if self.target is None:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
