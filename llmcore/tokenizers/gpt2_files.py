"""GPT-2's original vocabulary files: a folder with ``encoder.json`` and ``vocab.bpe``."""

from __future__ import annotations

import json
from pathlib import Path

from llmcore.errors import TokenizerError

from .bytelevel import ranks_of_merges
from .tiktoken_ranks import ENDOFTEXT
from .vocab import Vocabulary

ENCODER_FILE = "encoder.json"
MERGES_FILE = "vocab.bpe"


def is_gpt2_folder(folder: Path) -> bool:
    """Whether ``folder`` holds GPT-2's two vocabulary files."""
    return (folder / ENCODER_FILE).exists() and (folder / MERGES_FILE).exists()


def read_gpt2_folder(folder: Path) -> Vocabulary:
    """The byte-level vocabulary of ``encoder.json`` (token -> id) + ``vocab.bpe`` (merges).

    Raises:
        TokenizerError: a file that cannot be read, or a bad line (named) of ``vocab.bpe``.
    """
    enc_p, bpe_p = folder / ENCODER_FILE, folder / MERGES_FILE
    try:
        vocab = json.loads(enc_p.read_text(encoding="utf-8"))
        lines = bpe_p.read_text(encoding="utf-8").split("\n")
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{folder}: cannot read GPT-2 encoder.json/vocab.bpe: {exc}") from None
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{enc_p}: expected a JSON object token -> id")
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(lines, 1):
        if not line or line.startswith("#version"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(f"{bpe_p}:{lineno}: expected two symbols, got {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    specials = {k: v for k, v in vocab.items() if k == ENDOFTEXT}
    tokens, ranks, ids = ranks_of_merges(vocab, merges, specials, str(folder))
    return Vocabulary(
        tokens,
        ranks,
        specials,
        "gpt2",
        ids=ids,
        encoding="gpt2" if ids is None else None,
        source=str(folder),
    )
