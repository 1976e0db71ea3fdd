"""Training curves without optional dependencies, and ``llmcore runs``."""

from __future__ import annotations

import json
import re

import pytest

from llmcore.builtin.loggers import read_jsonl
from llmcore.cli import main
from llmcore.cli.runs import list_runs
from llmcore.errors import DataError
from llmcore.train import train
from tests.test_train import tiny


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return train(tiny(tmp), out_dir=tmp / "runs" / "first", progress=False)


def test_a_run_leaves_loss_html_with_train_val_and_lr(run_dir):
    page = (run_dir / "loss.html").read_text()
    assert page.count("<polyline") == 2  # train and val loss
    records = read_jsonl(run_dir / "metrics.jsonl")
    lrs = [r["lr"] for r in records if "lr" in r]
    path = re.search(r'<path id="lr"[^>]* d="([^"]+)"', page).group(1)
    assert len(path.split()) == len(lrs)  # one point per logged step
    low, high = re.search(r"learning rate ([^ <]+) to ([^ <]+)<", page).groups()
    assert float(high) == pytest.approx(max(lrs), rel=1e-2)
    assert float(low) == pytest.approx(min(0.0, min(lrs)), abs=1e-12)


def test_runs_lists_each_run_with_its_last_val_loss(run_dir, capsys):
    folder = run_dir.parent
    (folder / "not-a-run").mkdir()
    other = folder / "second"
    other.mkdir()
    lines = [{"step": 5, "train_loss": 3.0}, {"step": 10, "train_loss": 2.5, "val_loss": 2.75}]
    lines.append({"step": 15, "train_loss": 2.0, "val_loss": None})
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"ste')
    rows = list_runs(folder)
    assert [r["name"] for r in rows] == ["first", "second"]
    assert rows[1] == {"name": "second", "step": 15, "train_loss": 2.0, "val_loss": 2.75}
    records = read_jsonl(run_dir / "metrics.jsonl")
    last_val = [r["val_loss"] for r in records if r.get("val_loss") is not None][-1]
    assert rows[0]["val_loss"] == pytest.approx(last_val)
    assert main(["runs", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "step", "train", "val"]
    assert out[2].split() == ["second", "15", "2.0000", "2.7500"]


def test_runs_of_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(DataError, match="no such folder"):
        list_runs(tmp_path / "nowhere")
    assert main(["runs", str(tmp_path / "nowhere")]) == 1
    assert "no such folder of runs" in capsys.readouterr().err
