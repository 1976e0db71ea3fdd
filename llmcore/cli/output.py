"""The ``--out`` of a command that writes a folder: never silently replaced, never half-written.

A command writes into a hidden temporary sibling of ``--out`` and the sibling is renamed into
place only when everything is written, so a failure at any moment leaves ``--out`` as it was
(absent, or the old folder). An existing ``--out`` is refused unless ``--force``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmcore.errors import LLMCoreError


def check_free(out: Path, *, force: bool, error: type[LLMCoreError] = LLMCoreError) -> None:
    """``error`` naming ``out`` when it exists (an empty folder counts as free) and not ``force``."""
    if force or not (out.exists() or out.is_symlink()):
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return
    raise error(f"{out}: already exists; pass --force to replace it, or choose another --out")


@contextmanager
def replacing(
    out: str | Path, *, force: bool, error: type[LLMCoreError] = LLMCoreError
) -> Iterator[Path]:
    """Yield a temporary folder to write ``out``'s contents into; on success it replaces ``out``.

    The check for an existing ``out`` comes first, so nothing is computed for a refused run."""
    out = Path(out)
    check_free(out, force=force, error=error)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    except OSError as exc:
        raise error(f"{out}: cannot write here: {exc}") from None
    try:
        yield tmp
        _move_into_place(tmp, out)
    except OSError as exc:
        raise error(f"{out}: writing failed ({exc}); nothing was changed") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old ``out`` is moved aside first and deleted after, so
    a failure in between leaves either the old or the new one under the name."""
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-")) / out.name
    os.replace(out, aside)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(aside, out)
        raise
    finally:
        shutil.rmtree(aside.parent, ignore_errors=True)
