"""Norm plugins: ``layernorm`` and ``rmsnorm``.

Both offer ``functional()``: their ``forward`` as a plain function with the parameters
bound, which the lean decode step (:mod:`llmcore.generation.lean`) calls instead of going
through ``nn.Module`` dispatch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmcore.hookspecs import hookimpl


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch's ``nn.LayerNorm`` has no bias-free form
    before 2.1, and nanoGPT's models use ``bias=False``)."""

    def __init__(self, dim: int, *, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)

    def functional(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``forward`` as a plain function of ``x`` with the parameters bound."""
        shape, w, b, eps = self.weight.shape, self.weight, self.bias, self.eps
        return lambda x: F.layer_norm(x, shape, w, b, eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """Root-mean-square norm: ``x / sqrt(mean(x^2) + eps) * weight``, computed in fp32."""

    def __init__(self, dim: int, *, eps: float = 1e-6, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        # bias is accepted so one model config fits every norm; RMSNorm has none.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.weight.shape, None, self.eps).to(x.dtype) * self.weight

    def functional(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``forward`` as a plain function of ``x`` with the parameters bound."""
        shape, w, eps = self.weight.shape, self.weight, self.eps
        return lambda x: F.rms_norm(x.float(), shape, None, eps).to(x.dtype) * w

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


@hookimpl
def register_norms(register):
    register("layernorm", LayerNorm)
    register("rmsnorm", RMSNorm)
