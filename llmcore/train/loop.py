"""The pretraining loop: random windows, causal-LM cross-entropy, the configured optimizer and
schedule, evaluation, metrics and crash-safe checkpoints, on one process or under torchrun."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmcore import checkpoint as ckpt
from llmcore.components import build_loggers, build_optimizer, build_schedule, validate_components
from llmcore.config import Config, dump_yaml
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
from llmcore.train.guards import FiniteGuard, grad_norm
from llmcore.train.setup import autocast_dtype, build_tokenizer, resolve_device, run_dir_of

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
        t = cfg.train
        self.env, self.device = D.init_distributed(resolve_device(t.device), t.distributed)
        self.progress = progress and self.env.is_main
        torch.manual_seed(t.seed)
        self.resume_from = ckpt.resolve_checkpoint(resume, resumable=True) if resume else None
        if self.resume_from is not None:
            self.run_dir = self.resume_from.parent.parent
        else:
            self.run_dir = run_dir_of(cfg, out_dir)
            if (self.run_dir / "ckpt").exists():
                raise LLMCoreError(
                    f"{self.run_dir}: the run folder already holds checkpoints; use --resume "
                    f"{self.run_dir} to continue it or --out to start a new run"
                )

        data_source = cfg.data.path or str(_bundled_text())
        files = input_files(data_source)
        if self.resume_from is not None:
            self.tokenizer = _checkpoint_tokenizer(cfg, self.resume_from)
        else:
            self.tokenizer = build_tokenizer(cfg, files)
        cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(t.out_dir) / ".cache"
        tokens = None
        if self.env.is_main:  # rank 0 fills the cache, the others then read it
            tokens = load_tokens(files, self.tokenizer, cache_dir, cfg.data.jsonl_field, progress)
        D.barrier(self.env)
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
        self.model = build_model(cfg, self.tokenizer.vocab_size)
        self.tied = set(self.model.state_dict()) - set(ckpt.model_state(self.model))
        state: dict[str, Any] | None = None
        if self.resume_from is not None:  # weights before wrapping: FSDP shards what it finds
            ckpt.load_state_dict_strict(self.model, self.resume_from / ckpt.MODEL_FILE)
            state = ckpt.load_trainer_state(self.resume_from)
        self.model.to(self.device)
        self.wrapped = D.wrap(LossOf(self.model), self.env, self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.schedule = build_schedule(cfg, self.optimizer)

        rows = D.local_batch(t.batch_size, self.env)
        windows = RandomWindows if cfg.data.mode == "random" else SequentialWindows
        gen = torch.Generator().manual_seed(t.seed)
        self.train_batches = windows(splits.train, cfg.model.block_size, t.batch_size, gen, rows)
        self.eval_gen = torch.Generator().manual_seed(t.seed + 1)
        self.eval_batches = {  # built once: converting a split to int64 is not free
            name: RandomWindows(data, cfg.model.block_size, t.batch_size, self.eval_gen, rows)
            for name, data in (("train", splits.train), ("val", splits.val))
        }
        self.step = 0
        self.best_val = math.inf
        self.best_step: str | None = None
        if state is not None:
            self._restore(state)
        self.forward = torch.compile(self.wrapped) if t.compile else self.wrapped
        self.amp_dtype = autocast_dtype(t.dtype, self.device)
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=self.amp_dtype))
            if self.amp_dtype is not None
            else contextlib.nullcontext
        )

    # -- state -----------------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs (a collective under FSDP)."""
        return {
            "step": self.step,
            "optimizer": D.optimizer_state(self.wrapped, self.optimizer, self.env),
            "schedule": self.schedule.state_dict(),
            "data": self.train_batches.state_dict(),
            "eval_generator": self.eval_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_val": self.best_val,
            "best_step": self.best_step or "",
            "world_size": self.env.world_size,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        path = self.resume_from
        try:
            D.load_optimizer_state(self.wrapped, self.optimizer, state["optimizer"], self.env)
            self.schedule.load_state_dict(state["schedule"])
            self.train_batches.load_state_dict(state["data"])
            self.eval_gen.set_state(state["eval_generator"])
            torch.set_rng_state(state["torch_rng"])
            self.step = int(state["step"])
            self.best_val = float(state["best_val"])
            self.best_step = state["best_step"] or None
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(
                f"{path}: the trainer state does not match this run: {exc}"
            ) from None

    # -- loop ------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over ``eval_iters`` random batches of each split (all ranks together).

        Small batches are stacked into one forward pass of up to ``EVAL_TOKENS`` tokens: the
        same windows and the same mean, with far fewer (and larger) kernel calls."""
        self.wrapped.eval()
        out = {}
        n = self.cfg.train.eval_iters
        rows = self.cfg.train.batch_size // self.env.world_size  # this rank's rows a batch
        group = max(1, min(n, EVAL_TOKENS // (rows * self.cfg.model.block_size)))
        for name, batches in self.eval_batches.items():
            total = torch.zeros((), dtype=torch.float64)
            for start in range(0, n, group):
                k = min(group, n - start)
                xs, ys = zip(*(batches() for _ in range(k)))
                x, y = torch.cat(xs).to(self.device), torch.cat(ys).to(self.device)
                with self.autocast():
                    total += self.forward(x, y).double().cpu() * k
            out[name] = float(D.all_mean((total / n).float(), self.env))
        self.wrapped.train()
        return out

    def save(self, val_loss: float | None) -> None:
        """Write a checkpoint of the current step (rank 0 writes; all ranks raise together)."""
        weights = D.full_model_state(self.wrapped, self.model, self.env)
        weights = {k: v for k, v in weights.items() if k not in self.tied}
        state = self.trainer_state()
        error: LLMCoreError | None = None
        if self.env.is_main:
            try:
                path = ckpt.save_checkpoint(
                    self.run_dir, self.step, weights, self.cfg, self.tokenizer, state
                )
                if val_loss is not None and val_loss < self.best_val:
                    self.best_val, self.best_step = val_loss, path.name
                    ckpt.write_atomic(self.run_dir / "ckpt" / "best", path.name + "\n")
                ckpt.prune_checkpoints(
                    self.run_dir, self.cfg.train.keep_last, {self.best_step} - {None}
                )
            except OSError as exc:
                error = CheckpointError(
                    f"{self.run_dir / 'ckpt'}: cannot write the checkpoint of step {self.step} "
                    f"({exc}); the last good checkpoint is intact"
                )
            except LLMCoreError as exc:
                error = exc
        if not D.agree(error is None, self.env):
            raise error or CheckpointError(f"step {self.step}: rank 0 failed to save")
        if val_loss is not None and val_loss < self.best_val:  # keep ranks in step
            self.best_val = val_loss

    def _prepare_run_dir(self) -> None:
        if not self.env.is_main:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.cfg), encoding="utf-8")
            if self.resume_from is not None:
                _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        except OSError as exc:
            raise LLMCoreError(f"{self.run_dir}: cannot write the run folder: {exc}") from None

    def run(self) -> Path:
        """Train to ``max_iters``; returns the run folder."""
        try:
            run_dir = self._run()
        except BaseException:
            D.shutdown(self.env, wait=False)
            raise
        D.shutdown(self.env)
        return run_dir

    def _run(self) -> Path:
        cfg, t = self.cfg, self.cfg.train
        error: LLMCoreError | None = None
        try:
            self._prepare_run_dir()
        except LLMCoreError as exc:
            error = exc
        if not D.agree(error is None, self.env):
            raise error or LLMCoreError(f"{self.run_dir}: rank 0 cannot write the run folder")
        loggers = build_loggers(cfg, self.run_dir) if self.env.is_main else []
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
        say = bar.write if self.progress else (print if self.env.is_main else _quiet)
        opt, model = self.optimizer, self.forward
        params = [p for p in self.model.parameters() if p.requires_grad]
        resumed_at = self.step if self.resume_from is not None else None
        window_start, window_steps = time.perf_counter(), 0
        guard = FiniteGuard(str(self.run_dir / "ckpt"))

        def log(record: dict[str, Any]) -> None:
            for lg in loggers:
                lg.log(record)

        try:
            while True:
                step = self.step
                last = step >= t.max_iters
                if (step % t.eval_interval == 0 or last) and step != resumed_at:
                    losses = self.evaluate()
                    if not all(math.isfinite(v) for v in losses.values()):
                        raise TrainingError(
                            f"the evaluation loss became {losses['val']} at step {step}; nothing "
                            f"was saved over the last good checkpoint in {self.run_dir / 'ckpt'}"
                        )
                    log(
                        {
                            "step": step,
                            "eval_train_loss": losses["train"],
                            "val_loss": losses["val"],
                            "val_ppl": math.exp(min(losses["val"], 50.0)),
                        }
                    )
                    say(
                        f"step {step}: train loss {losses['train']:.4f}, "
                        f"val loss {losses['val']:.4f}, val ppl {math.exp(min(losses['val'], 50.0)):.2f}"
                    )
                    if step > 0 and (step % ckpt_every == 0 or last):
                        self.save(losses["val"])
                    window_start, window_steps = time.perf_counter(), 0  # eval is not training
                if last:
                    break
                loss_sum = torch.zeros((), device=self.device)
                for micro in range(t.grad_accum):
                    x, y = self.train_batches()
                    x = x.to(self.device, non_blocking=True)
                    y = y.to(self.device, non_blocking=True)
                    with D.no_sync(self.wrapped, micro == t.grad_accum - 1), self.autocast():
                        loss = model(x, y) / t.grad_accum
                    loss.backward()
                    loss_sum += loss.detach()
                train_loss = float(D.all_mean(loss_sum, self.env))
                # Before the update, so the weights stay finite: the loss first, then the
                # gradient norm (finite losses can still give NaN gradients).
                guard.check_loss(step + 1, train_loss)
                guard.check_grad(step + 1, train_loss, grad_norm(params, t.grad_clip))
                opt.step()
                opt.zero_grad(set_to_none=True)
                lr = self.schedule.get_last_lr()[0]
                self.schedule.step()
                self.step += 1
                window_steps += 1
                bar.update(1)
                if self.step % t.log_interval == 0 or self.step == t.max_iters:
                    elapsed = time.perf_counter() - window_start
                    tps = window_steps * tokens_per_step / elapsed if elapsed > 0 else 0.0
                    log(
                        {"step": self.step, "train_loss": train_loss, "lr": lr, "tokens_per_s": tps}
                    )
                    bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                    window_start, window_steps = time.perf_counter(), 0
        finally:
            bar.close()
            for lg in loggers:
                lg.close()
        if self.env.is_main:
            _plot_losses(self.run_dir, say)
        return self.run_dir


def _quiet(*_: Any, **__: Any) -> None:
    return None


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


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows a killed run logged after the checkpoint it is resumed from."""
    import json

    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
        if int(row.get("step", 0)) <= step:
            keep.append(line)
    ckpt.write_atomic(path, "".join(line + "\n" for line in keep))


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
