"""Models of fine-tuning: loading runs (with their adapters), the reward model and the
policy's value head, and log-probabilities of answers.

A run fine-tuned with an adapter saves the adapted model as it is (base weights plus the
adapter's tensors) and names the adapter in ``finetune.adapter`` of its config;
:func:`load_finetuned` rebuilds it, and ``llmcore merge-lora`` folds it into plain weights.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from llmcore import checkpoint as ckpt
from llmcore.components import create
from llmcore.config import Config, config_from_dict, read_config_file
from llmcore.errors import CheckpointError, LLMCoreError
from llmcore.finetune.losses import token_logprobs

REWARD_HEAD_FILE = "reward_head.safetensors"


def read_run_config(path: str | Path) -> tuple[Path, Config]:
    """The checkpoint folder of a run or checkpoint and its resolved config (an HF folder
    or GGUF file: the path itself and the config of its model)."""
    from llmcore.loading import read_config, source_kind

    if source_kind(path) != "run":
        return Path(path), read_config(path)
    folder = ckpt.resolve_checkpoint(path)
    file = folder / ckpt.CONFIG_FILE
    try:
        return folder, config_from_dict(read_config_file(file), source=str(file))
    except LLMCoreError as exc:
        raise CheckpointError(f"{folder}: bad checkpoint config: {exc}") from None


def load_finetuned(
    path: str | Path, *, device: str | torch.device = "cpu", merge: bool = False
) -> ckpt.LoadedCheckpoint:
    """Load a run or checkpoint, re-applying its adapter when it was trained with one.

    Args:
        merge: fold the adapter into the base weights (a plain model comes back).
    """
    from llmcore.loading import load  # a run, an HF folder or a GGUF file

    loaded = load(path, device=device)
    if merge and loaded.config.finetune.adapter is not None:
        create("adapter", loaded.config.finetune.adapter, "finetune.adapter").merge(loaded.model)
        loaded.config.finetune.adapter = None
    return loaded


def check_same_architecture(
    cfg: Config, tokenizer, other: Config, other_tokenizer, what: str, where: Path
) -> None:
    """Raise CheckpointError when ``other`` (the reference) is not the policy's architecture."""
    for f in fields(cfg.model):
        a, b = getattr(cfg.model, f.name), getattr(other.model, f.name)
        if f.name != "dropout" and a != b:
            raise CheckpointError(
                f"{where}: the {what} is of another architecture: model.{f.name} is {b!r} there "
                f"but {a!r} in the policy"
            )
    if tokenizer.vocab_size != other_tokenizer.vocab_size or tokenizer.decode(
        range(min(tokenizer.vocab_size, 256))
    ) != other_tokenizer.decode(range(min(other_tokenizer.vocab_size, 256))):
        raise CheckpointError(f"{where}: the {what} uses another tokenizer than the policy")


def freeze(model: nn.Module) -> nn.Module:
    """Evaluation mode and no gradients: a frozen reference."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def answer_logprobs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed log-probabilities (B,) of the answer ids ``y`` (-1 elsewhere) given ``x``."""
    return token_logprobs(model(x), y).sum(-1)


class ScalarHead(nn.Module):
    """A linear map from the model width to one number per position."""

    def __init__(self, dim: int, init_std: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        nn.init.normal_(self.linear.weight, 0.0, init_std) if init_std > 0 else nn.init.zeros_(
            self.linear.weight
        )
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(-1)  # (B, T, C) -> (B, T)


class RewardModel(nn.Module):
    """The LM backbone and a scalar head read at the last id of each sequence."""

    def __init__(self, backbone: nn.Module, head_init_std: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ScalarHead(backbone.config.n_embd, head_init_std)

    def forward(self, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Scores (B,) of right-padded ``ids`` (B, T) ending at ``last`` (B,)."""
        h = self.backbone.hidden_states(ids)  # (B, T, C)
        rows = torch.arange(ids.shape[0], device=ids.device)
        return self.head(h[rows, last])


def load_reward_model(path: str | Path, device: str | torch.device = "cpu"):
    """A reward-model run: (RewardModel, LoadedCheckpoint of its backbone)."""
    loaded = load_finetuned(path, device=device, merge=True)
    file = loaded.path / REWARD_HEAD_FILE
    if not file.exists():
        raise CheckpointError(f"{loaded.path}: not a reward-model run (no {REWARD_HEAD_FILE})")
    rm = RewardModel(loaded.model)
    load_head(rm.head, file, "reward head")
    return rm.to(device), loaded


def load_head(head: nn.Module, file: Path, what: str) -> None:
    """Load the weights of a scalar head (a reward or value head) saved beside a model."""
    try:
        head.load_state_dict(load_file(str(file)))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{file}: bad {what}: {exc}") from None


class PolicyWithValue(nn.Module):
    """The policy language model and a value head on its final hidden states."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.value_head = ScalarHead(model.config.n_embd)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) and values (B, T)."""
        h = self.model.hidden_states(ids)
        return self.model.lm_head(h), self.value_head(h)
