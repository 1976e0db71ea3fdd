"""``llmcore train`` under torchrun with 2 CPU processes (gloo): DDP and FSDP2 follow the
single-process loss curve of the same global batch, and resume there too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runs import cli, cli_env
from tests.test_resume import _setup

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str) -> str:
    """``llmcore ARGS`` under torchrun with 2 processes; it must succeed. Returns stdout."""
    cmd = [*TORCHRUN, "-m", "llmcore", *args]
    res = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def _curve(run: Path) -> dict[tuple, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key in ("train_loss", "val_loss"):
            if row.get(key) is not None:
                out[(row["step"], key)] = row[key]
    return out


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    worst = max(abs(a[k] - b[k]) for k in a)
    assert worst < 2e-4, worst


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    cfg = _setup(tmp, max_iters=30, eval_interval=10, grad_accum=2)
    ref = tmp / "ref"
    subprocess.run(
        cli("train", str(cfg), "--out", str(ref), "--no-progress"),
        check=True,
        env=cli_env(),
        capture_output=True,
    )
    return cfg, ref


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_follow_the_single_process_curve_and_resume(reference, mode):
    """Train to step 20 under torchrun, resume there to 30: the whole curve equals the one
    process run with the same global batch (each rank trains on its half of it)."""
    cfg, ref = reference
    run = ref.parent / f"run-{mode}"
    torchrun(
        "train",
        str(cfg),
        "--out",
        str(run),
        "--no-progress",
        "--set",
        f"train.distributed={mode}",
        "--set",
        "train.max_iters=20",
    )
    assert (run / "ckpt" / "latest").read_text().strip() == "00000020"
    out = torchrun(
        "train", "--resume", str(run), "--no-progress",
        "--set", "train.max_iters=30", "--set", "train.sample_tokens=8",
    )  # fmt: skip
    assert out.count("sample:\n") == 1  # rank 0 samples the trained model (under FSDP: from
    # the checkpoint, as its own weights are a shard)
    _assert_close(_curve(run), _curve(ref))
    assert (run / "ckpt" / "latest").read_text().strip() == "00000030"
    # only rank 0 writes: one metrics line per step and eval, as in the single-process run
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(
        (ref / "metrics.jsonl").read_text().splitlines()
    )
    shutil.rmtree(run)
