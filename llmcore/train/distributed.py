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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from llmcore.errors import ConfigError, TrainingError

T = TypeVar("T")


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
    transformer block plus the root (the rest: embedding, final norm, heads)."""
    if not env.enabled:
        return module
    if env.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in transformer_blocks(module):
            fully_shard(block)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """The blocks of every ``blocks`` list inside ``module`` (the language model may sit
    under a reward or value head, or a loss module)."""
    return [
        block
        for name, child in module.named_modules()
        if name.rsplit(".", 1)[-1] == "blocks" and isinstance(child, nn.ModuleList)
        for block in child
    ]


def gathered(module: nn.Module, env: DistEnv, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` without gradients, free to call any part of the unwrapped ``module``
    directly (sampling, a value or reward head, a raw evaluation), not only its forward.

    DDP and a single process keep whole weights on every rank: ``fn`` just runs. Under
    FSDP the parts are sharded, and FSDP gathers a part only in the forward hooks that it
    registers, which must first run on the root. So ``fn`` runs as the root's forward: every
    shard group is gathered first and kept gathered to the end (``reshard_after_forward``
    off, as FSDP advises for evaluation), so ``fn`` may call the blocks any number of times,
    or on one rank only, with no collective in between. Then all is resharded. Every rank
    must call this (the gathering is collective); the whole model is held meanwhile."""
    if env.mode != "fsdp" or not env.enabled:
        with torch.no_grad():
            return fn(*args)
    from torch.distributed.fsdp import FSDPModule

    groups = [m for m in module.modules() if isinstance(m, FSDPModule)]

    def forward() -> T:
        for group in groups:
            group.unshard()
        return fn(*args)

    module.set_reshard_after_forward(False)
    module.forward = forward  # an instance attribute: nn.Module.__call__ runs FSDP's hooks
    try:
        with torch.no_grad():
            return module()
    finally:
        del module.forward
        for group in groups:
            group.reshard()
        module.set_reshard_after_forward(True)  # FSDP's defaults: blocks reshard after
        module.set_reshard_after_forward(False, recurse=False)  # forward, the root does not


def on_main(env: DistEnv, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` computed on rank 0 only and sent to every rank (the result must pickle).

    For what must be the same on every rank and may be costly or not repeatable: sampled
    answers and their rewards. An error on rank 0 is raised on every rank."""
    if not env.enabled:
        return fn(*args)
    box: list[Any] = [None]
    error: BaseException | None = None
    if env.is_main:
        try:
            box = [("ok", fn(*args))]
        except Exception as exc:  # every rank raises, none waits for a result that never comes
            error = exc
            box = [("error", f"{type(exc).__name__}: {exc}")]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise TrainingError(f"rank 0 failed: {value}")
    return value


def full_state(module: nn.Module, env: DistEnv) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with whole tensors (a collective under FSDP: every rank
    calls it); for the small parts saved beside the model, a reward or value head."""
    state = module.state_dict()
    if env.mode != "fsdp" or not env.enabled:
        return state
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu()
        for k, v in state.items()
    }


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
    if not full:  # only rank 0 receives the tensors
        return {}
    name = next(n for n, m in module.named_modules() if m is raw)  # where ``raw`` sits
    prefix = f"{name}." if name else ""
    return {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}


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
