"""``llmcore runs [FOLDER]``: the training runs in a folder (default ``runs``), each with its
last step and its last train and val loss, read from the run's ``metrics.jsonl``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from llmcore.errors import DataError

METRICS_FILE = "metrics.jsonl"


def add_to(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list the training runs in a folder with their last val loss")
    p.add_argument(
        "folder", nargs="?", default="runs", help="folder of runs (default: %(default)s)"
    )
    p.set_defaults(func=run)


def last_value(records: list[dict], key: str) -> float | None:
    """The last finite value of ``key`` in ``records``, or None."""
    for r in reversed(records):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def list_runs(folder: str | Path) -> list[dict]:
    """One row per run (a sub-folder with ``metrics.jsonl``, or ``folder`` itself), by name:
    ``name``, ``step``, ``train_loss``, ``val_loss`` (None where never logged)."""
    from llmcore.train.metrics import read_jsonl

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of runs (train one with: llmcore train)")
    dirs = [folder] if (folder / METRICS_FILE).is_file() else []
    dirs += sorted(d for d in folder.iterdir() if (d / METRICS_FILE).is_file())
    rows = []
    for d in dirs:
        records = read_jsonl(d / METRICS_FILE)
        step = last_value(records, "step")
        rows.append(
            {
                "name": d.name,
                "step": None if step is None else int(step),
                "train_loss": last_value(records, "train_loss"),
                "val_loss": last_value(records, "val_loss"),
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    rows = list_runs(args.folder)
    if not rows:
        print(f"no runs in {args.folder} (a run folder holds {METRICS_FILE})")
        return 0
    width = max(4, *(len(r["name"]) for r in rows))
    print(f"{'run':<{width}}  {'step':>7}  {'train':>8}  {'val':>8}")
    for r in rows:
        cells = [
            "-" if r["step"] is None else str(r["step"]),
            *("-" if r[k] is None else f"{r[k]:.4f}" for k in ("train_loss", "val_loss")),
        ]
        print(f"{r['name']:<{width}}  {cells[0]:>7}  {cells[1]:>8}  {cells[2]:>8}")
    return 0
