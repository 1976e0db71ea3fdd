"""Loading, building and training tokenizers through the ``tokenizer`` plugins."""

from __future__ import annotations

import json
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

from llmcore import plugins
from llmcore.errors import TokenizerError

SAVE_FILE = "llmcore-tokenizer.json"


def load_tokenizer(path: str | PathLike[str], encoding: str | None = None) -> Any:
    """Load a tokenizer from disk.

    A folder written by ``tok.save(path)`` (it holds ``llmcore-tokenizer.json``, whose
    ``type`` names the registered tokenizer) is rebuilt by that plugin; any other path (a
    tiktoken ``.tiktoken`` rank file, a Hugging Face ``tokenizer.json``, a folder with GPT-2's
    ``encoder.json`` and ``vocab.bpe``) is read by the ``bpe`` plugin.
    """
    p = Path(path)
    marker = p / SAVE_FILE if p.is_dir() else (p if p.name == SAVE_FILE else None)
    if marker is not None and marker.exists():
        try:
            kind = json.loads(marker.read_text(encoding="utf-8"))["type"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TokenizerError(f"{marker}: not a saved llmcore tokenizer: {exc}") from None
        cls = plugins.factory("tokenizer", kind)
        return cls.load(marker.parent)
    if not p.exists():
        raise TokenizerError(f"{p}: no such tokenizer file or folder")
    cls = plugins.factory("tokenizer", "bpe")
    return cls.load(p, encoding=encoding) if encoding is not None else cls.load(p)


def train_tokenizer(
    files_or_iterable: Iterable[Any],
    vocab_size: int,
    pattern: str = "cl100k_base",
    special_tokens: Iterable[str] = (),
    **params: Any,
) -> Any:
    """Train a byte-level BPE tokenizer (the ``bpe`` plugin) on files or an iterable of texts."""
    cls = plugins.factory("tokenizer", "bpe")
    return cls.train(
        files_or_iterable,
        vocab_size,
        pattern=pattern,
        special_tokens=tuple(special_tokens),
        **params,
    )
