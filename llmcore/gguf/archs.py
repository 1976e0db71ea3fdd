"""GGUF metadata -> the Hugging Face config it stands for -> llmcore's ModelConfig.

GGUF describes a model with ``{arch}.*`` keys; each is translated to the ``config.json`` key
of the same architecture, and :func:`llmcore.hf.archs.normalize` then validates it and fills
the defaults, so one mapping (:mod:`llmcore.hf.archs`) serves HF folders and GGUF files.
The tied output is the absence of an ``output.weight`` tensor, as in llama.cpp. Rotary
scaling comes from ``{arch}.rope.scaling.*`` and the ``rope_freqs.weight`` tensor
(:func:`rope_scaling`).
"""

from __future__ import annotations

from typing import Any

import torch

from llmcore.errors import CheckpointError, ConfigError
from llmcore.gguf.reader import GGUFFile
from llmcore.hf import archs as hf_archs

SUPPORTED = ("gpt2", "llama", "mistral", "qwen2")
SCALING_TYPES = ("none", "linear", "yarn")  # {arch}.rope.scaling.type values read
FACTORS = "factors"  # the rope plugin's scaling by per-frequency divisors
# GGUF key (after ``{arch}.``) -> (HF config key, type) per architecture family
_LLAMA_KEYS = {
    "context_length": ("max_position_embeddings", int),
    "embedding_length": ("hidden_size", int),
    "block_count": ("num_hidden_layers", int),
    "feed_forward_length": ("intermediate_size", int),
    "attention.head_count": ("num_attention_heads", int),
    "attention.head_count_kv": ("num_key_value_heads", int),
    "attention.key_length": ("head_dim", int),
    "attention.layer_norm_rms_epsilon": ("rms_norm_eps", float),
    "rope.freq_base": ("rope_theta", float),
    "attention.sliding_window": ("sliding_window", int),
}
_GPT2_KEYS = {
    "context_length": ("n_positions", int),
    "embedding_length": ("n_embd", int),
    "block_count": ("n_layer", int),
    "feed_forward_length": ("n_inner", int),
    "attention.head_count": ("n_head", int),
    "attention.layer_norm_epsilon": ("layer_norm_epsilon", float),
}


def architecture(f: GGUFFile) -> str:
    """``general.architecture``, checked against the supported ones."""
    arch = f.get("general.architecture", str)
    if arch not in SUPPORTED:
        raise ConfigError(
            f"{f.path}: general.architecture {arch!r} is not supported; supported: "
            f"{', '.join(SUPPORTED)}"
        )
    return arch


def hf_config(f: GGUFFile) -> dict[str, Any]:
    """The HF ``config.json`` mapping of a GGUF file's metadata (before normalizing)."""
    arch = architecture(f)
    keys = _GPT2_KEYS if arch == "gpt2" else _LLAMA_KEYS
    cfg: dict[str, Any] = {"model_type": arch}
    for key, (hf_key, kind) in keys.items():
        value = f.get(f"{arch}.{key}", kind, None)
        if value is not None:
            cfg[hf_key] = value
    tokens = f.metadata.get("tokenizer.ggml.tokens")
    vocab = f.get(f"{arch}.vocab_size", int, None)
    if vocab is None:  # llama.cpp sizes the vocabulary by the embedding's rows
        emb = f.tensors.get("token_embd.weight")
        vocab = emb.shape[0] if emb else len(tokens or ())
    cfg["vocab_size"] = vocab
    cfg["tie_word_embeddings"] = "output.weight" not in f.tensors
    if arch != "gpt2":
        _llama_extras(f, arch, cfg)
    return cfg


def _llama_extras(f: GGUFFile, arch: str, cfg: dict[str, Any]) -> None:
    heads = cfg.get("num_attention_heads")
    rot = f.get(f"{arch}.rope.dimension_count", int, None)
    head_dim = cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads else None)
    if rot is not None and head_dim is not None and rot != head_dim:
        raise ConfigError(
            f"{f.path}: {arch}.rope.dimension_count {rot} differs from the head size "
            f"{head_dim}: partial rotary embeddings are not supported"
        )
    scaling = rope_scaling(f, arch, cfg)
    if scaling is not None:
        cfg["rope_scaling"] = scaling
    if arch == "llama" and "blk.0.attn_output.bias" in f.tensors:
        cfg["attention_bias"] = True
    if arch == "llama" and "blk.0.ffn_up.bias" in f.tensors:
        cfg["mlp_bias"] = True
    if arch == "mistral" and "sliding_window" not in cfg:
        cfg["sliding_window"] = None


