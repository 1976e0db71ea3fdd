"""Helpers for tests that run ``llmcore`` in a subprocess and interrupt it mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def cli(*args: str) -> list[str]:
    """The command line of ``llmcore ARGS`` in this interpreter."""
    return [sys.executable, "-c", "from llmcore.cli import main; raise SystemExit(main())", *args]


def cli_env() -> dict[str, str]:
    """The environment of such a run: one thread (small ops; a shared machine)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TORCHELASTIC_ERROR_FILE": os.devnull}


def steps_logged(run: Path) -> int:
    """The last step in ``run``'s metrics.jsonl (-1 before the first record)."""
    try:
        rows = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return -1
    steps = [json.loads(r)["step"] for r in rows[:-1] if r.strip()]  # last may be partial
    return max(steps, default=-1)


def wait_until_logged(proc: subprocess.Popen, run: Path, steps: int, timeout: float = 120) -> None:
    """Wait until the run of ``proc`` has logged past ``steps``; it must still be running."""
    deadline = time.monotonic() + timeout
    while steps_logged(run) < steps and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be interrupted"
