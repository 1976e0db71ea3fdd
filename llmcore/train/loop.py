"""Pretraining on the engine: random (or sequential) windows of a token file and the model's
causal-LM cross-entropy; the engine does the rest (:mod:`llmcore.train.engine`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmcore import checkpoint as ckpt
from llmcore.config import Config
from llmcore.errors import CheckpointError, DataError, LLMCoreError, TrainingError
from llmcore.model import build_model
from llmcore.train import distributed as D
from llmcore.train.data import (
    RandomWindows,
    SequentialWindows,
    input_files,
    load_tokens,
    split_tokens,
)
from llmcore.train.engine import Engine
from llmcore.train.setup import build_tokenizer
from llmcore.train.workflow import MicroBatch, Update, Workflow

#: The most tokens one evaluation forward pass takes when it stacks small batches.
EVAL_TOKENS = 16384


class LossOf(nn.Module):
    """``forward(x, y)`` is the model's mean next-token loss: the module DDP, FSDP and
    ``torch.compile`` wrap, so their hooks run around the fused loss too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x, y)


class Pretraining(Workflow):
    """The pretraining workflow: windows of the token file, the fused causal-LM loss."""

    name = "pretrain"

    def setup(self, engine: Engine) -> None:
        cfg, t, env = engine.cfg, engine.cfg.train, engine.env
        data_source = cfg.data.path or str(_bundled_text())
        files = input_files(data_source)
        if engine.resume_from is not None:
            self.tokenizer = _checkpoint_tokenizer(cfg, engine.resume_from)
        else:
            self.tokenizer = build_tokenizer(cfg, files)
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(t.out_dir) / ".cache"
        tokens = None
        if env.is_main:  # rank 0 fills the cache, the others then read it
            tokens = load_tokens(
                files, self.tokenizer, cache_dir, cfg.data.jsonl_field, engine.progress
            )
        D.barrier(env)
        if tokens is None:
            tokens = load_tokens(files, self.tokenizer, cache_dir, cfg.data.jsonl_field, False)
        if len(tokens) == 0:
            raise DataError(f"{data_source}: the data holds no tokens")
        splits = split_tokens(tokens, cfg.data.val_fraction, cfg.model.block_size, data_source)
        if cfg.model.vocab_size is not None and self.tokenizer.vocab_size > cfg.model.vocab_size:
            raise LLMCoreError(
                f"model.vocab_size={cfg.model.vocab_size} < the tokenizer's "
                f"{self.tokenizer.vocab_size} ids"
            )
        self.model = self.saved = build_model(cfg, self.tokenizer.vocab_size)
        self.loss_module = LossOf(self.model)
        rows = D.local_batch(t.batch_size, env)
        windows = RandomWindows if cfg.data.mode == "random" else SequentialWindows
        gen = torch.Generator().manual_seed(t.seed)
        self.train_batches = windows(splits.train, cfg.model.block_size, t.batch_size, gen, rows)
        self.eval_gen = torch.Generator().manual_seed(t.seed + 1)
        self.eval_batches = {  # built once: converting a split to int64 is not free
            name: RandomWindows(data, cfg.model.block_size, t.batch_size, self.eval_gen, rows)
            for name, data in (("train", splits.train), ("val", splits.val))
        }
        self.grad_accum = t.grad_accum
        self.tokens_per_step = t.batch_size * t.grad_accum * cfg.model.block_size

    def next_update(self, engine: Engine) -> Update:
        micro = []
        for _ in range(self.grad_accum):
            x, y = self.train_batches()
            x = x.to(engine.device, non_blocking=True)
            y = y.to(engine.device, non_blocking=True)
            micro.append(MicroBatch((x, y)))
        # every micro-batch weighs 1 on every rank: each one's loss is divided by grad_accum
        return Update(micro, float(self.grad_accum * engine.env.world_size))

    def state_dict(self) -> dict[str, Any]:
        return {
            "data": self.train_batches.state_dict(),
            "eval_generator": self.eval_gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_batches.load_state_dict(state["data"])
        self.eval_gen.set_state(state["eval_generator"])

    @torch.no_grad()
    def evaluate(self, engine: Engine) -> dict[str, float]:
        """Mean loss over ``eval_iters`` random batches of each split (all ranks together).

        Small batches are stacked into one forward pass of up to ``EVAL_TOKENS`` tokens: the
        same windows and the same mean, with far fewer (and larger) kernel calls."""
        cfg = engine.cfg
        engine.wrapped.eval()
        out = {}
        n = cfg.train.eval_iters
        rows = cfg.train.batch_size // engine.env.world_size  # this rank's rows a batch
        group = max(1, min(n, EVAL_TOKENS // (rows * cfg.model.block_size)))
        for name, batches in self.eval_batches.items():
            total = torch.zeros((), dtype=torch.float64)
            for start in range(0, n, group):
                k = min(group, n - start)
                xs, ys = zip(*(batches() for _ in range(k)))
                x, y = torch.cat(xs).to(engine.device), torch.cat(ys).to(engine.device)
                with engine.autocast():
                    total += engine.forward(x, y).double().cpu() * k
            out[name] = float(D.all_mean((total / n).float(), engine.env))
        engine.wrapped.train()
        if not all(math.isfinite(v) for v in out.values()):
            raise TrainingError(
                f"the evaluation loss became {out['val']} at step {engine.step}; nothing "
                f"was saved over the last good checkpoint in {engine.run_dir / 'ckpt'}"
            )
        return {
            "eval_train_loss": out["train"],
            "val_loss": out["val"],
            "val_ppl": math.exp(min(out["val"], 50.0)),
        }

    def describe(self, step: int, metrics: dict[str, float]) -> str:
        return (
            f"step {step}: train loss {metrics['eval_train_loss']:.4f}, "
            f"val loss {metrics['val_loss']:.4f}, val ppl {metrics['val_ppl']:.2f}"
        )


class Trainer(Engine):
    """One pretraining run of a :class:`~llmcore.config.Config`."""

    def __init__(
        self,
        cfg: Config,
        *,
        out_dir: str | Path | None = None,
        resume: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(cfg, Pretraining(), out_dir=out_dir, resume=resume, progress=progress)

    @property
    def model(self) -> nn.Module:
        return self.workflow.model

    @property
    def tokenizer(self):
        return self.workflow.tokenizer

    @property
    def eval_gen(self) -> torch.Generator:
        return self.workflow.eval_gen

    @property
    def eval_batches(self):
        return self.workflow.eval_batches

    def evaluate(self) -> dict[str, float]:
        """Mean loss of each split (``train`` and ``val``), as :meth:`Pretraining.evaluate`."""
        m = self.workflow.evaluate(self)
        return {"train": m["eval_train_loss"], "val": m["val_loss"]}


def _checkpoint_tokenizer(cfg: Config, path: Path):
    """The tokenizer a checkpoint was trained with; a config asking for another is an error."""
    from llmcore.config import config_from_dict, read_config_file
    from llmcore.tokenizers import load_tokenizer

    saved = config_from_dict(read_config_file(path / ckpt.CONFIG_FILE), str(path))
    if (saved.tokenizer.name, saved.tokenizer.params) != (cfg.tokenizer.name, cfg.tokenizer.params):
        raise CheckpointError(
            f"{path}: the config asks for tokenizer {cfg.tokenizer.name!r} "
            f"{cfg.tokenizer.params or ''}, but the checkpoint was trained with "
            f"{saved.tokenizer.name!r} {saved.tokenizer.params or ''}; resume with the "
            "checkpoint's tokenizer or start a new run"
        )
    ckpt.check_tokenizer(path)
    return load_tokenizer(path / ckpt.TOKENIZER_DIR)


def _bundled_text() -> Path:
    from llmcore.datasets import tinyshakespeare_path

    return tinyshakespeare_path()
