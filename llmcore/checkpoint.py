"""Checkpoints: self-contained folders, written atomically.

    <run>/ckpt/<step>/model.safetensors   weights
    <run>/ckpt/<step>/trainer_state.pt    optimizer, schedule, RNG, data position, step
                                          (tensors and plain data only: loaded with weights_only=True)
    <run>/ckpt/<step>/config.yaml         the resolved config
    <run>/ckpt/<step>/tokenizer/          the tokenizer
    <run>/ckpt/latest                     the newest complete checkpoint's folder name

A checkpoint is written into a temporary folder and renamed into place; ``latest`` is replaced
last, so a run killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmcore.config import Config, config_from_dict, dump_yaml, read_config_file
from llmcore.errors import CheckpointError, CheckpointWarning, LLMCoreError

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.yaml"
TOKENIZER_DIR = "tokenizer"
LATEST = "latest"


def step_dir_name(step: int) -> str:
    return f"{step:08d}"


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors with tied weights stored once (safetensors refuses shared memory)."""
    state, seen = {}, {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride()) if tensor.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = name
        state[name] = tensor.detach().contiguous()
    return state


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module | dict[str, torch.Tensor],
    cfg: Config,
    tokenizer: Any,
    trainer_state: dict[str, Any] | None = None,
    keep: set[str] | None = None,
    extra_files: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a complete checkpoint for ``step`` and point ``latest`` at it.

    ``model`` is a module or its tensors (tied weights once); ``extra_files`` are further
    safetensors files of the same folder (a reward model's head), written before it is
    renamed into place. Raises CheckpointError when the
    folder cannot be written (read-only, disk full); the previous checkpoint stays intact."""
    ckpt_root = Path(run_dir) / "ckpt"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=".tmp-"))
    except OSError as exc:
        raise CheckpointError(f"{ckpt_root}: cannot write a checkpoint: {exc}") from None
    final = ckpt_root / step_dir_name(step)
    try:
        weights = model if isinstance(model, dict) else model_state(model)
        weights = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        tokenizer.save(tmp / TOKENIZER_DIR)
        meta = {
            "step": str(step),
            "tokenizer_sha256": _tree_digest(tmp / TOKENIZER_DIR),
            "tokenizer_vocab_size": str(tokenizer.vocab_size),
        }
        save_file(weights, str(tmp / MODEL_FILE), metadata=meta)
        (tmp / CONFIG_FILE).write_text(dump_yaml(cfg), encoding="utf-8")
        for name, tensors in (extra_files or {}).items():
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / name)
            )
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE_FILE)
        _fsync_tree(tmp)
        old = None
        if final.exists():  # the same step again: move the old copy aside, drop it after
            old = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=".tmp-old-"))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        write_atomic(ckpt_root / LATEST, final.name + "\n")
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"{final}: writing the checkpoint failed ({exc}); the previous checkpoint is intact"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _tree_digest(root: Path) -> str:
    """sha256 over a folder's file names and contents (the tokenizer beside the weights)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def check_tokenizer(ckpt: Path) -> None:
    """CheckpointError when the tokenizer folder is not the one the weights were trained with."""
    meta = _metadata(ckpt / MODEL_FILE)
    want = meta.get("tokenizer_sha256")
    if want and _tree_digest(ckpt / TOKENIZER_DIR) != want:
        raise CheckpointError(
            f"{ckpt / TOKENIZER_DIR}: not the tokenizer these weights were trained with "
            f"({meta.get('tokenizer_vocab_size', '?')} ids); the checkpoint is inconsistent"
        )


def _fsync_tree(root: Path) -> None:
    """Flush a checkpoint's files to disk before it is renamed into place, so a power loss
    cannot leave a complete-looking folder with empty files."""
    for f in root.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def prune_checkpoints(run_dir: str | Path, keep_last: int, protect: set[str] = frozenset()) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, never ``latest`` or ``protect``."""
    ckpt_root = Path(run_dir) / "ckpt"
    steps = sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.isdigit())
    latest = resolve_checkpoint(run_dir).name
    for p in steps[: max(0, len(steps) - keep_last)]:
        if p.name != latest and p.name not in protect:
            shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_root.glob(".tmp-*"):  # left by a run killed mid-write
        shutil.rmtree(p, ignore_errors=True)


def resolve_checkpoint(path: str | Path, *, resumable: bool = False) -> Path:
    """The checkpoint folder of ``path``: a checkpoint folder itself, or a run folder (its
    ``ckpt/latest``).

    A ``latest`` that is missing, empty, garbage or names a broken checkpoint (a truncated
    weights file, a missing config or tokenizer, and with ``resumable`` a missing or truncated
    trainer state) falls back to the newest intact checkpoint before it, with a
    :class:`~llmcore.errors.CheckpointWarning` naming both. A ``latest`` that points outside
    the run's ``ckpt/`` folder (``../``, an absolute path, a symlink) is refused."""
    p = Path(path)
    if (p / MODEL_FILE).exists():
        return p
    ckpt_root = p / "ckpt"
    if not ckpt_root.is_dir():
        if not p.exists():
            raise CheckpointError(f"{p}: no such run or checkpoint folder")
        raise CheckpointError(
            f"{p}: not a run or checkpoint folder (no {MODEL_FILE} and no ckpt/{LATEST})"
        )
    target, why = _latest_target(ckpt_root)
    if target is not None:
        problem = checkpoint_problem(target, resumable=resumable)
        if problem is None:
            return target
        why = f"{ckpt_root / LATEST} points at {target.name!r}, which {problem}"
    before = int(target.name) if target is not None and target.name.isdigit() else None
    for folder in _step_folders(ckpt_root):
        if (before is None or int(folder.name) < before) and not checkpoint_problem(
            folder, resumable=resumable
        ):
            warnings.warn(
                f"{why}; using {folder}, the newest intact checkpoint", CheckpointWarning, 2
            )
            return folder
    older = "older " if before is not None else ""
    raise CheckpointError(f"{why}, and {ckpt_root} holds no {older}intact checkpoint")


def checkpoint_problem(folder: Path, *, resumable: bool = False) -> str | None:
    """Why ``folder`` is not a complete checkpoint (a phrase), or None when it is one.

    Cheap: it reads the weights file's header (safetensors checks that the header covers the
    whole file, so a truncated file fails) and a trainer state's zip directory, not the data."""
    if not (folder / MODEL_FILE).is_file():
        return f"holds no {MODEL_FILE}"
    try:
        _metadata(folder / MODEL_FILE)
    except CheckpointError:
        return f"has a corrupt or truncated {MODEL_FILE}"
    for name, is_there in ((CONFIG_FILE, Path.is_file), (TOKENIZER_DIR, Path.is_dir)):
        if not is_there(folder / name):
            return f"holds no {name}"
    if resumable:
        state = folder / STATE_FILE
        if not state.is_file():
            return f"holds no {STATE_FILE} (it cannot be resumed)"
        if not zipfile.is_zipfile(state):  # torch.save writes a zip; truncation cuts its index
            return f"has a corrupt or truncated {STATE_FILE}"
    return None


def _latest_target(ckpt_root: Path) -> tuple[Path | None, str]:
    """The folder ``ckpt/latest`` names, or None and why it names none. CheckpointError when
    it points outside ``ckpt_root``: loading another run's weights silently is never right."""
    latest = ckpt_root / LATEST
    root = ckpt_root.resolve()
    if latest.is_symlink() and not latest.resolve().is_relative_to(root):
        raise CheckpointError(
            f"{latest}: is a symlink to {os.readlink(latest)!r}, outside the run's checkpoint "
            f"folder {root}; refusing it (it should hold a step folder name of {ckpt_root})"
        )
    try:
        name = latest.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None, f"{latest} is missing"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{latest} is unreadable ({exc})"
    if not name:
        return None, f"{latest} is empty"
    if "\0" in name or "\n" in name:
        return None, f"{latest} holds {name[:40]!r}, not a checkpoint name"
    target = ckpt_root / name
    if not target.resolve().is_relative_to(root):
        raise CheckpointError(
            f"{latest}: points at {name!r} ({target.resolve()}), outside the run's checkpoint "
            f"folder {root}; refusing it (it should hold a step folder name of {ckpt_root})"
        )
    return target, ""


def _step_folders(ckpt_root: Path) -> list[Path]:
    """The step folders of ``ckpt_root`` that lie inside it, newest first."""
    root = ckpt_root.resolve()
    steps = [
        f
        for f in ckpt_root.iterdir()
        if f.name.isdigit() and f.is_dir() and f.resolve().is_relative_to(root)
    ]
    return sorted(steps, key=lambda f: int(f.name), reverse=True)


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` returns."""

    path: Path
    config: Config
    model: torch.nn.Module
    tokenizer: Any
    step: int
    #: the model's own Jinja chat template (HF folders, GGUF files); None for llmcore's runs,
    #: which use llmcore's marker-based template
    chat_template: str | None = None
    #: ids that end the model's turn (eos, end-of-turn), from generation_config.json or GGUF
    #: metadata; empty means the tokenizer's own end-of-text id
    stop_ids: tuple[int, ...] = ()


def load_state_dict_strict(model: torch.nn.Module, file: Path) -> None:
    """Load safetensors weights into ``model``; any missing, unexpected or misshapen tensor is
    an error naming it (never a silent partial load)."""
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt or truncated weights file: {exc}") from None
    own = model.state_dict()
    tied = {n for n in own if n not in model_state(model)}
    for name, tensor in state.items():
        if name not in own:
            raise CheckpointError(
                f"{file}: unexpected tensor {name!r}: the checkpoint is of another architecture"
            )
        if own[name].shape != tensor.shape:
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {tuple(tensor.shape)}, the model expects {tuple(own[name].shape)}"
            )
    missing = [n for n in own if n not in state and n not in tied]
    if missing:
        raise CheckpointError(
            f"{file}: missing tensor {missing[0]!r} ({len(missing)} missing in all)"
        )
    model.load_state_dict(state, strict=False)


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model and tokenizer of a run or checkpoint folder."""
    from llmcore.model import build_model
    from llmcore.tokenizers import load_tokenizer

    ckpt = resolve_checkpoint(path)
    try:
        cfg = config_from_dict(read_config_file(ckpt / CONFIG_FILE), source=str(ckpt / CONFIG_FILE))
    except LLMCoreError as exc:
        raise CheckpointError(f"{ckpt}: bad checkpoint config: {exc}") from None
    check_tokenizer(ckpt)
    tokenizer = load_tokenizer(ckpt / TOKENIZER_DIR)
    if cfg.model.vocab_size is not None and tokenizer.vocab_size > cfg.model.vocab_size:
        raise CheckpointError(
            f"{ckpt}: tokenizer has {tokenizer.vocab_size} ids but the model only {cfg.model.vocab_size}"
        )
    model = build_model(cfg, tokenizer.vocab_size)
    if (
        cfg.finetune.adapter is not None
    ):  # saved with its adapter (e.g. LoRA): rebuild those layers first
        from llmcore.components import create

        create("adapter", cfg.finetune.adapter, "finetune.adapter").apply(model)
    load_state_dict_strict(model, ckpt / MODEL_FILE)
    step = _metadata_step(ckpt / MODEL_FILE)
    return LoadedCheckpoint(ckpt, cfg, model.to(device), tokenizer, step)


def _metadata(file: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt or truncated weights file: {exc}") from None


def _metadata_step(file: Path) -> int:
    return int(_metadata(file).get("step", 0))


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (tensors and plain data only)."""
    file = ckpt / STATE_FILE
    if not file.exists():
        raise CheckpointError(f"{file}: no trainer state: the checkpoint cannot be resumed")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{file}: corrupt or truncated trainer state: {exc}") from None


__all__ = [
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_trainer_state",
    "check_tokenizer",
    "checkpoint_problem",
    "load_state_dict_strict",
    "prune_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
    "write_atomic",
    "read_config_file",
]
