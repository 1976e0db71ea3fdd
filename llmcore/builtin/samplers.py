"""Sampler plugins: logits processors ``(input_ids, logits) -> logits``, chained in the
order a config lists them.

Each one computes exactly what the Hugging Face processor of the same role computes
(``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``,
``MinPLogitsWarper``, ``TypicalLogitsWarper``, ``RepetitionPenaltyLogitsProcessor``,
``NoRepeatNGramLogitsProcessor``); ``frequency_penalty`` and ``presence_penalty`` follow
the OpenAI definition. History ids equal to or above the vocabulary size (the engine's
left padding) are ignored by every history-based processor.

``top_k`` offers ``fused_with``, which the generation engine uses to rewrite a chain for
speed without changing its results: ``top_k`` followed by ``top_p`` becomes
:class:`TopKTopP`, which sorts only the k survivors.
"""

from __future__ import annotations

import torch

from llmcore.errors import GenerationError
from llmcore.hookspecs import hookimpl

NEG_INF = float("-inf")


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenerationError(f"{name} must be a number, found {value!r}")
    return float(value)


def _keep(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GenerationError(f"min_tokens_to_keep must be an integer >= 1, found {value!r}")
    return value


class Temperature:
    """Divide the logits by ``temperature`` (> 0; use the ``greedy`` decoder for 0)."""

    def __init__(self, temperature: float = 1.0) -> None:
        t = _number("temperature", temperature)
        if not t > 0:
            raise GenerationError(
                f"temperature must be > 0, found {temperature!r} (for temperature 0 use the greedy decoder)"
            )
        self.temperature = t

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


class TopK:
    """Keep the ``k`` highest logits and every logit tied with the k-th."""

    def __init__(self, k: int = 50, min_tokens_to_keep: int = 1) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise GenerationError(f"top_k must be an integer >= 1, found {k!r}")
        self.k = max(k, _keep(min_tokens_to_keep))

    def check(self, vocab: int) -> None:
        """Fail before generation starts when ``k`` exceeds the vocabulary."""
        self.k_for(vocab)

    def fused_with(self, following: object) -> TopKTopP | None:
        """One processor computing this ``top_k`` then ``following`` when that is a
        ``top_p`` (:class:`TopKTopP`); None for anything else. Exact types only: a subclass
        may compute something else."""
        if type(self) is TopK and type(following) is TopP:
            return TopKTopP(self, following)
        return None

    def k_for(self, vocab: int) -> int:
        """``k``, checked against the vocabulary size of the logits."""
        if self.k > vocab:
            raise GenerationError(f"top_k={self.k} is larger than the vocabulary of {vocab} tokens")
        return self.k

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = self.k_for(logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, NEG_INF)


class TopP:
    """Nucleus sampling: keep the smallest set of most likely tokens whose probability
    reaches ``p`` (in (0, 1]); tokens of probability 0 always go."""

    def __init__(self, p: float = 0.9, min_tokens_to_keep: int = 1) -> None:
        self.p = _number("top_p", p)
        if not 0.0 < self.p <= 1.0:
            raise GenerationError(f"top_p must be in (0, 1], found {p!r}")
        self.min_tokens_to_keep = _keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - self.p)  # the low tail whose mass stays within 1 - p
        remove[..., -self.min_tokens_to_keep :] = False
        return logits.masked_fill(remove.scatter(1, order, remove), NEG_INF)


class TopKTopP:
    """``top_k`` then ``top_p`` with the same result, sorting only the k survivors.

    The survivors' cumulative probabilities are computed from their own softmax, whose sum
    may round differently from the softmax over the whole vocabulary; when a cumulative
    value falls within ``tol`` of the cut, or tied logits make the cut order-dependent,
    the exact two-step computation runs instead, so the output always equals
    ``TopP(TopK(logits))``.
    """

    tol = 1e-4  # >> the few-ulp rounding of a 1-sum softmax and a cumsum of k terms

    def __init__(self, top_k: TopK, top_p: TopP) -> None:
        self.top_k, self.top_p = top_k, top_p
        self.check = top_k.check

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        V = logits.shape[-1]
        k = self.top_k.k_for(V)
        # One more than k: the (k+1)-th equal to the k-th means ties make more survivors.
        vals, idx = torch.topk(logits, min(k + 1, V), dim=-1)  # (B, k[+1]) descending
        tied_kth = k < V and bool((vals[:, k] == vals[:, k - 1]).any())
        s, order = vals[:, :k].flip(-1), idx[:, :k].flip(-1)  # ascending, as TopP sorts
        cum = s.softmax(dim=-1).cumsum(dim=-1)
        cut = 1 - self.top_p.p
        remove = cum <= cut
        remove[..., -self.top_p.min_tokens_to_keep :] = False
        if (
            tied_kth
            or bool(((cum - cut).abs() <= self.tol).any())  # a cut that rounding could move
            or bool((s[:, 1:] == s[:, :-1]).any())  # ties whose order HF's sort decides
            or bool(torch.isinf(s[:, 0]).any())  # fewer than k finite logits
        ):
            return self.top_p(input_ids, self.top_k(input_ids, logits))
        out = torch.full_like(logits, NEG_INF)
        return out.scatter_(1, order, s.masked_fill(remove, NEG_INF))


