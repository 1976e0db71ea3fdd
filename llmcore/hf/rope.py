"""The rotary settings of a Hugging Face ``config.json``: ``rope_theta`` and the scaling
(``rope_parameters`` in transformers 5, ``rope_theta`` + ``rope_scaling`` in 4), validated
and with transformers' defaults, as the ``rope`` position plugin takes them."""

from __future__ import annotations

from typing import Any

from llmcore.errors import ConfigError

ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# each scaling type's parameters: name -> (kind, default; ... = required)
_SCALING_PARAMS: dict[str, dict[str, tuple[type, Any]]] = {
    "linear": {"factor": (float, ...)},
    "llama3": {
        "factor": (float, ...),
        "low_freq_factor": (float, 1.0),
        "high_freq_factor": (float, 4.0),
        "original_max_position_embeddings": (int, None),
    },
    "yarn": {
        "factor": (float, ...),
        "original_max_position_embeddings": (int, None),
        "beta_fast": (float, 32.0),
        "beta_slow": (float, 1.0),
        "attention_factor": (float, None),
        "truncate": (bool, True),
    },
}


def rope_config(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """``{"theta", "scaling"}`` from ``rope_parameters`` (transformers 5) or ``rope_theta`` +
    ``rope_scaling`` (transformers 4)."""
    params = hf.get("rope_parameters")
    if params is None:
        params = dict(hf.get("rope_scaling") or {})
        params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
        key = "rope_scaling"
    else:
        key = "rope_parameters"
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping, found {params!r}")
    if not isinstance(params.get("rope_theta", 10000.0), (int, float)):
        raise ConfigError(f"{source}: {key}.rope_theta: expected a number")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ConfigError(
            f"{source}: {key}: rope type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}"
        )
    partial = hf.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise ConfigError(
            f"{source}: partial_rotary_factor {partial!r} is not supported; supported: 1.0"
        )
    scaling = None if kind == "default" else _scaling(params, kind, hf, f"{source}: {key}")
    return {"theta": float(params.get("rope_theta", 10000.0)), "scaling": scaling}


def _scaling(params: dict[str, Any], kind: str, hf: dict[str, Any], where: str) -> dict[str, Any]:
    """The rope plugin's ``scaling`` for a ``rope_type`` other than default, with
    transformers' defaults (``original_max_position_embeddings``: the config's
    ``max_position_embeddings``)."""
    out: dict[str, Any] = {"type": kind}
    for name, (want, default) in _SCALING_PARAMS[kind].items():
        value = params.get(name)
        if value is None and name == "original_max_position_embeddings":
            value = hf.get(name) or hf.get("max_position_embeddings", 2048)
        if value is None:
            if default is ...:
                raise ConfigError(f"{where}: {kind} scaling needs {name!r}")
            if default is None:
                continue
            value = default
        number = want in (int, float) and isinstance(value, (int, float))
        if isinstance(value, bool) != (want is bool) or not (number or isinstance(value, want)):
            raise ConfigError(f"{where}.{name}: expected {want.__name__}, found {value!r}")
        out[name] = want(value)
    return out
