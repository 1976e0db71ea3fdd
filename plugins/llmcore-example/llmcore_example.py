"""An example llmcore plugin: one norm (``scalenorm``) and one sampler (``epsilon``).

Each hook receives a ``register(name, factory)`` callback; the names become usable in any
llmcore config file (``model.norm: scalenorm``) once this package is installed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import llmcore


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar, 2019): ``g * x / max(||x||, eps)`` with one learned
    scalar ``g`` initialised to ``sqrt(dim)``."""

    def __init__(self, dim: int, *, eps: float = 1e-5, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.tensor(math.sqrt(dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps)


class EpsilonSampler:
    """Epsilon sampling (Hewitt et al., 2022): drop tokens whose probability is below
    ``epsilon``, always keeping at least ``min_tokens_to_keep``."""

    def __init__(self, epsilon: float = 3e-4, min_tokens_to_keep: int = 1) -> None:
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"epsilon must be in (0, 1), found {epsilon}")
        self.epsilon = epsilon
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        remove = probs < self.epsilon
        kth = torch.topk(logits, self.min_tokens_to_keep, dim=-1).values[..., -1:]
        remove &= logits < kth
        return logits.masked_fill(remove, float("-inf"))


@llmcore.hookimpl
def register_norms(register):
    register("scalenorm", ScaleNorm)


@llmcore.hookimpl
def register_samplers(register):
    register("epsilon", EpsilonSampler)
