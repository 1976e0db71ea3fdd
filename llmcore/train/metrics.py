"""Reading a run's ``metrics.jsonl`` back: one JSON record a line, as the ``jsonl`` logger
writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a ``metrics.jsonl`` file (a line cut short by a kill is
    left out)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
