"""Write an llmcore model and its tokenizer as a GGUF file llama.cpp reads.

The metadata are llama.cpp's keys for the architecture :func:`llmcore.hf.archs.hf_config`
picks (gpt2, llama, mistral, qwen2); tensors get llama.cpp's names and layouts (q/k rows
permuted for llama and mistral, see :func:`llmcore.gguf.tensors.unpermute`). Matrices are
written as F16, Q8_0 or Q4_0 (:mod:`llmcore.ops.quant`'s quantizers, identical to
``gguf.quants``); norms, biases and rows that do not split into blocks of 32 stay F32/F16,
as llama.cpp's converter leaves them. Rotary scaling is written as llama.cpp reads it:
linear and yarn as ``rope.scaling.*`` keys, Llama 3's as the per-frequency divisors of a
``rope_freqs.weight`` tensor. The tokenizer must be a byte-level BPE.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmcore.builtin import rope_scaling
from llmcore.errors import ConfigError, TokenizerError
from llmcore.gguf import archs
from llmcore.gguf.tensors import GPT2_BLOCK, GPT2_TOP, LLAMA_BLOCK, LLAMA_TOP, PERMUTED_ARCHS
from llmcore.hf import archs as hf_archs
from llmcore.hf.tensors import tensor_map

QTYPES = ("f16", "q8_0", "q4_0", "q4_k")
# --type -> llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*; q4_k is Q4_K_S)
FILE_TYPES = {"f16": 1, "q8_0": 7, "q4_0": 2, "q4_k": 14}
# pre-tokenizer family -> tokenizer.ggml.pre, as llama.cpp spells it (it refuses "gpt2")
PRE_NAMES = {"gpt2": "gpt-2", "cl100k_base": "llama-bpe"}


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's row order of an HF ``q_proj``/``k_proj`` tensor (inverse of ``unpermute``)."""
    d = w.shape[0] // n_head
    # (n_head, 2, d/2, ...) -> (n_head, d/2, 2, ...) -> (rows, ...)
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _gguf_names(arch: str) -> dict[str, str]:
    """HF name stem -> GGUF name stem, for top-level tensors and ``{i}``-templated blocks."""
    gpt2 = arch == "gpt2"
    tops = GPT2_TOP if gpt2 else LLAMA_TOP
    out = {hf: gg for gg, hf in tops.items()}
    prefix = "transformer.h.{i}." if gpt2 else "model.layers.{i}."
    for gg, hf in (GPT2_BLOCK if gpt2 else LLAMA_BLOCK).items():
        out[prefix + hf] = "blk.{i}." + gg
    return out


def _tensors(model: torch.nn.Module, h: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(GGUF name, float32 tensor)`` of every weight, in llama.cpp's layout."""
    arch = h["model_type"]
    names = _gguf_names(arch)
    params = dict(model.named_parameters(remove_duplicate=False))
    for entry in tensor_map(h):
        parts = entry.hf.split(".")
        kind = parts[-1]
        block = next((p for p in parts if p.isdigit()), None)
        stem = ".".join(parts[:-1])
        key = stem if block is None else stem.replace(f".{block}.", ".{i}.", 1)
        name = names[key].format(i=block) + "." + kind
        w = params[entry.ours].detach().float().cpu()
        if entry.rows is not None:
            w = w[entry.rows[0] : entry.rows[1]]
        if arch in PERMUTED_ARCHS and (".attn_q." in name or ".attn_k." in name):
            heads = h["num_attention_heads" if ".attn_q." in name else "num_key_value_heads"]
            w = permute(w, heads)
        yield name, w.contiguous()


def _metadata(w: Any, h: dict[str, Any]) -> None:
    if h["model_type"] == "gpt2":
        w.add_context_length(h["n_positions"])
        w.add_embedding_length(h["n_embd"])
        w.add_block_count(h["n_layer"])
        w.add_feed_forward_length(h["n_inner"])
        w.add_head_count(h["n_head"])
        w.add_layer_norm_eps(h["layer_norm_epsilon"])
        return
    w.add_context_length(h["max_position_embeddings"])
    w.add_embedding_length(h["hidden_size"])
    w.add_block_count(h["num_hidden_layers"])
    w.add_feed_forward_length(h["intermediate_size"])
    w.add_head_count(h["num_attention_heads"])
    w.add_head_count_kv(h["num_key_value_heads"])
    w.add_key_length(h["head_dim"])
    w.add_value_length(h["head_dim"])
    w.add_rope_dimension_count(h["head_dim"])
    w.add_rope_freq_base(h["rope"]["theta"])
    w.add_layer_norm_rms_eps(h["rms_norm_eps"])
    _rope_scaling(w, h)
    if h.get("sliding_window"):
        w.add_sliding_window(h["sliding_window"])


def _rope_scaling(w: Any, h: dict[str, Any]) -> None:
    """llama.cpp's ``rope.scaling.*`` keys for linear and yarn scaling (Llama 3's and
    per-frequency scaling are the ``rope_freqs.weight`` tensor, :func:`rope_freqs`)."""
    import gguf

    s = h["rope"]["scaling"]
    kind = s["type"] if s else None
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(s["factor"])
    elif kind == "yarn":
        factor = s["factor"]
        if s.get("attention_factor") not in (None, rope_scaling.yarn_attention_factor({}, factor)):
            raise ConfigError(
                f"GGUF export: yarn attention_factor {s['attention_factor']} is not "
                "expressible: llama.cpp uses 0.1 ln(factor) + 1"
            )
        if not s.get("truncate", True):
            raise ConfigError("GGUF export: yarn with truncate=False is not expressible")
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(s["original_max_position_embeddings"])
        w.add_rope_scaling_yarn_beta_fast(s.get("beta_fast", 32.0))
        w.add_rope_scaling_yarn_beta_slow(s.get("beta_slow", 1.0))


def rope_freqs(h: dict[str, Any]) -> torch.Tensor | None:
    """The ``rope_freqs.weight`` tensor of Llama 3 or per-frequency scaling: the divisor of
    each rotary frequency, as llama.cpp's converter computes it; None for other scalings."""
    s = h["rope"]["scaling"] if "rope" in h else None
    if not s or s["type"] not in ("llama3", "factors"):
        return None
    if h["model_type"] != "llama":
        raise ConfigError(
            f"GGUF export: {s['type']} rope scaling (the rope_freqs tensor) is only written "
            f"for the llama architecture, not {h['model_type']}"
        )
    if s["type"] == "factors":
        return torch.tensor(s["factors"], dtype=torch.float32)
    d = h["head_dim"]
    inv_freq = 1.0 / (h["rope"]["theta"] ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    scaled, _ = rope_scaling.scale(inv_freq, s, h["rope"]["theta"])
    return (inv_freq / scaled).contiguous()


def _tokenizer(w: Any, tokenizer: Any, vocab_size: int) -> None:
    from llmcore.tokenizers.bytelevel import merges_of_ranks, to_text
    from llmcore.tokenizers.vocab import BYTE_LEVEL_BPE

    vocab = tokenizer.vocabulary() if hasattr(tokenizer, "vocabulary") else None
    if vocab is None or vocab.kind != BYTE_LEVEL_BPE or vocab.pattern not in PRE_NAMES:
        what = "no vocabulary" if vocab is None else f"a {vocab.kind} ({vocab.pattern})"
        raise TokenizerError(
            f"GGUF export: the tokenizer has {what}; only byte-level BPE tokenizers with "
            f"pre-tokenizer {' or '.join(PRE_NAMES)} can be written"
        )
    # llama.cpp wants one token per embedding row: unused rows get placeholder tokens
    n = max([vocab_size - 1, *vocab.id_list(), *vocab.special_tokens.values()]) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [5] * n  # UNUSED until filled
    for tok, i in zip(vocab.tokens, vocab.id_list()):
        tokens[i], types[i] = to_text(tok), 1
    for text, i in vocab.special_tokens.items():
        tokens[i], types[i] = text, 3
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_NAMES[vocab.pattern])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) for m in merges_of_ranks(vocab.tokens, vocab.ranks)])
    if tokenizer.eot_id is not None:
        w.add_bos_token_id(tokenizer.eot_id)
        w.add_eos_token_id(tokenizer.eot_id)
    w.add_add_bos_token(False)


