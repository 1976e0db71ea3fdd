"""The measurable fine-tuning demonstration on a tiny char model, end to end.

A 2-layer model pretrained briefly on Tiny Shakespeare is taught the ``NAME: text`` answer
format by SFT (a random speaker), then pushed by a reward model, DPO and PPO toward naming
the character the prompt asks about. Scores come from the exact ``format`` and
``names_character`` rewards on sampled answers; seeds are fixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from llmcore.config import load_config
from llmcore.datasets import tinyshakespeare_path
from llmcore.errors import CheckpointError, ConfigError, DataError, TrainingError
from llmcore.finetune.demo import NAMES, make_task
from llmcore.finetune.dpo import run_dpo
from llmcore.finetune.ppo import run_ppo
from llmcore.finetune.reward import run_reward
from llmcore.finetune.session import finetune_config
from llmcore.finetune.sft import run_sft
from llmcore.train import train

METRICS = ["format", {"name": "names_character", "names": list(NAMES)}]
SAMPLING = {"samplers": [{"name": "temperature", "temperature": 1.0}]}


def loop(iters: int, lr: float, every: int, batch: int = 16) -> dict:
    return {
        "max_iters": iters,
        "batch_size": batch,
        "eval_interval": every,
        "log_interval": 10,
        "seed": 1337,
        "optimizer": {"name": "adamw", "lr": lr, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
    }


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)  # small ops: threads only add overhead on a shared machine
    root = tmp_path_factory.mktemp("ft")
    cfg = load_config(
        "shakespeare-char",
        [
            "model.block_size=96",
            "model.n_layer=2",
            "model.n_embd=64",
            "train.max_iters=200",
            "train.batch_size=8",
            "train.eval_interval=200",
            "train.eval_iters=1",
            "train.sample_tokens=0",
            "train.optimizer.lr=3e-3",
            "train.schedule={name: constant}",
            "train.dtype=float32",  # the same numbers on CPUs with and without bf16 units
            f"data.cache_dir={root / 'cache'}",
        ],
    )
    train(cfg, out_dir=root / "base", progress=False)
    files = make_task(tinyshakespeare_path().read_text(), root / "data", n_sft=1500, n_pairs=1500)
    # one record whose prompt alone fills the context: truncation leaves no answer token
    with files["sft"].open("a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "ROMEO " * 30, "response": "ROMEO: hi"}) + "\n")
    sft_cfg = write(
        root / "sft.yaml",
        {
            "finetune": {
                "base": str(root / "base"),
                "data": str(files["sft"]),
                "val_fraction": 0.05,
                "eval_samples": 128,
                "metrics": METRICS,
            },
            "train": loop(200, 3e-3, 200),
            "generate": SAMPLING,
        },
    )
    sft_run, sft_metrics = run_sft(finetune_config(sft_cfg), out_dir=root / "sft", progress=False)
    return {"root": root, "files": files, "sft": sft_run, "sft_metrics": sft_metrics}


def test_sft_teaches_the_answer_format(world):
    rows = [r for r in records(world["sft"]) if "sample_format" in r]
    before, after = rows[0], rows[-1]
    assert before["step"] == 0 and before["sample_format"] <= 0.1  # the pretrained model
    assert after["sample_format"] >= 0.85
    # the SFT data names a random speaker: right about 1 time in 4
    assert after["sample_names_character"] <= 0.45
    skipped = [r for r in records(world["sft"]) if "skipped_examples" in r]
    assert skipped and skipped[0]["skipped_examples"] == 1
    # the same over-long prompt among the held-out records is not sampled, and counted
    skipped = [r for r in records(world["sft"]) if "skipped_eval_prompts" in r]
    assert skipped and skipped[0]["skipped_eval_prompts"] == 1
    saved = yaml.safe_load((world["sft"] / "config.yaml").read_text())
    assert saved["tokenizer"]["chat_template"]["assistant"] == "A: "


def preference_config(world, name: str, iters: int, lr: float, **finetune) -> Path:
    return write(
        world["root"] / f"{name}.yaml",
        {
            "finetune": {
                "base": str(world["sft"]),
                "data": str(world["files"]["pairs" if name != "ppo" else "prompts"]),
                "eval_samples": 96,
                "metrics": METRICS,
                **finetune,
            },
            "train": loop(iters, lr, iters),
            "generate": SAMPLING,
        },
    )


@pytest.fixture(scope="module")
def reward_model(world):
    path = preference_config(world, "reward", 60, 1e-3, val_fraction=0.1)
    return run_reward(finetune_config(path), out_dir=world["root"] / "rm", progress=False)


def test_reward_model_learns_the_preference(reward_model):
    run, last = reward_model
    assert last["val_accuracy"] >= 0.9
    assert (run / "ckpt" / "00000060" / "reward_head.safetensors").exists()


def test_dpo_raises_the_true_score(world):
    dpo = {"beta": 0.1, "rpo_alpha": 1.0}
    # 160 steps: after 100 the gain is only about 0.27 (0.16 -> 0.43 over 1024 samples),
    # too near the bound for a fixed draw of samples; after 160 it is about 0.6
    path = preference_config(world, "dpo", 160, 3e-4, dpo=dpo, eval_samples=256)
    run, last = run_dpo(finetune_config(path), out_dir=world["root"] / "dpo", progress=False)
    rows = [r for r in records(run) if "sample_names_character" in r]
    sft_score, dpo_score = rows[0]["sample_names_character"], rows[-1]["sample_names_character"]
    assert dpo_score >= sft_score + 0.25, (sft_score, dpo_score)
    assert rows[-1]["sample_format"] >= 0.5  # plain DPO (rpo_alpha 0) falls to ~0.02
    assert last["val_reward_accuracy"] >= 0.9


def test_ppo_raises_the_true_score_with_bounded_kl(world):
    ppo = {
        "reward": {"name": "names_character", "names": list(NAMES)},
        "rollout_batch": 32,
        "max_new_tokens": 16,
        "epochs": 4,
        "minibatch": 16,
        "kl_coef": 0.02,
        "kl_target": None,
    }
    path = preference_config(world, "ppo", 30, 3e-4, ppo=ppo)
    run, last = run_ppo(finetune_config(path), out_dir=world["root"] / "ppo", progress=False)
    rows = records(run)
    evals = [r for r in rows if "sample_names_character" in r]
    sft_score, ppo_score = evals[0]["sample_names_character"], evals[-1]["sample_names_character"]
    assert ppo_score >= sft_score + 0.2, (sft_score, ppo_score)
    steps = [r for r in rows if "mean_score" in r]
    for key in ("kl", "entropy", "clip_frac", "value_loss", "policy_loss", "kl_coef"):
        assert all(key in r for r in steps)
    assert max(r["kl"] for r in steps) < 20.0  # nats per answer: bounded drift


def test_ppo_against_the_reward_model_raises_the_true_score(world, reward_model):
    # the learned reward model, not the exact plugin, drives PPO; the exact score only judges
    ppo = {
        "reward_model": str(reward_model[0]),
        "rollout_batch": 32,
        "max_new_tokens": 16,
        "epochs": 4,
        "minibatch": 16,
        "kl_coef": 0.3,  # per token, against scores normalised to unit spread
        "kl_target": None,
        "value_coef": 0.1,
    }
    path = preference_config(world, "ppo", 60, 2e-4, ppo=ppo, eval_samples=256)
    run, _ = run_ppo(finetune_config(path), out_dir=world["root"] / "ppo_rm", progress=False)
    rows = records(run)
    evals = [r for r in rows if "sample_names_character" in r]
    sft_score, ppo_score = evals[0]["sample_names_character"], evals[-1]["sample_names_character"]
    # measured: 0.20 -> 0.49 (other seeds: +0.41, +0.49), KL <= 3.5 nats; scoring cut answers
    # where they stop instead of at the end marker, the same run falls to 0.15
    assert ppo_score >= sft_score + 0.2, (sft_score, ppo_score)
    assert evals[-1]["sample_format"] >= 0.8
    steps = [r for r in rows if "mean_score" in r]
    # the first batch fixes the normalisation: its scores have mean 0 and unit spread
    assert abs(steps[0]["mean_score"]) < 1e-4
    assert max(r["kl"] for r in steps) < 10.0  # nats per answer


def test_the_reward_model_scores_every_answer_at_its_end_marker(world, reward_model):
    from llmcore.finetune.data import pad_sequences
    from llmcore.finetune.ppo import RewardModelScorer

    scorer = RewardModelScorer(str(reward_model[0]), "cpu")
    prompts, answers = ["ROMEO, speak", "JULIET, speak"], ["ROMEO: Bid her", "ROMEO: O"]
    seqs = [scorer.chat.prompt_text(p) + scorer.chat.answer(a) for p, a in zip(prompts, answers)]
    ids, last = pad_sequences(seqs)
    with torch.no_grad():
        expected = scorer.rm(ids, last)
    torch.testing.assert_close(scorer.raw(prompts, answers), expected)
    # an answer cut before its end marker is scored as if it had ended there; the first batch
    # fixes the shift and scale that every later batch gets
    shift, scale = float(expected.mean()), float(expected.std(correction=0))
    normed = [(float(x) - shift) / scale for x in expected]
    assert scorer(prompts, answers, [False, False]) == pytest.approx(normed, abs=1e-5)
    assert scorer(prompts, answers, [True, False]) == pytest.approx(normed, abs=1e-5)
    assert scorer(prompts[1:], answers[1:], [True]) == pytest.approx(normed[1:], abs=1e-5)


# -- bad input ------------------------------------------------------------------------------------


def test_a_record_missing_a_field_names_file_and_line(world, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "ROMEO, speak"}\n')
    path = write(
        tmp_path / "c.yaml",
        {"finetune": {"base": str(world["sft"]), "data": str(bad)}, "train": loop(1, 1e-3, 1)},
    )
    with pytest.raises(DataError, match=r"bad.jsonl:3: field 'response' is missing"):
        run_sft(finetune_config(path), out_dir=tmp_path / "run", progress=False)


class _NaNReward:
    def __call__(self, prompts, responses):
        return [float("nan")] * len(responses)


class _NaNPlugin:
    from llmcore.hookspecs import hookimpl

    @staticmethod
    @hookimpl
    def register_rewards(register):
        register("nan_for_tests", _NaNReward)


def test_a_reward_plugin_returning_nan_rejects_the_step(world, tmp_path):
    from llmcore import plugins

    if "nan_for_tests" not in plugins.available("reward"):
        plugins.registry().add_plugin(_NaNPlugin, name="nan_reward_for_tests")
    path = write(
        tmp_path / "c.yaml",
        {
            "finetune": {
                "base": str(world["sft"]),
                "data": str(world["files"]["prompts"]),
                "ppo": {"reward": "nan_for_tests", "rollout_batch": 4, "max_new_tokens": 8},
            },
            "train": loop(2, 1e-3, 10),
            "generate": SAMPLING,
        },
    )
    with pytest.raises(TrainingError, match=r"reward 'nan_for_tests' returned nan .*rejected"):
        run_ppo(finetune_config(path), out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "ckpt").exists()


def test_a_reference_of_another_architecture_is_refused(world, tmp_path):
    cfg = load_config(
        "shakespeare-char",
        [
            "model.block_size=96",
            "model.n_layer=1",
            "model.n_embd=64",
            "train.max_iters=1",
            "train.eval_interval=1",
            "train.eval_iters=1",
            "train.sample_tokens=0",
            f"data.cache_dir={world['root'] / 'cache'}",
        ],
    )
    other = train(cfg, out_dir=tmp_path / "other", progress=False)
    path = preference_config(world, "dpo_bad", 1, 1e-3, reference=str(other))
    with pytest.raises(
        CheckpointError, match=r"reference is of another architecture: model.n_layer"
    ):
        run_dpo(finetune_config(path), out_dir=tmp_path / "run", progress=False)


def test_cli_lora_sft_and_ppo_then_merge(world, tmp_path, capsys):
    from llmcore.checkpoint import load_checkpoint
    from llmcore.cli import main
    from llmcore.finetune.models import load_finetuned

    lora = "finetune.adapter={name: lora, rank: 4, targets: [attn.qkv, mlp]}"
    sft = write(
        tmp_path / "sft.yaml",
        {
            "finetune": {"base": str(world["sft"]), "data": str(world["files"]["sft"])},
            "train": loop(5, 1e-3, 5),
        },
    )
    assert main(["finetune", "sft", str(sft), "--out", str(tmp_path / "s"), "--set", lora]) == 0
    ppo = write(
        tmp_path / "ppo.yaml",
        {
            "finetune": {
                "base": str(world["sft"]),
                "data": str(world["files"]["prompts"]),
                "ppo": {"reward": "format", "rollout_batch": 4, "max_new_tokens": 8},
            },
            "train": loop(2, 1e-3, 10),
            "generate": SAMPLING,
        },
    )
    assert main(["finetune", "ppo", str(ppo), "--out", str(tmp_path / "p"), "--set", lora]) == 0
    for run in ("s", "p"):
        adapted = load_finetuned(tmp_path / run)
        assert main(["merge-lora", str(tmp_path / run)]) == 0
        plain = load_checkpoint(tmp_path / f"{run}-merged")
        ids = torch.tensor([[5, 6, 7, 8, 9]])
        torch.testing.assert_close(plain.model(ids), adapted.model(ids), rtol=1e-5, atol=1e-5)
    assert "merged weights written to" in capsys.readouterr().out
    assert main(["finetune", "dpo", str(tmp_path / "missing.yaml")]) == 1


def test_sft_on_messages_records_samples_held_out_answers(world, tmp_path):
    """The documented ``messages`` format trains and its held-out conversations are sampled
    from (the turns before the answer) and scored on their last user turn."""
    data = tmp_path / "chat.jsonl"
    lines = []
    for i, name in enumerate(NAMES * 10):
        turns = [{"role": "user", "content": f"{name}, speak"}]
        if i % 2:  # some conversations have an earlier exchange
            turns = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
            turns += [{"role": "user", "content": f"{name}, speak"}]
        turns.append({"role": "assistant", "content": f"{name}: good morrow"})
        lines.append(json.dumps({"messages": turns}))
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = write(
        tmp_path / "c.yaml",
        {
            "finetune": {
                "base": str(world["root"] / "base"),
                "data": str(data),
                "val_fraction": 0.25,
                "eval_samples": 8,
                "metrics": METRICS,
            },
            "train": loop(4, 1e-3, 4, batch=4),
        },
    )
    run, _ = run_sft(finetune_config(path), out_dir=tmp_path / "run", progress=False)
    sampled = [r for r in records(run) if "sample_format" in r]
    assert [r["step"] for r in sampled] == [0, 4]
    assert all(0.0 <= r["sample_names_character"] <= 1.0 for r in sampled)


def test_sft_without_data_names_the_setting(world, tmp_path):
    path = write(
        tmp_path / "c.yaml",
        {"finetune": {"base": str(world["root"] / "base")}, "train": loop(1, 1e-3, 1)},
    )
    with pytest.raises(ConfigError, match=r"finetune\.data: not set; sft reads its records"):
        run_sft(finetune_config(path), out_dir=tmp_path / "run", progress=False)
