"""Hugging Face ``config.json`` <-> llmcore :class:`~llmcore.config.ModelConfig`, per architecture.

Every supported architecture is expressed with llmcore's registered components; nothing here
builds a model class of its own:

=========  ================  =========  ==========  ==============================================
model_type position          norm       mlp         notes
=========  ================  =========  ==========  ==============================================
gpt2       learned           layernorm  gelu/relu   fused qkv with biases, tied head
llama      rope (+scaling)   rmsnorm    swiglu      GQA, optional attention/MLP biases, head_dim
mistral    rope              rmsnorm    swiglu      sliding window
qwen2      rope              rmsnorm    swiglu      q/k/v biases only
=========  ================  =========  ==========  ==============================================

:func:`normalize` fills the defaults transformers would apply, so the tensor map
(:mod:`llmcore.hf.tensors`) and the model config are derived from one complete mapping.
"""

from __future__ import annotations

from typing import Any

from llmcore.config import Component, ModelConfig
from llmcore.errors import ConfigError
from llmcore.hf.rope import ROPE_TYPES, rope_config

SUPPORTED = ("gpt2", "llama", "mistral", "qwen2")
LLAMA_FAMILY = ("llama", "mistral", "qwen2")
ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
# activation_function -> (mlp plugin, its params)
GPT2_ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "gelu_new": ("gelu", {"approximate": "tanh"}),
    "gelu_pytorch_tanh": ("gelu", {"approximate": "tanh"}),
    "gelu": ("gelu", {"approximate": "none"}),
    "relu": ("relu", {}),
}


def _get(hf: dict[str, Any], key: str, default: Any, source: str, kind: type | tuple = int) -> Any:
    value = hf.get(key, default)
    if value is None:
        value = default
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float))
    if not ok:
        raise ConfigError(f"{source}: {key}: expected {_kind_name(kind)}, found {value!r}")
    return value


