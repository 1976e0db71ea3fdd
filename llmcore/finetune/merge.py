"""Merging a run's adapter into its base weights: a plain checkpoint any tool can load."""

from __future__ import annotations

from pathlib import Path

from llmcore import checkpoint as ckpt
from llmcore.config import dump_yaml
from llmcore.errors import CheckpointError
from llmcore.finetune.models import load_finetuned, read_run_config


def merge_lora(run: str | Path, out: str | Path) -> Path:
    """Write the merged model of the adapter run ``run`` as a checkpoint of run ``out``."""
    folder, cfg = read_run_config(run)
    if cfg.finetune.adapter is None:
        raise CheckpointError(f"{folder}: the run has no adapter (finetune.adapter) to merge")
    if (Path(out) / "ckpt").exists():
        raise CheckpointError(f"{out}: already holds checkpoints; choose another --out")
    loaded = load_finetuned(folder, merge=True)  # config's adapter is cleared
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ckpt.CONFIG_FILE).write_text(dump_yaml(loaded.config), encoding="utf-8")
    return ckpt.save_checkpoint(out, loaded.step, loaded.model, loaded.config, loaded.tokenizer)
