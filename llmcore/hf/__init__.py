"""Hugging Face interoperability: load HF checkpoints into llmcore and write llmcore models back.

    model, cfg = llmcore.load_hf("path/to/hf-folder", dtype="bfloat16")
    tok = llmcore.load_hf_tokenizer("path/to/hf-folder")
    llmcore.hf.save_hf(model, "out-folder", tok)

Supported ``model_type``: gpt2, llama, mistral, qwen2 (see :mod:`llmcore.hf.archs`). Only local
folders are read; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llmcore.config import Config, TokenizerConfig, check_consistency
from llmcore.errors import TokenizerError
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
        TokenizerError: the folder's tokenizer.json cannot be loaded (before any weight is).
        ConfigError: config.json is not JSON, or names an unsupported model type or option.
    """
    model, cfg, _ = load_hf_parts(path, dtype, device=device, tokenizer=False)
    return model, cfg


def load_hf_parts(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    *,
    device: torch.device | str = "cpu",
    tokenizer: bool = True,
) -> tuple[torch.nn.Module, Config, Any]:
    """``(model, cfg, tokenizer)`` of an HF folder (see :func:`load_hf`).

    The tokenizer the config points at (``tokenizer.json``) is loaded before any weight, so
    one that cannot be read fails the load at once (:class:`TokenizerError` naming the file).
    With ``tokenizer`` True the folder must have one (``load_hf_tokenizer`` reads it); with
    False the third item is the tokenizer.json's tokenizer or None.
    """
    folder = Path(path)
    raw = read_config(folder)
    h = archs.normalize(raw, str(folder / CONFIG_FILE))
    cfg = Config(model=archs.model_config(h))
    check_consistency(cfg, str(folder / CONFIG_FILE))
    tok = None
    if (folder / TOKENIZER_FILE).exists():
        name = tokenizer_class_for(BYTE_LEVEL_BPE).name  # HF model folders are byte-level
        cfg.tokenizer = TokenizerConfig(name, {"path": str(folder / TOKENIZER_FILE)})
    if tokenizer or (folder / TOKENIZER_FILE).exists():
        tok = _tokenizer(folder)
    files = weight_files(folder)
    model = build_empty(cfg.model, resolve_dtype(dtype, files), device)
    load_weights(model, h, files)
    return model.eval(), cfg, tok


def _tokenizer(folder: Path) -> Any:
    try:
        return load_hf_tokenizer(folder)
    except TokenizerError as exc:
        msg = str(exc)  # the readers name the file; say which folder when they do not
        raise TokenizerError(msg if str(folder) in msg else f"{folder}: {msg}") from None


__all__ = ["load_hf", "load_hf_parts", "load_hf_tokenizer", "save_hf", "save_hf_tokenizer"]
