"""What every fine-tuning run shares: its resolved config, the run folder, the base model,
the chat format, optimizer and schedule, metric loggers, checkpoints and sampled-answer
scores."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch

from llmcore import checkpoint as ckpt
from llmcore.components import (
    build_loggers,
    build_optimizer,
    build_sampler,
    build_schedule,
    create,
    validate_components,
)
from llmcore.config import Config, dump_yaml, load_config, read_config_file
from llmcore.errors import ConfigError, LLMCoreError, TrainingError
from llmcore.finetune.chat import Chat, chat_template_of
from llmcore.finetune.data import Record, Skipped, field_of, read_jsonl, split
from llmcore.finetune.models import load_finetuned, read_run_config
from llmcore.generation import generate
from llmcore.train.setup import resolve_device, run_dir_of

#: sections a fine-tuning config may hold; the model and tokenizer come from the base run.
SECTIONS = ("tokenizer", "train", "generate", "finetune")


def finetune_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """The resolved config of a fine-tuning run: the base run's model and tokenizer with the
    file's ``train``, ``generate`` and ``finetune`` sections (and chat template, if set)."""
    if path is not None and Path(path).exists():
        raw = read_config_file(path)
        extra = [k for k in raw if k not in SECTIONS]
        if extra:
            raise ConfigError(
                f"{path}: {extra[0]}: not allowed in a fine-tuning config (the model and data come "
                f"from finetune.base and finetune.data); allowed sections: {', '.join(SECTIONS)}"
            )
        tok = raw.get("tokenizer") or {}
        if any(k != "chat_template" for k in tok):
            raise ConfigError(
                f"{path}: tokenizer: only tokenizer.chat_template may be set; the tokenizer comes "
                "from finetune.base"
            )
    user = load_config(path, overrides) if path is not None else load_config(None, overrides)
    if not user.finetune.base:
        raise ConfigError(f"{user.source}: finetune.base: name the run to start from")
    _, base_cfg = read_run_config(user.finetune.base)
    cfg = base_cfg
    cfg.train, cfg.generate, cfg.finetune = user.train, user.generate, user.finetune
    cfg.tokenizer.chat_template = (
        user.tokenizer.chat_template or base_cfg.tokenizer.chat_template or chat_template_of(cfg)
    )
    cfg.source = user.source
    return cfg