def default_type(name: str, shape: tuple[int, ...], qtype: str) -> str:
    """The type a tensor is written as: ``qtype`` for matrices whose rows split into its
    blocks, else f16; f32 for norms and vectors."""
    from llmcore.ops import quant

    if len(shape) != 2 or name.endswith("_norm.weight"):
        return "f32"
    if qtype != "f16" and shape[-1] % quant.quant_type(qtype).block_size == 0:
        return qtype
    return "f16"


def _encoded(name: str, t: torch.Tensor, qtype: str) -> tuple[np.ndarray, Any]:
    """The array and GGML type a tensor of type ``qtype`` (f32, f16 or quantized) is
    written as."""
    import gguf

    from llmcore.ops import quant

    if qtype == "f32":
        return t.numpy(), None
    if qtype == "f16":
        return t.to(torch.float16).numpy(), None
    return quant.quantize(qtype, t).numpy(), gguf.GGMLQuantizationType[qtype.upper()]


def save_gguf(
    model: torch.nn.Module,
    tokenizer: Any,
    out: str | Path,
    qtype: str = "f16",
    *,
    name: str | None = None,
    chat_template: str | None = None,
    tensor_type: Any = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` to the GGUF file ``out``; returns its path.

    ``tensor_type(gguf_name, shape, qtype) -> type`` chooses each tensor's type (f32, f16 or
    a quantized one); the default is :func:`default_type`.

    Raises:
        ConfigError: an unknown ``qtype`` or a model no GGUF architecture expresses.
        TokenizerError: a tokenizer that is not a byte-level BPE llama.cpp knows.
    """
    import gguf

    if qtype not in QTYPES:
        raise ConfigError(f"GGUF export: type {qtype!r} is not one of {', '.join(QTYPES)}")
    h = archs.normalize(hf_archs.hf_config(model, rope_factors=True), "the model")
    out = Path(out)
    w = gguf.GGUFWriter(str(out), h["model_type"])
    try:
        w.add_name(name or out.stem)
        w.add_file_type(FILE_TYPES[qtype])
        _metadata(w, h)
        _tokenizer(w, tokenizer, model.config.vocab_size)
        if chat_template:
            w.add_chat_template(chat_template)
        freqs = rope_freqs(h)
        if freqs is not None:  # F32, first, as llama.cpp's converter writes it
            w.add_tensor("rope_freqs.weight", freqs.numpy())
        for tname, t in _tensors(model, h):
            chosen = (tensor_type or default_type)(tname, tuple(t.shape), qtype)
            arr, raw_type = _encoded(tname, t, chosen)
            w.add_tensor(tname, arr, raw_dtype=raw_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return out
