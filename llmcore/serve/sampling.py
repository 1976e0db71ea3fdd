"""The next token of every decoding row at once, each row with its own sampling settings.

A step's logits ``(B, V)`` pass through the same stages, in the same order, as the
sampler plugins that :mod:`llmcore.builtin.samplers` registers (Hugging Face's order:
repetition, frequency and presence penalties, temperature, top-k, top-p, min-p,
typical), but each stage runs once on the rows that use it, with that row's setting as
one entry of a ``(R, 1)`` tensor. Per row the arithmetic is the plugin's, element by
element, so a row gets the scores it would get alone.

Greedy rows (temperature 0) take the argmax. Sampling rows draw from
``softmax(scores)``: a row with a seed draws with its own generator (so its tokens do
not depend on what else runs), the others draw together from the engine's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class RowSampling:
    """One row's settings, with "off" as a neutral value (top_k 0, top_p 1, ...)."""

    temperature: float = 1.0  # 0: greedy
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    generator: torch.Generator | None = None  # a seeded row's own

    @property
    def penalised(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )


@dataclass
class Chosen:
    """What :func:`choose_tokens` picked: ids, and log-probabilities where asked."""

    tokens: list[int]
    logprobs: list[float | None]
    tops: list[list[tuple[int, float]]]


def choose_tokens(
    logits: torch.Tensor,
    rows: list[RowSampling],
    histories: list[list[int]],
    shared: torch.Generator,
    *,
    logprob_rows: list[int] = (),
    top_logprobs: list[int] = (),
) -> Chosen:
    """The next token of each row of ``logits`` (B, V).

    ``histories[b]`` is row b's prompt and generated ids (read only by penalised rows);
    ``logprob_rows`` are the rows that report the raw log-probability of their token,
    ``top_logprobs[b]`` how many alternatives row b reports (0: none).
    """
    B, V = logits.shape
    scores = row_scores(logits, rows, histories)
    greedy = [b for b, r in enumerate(rows) if r.temperature == 0]
    sampled = [b for b, r in enumerate(rows) if r.temperature != 0]
    out = torch.empty(B, dtype=torch.long, device=logits.device)
    if greedy:
        out[greedy] = scores[greedy].argmax(dim=-1) if len(greedy) < B else scores.argmax(dim=-1)
    if sampled:
        sub = scores[sampled] if len(sampled) < B else scores
        out[sampled] = _draw(sub, [rows[b].generator for b in sampled], shared)
    tokens = out.tolist()
    lps: list[float | None] = [None] * B
    tops: list[list[tuple[int, float]]] = [[] for _ in range(B)]
    want = sorted(set(logprob_rows) | {b for b, k in enumerate(top_logprobs) if k})
    if want:
        raw = torch.log_softmax(logits[want].float(), dim=-1)  # (W, V)
        picked = raw.gather(1, out[want].view(-1, 1)).view(-1).tolist()
        k = max((top_logprobs[b] for b in want if b < len(top_logprobs)), default=0)
        if k:
            vals, ids = raw.topk(min(k, V), dim=-1)
            vals, ids = vals.tolist(), ids.tolist()
        for i, b in enumerate(want):
            lps[b] = picked[i]
            kb = top_logprobs[b] if b < len(top_logprobs) else 0
            if kb:
                tops[b] = list(zip(ids[i][:kb], vals[i][:kb]))
    return Chosen(tokens, lps, tops)


def row_scores(
    logits: torch.Tensor, rows: list[RowSampling], histories: list[list[int]]
) -> torch.Tensor:
    """The scores each row draws from (greedy rows: takes the argmax of): ``logits``
    after the penalties and, for sampling rows, the warpers."""
    scores = logits
    pen = [b for b, r in enumerate(rows) if r.penalised]
    if pen:
        scores = scores.clone()
        scores[pen] = _penalise(scores[pen], [rows[b] for b in pen], [histories[b] for b in pen])
    sampled = [b for b, r in enumerate(rows) if r.temperature != 0]
    if sampled:
        scores = scores.clone() if scores is logits else scores
        scores[sampled] = _warp(scores[sampled], [rows[b] for b in sampled])
    return scores


def _column(rows: list[RowSampling], name: str, like: torch.Tensor) -> torch.Tensor:
    """Setting ``name`` of every row as an ``(R, 1)`` tensor of ``like``'s dtype."""
    return torch.tensor([getattr(r, name) for r in rows], dtype=like.dtype, device=like.device)[
        :, None
    ]