class MinP:
    """Drop tokens whose probability is below ``p`` times the top token's (``p`` in [0, 1])."""

    def __init__(self, p: float = 0.05, min_tokens_to_keep: int = 1) -> None:
        self.p = _number("min_p", p)
        if not 0.0 <= self.p <= 1.0:
            raise GenerationError(f"min_p must be in [0, 1], found {p!r}")
        self.min_tokens_to_keep = _keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        remove = probs < self.p * probs.amax(dim=-1, keepdim=True)
        k = min(self.min_tokens_to_keep, probs.shape[-1])
        remove.scatter_(-1, torch.topk(probs, k, dim=-1).indices, False)
        return logits.masked_fill(remove, NEG_INF)


class Typical:
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy,
    up to probability mass ``p`` (in (0, 1); 1 keeps everything)."""

    def __init__(self, p: float = 0.9, min_tokens_to_keep: int = 1) -> None:
        self.p = _number("typical", p)
        if not 0.0 < self.p <= 1.0:
            raise GenerationError(f"typical p must be in (0, 1], found {p!r}")
        self.min_tokens_to_keep = _keep(min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.p == 1.0:
            return logits
        logp = torch.log_softmax(logits, dim=-1)
        ent = -(logp * logp.exp()).nansum(-1, keepdim=True)  # (B, 1)
        shifted = (-logp - ent).abs()
        sorted_shift, order = torch.sort(shifted, descending=False)
        cum = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (cum < self.p).sum(dim=1).clamp_(max=sorted_shift.shape[-1] - 1)
        remove = sorted_shift > sorted_shift.gather(1, last.view(-1, 1))
        remove[..., : self.min_tokens_to_keep] = False
        return logits.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def _padded_history(input_ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """History ids with everything outside the vocabulary mapped to the spare column."""
    return input_ids.clamp(min=0, max=vocab) if input_ids.numel() else input_ids


class RepetitionPenalty:
    """CTRL's penalty on every token already in the history: positive logits are divided
    by ``penalty``, negative ones multiplied (``penalty`` > 0; 1 is off)."""

    def __init__(self, penalty: float = 1.1) -> None:
        self.penalty = _number("repetition_penalty", penalty)
        if not self.penalty > 0:
            raise GenerationError(f"repetition_penalty must be > 0, found {penalty!r}")

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        if input_ids.shape[-1] == 0:
            return logits
        ids = _padded_history(input_ids, vocab)
        padded = torch.nn.functional.pad(logits, (0, 1))  # spare column for ignored ids
        score = padded.gather(1, ids)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return padded.scatter(1, ids, score)[..., :vocab]


class _CountPenalty:
    def __init__(self, penalty: float = 0.0) -> None:
        self.penalty = _number(self.name, penalty)

    def _counts(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        ids = _padded_history(input_ids, vocab)
        counts = torch.zeros(logits.shape[0], vocab + 1, dtype=logits.dtype, device=logits.device)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=logits.dtype))
        return counts[..., :vocab]


class FrequencyPenalty(_CountPenalty):
    """Subtract ``penalty`` times the number of times each token occurs in the history."""

    name = "frequency_penalty"

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits - self.penalty * self._counts(input_ids, logits)


class PresencePenalty(_CountPenalty):
    """Subtract ``penalty`` from every token that occurs in the history at least once."""

    name = "presence_penalty"

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits - self.penalty * (self._counts(input_ids, logits) > 0).to(logits.dtype)


class NoRepeatNGram:
    """Forbid any token that would repeat an ``n``-gram already in the history."""

    def __init__(self, n: int = 3) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GenerationError(f"no_repeat_ngram n must be an integer >= 1, found {n!r}")
        self.n = n

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        cur = input_ids.shape[-1]
        if cur < self.n:
            return logits
        vocab = logits.shape[-1]
        # Only windows whose first n-1 tokens equal the current suffix can be completed now;
        # each such window bans its own last token.
        prefix = input_ids[:, cur + 1 - self.n :]  # (B, n-1)
        windows = input_ids.unfold(1, self.n, 1)  # (B, W, n)
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (B, W)
        banned = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
        last = windows[..., -1].clamp(min=0, max=vocab)
        banned.scatter_(1, torch.where(matches, last, vocab), True)
        return logits.masked_fill(banned[:, :vocab], NEG_INF)


@hookimpl
def register_samplers(register):
    register("temperature", Temperature)
    register("top_k", TopK)
    register("top_p", TopP)
    register("min_p", MinP)
    register("typical", Typical)
    register("repetition_penalty", RepetitionPenalty)
    register("frequency_penalty", FrequencyPenalty)
    register("presence_penalty", PresencePenalty)
    register("no_repeat_ngram", NoRepeatNGram)
