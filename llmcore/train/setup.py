"""Run setup shared by the training workflows: device, run folder, tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from llmcore.config import Config
from llmcore.errors import ConfigError, DataError
from llmcore.tokenizers import tokenizer_from_config
from llmcore.train.data import read_documents


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; other names are passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for, but CUDA is not available")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matmuls in hardware (AVX512-BF16 or AMX on CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.dtype`` on ``device``, or None for plain float32.

    ``auto`` is bfloat16 where the hardware has bfloat16 matmuls (about twice the float32
    throughput on recent CPUs) and float32 elsewhere, where emulated bfloat16 is slower.
    """
    if name == "bfloat16" or (name == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def run_dir_of(cfg: Config, out_dir: str | Path | None) -> Path:
    """Where a run writes: ``--out`` if given, else ``<train.out_dir>/<train.name or source>``."""
    if out_dir is not None:
        return Path(out_dir)
    name = cfg.train.name or Path(cfg.source or "run").stem
    return Path(cfg.train.out_dir) / name


def build_tokenizer(cfg: Config, files: list[Path] | None = None):
    """The configured tokenizer. One that learns its vocabulary from the data (``char``, or
    ``bpe`` given a ``vocab_size``) is trained on ``files``; others are built from their
    params (for example a rank file)."""

    def texts() -> list[str]:
        if not files:
            raise ConfigError(
                f"tokenizer: {cfg.tokenizer.name!r} learns its vocabulary from data, but there is none"
            )
        docs = read_documents(files, cfg.data.jsonl_field)
        if not any(docs):
            raise DataError(f"{', '.join(map(str, files))}: the training data is empty")
        return docs

    return tokenizer_from_config(cfg.tokenizer.name, cfg.tokenizer.params, texts)