def _penalise(scores: torch.Tensor, rows: list[RowSampling], hist: list[list[int]]):
    """Repetition, then frequency, then presence penalties over each row's history
    (the ``repetition_penalty``, ``frequency_penalty`` and ``presence_penalty`` plugins)."""
    R, V = scores.shape
    L = max(len(h) for h in hist)
    # padded with V: a spare column that every stage ignores
    ids = torch.full((R, L), V, dtype=torch.long, device=scores.device)
    for i, h in enumerate(hist):
        ids[i, : len(h)] = torch.tensor(h, dtype=torch.long)
    rep = _column(rows, "repetition_penalty", scores)
    if bool((rep != 1.0).any()):
        padded = torch.nn.functional.pad(scores, (0, 1))
        s = padded.gather(1, ids)
        s = torch.where(s < 0, s * rep, s / rep)
        s = torch.where(rep == 1.0, padded.gather(1, ids), s)  # rows without the penalty
        scores = padded.scatter(1, ids, s)[:, :V]
    freq = _column(rows, "frequency_penalty", scores)
    pres = _column(rows, "presence_penalty", scores)
    if bool((freq != 0).any() or (pres != 0).any()):
        counts = torch.zeros(R, V + 1, dtype=scores.dtype, device=scores.device)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=scores.dtype))
        counts = counts[:, :V]
        scores = torch.where(freq != 0, scores - freq * counts, scores)
        seen = (counts > 0).to(scores.dtype)
        scores = torch.where(pres != 0, scores - pres * seen, scores)
    return scores


def _subset(rows: list[RowSampling], used) -> list[int]:
    return [i for i, r in enumerate(rows) if used(r)]


def _warp(scores: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    """Temperature, top-k, top-p, min-p and typical, each on the rows that use it."""
    scores = scores / _column(rows, "temperature", scores)
    stages = (
        (lambda r: r.top_k > 0, _top_k),
        (lambda r: r.top_p < 1.0, _top_p),
        (lambda r: r.min_p > 0.0, _min_p),
        (lambda r: r.typical_p < 1.0, _typical),
    )
    for used, stage in stages:
        sub = _subset(rows, used)
        if sub:
            scores[sub] = stage(scores[sub], [rows[i] for i in sub])
    return scores


def _top_k(s: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    V = s.shape[-1]
    ks = torch.tensor([min(r.top_k, V) for r in rows], device=s.device)
    vals = torch.topk(s, int(ks.max()), dim=-1).values  # (R, kmax), descending
    kth = vals.gather(1, (ks - 1)[:, None])  # each row's own k-th value
    return s.masked_fill(s < kth, NEG_INF)


def _top_p(s: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    p = _column(rows, "top_p", s)
    sorted_s, order = torch.sort(s, descending=False)
    cum = sorted_s.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - p)
    remove[:, -1:] = False  # keep at least one token
    return s.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def _min_p(s: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    p = _column(rows, "min_p", s)
    probs = torch.softmax(s, dim=-1)
    remove = probs < p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)
    return s.masked_fill(remove, NEG_INF)


def _typical(s: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    p = _column(rows, "typical_p", s)
    logp = torch.log_softmax(s, dim=-1)
    ent = -(logp * logp.exp()).nansum(-1, keepdim=True)
    shifted = (-logp - ent).abs()
    sorted_shift, order = torch.sort(shifted, descending=False)
    cum = s.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cum < p).sum(dim=1).clamp_(max=sorted_shift.shape[-1] - 1)
    remove = sorted_shift > sorted_shift.gather(1, last.view(-1, 1))
    remove[:, :1] = False
    return s.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def _draw(scores: torch.Tensor, gens: list, shared: torch.Generator) -> torch.Tensor:
    """One draw per row from ``softmax(scores)``: seeded rows with their own generator
    (as the ``multinomial`` decoder draws for one row), the rest in one call."""
    probs = torch.softmax(scores.float(), dim=-1)
    out = torch.empty(len(gens), dtype=torch.long, device=scores.device)
    free = [i for i, g in enumerate(gens) if g is None]
    if free:
        out[free] = torch.multinomial(probs[free], 1, generator=shared).squeeze(-1)
    for i, g in enumerate(gens):
        if g is not None:
            out[i] = torch.multinomial(probs[i : i + 1], 1, generator=g)[0, 0]
    return out