def _kind_name(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def model_type_of(hf: dict[str, Any], source: str) -> str:
    """The ``model_type`` of a config, checked against the supported ones."""
    kind = hf.get("model_type")
    if kind not in SUPPORTED:
        raise ConfigError(
            f"{source}: model_type {kind!r} is not supported; supported: {', '.join(SUPPORTED)}"
        )
    return kind


def normalize(hf: dict[str, Any], source: str = "config.json") -> dict[str, Any]:
    """A complete, validated view of an HF config: every value the mapping needs, with
    transformers' defaults filled in. Raises :class:`ConfigError` naming the bad key."""
    kind = model_type_of(hf, source)
    if kind == "gpt2":
        return _normalize_gpt2(hf, source)
    return _normalize_llama_family(hf, kind, source)


def _normalize_gpt2(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """:func:`normalize` for ``gpt2``."""
    n_embd = _get(hf, "n_embd", 768, source)
    n_head = _get(hf, "n_head", 12, source)
    if n_embd % n_head:
        raise ConfigError(f"{source}: n_embd {n_embd} is not divisible by n_head {n_head}")
    act = hf.get("activation_function", "gelu_new")
    if act not in GPT2_ACTIVATIONS:
        raise ConfigError(
            f"{source}: activation_function {act!r} is not supported; supported: {', '.join(GPT2_ACTIVATIONS)}"
        )
    for key, want in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if hf.get(key, want) != want:
            raise ConfigError(f"{source}: {key}={hf[key]!r} is not supported; supported: {want}")
    return {
        "model_type": "gpt2",
        "vocab_size": _get(hf, "vocab_size", 50257, source),
        "n_positions": _get(hf, "n_positions", 1024, source),
        "n_embd": n_embd,
        "n_layer": _get(hf, "n_layer", 12, source),
        "n_head": n_head,
        "n_inner": _get(hf, "n_inner", 4 * n_embd, source),
        "activation_function": act,
        "layer_norm_epsilon": float(_get(hf, "layer_norm_epsilon", 1e-5, source, (int, float))),
        "tie_word_embeddings": _get(hf, "tie_word_embeddings", True, source, bool),
    }


def _normalize_llama_family(hf: dict[str, Any], kind: str, source: str) -> dict[str, Any]:
    """:func:`normalize` for ``llama``, ``mistral`` and ``qwen2``."""
    defaults = {"llama": (2048, False), "mistral": (131072, False), "qwen2": (32768, False)}
    max_pos, tie = defaults[kind]
    hidden = _get(hf, "hidden_size", 4096, source)
    heads = _get(hf, "num_attention_heads", 32, source)
    kv = _get(hf, "num_key_value_heads", heads, source)
    head_dim = _get(hf, "head_dim", hidden // heads if heads else 0, source)
    if heads <= 0 or kv <= 0 or heads % kv:
        raise ConfigError(
            f"{source}: num_key_value_heads {kv} must divide num_attention_heads {heads}"
        )
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{source}: hidden_act {act!r} is not supported; supported: silu")
    out = {
        "model_type": kind,
        "vocab_size": _get(hf, "vocab_size", 32000, source),
        "hidden_size": hidden,
        "intermediate_size": _get(hf, "intermediate_size", 11008, source),
        "num_hidden_layers": _get(hf, "num_hidden_layers", 32, source),
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "max_position_embeddings": _get(hf, "max_position_embeddings", max_pos, source),
        "rms_norm_eps": float(_get(hf, "rms_norm_eps", 1e-6, source, (int, float))),
        "tie_word_embeddings": _get(hf, "tie_word_embeddings", tie, source, bool),
        "rope": rope_config(hf, source),
    }
    # Which linears carry biases: q/k/v, o_proj, the three MLP projections.
    if kind == "llama":
        attn = _get(hf, "attention_bias", False, source, bool)
        out.update(qkv_bias=attn, o_bias=attn, mlp_bias=_get(hf, "mlp_bias", False, source, bool))
    elif kind == "qwen2":
        out.update(qkv_bias=True, o_bias=False, mlp_bias=False)
    else:
        out.update(qkv_bias=False, o_bias=False, mlp_bias=False)
    out["sliding_window"] = _sliding_window(hf, kind, out["num_hidden_layers"], source)
    return out


def _sliding_window(hf: dict[str, Any], kind: str, n_layer: int, source: str) -> int | None:
    """The window every layer slides over, or None; mixed layers are not supported."""
    if kind == "mistral":
        return _get(hf, "sliding_window", None, source, (int, type(None)))
    if kind == "qwen2" and hf.get("use_sliding_window"):
        layer_types = hf.get("layer_types")
        if layer_types is None:
            first = _get(hf, "max_window_layers", 28, source)
            layer_types = [
                "sliding_attention" if i >= first else "full_attention" for i in range(n_layer)
            ]
        if set(layer_types) == {"sliding_attention"}:
            return _get(hf, "sliding_window", 4096, source)
        elif set(layer_types) != {"full_attention"}:
            raise ConfigError(
                f"{source}: layer_types: a sliding window on some layers only is not supported; "
                "supported: the same attention on every layer"
            )
    return None


def model_config(h: dict[str, Any]) -> ModelConfig:
    """The llmcore ModelConfig of a :func:`normalize`-d HF config."""
    if h["model_type"] == "gpt2":
        mlp, mlp_params = GPT2_ACTIVATIONS[h["activation_function"]]
        return ModelConfig(
            vocab_size=h["vocab_size"],
            block_size=h["n_positions"],
            n_layer=h["n_layer"],
            n_head=h["n_head"],
            n_embd=h["n_embd"],
            mlp_hidden=h["n_inner"],
            bias=True,
            tie_embeddings=h["tie_word_embeddings"],
            norm=Component("layernorm", {"eps": h["layer_norm_epsilon"]}),
            mlp=Component(mlp, dict(mlp_params)),
            position=Component("learned"),
        )
    hidden, heads = h["hidden_size"], h["num_attention_heads"]
    rope: dict[str, Any] = {"theta": h["rope"]["theta"]}
    if h["rope"]["scaling"]:
        rope["scaling"] = dict(h["rope"]["scaling"])
    # llmcore has one bias flag for all linears plus a q/k/v override; a linear that HF lacks
    # but llmcore's flag implies is loaded as zeros (exactly the same function).
    bias = h["o_bias"] or h["mlp_bias"]
    # Fields equal to what ModelConfig derives stay None, as a hand-written config has them.
    return ModelConfig(
        vocab_size=h["vocab_size"],
        block_size=h["max_position_embeddings"],
        n_layer=h["num_hidden_layers"],
        n_head=heads,
        n_kv_head=h["num_key_value_heads"] if h["num_key_value_heads"] != heads else None,
        n_embd=hidden,
        head_dim=h["head_dim"] if h["head_dim"] * heads != hidden else None,
        mlp_hidden=h["intermediate_size"],
        bias=bias,
        qkv_bias=h["qkv_bias"] if h["qkv_bias"] != bias else None,
        tie_embeddings=h["tie_word_embeddings"],
        sliding_window=h["sliding_window"],
        norm=Component("rmsnorm", {"eps": h["rms_norm_eps"]}),
        mlp=Component("swiglu"),
        position=Component("rope", rope),
    )


def hf_config(
    model: Any,
    *,
    bos_id: int | None = None,
    eos_id: int | None = None,
    rope_factors: bool = False,
) -> dict:
    """The HF ``config.json`` mapping of an llmcore :class:`~llmcore.model.Transformer`.

    The architecture is chosen from the model's components; a model no HF architecture can
    express raises :class:`ConfigError` saying which part does not fit. ``rope_factors``
    lets rotary scaling by per-frequency divisors (which HF cannot express) through as
    ``rope_scaling = {"rope_type": "factors", ...}``, for writers of formats that can (GGUF).
    """
    m: ModelConfig = model.config
    names = (m.position.name, m.norm.name, m.mlp.name)
    # the keys every architecture ends with, in the order config.json has always had them
    common = {
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "vocab_size": m.vocab_size,
        "tie_word_embeddings": m.tie_embeddings,
    }
    if names[0] == "learned" and names[1] == "layernorm" and names[2] in ("gelu", "relu"):
        return _gpt2_config(model, common)
    if names == ("rope", "rmsnorm", "swiglu"):
        return _llama_family_config(model, common, rope_factors)
    raise ConfigError(
        f"cannot export a model with position={names[0]}, norm={names[1]}, mlp={names[2]} to "
        "Hugging Face format; supported: learned+layernorm+gelu/relu (gpt2), "
        "rope+rmsnorm+swiglu (llama, mistral, qwen2)"
    )


def _gpt2_config(model: Any, common: dict[str, Any]) -> dict[str, Any]:
    """GPT-2's config.json: learned positions, LayerNorm, GELU or ReLU, plain heads."""
    m: ModelConfig = model.config
    block = model.blocks[0]
    names = (m.position.name, m.norm.name, m.mlp.name)
    head_dim, kv = m.head_size, m.kv_heads
    act = "relu" if names[2] == "relu" else _gelu_name(block.mlp.approximate)
    misfit = [
        f"{what}={value}"
        for what, value, ok in (
            ("n_kv_head", kv, kv == m.n_head),
            ("head_dim", head_dim, head_dim * m.n_head == m.n_embd),
            ("sliding_window", m.sliding_window, m.sliding_window is None),
        )
        if not ok
    ]
    if misfit:
        raise ConfigError(f"cannot export to gpt2: {', '.join(misfit)} is not expressible")
    return {
        "architectures": [ARCHITECTURES["gpt2"]],
        "model_type": "gpt2",
        "n_positions": m.block_size,
        "n_ctx": m.block_size,
        "n_embd": m.n_embd,
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_inner": block.mlp.fc.out_features,
        "activation_function": act,
        "layer_norm_epsilon": block.norm1.eps,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        **common,
    }


def _llama_family_config(
    model: Any, common: dict[str, Any], rope_factors: bool = False
) -> dict[str, Any]:
    """Llama's, Mistral's or Qwen2's config.json, chosen by the biases and the window."""
    m: ModelConfig = model.config
    block = model.blocks[0]
    head_dim, kv, qkv_bias = m.head_size, m.kv_heads, m.qkv_has_bias
    rope = model.position
    params: dict[str, Any] = {"rope_theta": float(rope.theta), "rope_type": "default"}
    factors = None
    if rope.scaling and rope.scaling.get("type") == "factors" and rope_factors:
        factors = {"rope_type": "factors", "factors": list(rope.scaling["factors"])}
    elif rope.scaling:
        kind = rope.scaling.get("type", "llama3")
        if kind not in ROPE_TYPES:
            raise ConfigError(
                f"cannot export rope scaling {kind!r} to Hugging Face format; supported: "
                f"{', '.join(ROPE_TYPES[1:])}"
            )
        params.update({k: v for k, v in rope.scaling.items() if k != "type"})
        params["rope_type"] = kind
    if qkv_bias and not m.bias:
        kind = "qwen2"
    elif m.sliding_window is not None:
        if m.bias or qkv_bias:
            raise ConfigError(
                "cannot export to mistral: a sliding window with biases other than q/k/v"
            )
        kind = "mistral"
    else:
        kind = "llama"
    out = {
        "architectures": [ARCHITECTURES[kind]],
        "model_type": kind,
        "hidden_size": m.n_embd,
        "intermediate_size": block.mlp.gate.out_features,
        "num_hidden_layers": m.n_layer,
        "num_attention_heads": m.n_head,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": m.block_size,
        "rms_norm_eps": block.norm1.eps,
        "rope_parameters": params,  # transformers 5; the next two for transformers 4
        "rope_theta": params["rope_theta"],
        "rope_scaling": factors
        or ({k: v for k, v in params.items() if k != "rope_theta"} if rope.scaling else None),
        "attention_dropout": 0.0,
        **common,
    }
    if kind == "llama":
        # HF's attention_bias covers q, k, v and o together; missing ones are written as zeros.
        out.update(attention_bias=bool(m.bias or qkv_bias), mlp_bias=bool(m.bias))
    elif kind == "mistral":
        out["sliding_window"] = m.sliding_window
    elif m.sliding_window is None:
        out.update(use_sliding_window=False, sliding_window=None)
    else:  # every layer slides: the first 0 layers use full attention
        out.update(
            use_sliding_window=True,
            sliding_window=m.sliding_window,
            max_window_layers=0,
            layer_types=["sliding_attention"] * m.n_layer,
        )
    return out


def _gelu_name(approximate: str) -> str:
    return "gelu_new" if approximate == "tanh" else "gelu"
