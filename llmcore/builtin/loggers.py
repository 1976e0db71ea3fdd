"""Logger plugins: metric sinks of a training run. ``jsonl`` writes ``metrics.jsonl``.

Besides ``log`` and ``close``, a logger may offer ``records()``: every record it holds for
the run (across resumes). The loss plot reads it from the first logger that has it, and
otherwise from what the engine logged in this process."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmcore.hookspecs import hookimpl
from llmcore.train.metrics import read_jsonl


class JsonlLogger:
    """One JSON object per logged step, appended to ``<run_dir>/<filename>``."""

    def __init__(self, run_dir: str | Path, *, filename: str = "metrics.jsonl") -> None:
        self.path = Path(run_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, metrics: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in metrics.items()
        }
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the file (a line cut short by a kill is left out)."""
        if not self._file.closed:
            self._file.flush()
        return read_jsonl(self.path)

    def close(self) -> None:
        self._file.close()


@hookimpl
def register_loggers(register):
    register("jsonl", JsonlLogger)
