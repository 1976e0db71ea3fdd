"""``llmcore.load``: one loader for llmcore runs, Hugging Face folders and GGUF files.

What a path is, is decided by what it holds: a file starting with the GGUF magic (or named
``*.gguf``) is a GGUF file; a folder with ``config.json`` and no llmcore ``config.yaml`` is a
Hugging Face checkpoint; anything else is an llmcore run or checkpoint folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llmcore.checkpoint import CONFIG_FILE, LoadedCheckpoint, load_checkpoint
from llmcore.config import Config
from llmcore.errors import ConfigError
from llmcore.gguf.reader import MAGIC

HF_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def source_kind(path: str | Path) -> str:
    """``"gguf"``, ``"hf"`` or ``"run"``: how :func:`load` reads ``path``."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return "gguf"
        with open(p, "rb") as f:
            if f.read(4) == MAGIC:
                return "gguf"
        return "run"
    if (p / HF_CONFIG).is_file() and not (p / CONFIG_FILE).exists():
        return "hf"
    return "run"


def load(
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str = "cpu",
    *,
    quantized: bool = False,
) -> LoadedCheckpoint:
    """Load a model with its tokenizer from a run folder, a checkpoint folder, a Hugging
    Face folder or a ``.gguf`` file.

    Args:
        path: the run/checkpoint folder, HF folder or GGUF file.
        dtype: the parameters' dtype: None (as trained for a run; float32 for HF and GGUF),
            ``"auto"`` (as stored), a name (``"bfloat16"``) or a ``torch.dtype``.
        device: where the parameters end up.
        quantized: for a GGUF file, keep its quantized matrices as they are stored
            (:mod:`llmcore.quant`; inference only). Other sources hold no quantized weights:
            ``True`` is an error there (``llmcore quantize`` writes a quantized GGUF file).

    Returns:
        a :class:`~llmcore.checkpoint.LoadedCheckpoint`. For HF folders and GGUF files its
        ``chat_template`` is the model's own and ``stop_ids`` the ids that end its turn
        (``generation_config.json``'s eos ids, else config.json's; GGUF's eos/eot/eom ids).

    Raises:
        CheckpointError, ConfigError, TokenizerError: naming the file and what is wrong.
    """
    kind = source_kind(path)
    if kind == "gguf":
        from llmcore.gguf import load_gguf

        return load_gguf(path, dtype, device=device, quantized=quantized)
    if quantized:
        raise ConfigError(
            f"{path}: quantized=True needs a GGUF file, and this is {'a Hugging Face folder' if kind == 'hf' else 'an llmcore run'}; "
            f"write one with `llmcore quantize {path} --type q8_0 --out model.gguf`"
        )
    if kind == "hf":
        return _load_hf(Path(path), dtype, device)
    loaded = load_checkpoint(path, device=device)
    if dtype not in (None, "auto"):
        from llmcore.hf.loading import resolve_dtype

        loaded.model.to(resolve_dtype(dtype, {}))
    return loaded


def read_config(path: str | Path) -> Config:
    """The llmcore config of what :func:`load` would load, without reading any weight."""
    kind = source_kind(path)
    if kind == "gguf":
        from llmcore.gguf import archs
        from llmcore.gguf.reader import GGUFFile

        with GGUFFile(path) as f:
            return Config(model=archs.hf_archs.model_config(archs.normalized(f)))
    if kind == "hf":
        from llmcore.hf import archs
        from llmcore.hf.loading import read_config as read_hf_config

        folder = Path(path)
        return Config(
            model=archs.model_config(
                archs.normalize(read_hf_config(folder), str(folder / HF_CONFIG))
            )
        )
    from llmcore.finetune.models import read_run_config

    return read_run_config(path)[1]


def _load_hf(folder: Path, dtype: Any, device: Any) -> LoadedCheckpoint:
    from llmcore.hf import load_hf_parts

    template = chat_template(folder)  # bad JSON fails before the weights are read
    stops = stop_ids(folder)
    model, cfg, tok = load_hf_parts(folder, dtype, device=device)
    return LoadedCheckpoint(folder, cfg, model, tok, 0, template, stops)


def _json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a JSON object, found {type(data).__name__}")
    return data


def chat_template(folder: Path) -> str | None:
    """The Jinja chat template of an HF folder (see
    :func:`llmcore.tokenizers.chat_template.read_chat_template`); None when it has none."""
    from llmcore.tokenizers.chat_template import read_chat_template

    return read_chat_template(folder)


def stop_ids(folder: Path) -> tuple[int, ...]:
    """The eos ids of an HF folder: ``generation_config.json``'s ``eos_token_id`` (an int
    or a list), else ``config.json``'s; empty when neither has one."""
    for name in (GENERATION_CONFIG, HF_CONFIG):
        file = folder / name
        value = _json(file).get("eos_token_id")
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ConfigError(
                f"{file}: eos_token_id: expected an int or a list of ints, found {value!r}"
            )
        return tuple(dict.fromkeys(values))
    return ()
