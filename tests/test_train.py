"""The training loop in-process: metrics, checkpoints, evaluation, and runs that must stop."""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch

from llmcore import checkpoint as ckpt
from llmcore.config import load_config
from llmcore.errors import CheckpointError, LLMCoreError, TrainingError
from llmcore.train import Trainer, train
from tests.test_resume import _corpus


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one thread (and much faster on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(tmp_path, *extra: str):
    _corpus(tmp_path / "corpus.txt")
    return load_config(
        "shakespeare-char",
        [
            f"data.path={tmp_path / 'corpus.txt'}",
            f"train.out_dir={tmp_path / 'runs'}",
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=16",
            "model.block_size=16",
            "train.max_iters=20",
            "train.eval_interval=10",
            "train.eval_iters=2",
            "train.log_interval=1",
            "train.batch_size=4",
            "train.sample_tokens=0",
            "train.schedule.warmup_iters=2",
            "train.schedule.decay_iters=20",
            *extra,
        ],
    )


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_metrics_checkpoints_and_best(tmp_path):
    run = train(tiny(tmp_path, "train.keep_last=1"), out_dir=tmp_path / "run", progress=False)
    r = rows(run)
    assert [x["step"] for x in r if "train_loss" in x] == list(range(1, 21))
    evals = [x for x in r if "val_loss" in x]
    assert [x["step"] for x in evals] == [0, 10, 20]
    for x in evals:
        assert x["val_ppl"] == pytest.approx(math.exp(x["val_loss"]))
    assert all(x["tokens_per_s"] > 0 and x["lr"] > 0 for x in r if "train_loss" in x)
    kept = sorted(p.name for p in (run / "ckpt").iterdir() if p.name.isdigit())
    best = (run / "ckpt" / "best").read_text().strip()
    assert (run / "ckpt" / "latest").read_text().strip() == "00000020"
    assert set(kept) == {"00000020", best}  # keep_last=1 plus the best by val loss
    loaded = ckpt.load_checkpoint(run)
    assert loaded.step == 20 and (loaded.path / ckpt.TOKENIZER_DIR).is_dir()
    assert (loaded.path / ckpt.CONFIG_FILE).exists()
    assert not list((run / "ckpt").glob(".tmp-*"))


def test_weights_only_trainer_state_refuses_pickled_objects(tmp_path):
    run = train(tiny(tmp_path, "train.max_iters=10"), out_dir=tmp_path / "run", progress=False)
    path = ckpt.resolve_checkpoint(run)
    state = ckpt.load_trainer_state(path)  # loads with weights_only=True
    assert state["step"] == 10
    torch.save({"evil": Exception("pickled object")}, path / ckpt.STATE_FILE)
    with pytest.raises(CheckpointError, match="trainer_state.pt: corrupt"):
        ckpt.load_trainer_state(path)


def test_corrupt_truncated_and_mismatched_checkpoints(tmp_path):
    cfg = tiny(tmp_path, "train.max_iters=10")
    run = train(cfg, out_dir=tmp_path / "run", progress=False)
    path = ckpt.resolve_checkpoint(run)
    other = tiny(tmp_path, "model.n_layer=2")
    with pytest.raises(CheckpointError, match="missing tensor 'blocks.1"):
        Trainer(other, resume=run, progress=False)
    wide = tiny(tmp_path, "model.n_embd=32")
    with pytest.raises(CheckpointError, match="has shape"):
        Trainer(wide, resume=run, progress=False)
    weights = path / ckpt.MODEL_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(run)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Trainer(cfg, resume=run, progress=False)
    (run / "ckpt" / "latest").write_text("00000099\n")
    with pytest.raises(CheckpointError, match="points at '00000099'"):
        ckpt.load_checkpoint(run)


def test_other_vocabulary_is_an_error(tmp_path):
    run = train(tiny(tmp_path, "train.max_iters=10"), out_dir=tmp_path / "run", progress=False)
    path = ckpt.resolve_checkpoint(run)
    meta = json.loads((path / ckpt.TOKENIZER_DIR / "llmcore-tokenizer.json").read_text())
    assert meta["type"] == "char"
    from llmcore.builtin.char_tokenizer import CharTokenizer

    CharTokenizer.train(["only abc"]).save(path / ckpt.TOKENIZER_DIR)  # a smaller vocabulary
    with pytest.raises(CheckpointError, match="not the tokenizer these weights were trained with"):
        ckpt.load_checkpoint(run)
    with pytest.raises(CheckpointError, match="not the tokenizer"):
        Trainer(tiny(tmp_path), resume=run, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, "train.max_iters=30")
    trainer = Trainer(cfg, out_dir=tmp_path / "run", progress=False)
    real = trainer.model.loss
    calls = {"n": 0}

    def poisoned(x, y):
        calls["n"] += 1
        out = real(x, y)
        return out * float("nan") if trainer.step >= 14 and torch.is_grad_enabled() else out

    monkeypatch.setattr(trainer.model, "loss", poisoned)
    with pytest.raises(TrainingError, match="became nan at step 15"):
        trainer.run()
    run = tmp_path / "run"
    assert (run / "ckpt" / "latest").read_text().strip() == "00000010"
    loaded = ckpt.load_checkpoint(run)
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())