class Session:
    """One fine-tuning run of ``cfg``; ``kind`` is sft, reward, dpo or ppo."""

    def __init__(
        self, cfg: Config, kind: str, *, out_dir: str | Path | None = None, progress: bool = True
    ) -> None:
        validate_components(cfg)
        self.cfg, self.kind, self.progress = cfg, kind, progress
        ft = cfg.finetune
        self.device = resolve_device(cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        self.sample_gen = torch.Generator(device=self.device).manual_seed(cfg.train.seed + 1)
        self.run_dir = run_dir_of(cfg, out_dir)
        if (self.run_dir / "ckpt").exists():
            raise LLMCoreError(
                f"{self.run_dir}: the run folder already holds checkpoints; choose another --out"
            )
        self.base = load_finetuned(ft.base, device=self.device, merge=True)
        self.tokenizer = self.base.tokenizer
        self.chat = Chat(chat_template_of(cfg), self.tokenizer)
        block = cfg.model.block_size
        self.max_len = min(ft.max_len or block, block)
        self.skipped = Skipped()
        self.eval_prompts: list[str] | None = None  # held-out prompts that fit, on first use
        self.records: list[Record] = read_jsonl(ft.data) if ft.data else []
        self.train_records, self.val_records = split(self.records, ft.val_fraction)
        self.samplers, self.decoder = build_sampler(cfg)
        self.metrics = [
            (c.name, create("reward", c, f"finetune.metrics[{i}]"))
            for i, c in enumerate(ft.metrics)
        ]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
        self.loggers = build_loggers(cfg, self.run_dir)

    # -- model and optimisation -------------------------------------------------------------------
    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        """Apply the configured adapter (if any): only its parameters stay trainable."""
        comp = self.cfg.finetune.adapter
        if comp is None:
            return model
        return create("adapter", comp, "finetune.adapter").apply(model)

    def optimizer(self, module: torch.nn.Module):
        """Optimizer and schedule of ``train`` over the trainable parameters of ``module``."""
        opt = build_optimizer(self.cfg, module)
        return opt, build_schedule(self.cfg, opt)

    def step(self, loss: torch.Tensor, module: torch.nn.Module, opt, schedule) -> float:
        """Backward, clip, optimizer and schedule step; returns the loss (finite or an error)."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"{self.kind}: the loss became {value}; lower the learning rate")
        loss.backward()
        clip = self.cfg.train.grad_clip
        if clip > 0:
            params = [p for p in module.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        schedule.step()
        return value

    def batches(self, n: int, batch_size: int):
        """Endless random minibatches of indices into ``n`` examples (epoch by epoch)."""
        while True:
            order = torch.randperm(n, generator=self.gen).tolist()
            for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
                yield order[i : i + batch_size]

    # -- logging, saving -----------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log(record)
        if self.progress:
            shown = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
            )
            print(f"{self.kind}: {shown}", file=sys.stderr)

    def note_skipped(self) -> None:
        """Log how many examples truncation left without an answer (and where)."""
        if self.skipped.truncated:
            where = ", ".join(self.skipped.where)
            self.log({"step": 0, "skipped_examples": self.skipped.truncated})
            print(
                f"{self.kind}: skipped {self.skipped.truncated} example(s) that truncation to "
                f"{self.max_len} tokens leaves without an answer (first: {where})",
                file=sys.stderr,
            )

    def save(self, model: torch.nn.Module, step: int) -> Path:
        path = ckpt.save_checkpoint(self.run_dir, step, model, self.cfg, self.tokenizer)
        ckpt.prune_checkpoints(self.run_dir, self.cfg.train.keep_last)
        return path

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()

    # -- sampled answers -------------------------------------------------------------------------
    def prompt_texts(self, records: list[Record]) -> list[str]:
        return [field_of(r, "prompt") for r in records]

    def answerable(self, prompts: list[str], what: str) -> list[str]:
        """The prompts whose chat text leaves room in the context for an answer; the others
        are dropped, counted in the log as ``skipped_<what>``."""
        limit = self.cfg.model.block_size
        keep = [p for p in prompts if len(self.chat.prompt_text(p)) < limit]
        if len(keep) < len(prompts):
            dropped = len(prompts) - len(keep)
            self.log({"step": 0, f"skipped_{what}": dropped})
            print(
                f"{self.kind}: skipped {dropped} {what} whose prompt fills the context of "
                f"{limit} tokens",
                file=sys.stderr,
            )
        return keep

    def sample(
        self, model, prompts: list[str], max_new_tokens: int | None = None
    ) -> tuple[list[list[int]], list[str]]:
        """Sampled answers (ids ending with the end marker unless cut at the token limit, text
        without it) to ``prompts``, by the generation engine with the configured samplers and
        decoder. Each call draws the engine's seed from the run's sampling generator, so
        successive calls differ and a run is reproducible."""
        prompt_ids = [self.chat.prompt_text(p) for p in prompts]
        room = self.cfg.model.block_size - max(len(p) for p in prompt_ids)
        n = max_new_tokens or self.cfg.finetune.ppo.max_new_tokens
        gen = self.sample_gen
        seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))
        answers = generate(
            model,
            self.tokenizer,
            prompt_ids,
            max_new_tokens=max(1, min(n, room)),
            samplers=self.samplers,
            decoder=self.decoder,
            seed=seed,
            end_ids=self.chat.end_ids,
            eot=False,  # an answer ends at the chat template's end marker only
        )
        ids = [a.ids for a in answers]
        texts = [self.tokenizer.decode(self.chat.strip_end(a)[0]) for a in ids]
        return ids, texts

    def score_samples(self, model) -> dict[str, float]:
        """Mean of each ``finetune.metrics`` reward over answers sampled for held-out prompts."""
        n = self.cfg.finetune.eval_samples
        if self.eval_prompts is None:
            self.eval_prompts = self.answerable(self.prompt_texts(self.val_records), "eval_prompts")
        if not self.metrics or n <= 0 or not self.eval_prompts:
            return {}
        prompts = [self.eval_prompts[i % len(self.eval_prompts)] for i in range(n)]
        _, texts = self.sample(model, prompts)
        out = {}
        for name, fn in self.metrics:
            scores = check_scores(fn(prompts, texts), len(texts), name, texts)
            out[f"sample_{name}"] = sum(scores) / len(scores)
        return out


def check_scores(scores, n: int, name: str, responses: list[str]) -> list[float]:
    """The scores of a reward function, checked: one finite number per answer."""
    scores = [float(s) for s in scores]
    if len(scores) != n:
        raise TrainingError(f"reward {name!r} returned {len(scores)} scores for {n} answers")
    for i, s in enumerate(scores):
        if not math.isfinite(s):
            raise TrainingError(
                f"reward {name!r} returned {s} for answer {i} ({responses[i][:60]!r}); "
                "the step is rejected and the model left unchanged"
            )
    return scores
