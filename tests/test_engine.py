"""The training engine's own guarantees: the plot without the jsonl logger, checkpoints on
their own cadence, a failed rewind that loses nothing, and SIGINT/SIGTERM that save first."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import torch

from llmcore import checkpoint as ckpt
from llmcore.errors import TrainingError
from llmcore.train import Trainer, train
from tests.cli_runs import cli, cli_env, wait_until_logged
from tests.test_resume import _losses, reference  # noqa: F401
from tests.test_train import rows, tiny


def test_no_loggers_still_plots_from_what_the_engine_logged(tmp_path):
    run = train(tiny(tmp_path, "train.loggers=[]"), out_dir=tmp_path / "run", progress=False)
    assert not (run / "metrics.jsonl").exists()
    page = (run / "loss.html").read_text()
    assert page.count("<polyline") == 2  # train and val
    # 20 logged training steps: 20 points on the train curve
    train_line = page.split("<polyline")[1].split("points=")[1].split('"')[1]
    assert len(train_line.split()) == 20


def test_checkpoints_follow_their_own_interval(tmp_path):
    cfg = tiny(
        tmp_path,
        "train.max_iters=21",
        "train.checkpoint_interval=7",
        "train.eval_interval=20",
        "train.keep_last=10",
    )
    run = train(cfg, out_dir=tmp_path / "run", progress=False)
    kept = sorted(p.name for p in (run / "ckpt").iterdir() if p.name.isdigit())
    assert kept == ["00000007", "00000014", "00000021"]
    assert [r["step"] for r in rows(run) if "val_loss" in r] == [0, 20, 21]


def test_a_failed_rewind_loses_no_metrics_line_and_no_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, "train.max_iters=30", "train.keep_last=5")
    run = train(cfg, out_dir=tmp_path / "run", progress=False)
    before = (run / "metrics.jsonl").read_text()
    kept = sorted(p.name for p in (run / "ckpt").iterdir())
    trainer = Trainer(cfg, resume=run / "ckpt" / "00000010", progress=False)
    real = trainer.model.loss

    def failing(x, y):
        if trainer.step >= 15 and torch.is_grad_enabled():
            raise TrainingError("failed for the test")
        return real(x, y)

    monkeypatch.setattr(trainer.model, "loss", failing)
    with pytest.raises(TrainingError, match="failed for the test"):
        trainer.run()
    assert (run / "metrics.jsonl").read_text() == before
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == kept
    assert (run / "ckpt" / "latest").read_text().strip() == "00000030"
    # a rewind that writes a newer checkpoint cuts the rows after the checkpoint it resumed
    shorter = tiny(tmp_path, "train.max_iters=20", "train.keep_last=5")
    Trainer(shorter, resume=run / "ckpt" / "00000010", progress=False).run()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 20 and steps == sorted(steps)
    assert not list(run.glob(".metrics.jsonl.*"))


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_at_the_next_step_then_resume_equals_an_uninterrupted_run(
    sig, code, tmp_path
):
    from tests.test_resume import _setup

    cfg = _setup(tmp_path)
    ref = tmp_path / "ref"
    subprocess.run(
        cli("train", str(cfg), "--out", str(ref), "--no-progress"),
        check=True,
        env=cli_env(),
        capture_output=True,
    )
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        cli(
            "train", str(cfg), "--out", str(cut), "--no-progress", "--set", "train.max_iters=100000"
        ),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_logged(proc, cut, 25)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "continue with --resume" in err
    stopped = int((cut / "ckpt" / "latest").read_text())
    assert stopped >= 25 and ckpt.load_checkpoint(cut).step == stopped
    subprocess.run(
        cli("train", "--resume", str(cut), "--no-progress", "--set", "train.max_iters=60"),
        check=True,
        env=cli_env(),
        capture_output=True,
    )
    assert _losses(cut) == _losses(ref)


def test_a_second_signal_ends_the_process_at_once():
    script = (
        "import os, signal, sys, time\n"
        "from llmcore.train.signals import StopRequests\n"
        "with StopRequests() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.1)\n"
        "    assert stop.signum == signal.SIGTERM\n"
        "    print('first signal noted', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "print('still alive')\n"
    )
    import sys

    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.stdout == "first signal noted\n", res.stderr
    assert res.returncode == -signal.SIGTERM


def test_training_starts_with_a_summary(tmp_path, capsys):
    cfg = tiny(tmp_path, "train.max_iters=2", "train.grad_accum=2", "train.dtype=bfloat16")
    trainer = Trainer(cfg, out_dir=tmp_path / "run", progress=False)
    n = sum(p.numel() for p in trainer.model.parameters())
    trainer.run()
    first = capsys.readouterr().out.splitlines()[0]
    threads = torch.get_num_threads()
    assert first == (
        f"pretrain: {n:,} parameters ({n:,} trainable), bfloat16 autocast, attention {cfg.model.attention.name}, "
        f"{threads} threads, {4 * 2 * 16:,} tokens per step on cpu"
    )
