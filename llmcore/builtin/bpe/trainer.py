"""Training wrapper: the merges are learned in C++ (:func:`llmcore.ops.bpe.train`)."""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike, fspath
from pathlib import Path
from typing import Any

from llmcore.errors import TokenizerError
from llmcore.ops import bpe as ops
from llmcore.tokenizers import Vocabulary


def _names_a_file(text: str) -> bool:
    """Whether ``text`` is the path of an existing file. A long line of text is not: the OS
    refuses names over its limit (ENAMETOOLONG), which must not fail the training call."""
    if len(text) >= 4096 or "\n" in text or "\0" in text:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _split_inputs(src: Any) -> tuple[list[str], list[str]]:
    """-> (texts, files). A path (str naming an existing file, or PathLike) is a file; a
    list whose items are all PathLike or all existing-file strings is a list of files;
    any other iterable of str is a list of texts."""
    if isinstance(src, PathLike):
        return [], [fspath(src)]
    if isinstance(src, str):
        if _names_a_file(src):
            return [], [src]
        raise TokenizerError(f"{src}: no such training file (pass a list to train on texts)")
    items = list(src)
    if items and all(isinstance(x, PathLike) for x in items):
        files = [fspath(x) for x in items]
    elif items and all(isinstance(x, str) for x in items) and all(_names_a_file(x) for x in items):
        files = list(items)
    else:
        for x in items:
            if not isinstance(x, str):
                raise TokenizerError(
                    f"training input must be str texts or file paths, got {type(x).__name__}"
                )
        return items, []
    for f in files:
        if not Path(f).is_file():
            raise TokenizerError(f"{f}: no such training file")
    return [], files


def train(
    cls: Any,
    files_or_iterable: Any,
    vocab_size: int,
    pattern: str = "cl100k_base",
    special_tokens: Iterable[str] = (),
    *,
    num_threads: int = 0,
    progress: bool | None = None,
    out: str | PathLike[str] | None = None,
) -> Any:
    fam = ops.pattern_family(pattern)
    specials = list(dict.fromkeys(special_tokens))
    if any(not isinstance(s, str) or not s for s in specials):
        raise TokenizerError("special tokens must be non-empty strings")
    n_new = int(vocab_size) - 256 - len(specials)
    if n_new < 0:
        raise TokenizerError(
            f"vocab_size {vocab_size} is below 256 bytes + {len(specials)} special tokens"
        )
    texts, files = _split_inputs(files_or_iterable)
    bar = None
    cb = None
    if progress or (progress is None and n_new >= 4096):
        from tqdm.auto import tqdm

        bar = tqdm(total=n_new, desc="bpe merges", unit="tok", leave=False)

        def cb(done: int, total: int) -> None:
            bar.update(done - bar.n)

    try:
        vocab, merges = ops.train(texts, files, n_new, fam, num_threads, cb)
    finally:
        if bar is not None:
            bar.close()
    n = len(vocab)
    special_map = {s: n + i for i, s in enumerate(specials)}
    data = Vocabulary(
        list(vocab),
        list(range(n)),
        special_map,
        fam,
        source="trained",
        extra={"trained": {"vocab_size_requested": int(vocab_size), "merges": len(merges)}},
    )
    tok = cls(_data=data)
    tok.merges = merges
    if out is not None:
        tok.save(out)
    return tok
