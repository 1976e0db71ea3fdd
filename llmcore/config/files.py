"""Config files and presets in, YAML out, and ``--set section.field=value`` overrides."""

from __future__ import annotations

import json
import re
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib
import yaml

from llmcore.config.convert import config_from_dict
from llmcore.config.sections import Config
from llmcore.errors import ConfigError


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-3`` as a float, as YAML 1.2 and every user expects."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


def presets() -> list[str]:
    """Names of the presets shipped with llmcore."""
    root = resources.files("llmcore") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML, TOML or JSON file into a mapping; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = _yaml_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if not data:  # most often a file saved before it was written: defaults would hide that
        raise ConfigError(
            f"{path}: the config file is empty; give at least one section (model:, train:, "
            "...), or name a shipped preset instead (e.g. --preset shakespeare-char)"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, found {type(data).__name__}"
        )
    return data


def _preset_data(name: str) -> dict[str, Any]:
    if name not in presets():
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(presets())}")
    text = (resources.files("llmcore") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")
    return _yaml_load(text) or {}


def load_config(
    path_or_preset: str | Path | None = None,
    overrides: typing.Iterable[str] = (),
    *,
    preset: str | None = None,
) -> Config:
    """Load a config file or preset, apply ``section.key=value`` overrides, and validate.

    Args:
        path_or_preset: a YAML/TOML/JSON file, or the name of a shipped preset. None with no
            ``preset`` gives the ``shakespeare-char`` preset.
        overrides: strings ``"train.max_iters=100"``; values are parsed as YAML.
        preset: a preset the file is laid over (the file's values win).
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if preset is not None:
        raw = _preset_data(preset)
        source = preset
    if path_or_preset is None and preset is None:
        path_or_preset = "shakespeare-char"
    if path_or_preset is not None:
        p = Path(path_or_preset)
        if p.suffix in (".yaml", ".yml", ".toml", ".json") or p.exists():
            data = read_config_file(p)
            source = str(p)
        else:
            data = _preset_data(str(path_or_preset))
            source = str(path_or_preset)
        raw = _merge(raw, data)
    for item in overrides:
        _apply_override(raw, item)
    cfg = config_from_dict(raw, source=source)
    cfg.source = source
    return cfg


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        old = out.get(key)
        renamed = (
            isinstance(old, dict)
            and isinstance(value, dict)
            and value.get("name", old.get("name")) != old.get("name")
        )
        if isinstance(value, dict) and isinstance(old, dict) and not renamed:
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(
            f"override {item!r}: the key must name a section and a field, like train.max_iters"
        )
    value = _parse_value(text)
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # a component given by name only: open it up
            child = {"name": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value


def _parse_value(text: str) -> Any:
    """A command-line value, read as YAML (``3e-4`` is a float, ``[1, 2]`` a list)."""
    try:
        return _yaml_load(text)
    except yaml.YAMLError:
        return text


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
