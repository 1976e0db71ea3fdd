"""Fine-tuning on the one training engine: gradient accumulation, bfloat16 autocast, exact
resume after SIGKILL and two processes under torchrun, on a tiny char model."""

from __future__ import annotations

import math
import os
import signal
import string
import subprocess
from pathlib import Path

import pytest
import torch

from llmcore import checkpoint as ckpt
from llmcore.config import load_config
from llmcore.datasets import tinyshakespeare_path
from llmcore.finetune.demo import make_task
from llmcore.finetune.dpo import run_dpo
from llmcore.finetune.session import finetune_config
from llmcore.finetune.sft import run_sft
from llmcore.train import train
from tests.cli_runs import cli, cli_env, steps_logged, wait_until_logged
from tests.test_distributed import torchrun
from tests.test_finetune import records, write

NAMES = ("MENENIUS", "MARCIUS", "COMINIUS")


def loop(iters: int, batch: int = 8, **extra) -> dict:
    return {
        "max_iters": iters,
        "batch_size": batch,
        "eval_interval": iters,
        "log_interval": 1,
        "seed": 7,
        "dtype": "float32",
        "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        **extra,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny base run pretrained briefly on the start of Tiny Shakespeare, and SFT and
    preference data about its characters."""
    root = tmp_path_factory.mktemp("ft_engine")
    # the whole alphabet, so the chat template's markers can be encoded
    text = tinyshakespeare_path().read_text()[:60000] + "\n" + string.ascii_letters + "\n"
    (root / "text.txt").write_text(text, encoding="utf-8")
    cfg = load_config(
        "shakespeare-char",
        [
            f"data.path={root / 'text.txt'}",
            f"data.cache_dir={root / 'cache'}",
            "model.block_size=64",
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=32",
            "model.dropout=0.0",
            "train.max_iters=30",
            "train.batch_size=8",
            "train.eval_interval=30",
            "train.eval_iters=1",
            "train.sample_tokens=0",
            "train.dtype=float32",
        ],
    )
    train(cfg, out_dir=root / "base", progress=False)
    files = make_task(text, root / "data", names=NAMES, n_sft=200, n_pairs=200, n_prompts=20)
    return {"root": root, "files": files, "base": root / "base"}


def sft_config(world, path: Path, train_section: dict, **finetune) -> Path:
    return write(
        path,
        {
            "finetune": {
                "base": str(world["base"]),
                "data": str(world["files"]["sft"]),
                "eval_samples": 0,
                **finetune,
            },
            "train": train_section,
        },
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ckpt.resolve_checkpoint(run) / ckpt.MODEL_FILE))


def test_sft_grad_accum_at_half_the_batch_gives_the_same_update(world, tmp_path):
    """Two micro-batches of 4 give the update of one batch of 8: each micro-batch's mean is
    weighted by its share of the answer tokens (they differ from example to example)."""
    runs = {}
    for accum, batch in ((1, 8), (2, 4)):
        path = sft_config(world, tmp_path / f"a{accum}.yaml", loop(3, batch, grad_accum=accum))
        runs[accum], _ = run_sft(
            finetune_config(path), out_dir=tmp_path / f"a{accum}", progress=False
        )
    one, two = weights(runs[1]), weights(runs[2])
    base = weights(world["base"])
    assert one.keys() == two.keys()
    assert any(not torch.equal(one[k], base[k]) for k in one)  # the steps changed something
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6)
    losses = {a: [r["train_loss"] for r in records(runs[a]) if "train_loss" in r] for a in runs}
    assert losses[2] == pytest.approx(losses[1], abs=1e-6)


def test_sft_grad_accum_matches_a_plain_torch_step(world, tmp_path):
    """The first SFT update with grad_accum=2 equals one SGD step on the mean loss over every
    answer token of the whole batch, computed here with plain torch."""
    from llmcore.finetune.data import IGNORE, pad_sft
    from llmcore.finetune.sft import SFT
    from llmcore.train.engine import Engine

    section = loop(1, 4, grad_accum=2)
    section["optimizer"] = {"name": "sgd", "lr": 0.5}
    section["grad_clip"] = 0.0
    cfg = finetune_config(sft_config(world, tmp_path / "sgd.yaml", section))
    engine = Engine(cfg, SFT(), out_dir=tmp_path / "run", progress=False)
    wf = engine.workflow
    state = wf.batches.state_dict()
    batch = [wf.train_examples[i] for i in wf.batches()]
    wf.batches.load_state_dict(state)
    before = {n: p.detach().clone() for n, p in wf.model.named_parameters()}
    x, y = pad_sft(batch)
    logits = wf.model(x)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE
    )
    names = [n for n, p in wf.model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [dict(wf.model.named_parameters())[n] for n in names])
    want = {n: before[n] - 0.5 * g for n, g in zip(names, grads)}
    record = engine.update(wf.next_update(engine))
    assert record["train_loss"] == pytest.approx(float(loss.detach()), abs=1e-6)
    for n, p in wf.model.named_parameters():
        torch.testing.assert_close(p.detach(), want[n], rtol=0, atol=1e-6)


def test_sft_under_bf16_autocast_learns_like_float32(world, tmp_path):
    curves = {}
    for dtype in ("float32", "bfloat16"):
        path = sft_config(world, tmp_path / f"{dtype}.yaml", loop(16, 8, dtype=dtype))
        run, last = run_sft(finetune_config(path), out_dir=tmp_path / dtype, progress=False)
        rows = records(run)
        curves[dtype] = [r["train_loss"] for r in rows if "train_loss" in r]
        vals = [r["val_loss"] for r in rows if "val_loss" in r]
        assert all(math.isfinite(v) for v in curves[dtype])
        assert vals[-1] < vals[0], (dtype, vals)
    for a, b in zip(curves["bfloat16"], curves["float32"]):
        assert a == pytest.approx(b, rel=0.05)


def test_dpo_under_bf16_autocast_learns(world, tmp_path):
    path = write(
        tmp_path / "dpo.yaml",
        {
            "finetune": {
                "base": str(world["base"]),
                "data": str(world["files"]["pairs"]),
                "eval_samples": 0,
                "dpo": {"beta": 0.5},
            },
            "train": loop(12, 8, dtype="bfloat16"),
        },
    )
    run, last = run_dpo(finetune_config(path), out_dir=tmp_path / "dpo", progress=False)
    rows = records(run)
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert all(math.isfinite(v) for v in losses)
    assert vals[0] == pytest.approx(math.log(2), abs=0.02)  # the policy starts as the reference
    assert vals[-1] < vals[0]
    assert math.isfinite(last["reward_margin"])


def test_sft_killed_and_resumed_writes_the_metrics_of_an_uninterrupted_run(world, tmp_path):
    section = loop(60, 4, eval_interval=20, keep_last=1)
    metrics = [{"name": "format"}]
    cfg = sft_config(world, tmp_path / "sft.yaml", section, eval_samples=4, metrics=metrics)
    ref = tmp_path / "ref"
    subprocess.run(
        cli("finetune", "sft", str(cfg), "--out", str(ref), "--no-progress"),
        check=True,
        env=cli_env(),
        capture_output=True,
    )
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        cli(
            "finetune", "sft", str(cfg), "--out", str(cut), "--no-progress",
            "--set", "train.max_iters=100000",
        ),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_logged(proc, cut, 27)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert (cut / "ckpt" / "latest").read_text().strip() == "00000020"
    assert steps_logged(cut) < 40
    subprocess.run(
        cli(
            "finetune", "sft", "--resume", str(cut), "--no-progress", "--set", "train.max_iters=60"
        ),
        check=True,
        env=cli_env(),
        capture_output=True,
    )
    assert records(cut) == records(ref)  # every record, the sampled scores too
    assert (cut / "ckpt" / "latest").read_text().strip() == "00000060"


def _curve(run: Path) -> dict[tuple, float]:
    out = {}
    for row in records(run):
        for key in ("train_loss", "val_loss"):
            if row.get(key) is not None:
                out[(row["step"], key)] = row[key]
    return out


@pytest.fixture(scope="module")
def single_process(world):
    """The single-process SFT run the torchrun runs follow."""
    section = loop(8, 4, eval_interval=4, grad_accum=2)
    cfg = sft_config(world, world["root"] / "sft_dist.yaml", section)
    ref = world["root"] / "sft_dist_ref"
    run_sft(finetune_config(cfg), out_dir=ref, progress=False)
    return cfg, ref


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_sft_under_torchrun_follows_the_single_process_curve(single_process, mode, tmp_path):
    cfg, ref = single_process
    run = tmp_path / mode
    args = ["finetune", "sft", str(cfg), "--out", str(run), "--no-progress"]
    torchrun(*args, "--set", f"train.distributed={mode}")
    a, b = _curve(run), _curve(ref)
    assert a.keys() == b.keys()
    assert max(abs(a[k] - b[k]) for k in a) < 2e-4
    assert len(records(run)) == len(records(ref))  # only rank 0 writes


def method_config(
    world, path: Path, method: str, iters: int = 6, every: int = 3, epochs: int = 1
) -> Path:
    """A tiny run of ``method``: ``iters`` steps of 4 examples, evaluated every ``every``
    with 4 sampled answers scored by the ``format`` reward (PPO: that reward, rollout
    batches of 4 in minibatches of 2, ``epochs`` passes)."""
    finetune = {"base": str(world["base"]), "eval_samples": 4, "metrics": [{"name": "format"}]}
    if method == "ppo":
        finetune["data"] = str(world["files"]["prompts"])
        finetune["ppo"] = {"reward": "format", "rollout_batch": 4, "max_new_tokens": 6}
        finetune["ppo"].update({"minibatch": 2, "epochs": epochs})
    else:
        finetune["data"] = str(world["files"]["pairs"])
    return write(path, {"finetune": finetune, "train": loop(iters, 4, eval_interval=every)})


@pytest.mark.parametrize("method", ["reward", "dpo", "ppo"])
def test_reward_dpo_and_ppo_resume_exactly(world, tmp_path, method):
    """Stopped at a checkpoint and resumed, each method logs what an uninterrupted run logs
    (its data order, sampling and, for PPO, value head and KL controller restored)."""
    import importlib

    run = getattr(importlib.import_module(f"llmcore.finetune.{method}"), f"run_{method}")
    path = method_config(world, tmp_path / f"{method}.yaml", method)
    ref, _ = run(finetune_config(path), out_dir=tmp_path / "ref", progress=False)
    cut, _ = run(
        finetune_config(path, ["train.max_iters=3"]), out_dir=tmp_path / "cut", progress=False
    )
    assert (cut / "ckpt" / "latest").read_text().strip() == "00000003"
    run(finetune_config(path), resume=cut, progress=False)
    assert records(cut) == records(ref)


def test_ppo_rollouts_are_scored_in_the_precision_of_the_updates(world, tmp_path):
    """Under bf16 autocast the rollouts' log-probs and values come from the same autocast
    forward as the update's: with one update per rollout batch the policy is still the one
    that sampled, so every ratio is 1 (approx_kl 0 but for rounding) and none is clipped.
    Log-probs taken in float32 instead differ from bf16's by about 5e-4 per token, an
    approx_kl near 1e-7."""
    from llmcore.finetune.ppo import run_ppo

    path = method_config(world, tmp_path / "ppo.yaml", "ppo")
    overrides = ["train.dtype=bfloat16", "finetune.ppo.minibatch=4", "finetune.ppo.epochs=1"]
    run, _ = run_ppo(finetune_config(path, overrides), out_dir=tmp_path / "run", progress=False)
    steps = [r for r in records(run) if "approx_kl" in r]
    assert len(steps) == 6
    for r in steps:
        assert r["approx_kl"] < 1e-8 and r["clip_frac"] == 0.0, r
