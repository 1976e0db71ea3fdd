"""Each fine-tuning loss against a direct formula written out here, on hand-made tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmcore.finetune.losses import (
    AdaptiveKL,
    bradley_terry_loss,
    dpo_loss,
    entropy_from_logits,
    gae,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    ppo_losses,
    sft_loss,
    token_logprobs,
)


def log_softmax_row(row: list[float]) -> list[float]:
    m = max(row)
    z = math.log(sum(math.exp(v - m) for v in row)) + m
    return [v - z for v in row]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def test_sft_loss_is_the_mean_over_answer_tokens_only():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, generator=g)
    targets = torch.tensor([[-100, 3, 1, -100], [2, -100, -100, 4]])
    total, n = 0.0, 0
    for b in range(2):
        for t in range(4):
            if targets[b, t] == -100:
                continue
            total -= log_softmax_row(logits[b, t].tolist())[int(targets[b, t])]
            n += 1
    assert float(sft_loss(logits, targets)) == pytest.approx(total / n, rel=1e-5)


def test_token_logprobs_and_entropy_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 7, generator=g)
    targets = torch.randint(0, 7, (3, 6), generator=g)
    targets[0, :2] = -1
    dist = torch.distributions.Categorical(logits=logits)
    want = dist.log_prob(targets.clamp(min=0)).masked_fill(targets < 0, 0.0)
    torch.testing.assert_close(token_logprobs(logits, targets), want)
    torch.testing.assert_close(entropy_from_logits(logits), dist.entropy())


def test_bradley_terry_loss_and_accuracy():
    chosen = torch.tensor([1.5, -0.2, 0.3, 2.0])
    rejected = torch.tensor([0.5, 0.4, 0.3, -1.0])
    loss, acc = bradley_terry_loss(chosen, rejected)
    want = sum(-log_sigmoid(c - r) for c, r in zip(chosen.tolist(), rejected.tolist())) / 4
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(acc) == pytest.approx(2 / 4)  # a tie is not a win


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_dpo_loss_matches_the_paper_formula(smoothing):
    pc = torch.tensor([-10.0, -12.5, -3.0])
    pr = torch.tensor([-11.0, -9.0, -3.5])
    rc = torch.tensor([-10.5, -12.0, -4.0])
    rr = torch.tensor([-10.5, -10.0, -3.0])
    beta = 0.3
    loss, chosen_reward, rejected_reward = dpo_loss(pc, pr, rc, rr, beta, smoothing)
    want = 0.0
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        z = beta * ((a - c) - (b - d))
        want += -(1 - smoothing) * log_sigmoid(z) - smoothing * log_sigmoid(-z)
    assert float(loss) == pytest.approx(want / 3, rel=1e-6)
    torch.testing.assert_close(chosen_reward, beta * (pc - rc))
    torch.testing.assert_close(rejected_reward, beta * (pr - rr))


def gae_loop(rewards, values, length, gamma, lam):
    """GAE of one episode of ``length`` steps, written as the textbook recursion."""
    adv = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
        next_v = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv, [a + v for a, v in zip(adv, values[:length])]


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0)])
def test_gae_matches_a_plain_loop(gamma, lam):
    g = torch.Generator().manual_seed(2)
    rewards = torch.randn(3, 6, generator=g)
    values = torch.randn(3, 6, generator=g)
    lengths = [6, 3, 1]
    mask = torch.zeros(3, 6)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b, n in enumerate(lengths):
        want_adv, want_ret = gae_loop(rewards[b].tolist(), values[b].tolist(), n, gamma, lam)
        assert adv[b, :n].tolist() == pytest.approx(want_adv, rel=1e-5, abs=1e-6)
        assert ret[b, :n].tolist() == pytest.approx(want_ret, rel=1e-5, abs=1e-6)
        assert adv[b, n:].abs().sum() == 0 and ret[b, n:].abs().sum() == 0


def test_ppo_losses_match_per_token_formulas():
    g = torch.Generator().manual_seed(3)
    shape = (2, 5)
    lp = torch.randn(shape, generator=g) * 0.3 - 1
    old_lp = lp + torch.randn(shape, generator=g) * 0.4
    adv = torch.randn(shape, generator=g)
    v = torch.randn(shape, generator=g)
    old_v = v + torch.randn(shape, generator=g) * 0.5
    ret = torch.randn(shape, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.float)
    clip, vclip = 0.2, 0.3
    out = ppo_losses(lp, old_lp, adv, v, old_v, ret, mask, clip, vclip)
    pg, vf, clipped, kl, n = 0.0, 0.0, 0, 0.0, 0
    for b in range(2):
        for t in range(5):
            if not mask[b, t]:
                continue
            r = math.exp(lp[b, t] - old_lp[b, t])
            a = float(adv[b, t])
            unclipped, clipped_obj = -a * r, -a * min(max(r, 1 - clip), 1 + clip)
            pg += max(unclipped, clipped_obj)
            clipped += clipped_obj > unclipped
            vc = float(old_v[b, t]) + min(max(float(v[b, t] - old_v[b, t]), -vclip), vclip)
            vf += max((float(v[b, t]) - float(ret[b, t])) ** 2, (vc - float(ret[b, t])) ** 2)
            kl += 0.5 * float(lp[b, t] - old_lp[b, t]) ** 2
            n += 1
    assert float(out["policy_loss"]) == pytest.approx(pg / n, rel=1e-5)
    assert float(out["value_loss"]) == pytest.approx(0.5 * vf / n, rel=1e-5)
    assert float(out["clip_frac"]) == pytest.approx(clipped / n)
    assert float(out["approx_kl"]) == pytest.approx(kl / n, rel=1e-5)


def test_ppo_policy_gradient_is_zero_where_the_ratio_is_clipped():
    lp = torch.tensor([[0.5]], requires_grad=True)  # ratio e^0.5 > 1.2 with A > 0: clipped
    out = ppo_losses(
        lp, torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1, 1), torch.zeros(1, 1),
        torch.zeros(1, 1), torch.ones(1, 1),
    )  # fmt: skip
    out["policy_loss"].backward()
    assert lp.grad.abs().item() == 0.0


def test_kl_penalised_rewards_put_the_score_on_the_last_answer_token():
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.1, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.2, -0.4, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_penalised_rewards(torch.tensor([2.0, -1.0]), lp, ref, mask, 0.1)
    want = [
        [-0.1 * 0.5, -0.1 * -1.0, 0.0 + 2.0],
        [-0.1 * -0.1, -0.1 * 0.3 - 1.0, 0.0],
    ]
    assert rewards.tolist()[0] == pytest.approx(want[0])
    assert rewards.tolist()[1] == pytest.approx(want[1])
    assert kl[1, 2] == 0


def test_masked_mean_and_whiten_against_numpy():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 6.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 1]])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    assert float(masked_mean(x, mask)) == pytest.approx(vals.mean())
    w = masked_whiten(x, mask)
    want = (vals - vals.mean()) / np.sqrt(vals.var(ddof=1) + 1e-8)
    got = w[mask.bool()].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_adaptive_kl_controller_moves_toward_the_target():
    ctl = AdaptiveKL(0.1, target=6.0, horizon=100)
    ctl.update(12.0, n_steps=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    ctl.update(5.4, n_steps=10)  # error -0.1
    assert ctl.value == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.1))
    fixed = AdaptiveKL(0.05, target=None, horizon=100)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05


def test_reward_normalisation_gives_mean_zero_and_unit_spread():
    from statistics import fmean, pstdev

    from llmcore.finetune.ppo import normalisation

    xs = [3.0, -1.5, 0.25, 7.0, 2.0]
    shift, scale = normalisation(torch.tensor(xs))
    assert shift == pytest.approx(fmean(xs)) and scale == pytest.approx(pstdev(xs))
    normed = [(x - shift) / scale for x in xs]
    assert fmean(normed) == pytest.approx(0.0, abs=1e-6)
    assert pstdev(normed) == pytest.approx(1.0)
    # equal scores (or one) have no spread to divide by: shift only
    assert normalisation(torch.tensor([2.0, 2.0, 2.0])) == (pytest.approx(2.0), 1.0)
    assert normalisation(torch.tensor([5.0])) == (pytest.approx(5.0), 1.0)
