"""Multi-process training on torch.distributed: DDP, or FSDP2 (``fully_shard``).

The same ``llmcore train`` command runs under ``torchrun --nproc_per_node=N``: the process
group starts from torchrun's environment (gloo on CPU, nccl on CUDA), every rank builds the
same model from the same seed, each draws its share of the same global batch, and only rank 0
writes files or prints. Without torchrun's environment everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from llmcore.errors import ConfigError


@dataclass
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` (1 and 0 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str | None = None  # None (one process), "ddp" or "fsdp"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set ``WORLD_SIZE`` above 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device, mode: str) -> tuple[DistEnv, torch.device]:
    """Join the process group torchrun describes; returns the env and this rank's device."""
    if not launched_by_torchrun():
        return DistEnv(), device
    if mode not in ("ddp", "fsdp"):
        raise ConfigError(f"train.distributed: {mode!r} is not one of ddp, fsdp")
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistEnv(rank, world, local, mode), device


def shutdown(env: DistEnv, wait: bool = True) -> None:
    """Leave the process group (when we joined one).

    With ``wait`` every rank reaches this point before any leaves: tearing gloo down while
    a peer still has collectives in flight aborts that peer. After an error, leave at once.
    """
    if env.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def local_batch(batch_size: int, env: DistEnv, where: str = "train.batch_size") -> slice:
    """The rows of a global batch this rank trains on; the batch must split evenly."""
    if batch_size % env.world_size:
        raise ConfigError(
            f"{where}: {batch_size} does not split evenly over {env.world_size} processes"
        )
    n = batch_size // env.world_size
    return slice(env.rank * n, (env.rank + 1) * n)


def wrap(module: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """``module`` as trained on this rank: itself, DDP, or FSDP2 with one shard group per
    transformer block plus the root."""
    if not env.enabled:
        return module
    if env.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        blocks = getattr(getattr(module, "model", module), "blocks", [])
        for block in blocks:
            fully_shard(block)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def no_sync(model: nn.Module, sync: bool):
    """Skip DDP's gradient all-reduce on micro-steps before the last one."""
    if not sync and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def all_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The mean of ``value`` over ranks (``value`` itself when not distributed)."""
    if not env.enabled:
        return value
    value = value.detach().clone().float()
    if dist.get_backend() == "nccl" and value.device.type != "cuda":
        value = value.cuda()  # nccl reduces CUDA tensors only
    dist.all_reduce(value)
    return value / env.world_size


def agree(ok: bool, env: DistEnv) -> bool:
    """True on every rank only when ``ok`` is true on every rank (so all raise together)."""
    if not env.enabled:
        return ok
    flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag)
    return int(flag.item()) == 0


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def full_model_state(module: nn.Module, raw: nn.Module, env: DistEnv) -> dict[str, torch.Tensor]:
    """The whole model's tensors (for rank 0 to save); a collective under FSDP."""
    if env.mode != "fsdp" or not env.enabled:
        from llmcore.checkpoint import model_state

        return model_state(raw)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    prefix = "model."
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in full.items()}


def optimizer_state(module: nn.Module, optimizer: Any, env: DistEnv) -> dict[str, Any]:
    """The optimizer state in a form any rank count can load back; a collective under FSDP."""
    if env.mode != "fsdp" or not env.enabled:
        return {"format": "index", "state": optimizer.state_dict()}
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    full = get_optimizer_state_dict(
        module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return {"format": "fqn", "state": full}


def load_optimizer_state(
    module: nn.Module, optimizer: Any, saved: dict[str, Any], env: DistEnv
) -> None:
    """Inverse of :func:`optimizer_state`."""
    fmt = saved.get("format")
    if env.mode == "fsdp" and env.enabled:
        if fmt != "fqn":
            raise ValueError("the checkpoint was not written by an FSDP run")
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            module,
            optimizer,
            optim_state_dict=saved["state"],
            options=StateDictOptions(full_state_dict=True),
        )
        return
    if fmt != "index":
        raise ValueError("the checkpoint was written by an FSDP run; resume it under FSDP")
    optimizer.load_state_dict(saved["state"])
