"""Which Hugging Face tensor is which llmcore parameter (or a slice of one).

llmcore's attention has one fused ``qkv`` Linear whose output rows are ``[q | k | v]``; the
Llama family stores ``q_proj``, ``k_proj`` and ``v_proj`` apart, so each maps to a row range.
GPT-2 stores its linears as ``Conv1D`` with ``(in, out)`` weights: they are transposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TensorMap:
    """One HF tensor and where it lives in llmcore.

    Attributes:
        hf: the HF tensor name (with the ``transformer.`` / ``model.`` prefix of the
            ``*ForCausalLM`` / ``GPT2LMHeadModel`` classes).
        ours: the llmcore parameter name.
        rows: ``(start, stop)`` rows of ``ours`` that hold this tensor; None: all of it.
        transpose: HF stores the transpose of llmcore's weight (GPT-2's Conv1D).
    """

    hf: str
    ours: str
    rows: tuple[int, int] | None = None
    transpose: bool = False


def canonical_name(name: str, model_type: str) -> str:
    """The name with the ``*ForCausalLM`` prefix, also for base-model checkpoints
    (``h.0.attn...`` from ``GPT2Model``, ``layers.0...`` from ``LlamaModel``)."""
    prefix = "transformer." if model_type == "gpt2" else "model."
    if name.startswith((prefix, "lm_head.")):
        return name
    return prefix + name


def is_ignored(name: str, model_type: str) -> bool:
    """True for HF tensors that are not weights (GPT-2's causal-mask buffers, the rotary
    frequencies some older Llama checkpoints store)."""
    if model_type == "gpt2":
        return name.endswith((".attn.bias", ".attn.masked_bias"))
    return name.endswith(".rotary_emb.inv_freq")


def tensor_map(h: dict[str, Any]) -> list[TensorMap]:
    """Every tensor of the HF checkpoint described by a normalized config ``h``."""
    if h["model_type"] == "gpt2":
        return _gpt2(h)
    return _llama(h)


def _gpt2(h: dict[str, Any]) -> list[TensorMap]:
    out = [
        TensorMap("transformer.wte.weight", "wte.weight"),
        TensorMap("transformer.wpe.weight", "position.wpe.weight"),
    ]
    for i in range(h["n_layer"]):
        hf, ours = f"transformer.h.{i}.", f"blocks.{i}."
        for a, b in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out += [TensorMap(f"{hf}{a}.{p}", f"{ours}{b}.{p}") for p in ("weight", "bias")]
        for a, b in (
            ("attn.c_attn", "attn.qkv"),
            ("attn.c_proj", "attn.proj"),
            ("mlp.c_fc", "mlp.fc"),
            ("mlp.c_proj", "mlp.proj"),
        ):
            out.append(TensorMap(f"{hf}{a}.weight", f"{ours}{b}.weight", transpose=True))
            out.append(TensorMap(f"{hf}{a}.bias", f"{ours}{b}.bias"))
    out += [TensorMap(f"transformer.ln_f.{p}", f"norm_f.{p}") for p in ("weight", "bias")]
    if not h["tie_word_embeddings"]:
        out.append(TensorMap("lm_head.weight", "lm_head.weight"))
    return out


def _llama(h: dict[str, Any]) -> list[TensorMap]:
    d = h["head_dim"]
    q, kv = h["num_attention_heads"] * d, h["num_key_value_heads"] * d
    ranges = {"q_proj": (0, q), "k_proj": (q, q + kv), "v_proj": (q + kv, q + 2 * kv)}
    out = [TensorMap("model.embed_tokens.weight", "wte.weight")]
    for i in range(h["num_hidden_layers"]):
        hf, ours = f"model.layers.{i}.", f"blocks.{i}."
        out.append(TensorMap(f"{hf}input_layernorm.weight", f"{ours}norm1.weight"))
        for proj, rows in ranges.items():
            out.append(TensorMap(f"{hf}self_attn.{proj}.weight", f"{ours}attn.qkv.weight", rows))
            if h["qkv_bias"]:
                out.append(TensorMap(f"{hf}self_attn.{proj}.bias", f"{ours}attn.qkv.bias", rows))
        out.append(TensorMap(f"{hf}self_attn.o_proj.weight", f"{ours}attn.proj.weight"))
        if h["o_bias"]:
            out.append(TensorMap(f"{hf}self_attn.o_proj.bias", f"{ours}attn.proj.bias"))
        out.append(TensorMap(f"{hf}post_attention_layernorm.weight", f"{ours}norm2.weight"))
        for a, b in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
            out.append(TensorMap(f"{hf}mlp.{a}.weight", f"{ours}mlp.{b}.weight"))
            if h["mlp_bias"]:
                out.append(TensorMap(f"{hf}mlp.{a}.bias", f"{ours}mlp.{b}.bias"))
    out.append(TensorMap("model.norm.weight", "norm_f.weight"))
    if not h["tie_word_embeddings"]:
        out.append(TensorMap("lm_head.weight", "lm_head.weight"))
    return out
