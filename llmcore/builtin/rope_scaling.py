"""Rotary frequency scaling for the ``rope`` position: the context-extension schemes that
pretrained models ship with.

A scaling is a mapping with a ``type`` and that type's parameters (the names transformers
uses in ``rope_scaling`` / ``rope_parameters``):

=========  ======================================================================  ==========
type       parameters                                                              used by
=========  ======================================================================  ==========
linear     ``factor``: every frequency divided by it (position interpolation)      Llama 2
llama3     ``factor``, ``low_freq_factor``, ``high_freq_factor``,                  Llama 3.1+
           ``original_max_position_embeddings``: low frequencies divided by
           ``factor``, high ones kept, a smooth blend between
yarn       ``factor``, ``original_max_position_embeddings``, optional              Qwen2.5,
           ``beta_fast`` (32), ``beta_slow`` (1), ``attention_factor``,            DeepSeek
           ``truncate`` (True): NTK-by-parts blend, cos/sin scaled by
           ``attention_factor`` (default ``0.1 ln(factor) + 1``)
factors    ``factors``: one divisor per frequency (``head_dim / 2`` numbers), as   GGUF
           GGUF files carry Llama 3 scaling (the ``rope_freqs.weight`` tensor)
=========  ======================================================================  ==========

Each is computed in float32 the way transformers computes it, so logits match.
"""

from __future__ import annotations

import math
from typing import Any

import torch

TYPES = ("linear", "llama3", "yarn", "factors")


def scale(
    inv_freq: torch.Tensor, scaling: dict[str, Any], theta: float
) -> tuple[torch.Tensor, float]:
    """``(scaled inverse frequencies, attention factor)`` for ``scaling``; the attention
    factor multiplies cos and sin (1.0 for all but yarn).

    Raises:
        ValueError: an unknown type, a missing or malformed parameter (named).
    """
    kind = scaling.get("type", scaling.get("rope_type"))
    if kind not in TYPES:
        raise ValueError(
            f"rope scaling type {kind!r} is not supported; supported: {', '.join(TYPES)}"
        )
    if kind == "factors":
        factors = torch.tensor(_param(scaling, "factors", (list, tuple)), dtype=torch.float32)
        if factors.shape != inv_freq.shape or not bool((factors > 0).all()):
            raise ValueError(
                f"rope scaling factors: expected {inv_freq.numel()} positive numbers "
                f"(head_dim / 2), found {factors.numel()}"
            )
        return inv_freq / factors, 1.0
    factor = float(_param(scaling, "factor", (int, float)))
    if factor <= 0:
        raise ValueError(f"rope scaling factor must be positive, found {factor}")
    if kind == "linear":
        return inv_freq / factor, 1.0
    if kind == "llama3":
        return _llama3(inv_freq, scaling, factor), 1.0
    return _yarn(inv_freq.numel() * 2, scaling, factor, theta)


def _param(scaling: dict[str, Any], key: str, kind: type | tuple, default: Any = ...) -> Any:
    value = scaling.get(key, default)
    if value is ...:
        raise ValueError(f"rope scaling {scaling.get('type')!r} needs {key!r}")
    if not isinstance(value, kind) or isinstance(value, bool):
        what = "a list" if kind in (list, (list, tuple)) else "a number"
        raise ValueError(f"rope scaling {key!r}: expected {what}, found {value!r}")
    return value


def _llama3(inv_freq: torch.Tensor, s: dict[str, Any], factor: float) -> torch.Tensor:
    low = float(_param(s, "low_freq_factor", (int, float), 1.0))
    high = float(_param(s, "high_freq_factor", (int, float), 4.0))
    old_len = float(_param(s, "original_max_position_embeddings", (int, float)))
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def yarn_attention_factor(s: dict[str, Any], factor: float) -> float:
    """The cos/sin multiplier of a yarn scaling: given, or ``0.1 ln(factor) + 1``."""
    given = s.get("attention_factor")
    if given is not None:
        return float(given)
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def _yarn(dim: int, s: dict[str, Any], factor: float, theta: float) -> tuple[torch.Tensor, float]:
    old_len = float(_param(s, "original_max_position_embeddings", (int, float)))
    fast = float(_param(s, "beta_fast", (int, float), 32))
    slow = float(_param(s, "beta_slow", (int, float), 1))
    truncate = bool(s.get("truncate", True))

    def correction_dim(rotations: float) -> float:
        # the dimension whose wavelength fits ``rotations`` times into the original context
        return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(fast), correction_dim(slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # no singular ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # 1: the frequency is kept (extrapolated), 0: interpolated
    inv_freq = interpolation * (1 - keep) + extrapolation * keep
    return inv_freq, yarn_attention_factor(s, factor)
