"""Plain data (parsed YAML, TOML or JSON) checked into the config dataclasses by their type
hints; every error names the dotted field, what was found and what is allowed."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from llmcore.config.sections import Component, Config, TokenizerConfig
from llmcore.errors import ConfigError


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a mapping into a :class:`Config`; errors carry ``source`` and the field path."""
    try:
        cfg = _convert(Config, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    check_consistency(cfg, source)
    return cfg


def check_consistency(cfg: Config, source: str = "<config>") -> None:
    """Cross-field checks that types alone cannot express."""
    m = cfg.model
    positive = {
        "model.block_size": m.block_size,
        "model.n_layer": m.n_layer,
        "model.n_head": m.n_head,
        "model.n_embd": m.n_embd,
        "train.max_iters": cfg.train.max_iters,
        "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "train.eval_interval": cfg.train.eval_interval,
        "train.eval_iters": cfg.train.eval_iters,
        "train.log_interval": cfg.train.log_interval,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: {key}: must be a positive integer, found {value}")
    if m.head_dim is None and m.n_embd % m.n_head:
        raise ConfigError(
            f"{source}: model.n_embd: {m.n_embd} is not divisible by model.n_head={m.n_head}"
        )
    if m.head_size <= 0:
        raise ConfigError(
            f"{source}: model.head_dim: must be a positive integer, found {m.head_dim}"
        )
    kv = m.kv_heads
    if kv <= 0 or m.n_head % kv:
        raise ConfigError(f"{source}: model.n_kv_head: {kv} must divide model.n_head={m.n_head}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"{source}: model.dropout: must be in [0, 1), found {m.dropout}")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError(
            f"{source}: data.val_fraction: must be in (0, 1), found {cfg.data.val_fraction}"
        )
    choices = {
        "data.mode": (cfg.data.mode, ("random", "sequential")),
        "train.dtype": (cfg.train.dtype, ("float32", "bfloat16", "auto")),
        "train.distributed": (cfg.train.distributed, ("ddp", "fsdp")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{source}: {key}: {value!r} is not one of {', '.join(allowed)}")


# -- conversion by type hints ------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is Component:
        return "component (a name or a mapping with 'name')"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    where = path or "<top>"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, found {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, found {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {value!r}")
        return dict(value)
    if tp is Component:
        return _component(value, where)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(
        f"{where}: expected {_type_name(tp)}, found {value!r} ({type(value).__name__})"
    )


def _component(value: Any, where: str) -> Component:
    if isinstance(value, Component):
        return value
    if isinstance(value, str) and value:
        return Component(value)
    if isinstance(value, dict):
        params = dict(value)
        name = params.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: a component needs a registered name, found {name!r}")
        return Component(name, params)
    raise ConfigError(f"{where}: expected {_type_name(Component)}, found {value!r}")


def _dataclass(cls: Any, value: Any, path: str) -> Any:
    where = path or "<top>"
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, found {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    if cls is TokenizerConfig:  # tokenizer: {name: bpe, path: ...}: extra keys are params
        value = dict(value)
        params = {k: value.pop(k) for k in list(value) if k not in fields}
        value.setdefault("params", {})
        value["params"] = {**value["params"], **params}
    unknown = [k for k in value if k not in fields]
    if unknown:
        prefix = f"{path}." if path else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key; allowed keys{' of ' + path if path else ''}: {', '.join(fields)}"
        )
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in value.items()}
    return cls(**kwargs)
