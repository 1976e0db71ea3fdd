"""Sampler plugins: logits processors ``(input_ids, logits) -> logits``, chained in the
order a config lists them. Each matches the Hugging Face processor of the same name."""

from __future__ import annotations

import torch

from llmcore.errors import GenerationError
from llmcore.hookspecs import hookimpl

NEG_INF = float("-inf")


class Temperature:
    """Divide the logits by ``temperature`` (> 0)."""

    def __init__(self, temperature: float = 1.0) -> None:
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise GenerationError(f"temperature must be a number > 0, found {temperature!r}")
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.temperature == 1.0 else logits / self.temperature


class TopK:
    """Keep the ``k`` highest logits (and every logit tied with the k-th)."""

    def __init__(self, k: int = 50, min_tokens_to_keep: int = 1) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise GenerationError(f"top_k must be an integer >= 1, found {k!r}")
        self.k = max(k, min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, NEG_INF)


class TopP:
    """Nucleus sampling: keep the smallest set of tokens whose probability mass reaches ``p``."""

    def __init__(self, p: float = 0.9, min_tokens_to_keep: int = 1) -> None:
        if not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
            raise GenerationError(f"top_p must be in (0, 1], found {p!r}")
        self.p = float(p)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - self.p)  # the low tail whose mass stays below 1 - p
        remove[..., -self.min_tokens_to_keep :] = False
        return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


@hookimpl
def register_samplers(register):
    register("temperature", Temperature)
    register("top_k", TopK)
    register("top_p", TopP)
