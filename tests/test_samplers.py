"""Sampler plugins against Hugging Face transformers' logits processors (exact equality)."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as hf

from llmcore import plugins
from llmcore.builtin import samplers as S
from llmcore.errors import GenerationError
from llmcore.generation.settings import fuse_samplers

V = 97


def _logits(seed: int, batch: int = 4, vocab: int = V) -> torch.Tensor:
    """Random logits with ties, -inf entries and one extreme row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=g) * 3
    x[0, :10] = 1.25  # a block of ties, including at the top-k boundary for small k
    x[1, ::7] = float("-inf")
    x[2] = torch.round(x[2])  # many ties everywhere
    x[3] *= 40  # nearly one-hot after softmax
    return x


def _history(seed: int, batch: int = 4, length: int = 23, vocab: int = V) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    ids[1] = torch.randint(0, 4, (length,), generator=g)  # many repeats, repeated n-grams
    ids[2, ::3] = ids[2, 0]
    return ids


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    assert torch.equal(a, b), (a - b).abs().nan_to_num().max()


SEEDS = range(4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("t", [1e-4, 0.3, 1.0, 1.7, 1e4])
def test_temperature(seed, t):
    x, ids = _logits(seed), _history(seed)
    _same(S.Temperature(t)(ids, x.clone()), hf.TemperatureLogitsWarper(float(t))(ids, x.clone()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 2, 5, 10, 11, 50, V])
@pytest.mark.parametrize("keep", [1, 3])
def test_top_k(seed, k, keep):
    x, ids = _logits(seed), _history(seed)
    _same(S.TopK(k, keep)(ids, x.clone()), hf.TopKLogitsWarper(k, min_tokens_to_keep=keep)(ids, x))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("p", [1e-9, 0.05, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("keep", [1, 4])
def test_top_p(seed, p, keep):
    x, ids = _logits(seed), _history(seed)
    ours = S.TopP(p, keep)(ids, x.clone())
    _same(ours, hf.TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, x.clone()))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k,p", [(1, 0.9), (5, 0.5), (10, 0.9), (50, 0.9), (50, 0.99), (V, 0.7)])
def test_fused_top_k_top_p_equals_hf_chain(seed, k, p):
    x, ids = _logits(seed), _history(seed)
    x[:, :] += torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * 1e-3
    chain = fuse_samplers([S.TopK(k), S.TopP(p)])
    assert len(chain) == 1 and isinstance(chain[0], S.TopKTopP)
    ref = hf.TopPLogitsWarper(p)(ids, hf.TopKLogitsWarper(k)(ids, x.clone()))
    _same(chain[0](ids, x.clone()), ref)


def test_fused_fast_path_taken_and_exact_on_large_vocab():
    """Untied random logits over GPT-2's vocabulary: the k-survivor path must agree."""
    g = torch.Generator().manual_seed(0)
    fused = S.TopKTopP(S.TopK(50), S.TopP(0.9))
    for _ in range(20):
        x = torch.randn(8, 50304, generator=g) * 2
        ids = torch.zeros(8, 1, dtype=torch.long)
        ref = hf.TopPLogitsWarper(0.9)(ids, hf.TopKLogitsWarper(50)(ids, x.clone()))
        _same(fused(ids, x.clone()), ref)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("p", [0.0, 0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("keep", [1, 5])
def test_min_p(seed, p, keep):
    x, ids = _logits(seed), _history(seed)
    _same(S.MinP(p, keep)(ids, x.clone()), hf.MinPLogitsWarper(p, min_tokens_to_keep=keep)(ids, x))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("p", [1e-6, 0.2, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("keep", [1, 2])
def test_typical(seed, p, keep):
    x, ids = _logits(seed), _history(seed)
    ref = hf.TypicalLogitsWarper(p, min_tokens_to_keep=keep)(ids, x.clone())
    _same(S.Typical(p, keep)(ids, x.clone()), ref)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("penalty", [0.01, 0.5, 1.0, 1.3, 100.0])
def test_repetition_penalty(seed, penalty):
    x, ids = _logits(seed), _history(seed)
    ref = hf.RepetitionPenaltyLogitsProcessor(penalty)(ids, x.clone())
    _same(S.RepetitionPenalty(penalty)(ids, x.clone()), ref)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 23, 24])
def test_no_repeat_ngram(seed, n):
    x, ids = _logits(seed), _history(seed)
    ref = hf.NoRepeatNGramLogitsProcessor(n)(ids, x.clone())
    _same(S.NoRepeatNGram(n)(ids, x.clone()), ref)


def _count_reference(ids, x, freq, pres):
    """The OpenAI formula written out token by token."""
    out = x.clone()
    for b in range(x.shape[0]):
        counts: dict[int, int] = {}
        for t in ids[b].tolist():
            if 0 <= t < x.shape[1]:
                counts[t] = counts.get(t, 0) + 1
        for t, c in counts.items():
            out[b, t] = out[b, t] - freq * c - pres * (1 if c else 0)
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("penalty", [-1.5, 0.0, 0.4, 2.0])
def test_frequency_and_presence_penalty(seed, penalty):
    x, ids = _logits(seed), _history(seed)
    f = S.FrequencyPenalty(penalty)(ids, x.clone())
    torch.testing.assert_close(f, _count_reference(ids, x, penalty, 0.0), rtol=0, atol=1e-5)
    p = S.PresencePenalty(penalty)(ids, x.clone())
    torch.testing.assert_close(p, _count_reference(ids, x, 0.0, penalty), rtol=0, atol=1e-5)


def test_history_padding_is_ignored():
    """Ids >= vocab (the engine's left padding) change nothing for any history processor."""
    x, ids = _logits(0), _history(0)
    pad = torch.full((4, 5), V)
    padded = torch.cat([pad, ids], dim=1)
    for proc in (
        S.RepetitionPenalty(1.7),
        S.FrequencyPenalty(0.5),
        S.PresencePenalty(0.5),
        S.NoRepeatNGram(2),
        S.NoRepeatNGram(3),
    ):
        _same(proc(padded, x.clone()), proc(ids, x.clone()))


def test_all_registered():
    names = set(plugins.available("sampler"))
    assert {
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "typical",
        "repetition_penalty",
        "frequency_penalty",
        "presence_penalty",
        "no_repeat_ngram",
    } <= names


@pytest.mark.parametrize(
    "make",
    [
        lambda: S.Temperature(-1.0),
        lambda: S.Temperature(0),
        lambda: S.TopP(0.0),
        lambda: S.TopP(1.5),
        lambda: S.TopP(-0.1),
        lambda: S.TopK(0),
        lambda: S.TopK(2.5),
        lambda: S.MinP(1.5),
        lambda: S.Typical(0.0),
        lambda: S.RepetitionPenalty(0.0),
        lambda: S.NoRepeatNGram(0),
        lambda: S.TopP(0.5, min_tokens_to_keep=0),
    ],
)
def test_bad_params(make):
    with pytest.raises(GenerationError):
        make()


def test_top_k_larger_than_vocab_is_an_error_at_call_time():
    with pytest.raises(GenerationError, match="vocabulary of 97"):
        S.TopK(V + 1)(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, V))