def test_nan_gradient_with_a_finite_loss_stops_before_the_update(tmp_path):
    """A finite loss whose backward gives NaN (as leftover memory in a kernel's scratch did)
    stops the run before the optimizer applies it, and the message points at precision or
    data, not at the learning rate."""
    cfg = tiny(tmp_path, "train.max_iters=30", "train.grad_clip=0")
    trainer = Trainer(cfg, out_dir=tmp_path / "run", progress=False)
    weight = next(p for p in trainer.model.parameters() if p.requires_grad)
    weight.register_hook(lambda g: g * float("nan") if trainer.step >= 14 else g)
    with pytest.raises(
        TrainingError, match="non-finite .* at step 15 while the loss was finite"
    ) as e:
        trainer.run()
    assert "not a learning-rate problem" in str(e.value)
    assert "float32" in str(e.value)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    loaded = ckpt.load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())


def test_a_loss_that_grows_before_it_breaks_blames_the_learning_rate():
    from llmcore.train.guards import FiniteGuard

    guard = FiniteGuard("runs/x/ckpt")
    for step, loss in enumerate([4.0, 5.0, 9.0, 40.0], start=1):
        guard.check_loss(step, loss)
        guard.check_grad(step, loss, 1.0)
    with pytest.raises(TrainingError, match="diverged; lower the learning rate"):
        guard.check_loss(5, float("inf"))
    fresh = FiniteGuard("runs/x/ckpt")
    with pytest.raises(TrainingError, match="first step.*not the learning rate"):
        fresh.check_loss(1, float("nan"))


def test_disk_full_at_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer = Trainer(tiny(tmp_path), out_dir=tmp_path / "run", progress=False)
    real = ckpt.save_file

    def full(tensors, filename, metadata=None):
        if metadata and metadata.get("step") == "20":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(CheckpointError, match="No space left on device.*intact"):
        trainer.run()
    run = tmp_path / "run"
    assert (run / "ckpt" / "latest").read_text().strip() == "00000010"
    assert ckpt.load_checkpoint(run).step == 10
    assert not list((run / "ckpt").glob(".tmp-*"))


def test_unwritable_run_folder_is_a_clear_error(tmp_path):
    (tmp_path / "blocker").write_text("a file where the run folder's parent should be")
    with pytest.raises(LLMCoreError, match="cannot write the run folder"):
        train(tiny(tmp_path), out_dir=tmp_path / "blocker" / "run", progress=False)


