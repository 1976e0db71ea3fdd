"""The one training engine: pretraining and every fine-tuning workflow run through it.

A :class:`~llmcore.train.workflow.Workflow` supplies its modules, batches, loss and
evaluation; the engine owns the rest: micro-batching with ``train.grad_accum``, autocast per
``train.dtype``, ``torch.compile`` per ``train.compile``, DDP/FSDP2 under torchrun, the
finite-loss and gradient guard, clipping, the optimizer and schedule, the evaluation, log and
checkpoint cadence, atomic checkpoints and exact resume (after SIGKILL too).

Work is never lost: SIGINT/SIGTERM checkpoint at the next step boundary before the run stops
(:mod:`llmcore.train.signals`), and a resumed run cuts ``metrics.jsonl`` back to its
checkpoint only provisionally, putting the file back unless it writes a newer checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from llmcore import checkpoint as ckpt
from llmcore.components import build_loggers, build_optimizer, build_schedule, validate_components
from llmcore.config import Config, dump_yaml
from llmcore.errors import CheckpointError, LLMCoreError
from llmcore.train import distributed as D
from llmcore.train.guards import FiniteGuard, grad_norm
from llmcore.train.plot import plot_losses
from llmcore.train.setup import autocast_dtype, resolve_device, run_dir_of
from llmcore.train.signals import StopRequests, TrainingInterrupted
from llmcore.train.workflow import Update, Workflow

#: the jsonl logger's file, cut back to the checkpoint when a run is resumed
METRICS = "metrics.jsonl"


class Engine:
    """One training run of ``workflow`` under ``cfg``.

    Args:
        out_dir: the run folder of a new run (default ``<train.out_dir>/<name>``).
        resume: a run or checkpoint folder to continue exactly.
    """

    def __init__(
        self,
        cfg: Config,
        workflow: Workflow,
        *,
        out_dir: str | Path | None = None,
        resume: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        validate_components(cfg)
        self.cfg, self.workflow = cfg, workflow
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
        self.amp_dtype = autocast_dtype(t.dtype, self.device)
        workflow.setup(self)
        from llmcore.quant import check_trainable

        check_trainable(workflow.model)  # quantized weights have no gradients
        saved = workflow.saved
        self.tied = set(saved.state_dict()) - set(ckpt.model_state(saved))
        state: dict[str, Any] | None = None
        if self.resume_from is not None:  # weights before wrapping: FSDP shards what it finds
            workflow.load_weights(self.resume_from)
            state = ckpt.load_trainer_state(self.resume_from)
        workflow.loss_module.to(self.device)
        self.wrapped = D.wrap(workflow.loss_module, self.env, self.device)
        self.optimizer = build_optimizer(cfg, workflow.model)
        self.schedule = build_schedule(cfg, self.optimizer)
        self.params = [p for p in workflow.model.parameters() if p.requires_grad]
        self.step = 0
        self.best_val = math.inf
        self.best_step: str | None = None
        if state is not None:
            self._restore(state)
        self.forward = torch.compile(self.wrapped) if t.compile else self.wrapped
        self.guard = FiniteGuard(str(self.run_dir / "ckpt"))
        self.history: list[dict[str, Any]] = []  # every record this process logged
        self.last_metrics: dict[str, Any] = {}

    def autocast(self):
        """The autocast context of ``train.dtype`` (a no-op for float32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- state -----------------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs (a collective under FSDP)."""
        return {
            "step": self.step,
            "optimizer": D.optimizer_state(self.wrapped, self.optimizer, self.env),
            "schedule": self.schedule.state_dict(),
            "workflow": self.workflow.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "best_val": self.best_val,
            "best_step": self.best_step or "",
            "world_size": self.env.world_size,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            D.load_optimizer_state(self.wrapped, self.optimizer, state["optimizer"], self.env)
            self.schedule.load_state_dict(state["schedule"])
            self.workflow.load_state_dict(state["workflow"])
            torch.set_rng_state(state["torch_rng"])
            self.step = int(state["step"])
            self.best_val = float(state["best_val"])
            self.best_step = state["best_step"] or None
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(
                f"{self.resume_from}: the trainer state does not match this run: {exc}"
            ) from None

    # -- one optimizer step ----------------------------------------------------------------------
    def update(self, update: Update) -> dict[str, float]:
        """Forward and backward over the micro-batches, then guard, clip and step.

        Each micro-batch's mean loss is scaled by its share of the global batch's weight
        (times the rank count, which DDP averages away), so the gradient is the whole
        batch's whatever ``grad_accum`` and the number of processes. Returns the record:
        ``train_loss``, the loss module's stats (weighted the same way), ``lr``."""
        world = self.env.world_size
        loss_sum = torch.zeros((), device=self.device)
        stat_sums: dict[str, torch.Tensor] = {}
        last = len(update.micro) - 1
        for i, mb in enumerate(update.micro):
            scale = update.total / (mb.weight * world)  # grad_accum for equal micro-batches
            with D.no_sync(self.wrapped, i == last), self.autocast():
                out = self.forward(*mb.args)
                loss, stats = out if isinstance(out, tuple) else (out, {})
                loss = loss / scale
            loss.backward()
            loss_sum += loss.detach()
            for k, v in stats.items():
                stat_sums[k] = stat_sums.get(k, 0.0) + v.detach().float() / scale
        train_loss = float(D.all_mean(loss_sum, self.env))
        # Before the update, so the weights stay finite: the loss first, then the gradient
        # norm (finite losses can still give NaN gradients).
        self.guard.check_loss(self.step + 1, train_loss)
        self.guard.check_grad(
            self.step + 1, train_loss, grad_norm(self.params, self.cfg.train.grad_clip)
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.schedule.get_last_lr()[0]
        self.schedule.step()
        record = {"train_loss": train_loss}
        record.update({k: float(D.all_mean(v, self.env)) for k, v in stat_sums.items()})
        record.update(update.extra)
        record["lr"] = lr
        return record

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, val_loss: float | None) -> None:
        """Write a checkpoint of the current step (rank 0 writes; all ranks raise together)."""
        weights = D.full_model_state(self.wrapped, self.workflow.saved, self.env)
        weights = {k: v for k, v in weights.items() if k not in self.tied}
        state = self.trainer_state()
        extra = self.workflow.extra_files()  # on every rank: gathering a head is collective
        error: LLMCoreError | None = None
        if self.env.is_main:
            try:
                path = ckpt.save_checkpoint(
                    self.run_dir,
                    self.step,
                    weights,
                    self.cfg,
                    self.workflow.tokenizer,
                    state,
                    extra_files=extra,
                )
                if val_loss is not None and val_loss < self.best_val:
                    self.best_val, self.best_step = val_loss, path.name
                    ckpt.write_atomic(self.run_dir / "ckpt" / "best", path.name + "\n")
                backup_of(self.run_dir / METRICS).unlink(missing_ok=True)  # a newer checkpoint
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
                rewind_metrics(self.run_dir / METRICS, self.step)
        except OSError as exc:
            raise LLMCoreError(f"{self.run_dir}: cannot write the run folder: {exc}") from None

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to ``max_iters``; returns the run folder."""
        try:
            run_dir = self._run()
        except BaseException:
            D.shutdown(self.env, wait=False)
            raise
        finally:
            if self.env.is_main and self.resume_from is not None:
                restore_metrics(self.run_dir / METRICS)  # no newer checkpoint: undo the cut
        D.shutdown(self.env)
        return run_dir

    def _run(self) -> Path:
        error: LLMCoreError | None = None
        try:
            self._prepare_run_dir()
        except LLMCoreError as exc:
            error = exc
        if not D.agree(error is None, self.env):
            raise error or LLMCoreError(f"{self.run_dir}: rank 0 cannot write the run folder")
        self.loggers = build_loggers(self.cfg, self.run_dir) if self.env.is_main else []
        from tqdm.auto import tqdm

        t = self.cfg.train
        bar = tqdm(
            total=t.max_iters,
            initial=self.step,
            disable=not self.progress,
            unit="it",
            dynamic_ncols=True,
        )
        self.say = bar.write if self.progress else (print if self.env.is_main else _quiet)
        self.say(self.summary())
        try:
            if self.resume_from is None:
                for note in self.workflow.notes:
                    self.log(note)
            with StopRequests() as stop:
                self._loop(bar, stop)
        finally:
            bar.close()
            for lg in self.loggers:
                lg.close()
        if self.env.is_main:
            plot_losses(self.run_dir, self._history_for_plot(), self.say)
        return self.run_dir

    def summary(self) -> str:
        """The start-up line: what is trained, in which precision, on how many threads."""
        t, wf = self.cfg.train, self.workflow
        total = sum(p.numel() for p in wf.model.parameters())
        trainable = sum(p.numel() for p in self.params)
        dtype = "float32" if self.amp_dtype is None else f"{str(self.amp_dtype)[6:]} autocast"
        per_step = (
            f"{wf.tokens_per_step:,} tokens per step"
            if wf.tokens_per_step is not None
            else f"{t.batch_size * t.grad_accum:,} examples per step"
        )
        procs = f", {self.env.world_size} processes ({self.env.mode})" if self.env.enabled else ""
        return (
            f"{wf.name}: {total:,} parameters ({trainable:,} trainable), {dtype}, attention "
            f"{self.cfg.model.attention.name}, {torch.get_num_threads()} threads{procs}, "
            f"{per_step} on {self.device}"
        )

    def log(self, record: dict[str, Any]) -> None:
        """Send ``record`` to every logger and remember it."""
        self.history.append(record)
        for lg in self.loggers:
            lg.log(record)

    def _loop(self, bar, stop: StopRequests) -> None:
        t, wf = self.cfg.train, self.workflow
        ckpt_every = t.checkpoint_interval or t.eval_interval
        resumed_at = self.step if self.resume_from is not None else None
        window_start, window_steps = time.perf_counter(), 0
        while True:
            step = self.step
            last = step >= t.max_iters
            val_loss = None
            if (step % t.eval_interval == 0 or last) and step != resumed_at:
                metrics = wf.evaluate(self)
                if metrics:
                    record = {"step": step, **metrics}
                    self.log(record)
                    self.last_metrics.update(record)
                    self.say(wf.describe(step, metrics))
                val_loss = metrics.get("val_loss")
                window_start, window_steps = time.perf_counter(), 0  # eval is not training
            saved = step > 0 and step != resumed_at and (step % ckpt_every == 0 or last)
            if saved:
                self.save(val_loss)
            if last:
                break
            stopping = stop.requested
            if self.env.enabled:  # every rank stops at the same step, or none does
                stopping = not D.agree(not stopping, self.env)
            if stopping:
                self._stop(stop, saved or step == resumed_at)
            record = wf.train_step(self)
            self.step += 1
            window_steps += 1
            bar.update(1)
            first = wf.log_first_step and self.step == 1
            if self.step % t.log_interval == 0 or self.step == t.max_iters or first:
                record = {"step": self.step, **record}
                if wf.tokens_per_step is not None:
                    elapsed = time.perf_counter() - window_start
                    rate = window_steps * wf.tokens_per_step / elapsed if elapsed > 0 else 0.0
                    record["tokens_per_s"] = rate
                self.log(record)
                self.last_metrics.update(record)
                shown = {"loss": f"{record.get('train_loss', math.nan):.4f}"}
                shown["lr"] = f"{record['lr']:.2e}"
                if "tokens_per_s" in record:
                    shown["tok_s"] = f"{record['tokens_per_s']:,.0f}"
                bar.set_postfix(**shown)
                window_start, window_steps = time.perf_counter(), 0

    def _stop(self, stop: StopRequests, saved: bool) -> None:
        """Checkpoint the step boundary reached (unless just done) and stop the run."""
        if not saved:
            self.save(None)
        signum = stop.signum or 15  # another rank was signalled
        raise TrainingInterrupted(
            f"stopped by signal {signum} at step {self.step}; the checkpoint of that step is "
            f"in {self.run_dir / 'ckpt'}: continue with --resume {self.run_dir}",
            128 + signum,
        )

    def _history_for_plot(self) -> list[dict[str, Any]]:
        """What the loggers wrote (the whole run, across resumes) when one of them can say,
        else what this process logged."""
        for lg in self.loggers:
            written = getattr(lg, "records", None)
            if callable(written):
                return list(written())
        return self.history


def _quiet(*_: Any, **__: Any) -> None:
    return None


def backup_of(path: Path) -> Path:
    """Where a resumed run keeps ``path`` as it was until it writes a newer checkpoint."""
    return path.with_name(f".{path.name}.before-resume")


def restore_metrics(path: Path) -> None:
    """Put back the metrics a resumed run cut, when it wrote no newer checkpoint."""
    backup = backup_of(path)
    if backup.exists():
        backup.replace(path)


def rewind_metrics(path: Path, step: int) -> None:
    """Drop the rows logged after ``step`` (the checkpoint resumed from), keeping the file
    as it was beside it until the resumed run writes a newer checkpoint: a rewind that
    fails, or is killed, before that loses no line."""
    restore_metrics(path)  # a previous resume that wrote no checkpoint: its cut is undone
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    ckpt.write_atomic(backup_of(path), text)
    keep = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
        if int(row.get("step", 0)) <= step:
            keep.append(line)
    ckpt.write_atomic(path, "".join(line + "\n" for line in keep))
