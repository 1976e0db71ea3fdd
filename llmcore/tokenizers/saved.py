"""llmcore's own save format: a folder whose ``llmcore-tokenizer.json`` names the plugin.

Every saved tokenizer folder holds the marker file :data:`SAVE_FILE`, a JSON object whose
``type`` is the registered name of the tokenizer that wrote it; :func:`llmcore.load_tokenizer`
asks that plugin to load the folder. Byte-level BPE tokenizers keep their ranks beside it in
a tiktoken rank file (:func:`write_bpe` / :func:`read_bpe`), so tiktoken can read them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmcore.errors import TokenizerError
from llmcore.ops.bpe import PAT_STR, pattern_family

from .tiktoken_ranks import RANKS_FILE, read_ranks, write_ranks
from .vocab import Vocabulary

SAVE_FILE = "llmcore-tokenizer.json"
FORMAT_VERSION = 1


def marker_of(path: Path) -> Path | None:
    """The marker file of a saved folder (or the marker itself), None if ``path`` is not one."""
    marker = path / SAVE_FILE if path.is_dir() else (path if path.name == SAVE_FILE else None)
    return marker if marker is not None and marker.exists() else None


def write_marker(folder: Path, meta: dict[str, Any]) -> None:
    """Write the marker; ``meta["type"]`` must be the tokenizer's registered name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SAVE_FILE).write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def read_marker(path: Path) -> dict[str, Any]:
    """The marker of the saved folder ``path`` (or of the marker file itself).

    Raises:
        TokenizerError: the marker is missing, not JSON, has no ``type``, or was written by
            a newer llmcore.
    """
    marker = path / SAVE_FILE if path.is_dir() else path
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
        kind = meta["type"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokenizerError(f"{marker}: not a saved llmcore tokenizer: {exc}") from None
    if not isinstance(kind, str):
        raise TokenizerError(f"{marker}: 'type' must name a tokenizer plugin, got {kind!r}")
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise TokenizerError(
            f"{marker}: format_version {meta['format_version']} is newer than this llmcore"
        )
    return meta


def write_bpe(folder: Path, name: str, vocab: Vocabulary) -> None:
    """Save a byte-level BPE vocabulary as the tokenizer ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    order = write_ranks(folder / RANKS_FILE, vocab.tokens, vocab.ranks)
    meta: dict[str, Any] = {
        "type": name,
        "format_version": FORMAT_VERSION,
        "pattern": vocab.pattern,
        "pat_str": PAT_STR.get(str(vocab.pattern)),  # None for a regex sequence
        "encoding": vocab.encoding,
        "ranks_file": RANKS_FILE,
        "special_tokens": vocab.special_tokens,
    }
    if vocab.ids is not None:
        meta["ids"] = [vocab.ids[i] for i in order]
    meta.update(vocab.extra)
    write_marker(folder, meta)


def read_bpe(folder: Path) -> Vocabulary:
    """The byte-level BPE vocabulary of a folder written by :func:`write_bpe`."""
    meta = read_marker(folder)
    marker = folder / SAVE_FILE
    regexes = meta.get("split_regexes")
    fam = str(meta.get("pattern")) if regexes else pattern_family(str(meta.get("pattern")))
    keys = (
        "split_regexes",
        "added_tokens",
        "missing_bytes",
        "bos_id",
        "eos_id",
        "add_bos",
        "add_eos",
    )
    extra = {k: meta[k] for k in keys if k in meta}
    tokens, ranks = read_ranks(folder / str(meta.get("ranks_file", RANKS_FILE)))
    ids = meta.get("ids")
    if ids is not None and len(ids) != len(tokens):
        raise TokenizerError(f"{marker}: 'ids' has {len(ids)} entries for {len(tokens)} tokens")
    specials = meta.get("special_tokens") or {}
    if not isinstance(specials, dict):
        raise TokenizerError(f"{marker}: special_tokens must be an object")
    return Vocabulary(
        tokens,
        ranks,
        {str(k): int(v) for k, v in specials.items()},
        fam,
        ids=ids,
        encoding=meta.get("encoding"),
        source=str(folder),
        extra=extra,
    )
