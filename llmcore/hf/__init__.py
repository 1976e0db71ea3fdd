"""Hugging Face interoperability: load HF checkpoints into llmcore and write llmcore models back.

    model, cfg = llmcore.load_hf("path/to/hf-folder", dtype="bfloat16")
    tok = llmcore.load_hf_tokenizer("path/to/hf-folder")
    llmcore.hf.save_hf(model, "out-folder", tok)

Supported ``model_type``: gpt2, llama, mistral, qwen2 (see :mod:`llmcore.hf.archs`). Only local
folders are read; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmcore.config import Config, TokenizerConfig, check_consistency
from llmcore.hf import archs
from llmcore.hf.export import save_hf
from llmcore.hf.loading import (
    CONFIG_FILE,
    build_empty,
    load_weights,
    read_config,
    resolve_dtype,
    weight_files,
)
from llmcore.tokenizers import (
    BYTE_LEVEL_BPE,
    TOKENIZER_FILE,
    load_hf_tokenizer,
    save_hf_tokenizer,
    tokenizer_class_for,
)


def load_hf(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    *,
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, Config]:
    """Load a Hugging Face checkpoint folder as an llmcore Transformer.

    Args:
        path: a local folder with ``config.json`` and ``model.safetensors`` (or shards with
            ``model.safetensors.index.json``).
        dtype: the parameters' dtype: None (float32), ``"auto"`` (as stored), a name
            (``"bfloat16"``) or a ``torch.dtype``. Weights are converted tensor by tensor.
        device: where the parameters are allocated.

    Returns:
        ``(model, cfg)``: the model in eval mode and an llmcore :class:`~llmcore.config.Config`
        whose ``model`` section describes it (its ``tokenizer`` names the folder's
        ``tokenizer.json`` when there is one).

    Raises:
        CheckpointError: missing folder, config or weights; a missing shard; a tensor that is
            missing, unexpected or of the wrong shape.
        ConfigError: config.json is not JSON, or names an unsupported model type or option.
    """
    folder = Path(path)
    raw = read_config(folder)
    h = archs.normalize(raw, str(folder / CONFIG_FILE))
    cfg = Config(model=archs.model_config(h))
    check_consistency(cfg, str(folder / CONFIG_FILE))
    if (folder / TOKENIZER_FILE).exists():
        name = tokenizer_class_for(BYTE_LEVEL_BPE).name  # HF model folders are byte-level
        cfg.tokenizer = TokenizerConfig(name, {"path": str(folder / TOKENIZER_FILE)})
    files = weight_files(folder)
    model = build_empty(cfg.model, resolve_dtype(dtype, files), device)
    load_weights(model, h, files)
    return model.eval(), cfg


__all__ = ["load_hf", "load_hf_tokenizer", "save_hf", "save_hf_tokenizer"]
