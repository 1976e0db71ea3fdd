"""Load a Hugging Face checkpoint folder into llmcore's plugin-built Transformer.

Each safetensors file is memory-mapped once (:mod:`llmcore.hf.safetensors_mmap`). A tensor
stored in the requested dtype and llmcore's layout becomes its parameter as is: a view of the
file's pages (private, copy-on-write), so loading reads and allocates nothing for it, as
transformers does. Any other tensor (cast, transposed, or a slice of a fused parameter) is
copied from a view of its pages into parameters allocated once, directly in the requested
dtype: a bf16 checkpoint loaded as fp32 never exists twice, and peak memory is the model
itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch.overrides import TorchFunctionMode

from llmcore.config import ModelConfig
from llmcore.errors import CheckpointError, ConfigError
from llmcore.hf.safetensors_mmap import SafetensorsMap
from llmcore.hf.tensors import TensorMap, canonical_name, is_ignored, tensor_map

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
STORED_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_config(path: str | Path) -> dict[str, Any]:
    """The raw ``config.json`` of an HF checkpoint folder (errors name the file)."""
    folder = Path(path)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "no such folder"
        raise CheckpointError(f"{folder}: {what}: expected a Hugging Face checkpoint folder")
    file = folder / CONFIG_FILE
    if not file.exists():
        raise CheckpointError(f"{folder}: not a Hugging Face checkpoint: no {CONFIG_FILE}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a JSON object, found {type(data).__name__}")
    return data


def weight_files(folder: Path) -> dict[str, Path]:
    """Map each tensor name to its safetensors file: one ``model.safetensors``, or the shards
    listed in ``model.safetensors.index.json``."""
    index = folder / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index: {exc}") from None
        files = {}
        for name, shard in weight_map.items():
            file = folder / str(shard)
            if not file.exists():
                raise CheckpointError(
                    f"{index}: shard {shard!r} (holding {name!r}) is missing from {folder}"
                )
            files[name] = file
        _check_index(index, files)
        return files
    single = folder / WEIGHTS_FILE
    if single.exists():
        with _open(single) as f:
            return {name: single for name in f.keys()}  # noqa: SIM118 - safe_open has no iter
    found = sorted(p.name for p in folder.glob("*.bin")) + sorted(
        p.name for p in folder.glob("*.safetensors")
    )
    raise CheckpointError(
        f"{folder}: no {WEIGHTS_FILE} or {INDEX_FILE}"
        + (f" (found {', '.join(found)}; only safetensors weights are read)" if found else "")
    )


def _check_index(index: Path, files: dict[str, Path]) -> None:
    """Every tensor the index places in a shard is in that shard (headers only, before any
    parameter is allocated)."""
    for file, names in _by_file(files):
        with _open(file) as f:
            have = set(f.keys())
        lost = [n for n in names if n not in have]
        if lost:
            raise CheckpointError(
                f"{index}: the index places tensor {lost[0]!r} in {file.name}, which does not "
                f"hold it ({len(lost)} such tensors); the shards and the index disagree"
            )


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: corrupt or unreadable safetensors file: {exc}") from None


def resolve_dtype(dtype: torch.dtype | str | None, files: dict[str, Path]) -> torch.dtype:
    """``None``: float32; ``"auto"``: the dtype of the stored weights; else the named dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype: {dtype} is not a floating-point type")
        return dtype
    if dtype == "auto":
        if not files:
            return torch.float32
        name, file = next(iter(files.items()))
        with _open(file) as f:
            stored = f.get_slice(name).get_dtype()
        return STORED_DTYPES.get(stored, torch.float32)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


_INIT_OPS = frozenset(
    {
        "normal_",
        "uniform_",
        "trunc_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "xavier_uniform_",
        "xavier_normal_",
        "orthogonal_",
    }
)
_FLOAT_CONSTRUCTORS = frozenset({torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn})


