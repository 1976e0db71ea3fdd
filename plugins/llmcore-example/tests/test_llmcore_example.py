"""The example plugin's own tests, using llmcore's conformance helpers."""

import torch
from llmcore_example import EpsilonSampler, ScaleNorm

from llmcore.testing import check_component


def test_scalenorm_meets_the_norm_contract():
    check_component("norm", ScaleNorm)


def test_scalenorm_formula():
    x = torch.randn(3, 8)
    norm = ScaleNorm(8)
    want = (8**0.5) * x / x.norm(dim=-1, keepdim=True)
    assert torch.allclose(norm(x), want, atol=1e-6)


def test_epsilon_meets_the_sampler_contract():
    check_component("sampler", EpsilonSampler, epsilon=0.01)


def test_epsilon_removes_exactly_the_improbable_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.04, 0.01]]))
    out = EpsilonSampler(epsilon=0.05)(None, logits.clone())
    assert torch.isinf(out[0, 3:]).all()
    assert torch.equal(out[0, :3], logits[0, :3])
