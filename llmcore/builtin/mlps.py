"""MLP plugins: ``gelu`` (GPT-2's), ``relu`` and ``swiglu`` (Llama's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmcore.hookspecs import hookimpl
from llmcore.ops.activation import gelu


class GeluMLP(nn.Module):
    """``fc -> GELU -> proj``; hidden width 4x by default. ``approximate="tanh"`` is GPT-2's."""

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int | None = None,
        bias: bool = True,
        approximate: str = "none",
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', found {approximate!r}")
        self.approximate = approximate
        self.fc = nn.Linear(dim, hidden_dim, bias=bias)
        self.proj = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(gelu(self.fc(x), approximate=self.approximate))


class ReluMLP(nn.Module):
    """``fc -> ReLU -> proj``; hidden width 4x by default."""

    def __init__(self, dim: int, *, hidden_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        self.fc = nn.Linear(dim, hidden_dim, bias=bias)
        self.proj = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``. Default hidden width is Llama's: 2/3 of 4x,
    rounded up to a multiple of ``multiple_of``."""

    def __init__(
        self, dim: int, *, hidden_dim: int | None = None, bias: bool = False, multiple_of: int = 64
    ) -> None:
        super().__init__()
        if hidden_dim is None:
            hidden_dim = int(2 * 4 * dim / 3)
            hidden_dim = multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)
        self.gate = nn.Linear(dim, hidden_dim, bias=bias)
        self.up = nn.Linear(dim, hidden_dim, bias=bias)
        self.down = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


@hookimpl
def register_mlps(register):
    register("gelu", GeluMLP)
    register("relu", ReluMLP)
    register("swiglu", SwiGLU)