class _Uninitialised(TorchFunctionMode):
    """Inside it, floating-point tensors are created in ``dtype`` and random initialisation
    is skipped: the weights are about to be overwritten from the checkpoint, so a bf16 model is
    allocated once, in bf16 (pages untouched until the copy), and none of the time of
    initialising it is spent. Explicit dtypes (the fp32 rotary tables) are kept."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _INIT_OPS:
            return args[0] if args else kwargs.get("tensor")
        if func in _FLOAT_CONSTRUCTORS and kwargs.get("dtype") is None:
            kwargs["dtype"] = self.dtype
        return func(*args, **kwargs)


def build_empty(cfg: ModelConfig, dtype: torch.dtype, device: torch.device | str):
    """The Transformer of ``cfg`` with uninitialised parameters in ``dtype`` on ``device``:
    no fp32 copy of a half-precision model is ever made, and no time goes to random init."""
    from llmcore.model import build_model

    with torch.device(device), _Uninitialised(dtype):
        model = build_model(cfg)
    wrong = {p.dtype for p in model.parameters()} - {dtype}
    if wrong:  # a component forced its own dtype: follow the user's choice all the same
        model.to(dtype)
    return model


def load_weights(model: torch.nn.Module, h: dict[str, Any], files: dict[str, Path]) -> None:
    """Copy every tensor of ``files`` into ``model`` by the map of the normalized config ``h``.

    Missing, unexpected or misshapen tensors raise :class:`CheckpointError` naming the tensor,
    its file and both shapes. llmcore biases that HF does not have are set to zero.
    """
    kind = h["model_type"]
    mapping = {t.hf: t for t in tensor_map(h)}
    params = dict(model.named_parameters(remove_duplicate=False))
    covered = {t.ours for t in mapping.values()}
    with torch.no_grad():
        for name, p in params.items():
            if name not in covered:
                if not name.endswith(".bias") and name != "lm_head.weight":
                    raise CheckpointError(f"llmcore parameter {name!r} has no Hugging Face tensor")
                if name.endswith(".bias"):
                    p.zero_()
        seen: set[str] = set()
        for file, names in _by_file(files):
            with SafetensorsMap(file) as f:
                for raw in names:
                    name = canonical_name(raw, kind)
                    entry = mapping.get(name)
                    if entry is None:
                        if is_ignored(name, kind) or (
                            name == "lm_head.weight" and h["tie_word_embeddings"]
                        ):
                            continue
                        raise CheckpointError(
                            f"{file}: unexpected tensor {raw!r}: not part of a {kind} model with this config.json"
                        )
                    _copy(params[entry.ours], entry, f, raw, file)
                    seen.add(name)
    missing = [t.hf for t in mapping.values() if t.hf not in seen]
    if missing:
        where = ", ".join(sorted({f.name for f in files.values()})) or "the weights"
        raise CheckpointError(
            f"missing tensor {missing[0]!r} in {where} ({len(missing)} missing in all)"
        )


def _by_file(files: dict[str, Path]) -> Iterator[tuple[Path, list[str]]]:
    groups: dict[Path, list[str]] = {}
    for name, file in files.items():
        groups.setdefault(file, []).append(name)
    yield from groups.items()


def _copy(param: torch.Tensor, entry: TensorMap, f: SafetensorsMap, raw: str, file: Path) -> None:
    target = param if entry.rows is None else param[entry.rows[0] : entry.rows[1]]
    want = tuple(target.shape[::-1] if entry.transpose else target.shape)
    got = f.shape(raw)
    if got != want:
        raise CheckpointError(
            f"{file}: tensor {raw!r} has shape {got}, but config.json implies {want}"
        )
    block = f.view(raw)
    if entry.rows is None and not entry.transpose and _can_share(param, block):
        # the parameter becomes the file's pages (a private, copy-on-write map), as
        # transformers does: nothing is read until used, nothing is allocated
        f.keep_mapped()
        param.data = block
        return
    # A view of the file's pages: copy_ reads them once and casts to the parameter's dtype,
    # so no transient copy of the tensor is ever made.
    target.copy_(block.T if entry.transpose else block)


def _can_share(param: torch.Tensor, block: torch.Tensor) -> bool:
    """Whether ``param`` can simply be ``block``: same dtype and shape, on the CPU, and the
    data aligned for its element type (safetensors only promises 8-byte alignment)."""
    return (
        param.device.type == "cpu"
        and block.dtype == param.dtype
        and block.shape == param.shape
        and block.data_ptr() % block.element_size() == 0
        and block.numel() > 0
    )
