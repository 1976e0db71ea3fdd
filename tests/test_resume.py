"""Exact resume: a real ``llmcore train`` killed with SIGKILL between checkpoints, then
resumed, logs the same losses as an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cli_runs import cli, cli_env, steps_logged, wait_until_logged

CONFIG = {
    "tokenizer": {"name": "char"},
    "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "bias": False},
    "data": {"path": None, "val_fraction": 0.1},
    "train": {
        "max_iters": 60,
        "batch_size": 4,
        "eval_interval": 20,
        "eval_iters": 2,
        "log_interval": 1,
        "sample_tokens": 0,
        "keep_last": 1,
        "schedule": {"name": "cosine", "warmup_iters": 5, "decay_iters": 60, "min_lr": 1.0e-4},
    },
}


def _corpus(path: Path) -> None:
    import random

    rng = random.Random(0)
    words = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "a",
        "is",
        "that",
        "for",
        "it",
        "as",
        "was",
        "with",
        "be",
        "by",
        "on",
        "not",
        "he",
        "this",
        "are",
    ]
    lines = (" ".join(rng.choice(words) for _ in range(10)) for _ in range(600))
    path.write_text("\n".join(lines), encoding="utf-8")


def _setup(tmp_path: Path, **train) -> Path:
    _corpus(tmp_path / "corpus.txt")
    cfg = json.loads(json.dumps(CONFIG))
    cfg["data"]["path"] = str(tmp_path / "corpus.txt")
    cfg["train"]["out_dir"] = str(tmp_path / "runs")
    cfg["train"].update(train)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _losses(run: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every test here compares against."""
    tmp = tmp_path_factory.mktemp("resume")
    cfg = _setup(tmp)
    ref = tmp / "ref"
    subprocess.run(
        cli("train", str(cfg), "--out", str(ref), "--no-progress"),
        check=True,
        env=cli_env(),
        capture_output=True,
    )
    return cfg, ref


def test_sigkill_then_resume_equals_uninterrupted_run(reference, tmp_path):
    cfg, ref = reference
    # the killed run is told to go much further, so it cannot finish before the kill;
    # it is resumed with the reference's max_iters (the schedule does not depend on it)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        cli(
            "train", str(cfg), "--out", str(cut), "--no-progress", "--set", "train.max_iters=100000"
        ),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_logged(proc, cut, 27)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (cut / "ckpt" / "latest").read_text().strip() == "00000020"
    assert steps_logged(cut) < 40

    subprocess.run(
        cli("train", "--resume", str(cut), "--no-progress", "--set", "train.max_iters=60"),
        check=True,
        env=cli_env(),
        capture_output=True,
    )
    assert _losses(cut) == _losses(ref)  # exactly equal, every step after the kill too


def test_resume_of_a_finished_run_adds_nothing(reference, tmp_path):
    _, ref = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    before = _losses(run)
    subprocess.run(
        cli("train", "--resume", str(run), "--no-progress"),
        check=True,
        env=cli_env(),
        capture_output=True,
    )
    assert _losses(run) == before


def test_resume_with_another_tokenizer_is_an_error(reference):
    cfg, ref = reference
    res = subprocess.run(
        cli(
            "train",
            str(cfg),
            "--resume",
            str(ref),
            "--no-progress",
            "--set",
            "tokenizer.name=bpe",
            "--set",
            "tokenizer.encoding=gpt2",
        ),
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert "trained with 'char'" in res.stderr
