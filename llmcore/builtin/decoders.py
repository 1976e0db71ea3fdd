"""Decoder plugins: the final choice of the next token, ``greedy`` or ``multinomial``."""

from __future__ import annotations

import torch

from llmcore.hookspecs import hookimpl


class Greedy:
    """The highest-scoring token (the first one on ties)."""

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return logits.argmax(dim=-1)


class Multinomial:
    """A draw from ``softmax(logits)``, reproducible with a seeded ``generator``."""

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        probs = torch.softmax(logits.float(), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@hookimpl
def register_decoders(register):
    register("greedy", Greedy)
    register("multinomial", Multinomial)
