"""``llmcore inspect RUN --text ...``: the page of a trained run, and its errors."""

from __future__ import annotations

import json
import re

import pytest

from llmcore.checkpoint import load_checkpoint
from llmcore.cli import main
from llmcore.train import train
from tests.test_train import tiny


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inspect")
    return train(tiny(tmp), out_dir=tmp / "run", progress=False)


def record_of(page):
    data = re.search(r'id="trace-data">(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
    return json.loads(data.group(1))


def test_inspect_writes_the_page_of_a_run(run_dir, tmp_path, capsys):
    out = tmp_path / "page.html"
    text = "the boat is on"
    argv = ["inspect", str(run_dir), "--text", text, "--out", str(out), "--layers", "0"]
    argv += ["--set", "generate.samplers=[{name: temperature, temperature: 0.5}]"]
    assert main(argv) == 0
    record = record_of(out)
    tok = load_checkpoint(run_dir).tokenizer
    assert [t["id"] for t in record["tokens"]] == tok.encode(text)
    assert record["layers"] == [0] and len(record["attention"]) == 1
    stages = record["sampler"]["stages"]
    assert [s["name"] for s in stages] == ["model", "Temperature(temperature=0.5)"]
    assert record["sampler"]["position"] == len(record["tokens"]) - 1
    assert f"({len(tok.encode(text))} tokens)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layers", "7"], "unknown layer index 7; the model has layers 0..0"),
        (["--heads", "x"], "--heads takes comma-separated integers"),
        (["--text", ""], "the text is empty"),
        (["--text", "a" * 17], "17 tokens, more than the 16"),
        (["--position", "99"], "position 99 is outside"),
    ],
)
def test_inspect_bad_input_is_one_clear_line(run_dir, tmp_path, capsys, extra, message):
    argv = ["inspect", str(run_dir), "--text", "the", "--out", str(tmp_path / "p.html")]
    assert main(argv + extra) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmcore: error:") and message in err
    assert not (tmp_path / "p.html").exists()