def rope_scaling(f: GGUFFile, arch: str, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The HF ``rope_scaling`` of ``{arch}.rope.scaling.*`` and ``rope_freqs.weight``, as
    llama.cpp applies them: linear (every frequency divided by ``factor``), yarn, and per
    frequency divisors (Llama 3's scaling, which llama.cpp's converter bakes into that
    tensor) that a linear factor multiplies. None when the file has no scaling."""
    kind = f.get(f"{arch}.rope.scaling.type", str, "none")
    legacy = f.get(f"{arch}.rope.scale_linear", float, None)  # before rope.scaling.*
    if kind == "none" and legacy is not None:
        kind = "linear"
    key = f"{arch}.rope.scaling"
    if kind not in SCALING_TYPES:
        raise ConfigError(
            f"{f.path}: {key}.type {kind!r} is not supported; supported: {', '.join(SCALING_TYPES)}"
        )
    factor = f.get(f"{key}.factor", float, legacy if legacy is not None else 1.0)
    freqs = _rope_freqs(f, cfg)
    if kind == "yarn":
        if freqs is not None:
            raise ConfigError(f"{f.path}: rope_freqs.weight with yarn scaling is not supported")
        return _yarn(f, key, factor, cfg)
    if kind == "linear" and factor <= 0:
        raise ConfigError(f"{f.path}: {key}.factor must be positive, found {factor}")
    if freqs is not None:
        if kind == "linear":
            freqs = [x * factor for x in freqs]
        return {"rope_type": FACTORS, "factors": freqs}
    if kind == "linear" and factor != 1.0:
        return {"rope_type": "linear", "factor": factor}
    return None


def _yarn(f: GGUFFile, key: str, factor: float, cfg: dict[str, Any]) -> dict[str, Any]:
    """HF's yarn parameters of llama.cpp's; llama.cpp's ramp and attention factor
    (``0.1 ln(factor) + 1`` on cos and sin) are HF's, with beta_fast/slow as given."""
    for extra, neutral in (
        ("attn_factor", 1.0),
        ("yarn_ext_factor", 1.0),
        ("yarn_attn_factor", 1.0),
    ):
        value = f.get(f"{key}.{extra}", float, neutral)
        if value != neutral and not (extra == "yarn_ext_factor" and value < 0):  # <0: unset
            raise ConfigError(
                f"{f.path}: {key}.{extra} = {value}: only {neutral} is supported with yarn"
            )
    out: dict[str, Any] = {
        "rope_type": "yarn",
        "factor": factor,
        "original_max_position_embeddings": f.get(
            f"{key}.original_context_length", int, cfg.get("max_position_embeddings")
        ),
    }
    for name in ("beta_fast", "beta_slow"):
        value = f.get(f"{key}.yarn_{name}", float, None)
        if value is not None:
            out[name] = value
    return out


def _rope_freqs(f: GGUFFile, cfg: dict[str, Any]) -> list[float] | None:
    """The per-frequency divisors of ``rope_freqs.weight``, or None (none, or all 1)."""
    info = f.tensors.get("rope_freqs.weight")
    if info is None:
        return None
    from llmcore.gguf.tensors import read_tensor

    heads = cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads else 0)
    if info.type not in ("F32", "F16", "BF16") or tuple(info.shape) != (head_dim // 2,):
        raise CheckpointError(
            f"{f.path}: tensor 'rope_freqs.weight' is {info.type} of shape {info.shape}; "
            f"expected float of shape ({head_dim // 2},) (head size / 2)"
        )
    freqs = read_tensor(f, info, torch.float32).float().tolist()
    if not all(x > 0 for x in freqs):
        raise CheckpointError(f"{f.path}: tensor 'rope_freqs.weight' has a value <= 0")
    return None if all(x == 1.0 for x in freqs) else freqs


def normalized(f: GGUFFile) -> dict[str, Any]:
    """The :func:`llmcore.hf.archs.normalize`-d config of a GGUF file (errors name it)."""
    return normalize(hf_config(f), str(f.path))


def normalize(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """:func:`llmcore.hf.archs.normalize`, also taking per-frequency rotary divisors
    (``rope_scaling = {"rope_type": "factors", "factors": [...]}``), which HF has no name for."""
    scaling = cfg.get("rope_scaling")
    if not isinstance(scaling, dict) or scaling.get("rope_type") != FACTORS:
        return hf_archs.normalize(cfg, source)
    # normalize the rest, then hand the divisors to the rope plugin
    h = hf_archs.normalize({k: v for k, v in cfg.items() if k != "rope_scaling"}, source)
    h["rope"]["scaling"] = {"type": FACTORS, "factors": list(scaling["factors"])}
    return h
