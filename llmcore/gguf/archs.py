"""GGUF metadata -> the Hugging Face config it stands for -> llmcore's ModelConfig.

GGUF describes a model with ``{arch}.*`` keys; each is translated to the ``config.json`` key
of the same architecture, and :func:`llmcore.hf.archs.normalize` then validates it and fills
the defaults, so one mapping (:mod:`llmcore.hf.archs`) serves HF folders and GGUF files.
The tied output is the absence of an ``output.weight`` tensor, as in llama.cpp.
"""

from __future__ import annotations

from typing import Any

from llmcore.errors import ConfigError
from llmcore.gguf.reader import GGUFFile
from llmcore.hf import archs as hf_archs

SUPPORTED = ("gpt2", "llama", "mistral", "qwen2")
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
    scaling = f.get(f"{arch}.rope.scaling.type", str, "none")
    if scaling != "none" or "rope_freqs.weight" in f.tensors:
        what = "rope_freqs.weight" if scaling == "none" else f"rope.scaling.type {scaling!r}"
        raise ConfigError(
            f"{f.path}: {what}: scaled rotary embeddings are not supported in GGUF files; "
            "supported: rope.scaling.type 'none'"
        )
    if arch == "llama" and "blk.0.attn_output.bias" in f.tensors:
        cfg["attention_bias"] = True
    if arch == "llama" and "blk.0.ffn_up.bias" in f.tensors:
        cfg["mlp_bias"] = True
    if arch == "mistral" and "sliding_window" not in cfg:
        cfg["sliding_window"] = None


def normalized(f: GGUFFile) -> dict[str, Any]:
    """The :func:`llmcore.hf.archs.normalize`-d config of a GGUF file (errors name it)."""
    return hf_archs.normalize(hf_config(f), str(f.path))
