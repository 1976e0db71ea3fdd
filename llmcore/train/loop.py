"""The pretraining loop: random windows, causal-LM cross-entropy, the configured optimizer and
schedule, evaluation, metrics and crash-safe checkpoints."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from llmcore import checkpoint as ckpt
from llmcore.components import build_loggers, build_optimizer, build_schedule, validate_components
from llmcore.config import Config, dump_yaml
from llmcore.errors import DataError, LLMCoreError, TrainingError
from llmcore.model import build_model
from llmcore.train.data import (
    RandomWindows,
    SequentialWindows,
    input_files,
    load_tokens,
    split_tokens,
)
from llmcore.train.setup import build_tokenizer, resolve_device, run_dir_of


class Trainer:
    """One training run of a :class:`~llmcore.config.Config`."""

    def __init__(
        self,
        cfg: Config,
        *,
        out_dir: str | Path | None = None,
        resume: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        validate_components(cfg)
        self.cfg = cfg
        self.progress = progress
        t = cfg.train
        self.device = resolve_device(t.device)
        torch.manual_seed(t.seed)
        self.resume_from = ckpt.resolve_checkpoint(resume) if resume else None
        self.run_dir = (
            Path(resume) if resume and not (Path(resume) / ckpt.MODEL_FILE).exists() else None
        )
        if self.run_dir is None:
            self.run_dir = (
                self.resume_from.parent.parent if self.resume_from else run_dir_of(cfg, out_dir)
            )
        if self.resume_from is None and (self.run_dir / "ckpt").exists():
            raise LLMCoreError(
                f"{self.run_dir}: the run folder already holds checkpoints; use --resume {self.run_dir} "
                "to continue it or --out to start a new run"
            )

        data_source = cfg.data.path or str(_bundled_text())
        files = input_files(data_source)
        if self.resume_from is not None:
            from llmcore.tokenizers import load_tokenizer

            self.tokenizer = load_tokenizer(self.resume_from / ckpt.TOKENIZER_DIR)
        else:
            self.tokenizer = build_tokenizer(cfg, files)
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(t.out_dir) / ".cache"
        tokens = load_tokens(files, self.tokenizer, cache_dir, cfg.data.jsonl_field, progress)
        if len(tokens) == 0:
            raise DataError(f"{data_source}: the data holds no tokens")
        self.splits = split_tokens(tokens, cfg.data.val_fraction, cfg.model.block_size, data_source)

        self.model = build_model(cfg, self.tokenizer.vocab_size).to(self.device)
        if self.tokenizer.vocab_size > cfg.model.vocab_size:
            raise LLMCoreError(
                f"model.vocab_size={cfg.model.vocab_size} < the tokenizer's {self.tokenizer.vocab_size} ids"
            )
        self.optimizer = build_optimizer(cfg, self.model)
        self.schedule = build_schedule(cfg, self.optimizer)
        windows = RandomWindows if cfg.data.mode == "random" else SequentialWindows
        gen = torch.Generator().manual_seed(t.seed)
        self.train_batches = windows(self.splits.train, cfg.model.block_size, t.batch_size, gen)
        self.eval_gen = torch.Generator().manual_seed(t.seed + 1)
        self.step = 0
        self.best_val = math.inf
        self.best_step: str | None = None
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.forward_model = torch.compile(self.model) if t.compile else self.model
        amp = t.dtype == "bfloat16"
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if amp
            else contextlib.nullcontext
        )

    # -- state -----------------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "data": self.train_batches.state_dict(),
            "eval_generator": self.eval_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_val": self.best_val,
            "best_step": self.best_step or "",
        }

    def _restore(self, path: Path) -> None:
        ckpt.load_state_dict_strict(self.model, path / ckpt.MODEL_FILE)
        state = ckpt.load_trainer_state(path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.train_batches.load_state_dict(state["data"])
            self.eval_gen.set_state(state["eval_generator"])
            torch.set_rng_state(state["torch_rng"])
            self.step = int(state["step"])
            self.best_val = float(state["best_val"])
            self.best_step = state["best_step"] or None
        except (KeyError, ValueError, RuntimeError) as exc:
            raise LLMCoreError(f"{path}: trainer state does not match this run: {exc}") from None

    # -- loop ------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over ``eval_iters`` random batches of each split."""
        self.model.eval()
        out = {}
        t = self.cfg.train
        for name, data in (("train", self.splits.train), ("val", self.splits.val)):
            batches = RandomWindows(data, self.cfg.model.block_size, t.batch_size, self.eval_gen)
            losses = torch.empty(t.eval_iters)
            for i in range(t.eval_iters):
                x, y = batches()
                with self.autocast():
                    losses[i] = self.forward_model.loss(x.to(self.device), y.to(self.device))
            out[name] = losses.mean().item()
        self.model.train()
        return out

    def save(self, val_loss: float | None) -> None:
        path = ckpt.save_checkpoint(
            self.run_dir, self.step, self.model, self.cfg, self.tokenizer, self.trainer_state()
        )
        if val_loss is not None and val_loss < self.best_val:
            self.best_val, self.best_step = val_loss, path.name
            ckpt.write_atomic(self.run_dir / "ckpt" / "best", path.name + "\n")
        ckpt.prune_checkpoints(
            self.run_dir, self.cfg.train.keep_last, {self.best_step} if self.best_step else set()
        )

    def run(self) -> Path:
        """Train to ``max_iters``; returns the run folder."""
        cfg, t = self.cfg, self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
        loggers = build_loggers(cfg, self.run_dir)
        ckpt_every = t.checkpoint_interval or t.eval_interval
        tokens_per_step = t.batch_size * t.grad_accum * cfg.model.block_size
        from tqdm.auto import tqdm

        bar = tqdm(
            total=t.max_iters,
            initial=self.step,
            disable=not self.progress,
            unit="it",
            dynamic_ncols=True,
        )
        model, opt = self.forward_model, self.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        window_start, window_steps = time.perf_counter(), 0
        try:
            while True:
                step = self.step
                last = step == t.max_iters
                record: dict[str, Any] = {}
                if step % t.eval_interval == 0 or last:
                    losses = self.evaluate()
                    record.update(
                        eval_train_loss=losses["train"],
                        val_loss=losses["val"],
                        val_ppl=math.exp(min(losses["val"], 50.0)),
                    )
                    bar.write(
                        f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                    )
                    if step > 0 and (step % ckpt_every == 0 or last):
                        self.save(losses["val"])
                    window_start, window_steps = (
                        time.perf_counter(),
                        0,
                    )  # evaluation is not training time
                if last:
                    if record:
                        for lg in loggers:
                            lg.log({"step": step, **record})
                    break
                loss_sum = 0.0
                for _ in range(t.grad_accum):
                    x, y = self.train_batches()
                    x, y = (
                        x.to(self.device, non_blocking=True),
                        y.to(self.device, non_blocking=True),
                    )
                    with self.autocast():
                        loss = model.loss(x, y) / t.grad_accum
                    loss.backward()
                    loss_sum += loss.detach()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, t.grad_clip, foreach=True)
                opt.step()
                opt.zero_grad(set_to_none=True)
                lr = self.schedule.get_last_lr()[0]
                self.schedule.step()
                self.step += 1
                window_steps += 1
                bar.update(1)
                if self.step % t.log_interval == 0 or record:
                    train_loss = float(loss_sum)
                    if not math.isfinite(train_loss):
                        raise TrainingError(
                            f"loss became {train_loss} at step {self.step}; the last good checkpoint in "
                            f"{self.run_dir / 'ckpt'} is kept (lower the learning rate or check the data)"
                        )
                    elapsed = time.perf_counter() - window_start
                    tps = window_steps * tokens_per_step / elapsed if elapsed > 0 else 0.0
                    record.update(step=self.step, train_loss=train_loss, lr=lr, tokens_per_s=tps)
                    bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                    for lg in loggers:
                        lg.log(record)
                    window_start, window_steps = time.perf_counter(), 0
        finally:
            bar.close()
            for lg in loggers:
                lg.close()
        _plot_losses(self.run_dir, bar.write if self.progress else print)
        return self.run_dir


def _bundled_text() -> Path:
    from llmcore.datasets import tinyshakespeare_path

    return tinyshakespeare_path()


def _plot_losses(run_dir: Path, say) -> None:
    """``loss.png`` from metrics.jsonl, when matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("note: matplotlib is not installed, so no loss.png (pip install 'llmcore[plot]')")
        return
    import json

    rows = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    tr = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    va = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if tr:
        ax.plot(*zip(*tr), label="train")
    if va:
        ax.plot(*zip(*va), "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
    plt.close(fig)
