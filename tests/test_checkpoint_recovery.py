"""A broken ``ckpt/latest`` or newest checkpoint falls back to the newest intact checkpoint
with a warning naming both; a ``latest`` pointing outside the run's folder is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from llmcore import checkpoint as ckpt
from llmcore.cli import main
from llmcore.errors import CheckpointError, CheckpointWarning
from llmcore.model import build_model
from llmcore.train.data import input_files
from llmcore.train.setup import build_tokenizer
from tests.test_train import tiny


def _run(tmp_path: Path, steps=(10, 20, 30), name: str = "run") -> Path:
    """A run folder with one checkpoint per step, each with its own weights (filled with the
    step number, so a test can tell which one was loaded) and trainer state."""
    cfg = tiny(tmp_path)
    tok = build_tokenizer(cfg, input_files(cfg.data.path))
    model = build_model(cfg, tok.vocab_size)
    run = tmp_path / name
    for step in steps:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)
        ckpt.save_checkpoint(run, step, model, cfg, tok, trainer_state={"step": step})
    return run


def _weight(loaded) -> float:
    return next(loaded.model.parameters()).flatten()[0].item()


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_an_intact_latest_is_used_without_a_warning(tmp_path):
    run = _run(tmp_path)
    assert ckpt.resolve_checkpoint(run).name == ckpt.step_dir_name(30)
    assert _weight(ckpt.load_checkpoint(run)) == 30


@pytest.mark.parametrize(
    "latest, said",
    [
        (b"", "is empty"),
        (b"\xff\xfe\x00garbage", "unreadable"),
        (b"not-a-step\n", "holds no model.safetensors"),
        (b"00000099\n", "holds no model.safetensors"),
    ],
)
def test_a_broken_latest_falls_back_to_the_newest_checkpoint(tmp_path, latest, said):
    run = _run(tmp_path)
    (run / "ckpt" / "latest").write_bytes(latest)
    with pytest.warns(CheckpointWarning, match=said) as record:
        loaded = ckpt.load_checkpoint(run)
    assert _weight(loaded) == 30
    assert "latest" in str(record[0].message) and "00000030" in str(record[0].message)


def test_a_missing_latest_falls_back_to_the_newest_checkpoint(tmp_path):
    run = _run(tmp_path)
    (run / "ckpt" / "latest").unlink()
    with pytest.warns(CheckpointWarning, match="latest is missing; using .*00000030"):
        assert ckpt.resolve_checkpoint(run).name == "00000030"


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    run = _run(tmp_path)
    _truncate(run / "ckpt" / "00000030" / ckpt.MODEL_FILE)
    with pytest.warns(CheckpointWarning) as record:
        loaded = ckpt.load_checkpoint(run)
    assert _weight(loaded) == 20 and loaded.path.name == "00000020"
    message = str(record[0].message)
    assert "'00000030'" in message and "corrupt or truncated model.safetensors" in message
    assert message.endswith(f"using {run / 'ckpt' / '00000020'}, the newest intact checkpoint")


def test_the_fallback_never_jumps_past_the_step_latest_names(tmp_path):
    """After a rewind, folders newer than ``latest`` belong to the abandoned timeline."""
    run = _run(tmp_path)
    (run / "ckpt" / "latest").write_text("00000020\n")
    (run / "ckpt" / "00000020" / ckpt.CONFIG_FILE).unlink()
    with pytest.warns(CheckpointWarning, match="holds no config.yaml; using .*00000010"):
        assert ckpt.resolve_checkpoint(run).name == "00000010"


def test_a_missing_or_truncated_trainer_state_falls_back_only_for_resuming(tmp_path):
    run = _run(tmp_path)
    (run / "ckpt" / "00000030" / ckpt.STATE_FILE).unlink()
    assert ckpt.resolve_checkpoint(run).name == "00000030"  # weights alone are enough to load
    with pytest.warns(CheckpointWarning, match="no trainer_state.pt"):
        resumed = ckpt.resolve_checkpoint(run, resumable=True)
    assert ckpt.load_trainer_state(resumed)["step"] == 20
    _truncate(run / "ckpt" / "00000020" / ckpt.STATE_FILE)  # skipped on the way back too
    with pytest.warns(CheckpointWarning, match="'00000030'.*using .*00000010"):
        resumed = ckpt.resolve_checkpoint(run, resumable=True)
    assert ckpt.load_trainer_state(resumed)["step"] == 10


def test_a_truncated_trainer_state_is_named(tmp_path):
    run = _run(tmp_path)
    _truncate(run / "ckpt" / "00000030" / ckpt.STATE_FILE)
    with pytest.warns(CheckpointWarning, match="corrupt or truncated trainer_state.pt"):
        resumed = ckpt.resolve_checkpoint(run, resumable=True)
    assert ckpt.load_trainer_state(resumed)["step"] == 20


def test_no_intact_checkpoint_left_is_an_error(tmp_path):
    run = _run(tmp_path, steps=(10, 20))
    for step in ("00000010", "00000020"):
        _truncate(run / "ckpt" / step / ckpt.MODEL_FILE)
    with pytest.raises(CheckpointError, match="holds no older intact checkpoint"):
        ckpt.resolve_checkpoint(run)
    (run / "ckpt" / "latest").unlink()
    with pytest.raises(CheckpointError, match="latest is missing, and .* holds no intact"):
        ckpt.resolve_checkpoint(run)


def test_resuming_a_run_with_a_broken_newest_checkpoint_continues_from_the_one_before(tmp_path):
    from llmcore.train import Trainer

    cfg = tiny(tmp_path, "train.keep_last=3")
    run = Trainer(cfg, out_dir=tmp_path / "run", progress=False).run()
    _truncate(run / "ckpt" / "00000020" / ckpt.MODEL_FILE)
    with pytest.warns(CheckpointWarning, match="'00000020'.*using .*00000010"):
        trainer = Trainer(cfg, resume=run, progress=False)
    assert trainer.step == 10


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_latest_pointing_outside_the_run_is_refused(tmp_path, where):
    run = _run(tmp_path)
    other = _run(tmp_path, steps=(50,), name="other")
    target = other / "ckpt" / "00000050"
    name = os.path.relpath(target, run / "ckpt") if where == "parent" else str(target)
    (run / "ckpt" / "latest").write_text(name + "\n")
    with pytest.raises(CheckpointError) as err:
        ckpt.load_checkpoint(run)
    message = str(err.value)
    assert message.startswith(f"{run / 'ckpt' / 'latest'}: points at {name!r}")
    assert "outside the run's checkpoint folder" in message


def test_symlinks_escaping_the_run_are_refused(tmp_path):
    run = _run(tmp_path)
    other = _run(tmp_path, steps=(50,), name="other")
    (run / "ckpt" / "00000060").symlink_to(other / "ckpt" / "00000050")
    (run / "ckpt" / "latest").write_text("00000060\n")
    with pytest.raises(CheckpointError, match="points at '00000060'.*outside"):
        ckpt.load_checkpoint(run)
    (run / "ckpt" / "latest").unlink()
    (run / "ckpt" / "latest").symlink_to(other / "ckpt" / "latest")
    with pytest.raises(CheckpointError, match="latest: is a symlink to .*other.*outside"):
        ckpt.load_checkpoint(run)


def test_the_cli_refuses_an_escaping_latest(tmp_path, capsys):
    run = _run(tmp_path)
    (run / "ckpt" / "latest").write_text("../../elsewhere/ckpt/00000001\n")
    assert main(["generate", str(run), "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert "latest: points at '../../elsewhere/ckpt/00000001'" in err and "outside" in err
