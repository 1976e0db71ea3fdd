"""GGUF tensors -> llmcore parameters: names, llama.cpp's q/k row order, dequantization.

Each GGUF name is translated to the Hugging Face tensor it was converted from, and
:func:`llmcore.hf.tensors.tensor_map` says where that lives in llmcore, so the two formats
share one map. Two things differ from HF's files:

- llama.cpp stores GPT-2's ``Conv1D`` weights already transposed to ``(out, in)``, llmcore's
  own layout, so they are never transposed here;
- for llama and mistral, llama.cpp permutes the rows of ``attn_q`` / ``attn_k`` within each
  head from HF's "two halves" rotary order to interleaved pairs; :func:`unpermute` undoes it.

Quantized tensors are dequantized by the multi-threaded C++ kernels of
:mod:`llmcore.ops.quant`, straight from the memory-mapped bytes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from llmcore.errors import CheckpointError
from llmcore.gguf.reader import GGUFFile, TensorInfo
from llmcore.hf.tensors import tensor_map

# GGUF block tensor name -> HF name (after ``model.layers.N.`` / ``transformer.h.N.``)
LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GPT2_BLOCK = {
    "attn_norm": "ln_1",
    "attn_qkv": "attn.c_attn",
    "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2",
    "ffn_up": "mlp.c_fc",
    "ffn_down": "mlp.c_proj",
}
LLAMA_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
GPT2_TOP = {
    "token_embd": "transformer.wte",
    "position_embd": "transformer.wpe",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
}
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)")
PERMUTED_ARCHS = ("llama", "mistral")
ROPE_FREQS = "rope_freqs.weight"  # per-frequency rotary divisors, not a parameter


def hf_name(name: str, arch: str) -> str | None:
    """The HF tensor name of GGUF tensor ``name``; None when it has none."""
    gpt2 = arch == "gpt2"
    m = _BLOCK_NAME.fullmatch(name)
    if m:
        block, part, kind = m.groups()
        hf = (GPT2_BLOCK if gpt2 else LLAMA_BLOCK).get(part)
        prefix = f"transformer.h.{block}." if gpt2 else f"model.layers.{block}."
        return None if hf is None else f"{prefix}{hf}.{kind}"
    top, _, kind = name.rpartition(".")
    hf = (GPT2_TOP if gpt2 else LLAMA_TOP).get(top)
    return None if hf is None else f"{hf}.{kind}"


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's row order of a llama.cpp ``attn_q``/``attn_k`` tensor of ``n_head`` heads.

    llama.cpp writes row ``2*i + j`` of each head (``j`` in 0, 1) from HF row ``j*d/2 + i``.
    """
    rows = w.shape[0]
    d = rows // n_head
    # (n_head, d/2, 2, ...) -> (n_head, 2, d/2, ...) -> (rows, ...)
    return w.reshape(n_head, d // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def read_tensor(f: GGUFFile, info: TensorInfo, dtype: torch.dtype) -> torch.Tensor:
    """A GGUF tensor as a torch tensor of ``info.shape`` (float32, or bfloat16 when
    ``dtype`` is bfloat16); float types are views of the map when no cast is needed."""
    raw = f.data(info)
    if info.type in ("F32", "F16", "BF16"):
        np_dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[info.type]
        t = torch.from_numpy(raw.view(np_dtype)).reshape(info.shape)
        return t.view(torch.bfloat16) if info.type == "BF16" else t
    from llmcore.ops import quant

    out = torch.bfloat16 if dtype == torch.bfloat16 else torch.float32
    try:
        return quant.dequantize(info.type.lower(), raw, info.shape, out)
    except ValueError as exc:
        raise CheckpointError(f"{f.path}: tensor {info.name!r}: {exc}") from None


def load_weights(
    model: torch.nn.Module, f: GGUFFile, h: dict[str, Any], skip: set[str] = frozenset()
) -> None:
    """Copy every tensor of GGUF file ``f`` into ``model`` (built from the normalized
    config ``h``). Missing, unknown or misshapen tensors raise :class:`CheckpointError`
    naming the file and tensor; llmcore biases the file lacks are set to zero. Tensors named
    in ``skip`` are checked to belong to the model but not copied (the layers kept quantized,
    see :mod:`llmcore.quant.from_gguf`)."""
    arch = h["model_type"]
    mapping = {t.hf: t for t in tensor_map(h)}
    params = dict(model.named_parameters(remove_duplicate=False))
    by_hf: dict[str, TensorInfo] = {}
    for name, info in f.tensors.items():
        hf = hf_name(name, arch)
        if hf is None or hf not in mapping:
            if name == "output.weight" and h["tie_word_embeddings"]:
                continue
            if name == ROPE_FREQS:  # read into the config (llmcore.gguf.archs)
                continue
            raise CheckpointError(
                f"{f.path}: unexpected tensor {name!r}: not part of a {arch} model with this "
                "metadata"
            )
        by_hf[hf] = info
    missing = [hf for hf in mapping if hf not in by_hf]
    if missing:
        gg = {hf_name(n, arch): n for n in _expected_names(h)}
        raise CheckpointError(
            f"{f.path}: missing tensor {gg.get(missing[0], missing[0])!r} "
            f"({len(missing)} missing in all)"
        )
    covered = {t.ours for t in mapping.values()}
    with torch.no_grad():
        for name, p in params.items():
            if name not in covered and name.endswith(".bias"):
                p.zero_()
        for hf, info in by_hf.items():
            if info.name not in skip:
                _copy(f, info, mapping[hf], params, h)


def _expected_names(h: dict[str, Any]) -> list[str]:
    """GGUF names of every block tensor (to name a missing one as the file would)."""
    gpt2 = h["model_type"] == "gpt2"
    n = h["n_layer"] if gpt2 else h["num_hidden_layers"]
    parts = GPT2_BLOCK if gpt2 else LLAMA_BLOCK
    tops = GPT2_TOP if gpt2 else LLAMA_TOP
    names = [f"{t}.{k}" for t in tops for k in ("weight", "bias")]
    return names + [f"blk.{i}.{p}.{k}" for i in range(n) for p in parts for k in ("weight", "bias")]


def _copy(f: GGUFFile, info: TensorInfo, entry: Any, params: dict, h: dict[str, Any]) -> None:
    param = params[entry.ours]
    target = param if entry.rows is None else param[entry.rows[0] : entry.rows[1]]
    if tuple(info.shape) != tuple(target.shape):
        raise CheckpointError(
            f"{f.path}: tensor {info.name!r} has shape {info.shape}, but the metadata "
            f"implies {tuple(target.shape)}"
        )
    t = read_tensor(f, info, param.dtype)
    if h["model_type"] in PERMUTED_ARCHS and (".attn_q." in info.name or ".attn_k." in info.name):
        heads = h["num_attention_heads"] if ".attn_q." in info.name else h["num_key_value_heads"]
        t = unpermute(t, heads)
    elif entry.rows is None and _is_map_view(t, info, param):
        # stored as loaded: the parameter is the file's (private, copy-on-write) pages; the
        # map lives as long as they do
        param.data = t
        return
    target.copy_(t)


def _is_map_view(t: torch.Tensor, info: TensorInfo, param: torch.Tensor) -> bool:
    """Whether ``t`` is still the mapped bytes of a float tensor, usable as ``param``."""
    return (
        info.type in ("F32", "F16", "BF16")
        and param.device.type == "cpu"
        and t.dtype == param.dtype
        and t.shape == param.shape
        and t.data_ptr() % t.element_size() == 0
    )
