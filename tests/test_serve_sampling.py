"""The server's batched sampling: every row's scores equal what Hugging Face's logits
processors compute for that row alone (the OpenAI definition for frequency and presence
penalties), greedy rows take the argmax, seeded rows draw with their own generator, and
log-probabilities come from the raw logits."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llmcore.serve.sampling import RowSampling, choose_tokens, row_scores  # noqa: E402

V = 60


def _hf_reference(logits: torch.Tensor, row: RowSampling, hist: list[int]) -> torch.Tensor:
    """One row through the Hugging Face processors, in the server's order."""
    ids = torch.tensor([hist])
    s = logits[None].clone()
    if row.repetition_penalty != 1.0:
        s = transformers.RepetitionPenaltyLogitsProcessor(row.repetition_penalty)(ids, s)
    counts = Counter(hist)
    for t, c in counts.items():  # OpenAI: logit - count * frequency - (count > 0) * presence
        s[0, t] -= c * row.frequency_penalty + row.presence_penalty
    if row.temperature == 0:
        return s[0]
    s = transformers.TemperatureLogitsWarper(row.temperature)(ids, s)
    if row.top_k:
        s = transformers.TopKLogitsWarper(row.top_k)(ids, s)
    if row.top_p < 1.0:
        s = transformers.TopPLogitsWarper(row.top_p)(ids, s)
    if row.min_p:
        s = transformers.MinPLogitsWarper(row.min_p)(ids, s)
    if row.typical_p < 1.0:
        s = transformers.TypicalLogitsWarper(row.typical_p)(ids, s)
    return s[0]


ROWS = [
    RowSampling(temperature=0),
    RowSampling(temperature=0, repetition_penalty=1.3, frequency_penalty=0.5),
    RowSampling(temperature=0.7, top_k=5),
    RowSampling(temperature=1.3, top_p=0.8),
    RowSampling(temperature=1.0, min_p=0.1, presence_penalty=0.8),
    RowSampling(temperature=0.9, typical_p=0.6, top_k=30, top_p=0.95),
    RowSampling(temperature=1.1, repetition_penalty=0.8, top_k=12, min_p=0.05),
    RowSampling(temperature=1.0),
]


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(ROWS), V, generator=g) * 3
    hist = [torch.randint(0, V, (3 + 5 * b,), generator=g).tolist() for b in range(len(ROWS))]
    return logits, hist


def test_each_row_scores_as_the_hugging_face_processors_score_it_alone():
    logits, hist = _batch()
    got = row_scores(logits, ROWS, hist)
    for b, row in enumerate(ROWS):
        ref = _hf_reference(logits[b], row, hist[b])
        assert torch.equal(torch.isinf(got[b]), torch.isinf(ref)), f"row {b}"
        keep = ~torch.isinf(ref)
        torch.testing.assert_close(got[b][keep], ref[keep], rtol=1e-6, atol=1e-6)
    assert torch.equal(logits, _batch()[0])  # the caller's logits are left alone


def test_greedy_argmax_seeded_draws_and_raw_logprobs():
    logits, hist = _batch(1)
    rows = [RowSampling(**{**r.__dict__, "generator": None}) for r in ROWS]
    for b, r in enumerate(rows):
        if r.temperature:
            r.generator = torch.Generator().manual_seed(100 + b)
    shared = torch.Generator().manual_seed(0)
    every = list(range(len(rows)))
    chosen = choose_tokens(
        logits, rows, hist, shared, logprob_rows=every, top_logprobs=[3] * len(rows)
    )
    for b, row in enumerate(rows):
        ref = _hf_reference(logits[b], row, hist[b])
        if row.temperature == 0:
            want = int(ref.argmax())
        else:
            gen = torch.Generator().manual_seed(100 + b)
            want = int(torch.multinomial(torch.softmax(ref, -1)[None], 1, generator=gen))
        assert chosen.tokens[b] == want, f"row {b}"
        raw = torch.log_softmax(logits[b], -1)
        assert chosen.logprobs[b] == pytest.approx(float(raw[want]), abs=1e-6)
        vals, ids = raw.topk(3)
        assert [t for t, _ in chosen.tops[b]] == ids.tolist()
        assert [v for _, v in chosen.tops[b]] == pytest.approx(vals.tolist(), abs=1e-6)


def test_rows_without_a_seed_draw_from_the_shared_generator():
    logits, hist = _batch(2)
    rows = [RowSampling(temperature=1.0, top_k=4) for _ in range(5)]
    a = choose_tokens(logits[:5], rows, hist[:5], torch.Generator().manual_seed(3))
    b = choose_tokens(logits[:5], rows, hist[:5], torch.Generator().manual_seed(3))
    assert a.tokens == b.tokens
    for b_, t in enumerate(a.tokens):  # only the top 4 of each row can come out
        assert t in logits[b_].topk(4).indices.tolist()
