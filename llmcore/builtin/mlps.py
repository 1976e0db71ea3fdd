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

    def functional(self):
        """``forward`` as a plain function of ``x`` with the weights bound, for the lean
        decode step; None when a layer is wrapped (LoRA), which must run its own forward.

        It calls torch's ``F.gelu``, not the native kernel ``forward`` takes for ``tanh``
        (the same function, rounded differently in the last bits)."""
        if not _plain_linear(self.fc, self.proj):
            return None
        fw, fb, pw, pb = self.fc.weight, self.fc.bias, self.proj.weight, self.proj.bias
        approx = self.approximate
        return lambda x: F.linear(F.gelu(F.linear(x, fw, fb), approximate=approx), pw, pb)


class ReluMLP(nn.Module):
    """``fc -> ReLU -> proj``; hidden width 4x by default."""

    def __init__(self, dim: int, *, hidden_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        self.fc = nn.Linear(dim, hidden_dim, bias=bias)
        self.proj = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)))

    def functional(self):
        """``forward`` as a plain function of ``x`` with the weights bound; None when a
        layer is wrapped (LoRA)."""
        if not _plain_linear(self.fc, self.proj):
            return None
        fw, fb, pw, pb = self.fc.weight, self.fc.bias, self.proj.weight, self.proj.bias
        return lambda x: F.linear(F.relu(F.linear(x, fw, fb)), pw, pb)


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

    def functional(self):
        """``forward`` as a plain function of ``x`` with the weights bound; None when a
        layer is wrapped (LoRA)."""
        if not _plain_linear(self.gate, self.up, self.down):
            g, u, d = (_linear_function(m) for m in (self.gate, self.up, self.down))
            if None in (g, u, d):
                return None
            return lambda x: d(F.silu(g(x)) * u(x))  # quantized layers (llmcore.quant)
        gw, gb, uw, ub = self.gate.weight, self.gate.bias, self.up.weight, self.up.bias
        dw, db = self.down.weight, self.down.bias
        return lambda x: F.linear(F.silu(F.linear(x, gw, gb)) * F.linear(x, uw, ub), dw, db)


def _plain_linear(*layers: nn.Module) -> bool:
    """Every layer is a plain ``nn.Linear``, not a subclass or a wrapper that adds to it."""
    return all(type(layer) is nn.Linear for layer in layers)


def _linear_function(layer: nn.Module):
    """The ``functional()`` of a linear layer that offers one for its own ``forward`` (the
    quantized layers of :mod:`llmcore.quant`); None otherwise (a LoRA wrapper)."""
    fn = getattr(layer, "functional", None)
    return fn() if callable(fn) else None


@hookimpl
def register_mlps(register):
    register("gelu", GeluMLP)
    register("relu", ReluMLP)
    register("swiglu", SwiGLU)
