"""The ``lora`` adapter plugin: low-rank updates on chosen linear layers (Hu et al. 2021).

``y = W x + b + (alpha / rank) * B(A(dropout(x)))`` with ``A`` Kaiming-initialised and ``B``
zero, so an adapted model starts out computing exactly what the base model does. Targets
name linear layers by the end of their module path: ``attn.qkv`` and ``attn.proj`` in
attention, ``mlp.fc`` / ``mlp.proj`` (gelu, relu) or ``mlp.gate`` / ``mlp.up`` / ``mlp.down``
(swiglu) in the MLP; ``mlp`` alone means every linear layer of the MLP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from llmcore.builtin.quantized import register_quantized_linears  # noqa: F401
from llmcore.errors import ConfigError
from llmcore.hookspecs import hookimpl

# The quantized linear layers (the other built-in replacement of nn.Linear) register
# through this module's entry point until they have one of their own.

ATTENTION_TARGETS = ("attn.qkv", "attn.proj")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and PEFT) do
        self.dropout = nn.Dropout(dropout)

    @property
    def weight(self) -> torch.Tensor:  # code that reads layer.weight keeps working
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The update ``scaling * B A``, shaped like the base weight (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, in) -> (B, T, out); the low-rank path never forms the full matrix
        update = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()
        return self.base(x) + update * self.scaling

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}"


class LoRA:
    """Adds LoRA to a transformer's attention and/or MLP projections.

    Args:
        rank: rank of each update (> 0).
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout on the adapter's input during training.
        targets: module-path endings of the linear layers to adapt (see the module doc).
        train_bias: keep the base layers' biases trainable too.
    """

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        targets: Sequence[str] = ATTENTION_TARGETS,
        train_bias: bool = False,
    ) -> None:
        if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
            raise ConfigError(f"lora.rank: must be a positive integer, found {rank!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"lora.dropout: must be in [0, 1), found {dropout!r}")
        if isinstance(targets, str):
            targets = [targets]
        if not targets:
            raise ConfigError("lora.targets: name at least one layer (for example attn.qkv)")
        self.rank = rank
        self.alpha = float(alpha)
        self.dropout = float(dropout)
        self.targets = [str(t) for t in targets]
        self.train_bias = train_bias

    def _matches(self, name: str) -> bool:
        for target in self.targets:
            if name.endswith("." + target) or name == target:
                return True
            if target == "mlp" and ".mlp." in f".{name}":
                return True
        return False

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze ``model`` and wrap each targeted ``nn.Linear`` in a :class:`LoRALinear`."""
        for p in model.parameters():
            p.requires_grad_(False)
        chosen = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and self._matches(name)
        ]
        if not chosen:
            linears = sorted(
                {n.split(".", 2)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            )
            raise ConfigError(
                f"lora.targets: {self.targets} match no linear layer; the model's are: "
                f"{', '.join(linears)}"
            )
        for name, module in chosen:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoRALinear(module, self.rank, self.alpha, self.dropout))
            if self.train_bias and module.bias is not None:
                module.bias.requires_grad_(True)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold every :class:`LoRALinear` into its base weight and put the plain layer back."""
        wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
        for name, module in wrapped:
            with torch.no_grad():
                module.base.weight += module.delta_weight().to(module.base.weight.dtype)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.base)
        for p in model.parameters():
            p.requires_grad_(True)
        return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's own tensors (``lora_A``, ``lora_B``) by their path in ``model``."""
    return {
        name: p.detach().contiguous()
        for name, p in model.named_parameters()
        if name.endswith((".lora_A", ".lora_B"))
    }


@hookimpl
def register_adapters(register):
    register("lora", LoRA)
