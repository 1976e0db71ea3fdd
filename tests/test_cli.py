"""The command line end to end: train, generate, config, plugins, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmcore.cli import main


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llmcore", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.conftest import TINY_OVERRIDES

    out = tmp_path_factory.mktemp("run") / "tiny"
    sets = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    proc = run_cli("train", *sets, "--out", str(out), "--no-progress", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_writes_a_run_and_prints_a_sample(trained_run):
    out, proc = trained_run
    assert "sample:" in proc.stdout
    assert (out / "config.yaml").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train_loss" in r]
    assert steps and all({"step", "train_loss", "lr", "tokens_per_s"} <= r.keys() for r in steps)
    assert any("val_loss" in r for r in rows)
    latest = (out / "ckpt" / "latest").read_text().strip()
    assert (out / "ckpt" / latest / "model.safetensors").exists()
    assert (out / "ckpt" / latest / "tokenizer" / "llmcore-tokenizer.json").exists()
    assert steps[-1]["train_loss"] < steps[0]["train_loss"]


def test_generate_prints_text_from_the_run(trained_run):
    out, _ = trained_run
    proc = run_cli(
        "generate", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "200", "--seed", "1"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ROMEO:") and len(proc.stdout.strip()) > len("ROMEO:")
    again = run_cli(
        "generate", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "200", "--seed", "1"
    )
    assert again.stdout == proc.stdout


def test_python_m_llmcore_and_console_script_agree():
    a = run_cli("config", "show", "llama-tiny")
    assert a.returncode == 0 and "rope" in a.stdout
    b = subprocess.run(["llmcore", "config", "show", "llama-tiny"], capture_output=True, text=True)
    assert b.stdout == a.stdout


def test_plugins_command_lists_builtins(capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    norms = next(p for p in data if p["name"] == "norms")
    assert norms["distribution"] == "llmcore" and norms["components"] == {
        "norm": ["layernorm", "rmsnorm"]
    }
    assert main(["plugins"]) == 0
    assert "norms  (llmcore 0.1.0)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--set", "model.n_layr=2"], "model.n_layr: unknown key"),
        (["train", "--set", "model.n_layer=two"], "model.n_layer: expected int, found 'two'"),
        (
            ["train", "--set", "model.attention=flashy"],
            "model.attention: unknown attention 'flashy'",
        ),
        (["train", "--set", "data.path=no/such/file.txt"], "no/such/file.txt: data file not found"),
        (["train", "missing.yaml"], "missing.yaml: config file not found"),
        (["generate", "not-a-run"], "not-a-run: no such run or checkpoint folder"),
        (["config", "show", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("llmcore: error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))


def test_too_short_dataset_and_non_run_folder(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be")
    proc = run_cli(
        "train", "--set", f"data.path={short}", "--out", str(tmp_path / "r"), cwd=tmp_path
    )
    assert (
        proc.returncode == 1
        and "fewer than one block" in proc.stderr
        and "short.txt" in proc.stderr
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    proc = run_cli(
        "train", "--set", f"data.path={empty}", "--out", str(tmp_path / "r"), cwd=tmp_path
    )
    assert proc.returncode == 1 and "empty.txt" in proc.stderr
    (tmp_path / "notarun").mkdir()
    proc = run_cli("generate", str(tmp_path / "notarun"), cwd=tmp_path)
    assert proc.returncode == 1 and "not a run or checkpoint folder" in proc.stderr


def test_existing_run_is_not_overwritten(trained_run, tmp_path):
    out, _ = trained_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    proc = run_cli("train", "--set", "train.max_iters=5", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 1 and "already holds checkpoints" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["finetune", "sft", "cfg.yaml"],
        ["generate", "run"],
        ["chat", "run"],
        ["config", "show"],
    ],
)
def test_every_subcommand_with_a_config_takes_the_same_set_option(command):
    from llmcore.cli import build_parser

    parser = build_parser()
    args = parser.parse_args([*command, "--set", "a.b=1", "--set", "c=[1, 2]"])
    assert args.overrides == ["a.b=1", "c=[1, 2]"]
    assert parser.parse_args(command).overrides == []


def test_the_end_of_training_sample_slides_past_the_context(tmp_path, capsys):
    """``train.sample_tokens`` beyond ``block_size`` gives that many tokens (the context
    slides, as in ``llmcore generate``), not a sample cut at the context's end."""
    from tests.conftest import TINY_OVERRIDES

    sets = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    sets += ["--set", "train.sample_tokens=75", "--set", "generate.prompt='ROMEO:'"]
    assert main(["train", *sets, "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    sample = out.split("sample:\n", 1)[1]
    assert sample.startswith("ROMEO:")
    assert sample.endswith("\n")  # print's own
    assert len(sample) - 1 == len("ROMEO:") + 75  # char-level: one character a token
