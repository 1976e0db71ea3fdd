"""What every fine-tuning workflow shares: its resolved config, the base model, the chat
format, the records, and sampled-answer scores. The loop itself is the training engine's
(:mod:`llmcore.train.engine`)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmcore.components import build_sampler, create
from llmcore.config import Config, load_config, read_config_file
from llmcore.errors import ConfigError, DataError, TrainingError
from llmcore.finetune.chat import chat_for, chat_template_of
from llmcore.finetune.data import Record, Skipped, field_of, messages_of, read_jsonl, split
from llmcore.finetune.models import load_finetuned, read_run_config
from llmcore.generation import generate
from llmcore.train import distributed as D
from llmcore.train.workflow import MicroBatch, Shuffled, Update, Workflow, split_rows

if TYPE_CHECKING:
    from llmcore.train.engine import Engine

#: what a held-out record asks: a prompt text, or the turns of a conversation before its answer
Prompt = str | list[dict]

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


class FinetuneWorkflow(Workflow):
    """What the fine-tuning workflows share on the engine: the base model, its chat format,
    the records and their split, samplers and the rewards that score sampled answers.

    Subclasses build their modules and data in :meth:`prepare`."""

    name = "finetune"

    def setup(self, engine: Engine) -> None:
        cfg = engine.cfg
        self.cfg, self.device, self.env = cfg, engine.device, engine.env
        self.progress = engine.progress
        ft = cfg.finetune
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        self.sample_gen = torch.Generator(device=self.device).manual_seed(cfg.train.seed + 1)
        self.base = load_finetuned(ft.base, device=self.device, merge=True)
        self.tokenizer = self.base.tokenizer
        self.chat = chat_for(self.base, cfg)
        block = cfg.model.block_size
        self.max_len = min(ft.max_len or block, block)
        self.skipped = Skipped()
        self.batches: Shuffled | None = None  # set by prepare() where examples are shuffled
        self.eval_prompts: list[str] = []
        if not ft.data:
            raise ConfigError(
                f"finetune.data: not set; {self.name} reads its records from a JSONL file or a "
                "folder of them (SFT: {prompt, response} or {messages}; reward model and DPO: "
                "{prompt, chosen, rejected}; PPO: {prompt}), e.g. --set finetune.data=data.jsonl"
            )
        self.records: list[Record] = read_jsonl(ft.data)
        self.train_records, self.val_records = split(self.records, ft.val_fraction)
        self.samplers, self.decoder = build_sampler(cfg)
        self.metrics = [
            (c.name, create("reward", c, f"finetune.metrics[{i}]"))
            for i, c in enumerate(ft.metrics)
        ]
        D.local_batch(cfg.train.batch_size, self.env)  # the batch must split over the ranks
        self.prepare(engine)

    def prepare(self, engine: Engine) -> None:
        """Build the method's modules and data (``model``, ``loss_module``, ``saved``)."""
        raise NotImplementedError

    # -- model and data ---------------------------------------------------------------------------
    def adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        """Apply the configured adapter (if any): only its parameters stay trainable."""
        comp = self.cfg.finetune.adapter
        if comp is None:
            return model
        return create("adapter", comp, "finetune.adapter").apply(model)

    def shuffled(self, n: int) -> Shuffled:
        """Random batches of ``batch_size * grad_accum`` examples (one update's worth)."""
        t = self.cfg.train
        return Shuffled(n, t.batch_size * t.grad_accum, self.gen)

    def micro_batches(self, examples: list, weight_of, collate) -> Update:
        """The update of a global batch of ``examples``: ``grad_accum`` micro-batches, each
        this rank's share, collated to tensors on the device and weighted by ``weight_of``."""
        t = self.cfg.train
        parts = split_rows(examples, t.grad_accum, self.env.rank, self.env.world_size)
        micro = [MicroBatch(collate(p), float(sum(map(weight_of, p)))) for p in parts if p]
        return Update(micro, float(sum(map(weight_of, examples))))

    def state_dict(self) -> dict[str, Any]:
        state = {"generator": self.gen.get_state(), "sample_generator": self.sample_gen.get_state()}
        if self.batches is not None:  # the data order of the methods that shuffle examples
            state["batches"] = self.batches.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])
        self.sample_gen.set_state(state["sample_generator"])
        if self.batches is not None:
            self.batches.load_state_dict(state["batches"])

    # -- notes ------------------------------------------------------------------------------------
    def note(self, record: dict[str, Any], message: str) -> None:
        """A record logged at step 0 of a fresh run, and its message printed now."""
        self.notes.append({"step": 0, **record})
        if self.env.is_main:
            print(f"{self.name}: {message}", file=sys.stderr)

    def note_skipped(self) -> None:
        """Note how many examples truncation left without an answer (and where)."""
        if self.skipped.truncated:
            where = ", ".join(self.skipped.where)
            self.note(
                {"skipped_examples": self.skipped.truncated},
                f"skipped {self.skipped.truncated} example(s) that truncation to "
                f"{self.max_len} tokens leaves without an answer (first: {where})",
            )

    # -- sampled answers -------------------------------------------------------------------------
    def prompt_texts(self, records: list[Record]) -> list[Prompt]:
        """What each held-out record asks: its ``prompt`` text, or for a ``messages`` record
        the conversation before its last assistant answer (which the model is to write)."""
        out: list[Prompt] = []
        for r in records:
            if "messages" not in r.data:
                out.append(field_of(r, "prompt"))
                continue
            history = list(messages_of(r))
            while history and history[-1].get("role") == "assistant":
                history.pop()
            if not history:
                raise DataError(f"{r.where}: field 'messages' holds no turn before the answer")
            out.append(history)
        return out

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The ids an answer to ``prompt`` follows: the chat text up to the assistant marker."""
        if isinstance(prompt, str):
            return self.chat.prompt_text(prompt)
        return self.chat.prompt(prompt)

    def answerable(self, prompts: list[Prompt], what: str) -> list[Prompt]:
        """The prompts whose chat text leaves room in the context for an answer; the others
        are dropped, counted in the log as ``skipped_<what>``."""
        limit = self.cfg.model.block_size
        keep = [p for p in prompts if len(self.prompt_ids(p)) < limit]
        if len(keep) < len(prompts):
            dropped = len(prompts) - len(keep)
            self.note(
                {f"skipped_{what}": dropped},
                f"skipped {dropped} {what} whose prompt fills the context of {limit} tokens",
            )
        return keep

    def sample(
        self, model, prompts: list[Prompt], max_new_tokens: int | None = None
    ) -> tuple[list[list[int]], list[str]]:
        """Sampled answers (ids ending with the end marker unless cut at the token limit, text
        without it) to ``prompts``, by the generation engine with the configured samplers and
        decoder. Each call draws the engine's seed from the run's sampling generator, so
        successive calls differ and a run is reproducible."""
        prompt_ids = [self.prompt_ids(p) for p in prompts]
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

    def score_samples(self, engine: Engine, model) -> dict[str, float]:
        """Mean of each ``finetune.metrics`` reward over answers sampled for held-out prompts
        by ``model`` (a part of the engine's modules). Rank 0 samples and scores, with the
        weights gathered under FSDP; every rank gets the means."""
        n = self.cfg.finetune.eval_samples
        if not self.metrics or n <= 0 or not self.eval_prompts:
            return {}
        prompts = [self.eval_prompts[i % len(self.eval_prompts)] for i in range(n)]

        def scored() -> dict[str, float]:
            _, texts = self.sample(model, prompts)
            asked = [p if isinstance(p, str) else _last_user_text(p) for p in prompts]
            out = {}
            for name, fn in self.metrics:
                scores = check_scores(fn(asked, texts), len(texts), name, texts)
                out[f"sample_{name}"] = sum(scores) / len(scores)
            return out

        return D.gathered(engine.wrapped, self.env, D.on_main, self.env, scored)


def _last_user_text(messages: list[dict]) -> str:
    """What a conversation's last user turn says: the prompt a reward function is shown."""
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return str(msg.get("content", ""))
    return ""


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


def run_workflow(
    cfg: Config,
    workflow: FinetuneWorkflow,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: str | Path | None = None,
) -> tuple[Path, dict]:
    """Run ``workflow`` on the training engine; returns the run folder and its last metrics
    (the last evaluation's, over the last logged training step's)."""
    from llmcore.train.engine import Engine

    engine = Engine(cfg, workflow, out_dir=out_dir, resume=resume, progress=progress)
    run_dir = engine.run()
    return run_dir, engine.last_metrics