def test_existing_run_needs_resume(tmp_path):
    cfg = tiny(tmp_path, "train.max_iters=10")
    train(cfg, out_dir=tmp_path / "run", progress=False)
    with pytest.raises(LLMCoreError, match="use --resume"):
        Trainer(cfg, out_dir=tmp_path / "run", progress=False)


def test_bf16_autocast_and_grad_accumulation_train(tmp_path):
    run = train(
        tiny(tmp_path, "train.dtype=bfloat16", "train.grad_accum=2", "train.max_iters=10"),
        out_dir=tmp_path / "run",
        progress=False,
    )
    r = rows(run)
    assert all(math.isfinite(x["train_loss"]) for x in r if "train_loss" in x)
    assert r[-1]["val_loss"] < r[0]["val_loss"]


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bf16_only_where_the_cpu_has_bf16_units(tmp_path, monkeypatch, native):
    from llmcore.train.setup import autocast_dtype

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: native, raising=False)
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    assert autocast_dtype("float32", cpu) is None
    assert autocast_dtype("bfloat16", cpu) == torch.bfloat16
    trainer = Trainer(tiny(tmp_path, "train.dtype=auto"), out_dir=tmp_path / "run", progress=False)
    assert trainer.amp_dtype == (torch.bfloat16 if native else None)


def test_stacked_evaluation_equals_batch_by_batch(tmp_path, monkeypatch):
    from llmcore.train import loop

    trainer = Trainer(
        tiny(tmp_path, "train.dtype=float32", "train.eval_iters=7"),
        out_dir=tmp_path / "run",
        progress=False,
    )
    state = trainer.eval_gen.get_state()
    monkeypatch.setattr(loop, "EVAL_TOKENS", 1)  # one batch per forward pass
    one_by_one = trainer.evaluate()
    # the same windows, by hand: the mean of the per-batch mean losses
    trainer.eval_gen.set_state(state)
    want = {}
    with torch.no_grad():
        for name, batches in trainer.eval_batches.items():
            want[name] = sum(trainer.model.loss(*batches()).item() for _ in range(7)) / 7
    trainer.eval_gen.set_state(state)
    monkeypatch.setattr(loop, "EVAL_TOKENS", 3 * 4 * 32)  # three batches a pass: 3 + 3 + 1
    stacked = trainer.evaluate()
    for name in want:
        assert one_by_one[name] == pytest.approx(want[name], rel=1e-6)
        assert stacked[name] == pytest.approx(want[name], rel=1e-6)


def test_sequential_mode_trains(tmp_path):
    run = train(
        tiny(tmp_path, "data.mode=sequential", "train.max_iters=10"),
        out_dir=tmp_path / "run",
        progress=False,
    )
    assert rows(run)[-1]["step"] == 10


def test_fused_loss_matches_torch_cross_entropy():
    from llmcore.ops.loss import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    for vocab, n, chunk in [(65, 100, 32), (1000, 77, 20), (50, 10, None)]:
        h = torch.randn(n, 16, dtype=torch.float64, generator=g, requires_grad=True)
        w = torch.randn(vocab, 16, dtype=torch.float64, generator=g, requires_grad=True)
        t = torch.randint(vocab, (n,), generator=g)
        t[::7] = -100
        ours = linear_cross_entropy(h, w, t, -100, chunk)
        ref = torch.nn.functional.cross_entropy(h @ w.t(), t)
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(
            torch.autograd.grad(ours * 3, (h, w)), torch.autograd.grad(ref * 3, (h, w))
        ):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    h = torch.randn(64, 32, generator=g, requires_grad=True)
    w = torch.randn(100, 32, generator=g, requires_grad=True)
    t = torch.randint(100, (64,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(h, w, t, chunk=16)
        ref = torch.nn.functional.cross_entropy((h @ w.t()).float(), t)
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, ref, rtol=1e-3)
    for a, b in zip(torch.autograd.grad(ours, (h, w)), torch.autograd.grad(ref, (h, w))):
        assert a.dtype == torch.float32
        assert (a - b).abs().max() <= 2e-2 * b.abs().max()
