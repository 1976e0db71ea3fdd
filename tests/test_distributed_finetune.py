"""Reward model, DPO and PPO under ``torchrun --nproc_per_node=2`` (gloo, CPU): each logs
what the single-process run of the same global batch logs and saves the same weights.

The reference is the single-process run, whose numbers are checked against independent
references elsewhere (the losses against closed forms and TRL's formulas in
test_finetune_losses, the engine's update against a plain torch step in
test_finetune_engine). What differs under torchrun is only how the work is spread: each rank
trains on its half of every batch, FSDP shards the weights and gathers them for
evaluation and sampling, rank 0 samples and scores PPO's rollouts for every rank, and rank
0 writes the checkpoint. None of that may change a number beyond float rounding, so
agreement to 2e-4 checks it without taking any expected value from the code under test.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmcore import checkpoint as ckpt
from llmcore.finetune.session import finetune_config
from tests.test_distributed import torchrun
from tests.test_finetune import records
from tests.test_finetune_engine import method_config, world  # noqa: F401 (the fixture)

TOLERANCE = 2e-4
#: safetensors files of a run's checkpoint: the model, and each method's head
FILES = {"reward": ["reward_head.safetensors"], "dpo": [], "ppo": ["value_head.safetensors"]}
#: The Bradley-Terry loss reads only differences of scores, so the reward head's bias gets
#: a zero gradient but for rounding, which AdamW scales up to full-size steps: its value is
#: noise in every run, one process or two.
UNDETERMINED = {("reward_head.safetensors", "linear.bias")}


@pytest.fixture(scope="module")
def single(world, tmp_path_factory):  # noqa: F811
    """The single-process run of each method, made on first use."""
    root = tmp_path_factory.mktemp("dist_ft")
    runs: dict[str, tuple[Path, Path]] = {}

    def get(method: str) -> tuple[Path, Path]:
        if method not in runs:
            cfg = method_config(world, root / f"{method}.yaml", method, 4, 2, epochs=2)
            run = getattr(importlib.import_module(f"llmcore.finetune.{method}"), f"run_{method}")
            ref, _ = run(finetune_config(cfg), out_dir=root / f"{method}-ref", progress=False)
            runs[method] = cfg, ref
        return runs[method]

    return get


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    """The same records, key for key; numbers within TOLERANCE."""
    assert len(got) == len(want)  # only rank 0 logs
    for a, b in zip(got, want):
        assert a.keys() == b.keys(), (a, b)
        for k in a:
            if isinstance(b[k], float) and k != "tokens_per_s":
                assert math.isfinite(a[k]) and abs(a[k] - b[k]) < TOLERANCE, (a["step"], k)
            elif k != "tokens_per_s":
                assert a[k] == b[k], (a["step"], k)


def assert_same_weights(got: Path, want: Path, names: list[str]) -> None:
    a, b = ckpt.resolve_checkpoint(got), ckpt.resolve_checkpoint(want)
    for name in [ckpt.MODEL_FILE, *names]:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys(), name
        for k in x.keys() - {key for file, key in UNDETERMINED if file == name}:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=TOLERANCE, msg=f"{name}: {k}")


@pytest.mark.parametrize(
    "method, mode, stop_at",
    [("reward", "fsdp", None), ("dpo", "fsdp", None), ("ppo", "fsdp", 2), ("ppo", "ddp", None)],
)
def test_two_processes_log_and_save_what_one_process_does(single, tmp_path, method, mode, stop_at):
    """DDP keeps whole weights on every rank, so only PPO's rank-0 rollouts (and the
    sampled scores) are new to it; FSDP changes how every method reaches its weights.
    With ``stop_at`` the run stops at that checkpoint and is resumed under torchrun: the
    value head, the optimizer's sharded state and the sampling state come back."""
    cfg, ref = single(method)
    run = tmp_path / f"{method}-{mode}"
    args = ["finetune", method, str(cfg), "--out", str(run), "--no-progress"]
    mode_set = ["--set", f"train.distributed={mode}"]
    if stop_at is None:
        torchrun(*args, *mode_set)
    else:
        torchrun(*args, *mode_set, "--set", f"train.max_iters={stop_at}")
        assert (run / "ckpt" / "latest").read_text().strip() == f"{stop_at:08d}"
        resume = ["finetune", method, "--resume", str(run), "--no-progress"]
        torchrun(*resume, "--set", "train.max_iters=4")
    want = records(ref)
    if method != "reward":  # a reward model samples nothing
        assert any("sample_format" in r for r in want)  # sampled scores are compared too
    assert_same_records(records(run), want)
    assert_same_weights(run, ref, FILES[method])
