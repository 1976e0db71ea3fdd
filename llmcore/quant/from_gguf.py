"""Keep a GGUF file's quantized matrices quantized: the model's linear layers and token
embedding are replaced by layers over the file's own blocks.

Each llmcore linear layer is made of one or more GGUF tensors (the fused ``attn.qkv`` of
llama's ``attn_q``, ``attn_k`` and ``attn_v``). It is kept quantized when each of its tensors
is in a block format with a registered ``quantized_linear`` plugin; its blocks are then a
view of the file's memory map when one tensor fills it as stored, and a copy otherwise
(q/k rows that llama.cpp permuted, or rows stacked from several tensors: each row is its own
run of blocks, so both are row moves, never a dequantize). Rows in different formats (the
q6_k ``attn_v`` of a Q4_K_M file under a q4_k ``attn_q``) make a
:class:`~llmcore.quant.layers.StackedQuantizedLinear` of one part per format. A layer that a
float type stores, even in part, is loaded dense as before.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from llmcore.errors import CheckpointError, PluginError
from llmcore.gguf.reader import GGUFFile, TensorInfo
from llmcore.gguf.tensors import PERMUTED_ARCHS, hf_name, read_tensor, unpermute
from llmcore.hf.tensors import tensor_map

FLOAT_TYPES = ("F32", "F16", "BF16")


def keep_quantized(model: nn.Module, f: GGUFFile, h: dict[str, Any]) -> set[str]:
    """Replace the linear layers and embedding of ``model`` whose weights ``f`` stores in a
    registered quantized format by quantized layers over those blocks.

    Returns:
        the GGUF names of the tensors consumed (weights and their biases), which the dense
        loader must skip.
    """
    from llmcore import plugins

    arch = h["model_type"]
    entries = {t.hf: t for t in tensor_map(h)}
    parts: dict[str, list[tuple[Any, TensorInfo]]] = defaultdict(list)  # module -> tensors
    for name, info in f.tensors.items():
        entry = entries.get(hf_name(name, arch) or "")
        if entry is not None and entry.ours.endswith(".weight"):
            parts[entry.ours.removesuffix(".weight")].append((entry, info))
    formats = plugins.available("quantized_linear")
    consumed: set[str] = set()
    modules = dict(model.named_modules())
    tied = h["tie_word_embeddings"]
    for path, tensors in parts.items():
        types = {info.type.lower() for _, info in tensors}
        if any(t.upper() in FLOAT_TYPES or t not in formats for t in types):
            continue
        tensors.sort(key=lambda pair: (pair[0].rows or (0, 0))[0])
        module = modules[path]
        if isinstance(module, nn.Embedding):
            qtype = tensors[0][1].type.lower()
            blocks = _rows(f, tensors[0][1], h)
            _set(model, path, _embedding(f, tensors[0][1], qtype, blocks, module))
            if tied:
                _set(model, "lm_head", model.wte.head())
        else:
            bias, bias_names = _bias(f, h, entries, path, module)
            _set(model, path, _layer(f, h, tensors, module, bias))
            consumed.update(bias_names)
        consumed.update(info.name for _, info in tensors)
    return consumed


def _layer(f, h, tensors, module: nn.Linear, bias) -> nn.Module:
    """One quantized layer over the tensors' rows; a stacked one when runs of rows come in
    different formats."""
    from llmcore.quant.layers import StackedQuantizedLinear

    runs: list[list] = []  # consecutive tensors of one format share a part
    for pair in tensors:
        if runs and runs[-1][0][1].type == pair[1].type:
            runs[-1].append(pair)
        else:
            runs.append([pair])
    out_f = module.weight.shape[0]
    rows = sum(info.shape[0] for _, info in tensors)
    if rows != out_f:
        names = ", ".join(repr(info.name) for _, info in tensors)
        raise CheckpointError(
            f"{f.path}: tensor(s) {names} have {rows} rows, the layer needs {out_f}"
        )
    parts, start = [], 0
    for run in runs:
        got = [_rows(f, info, h) for _, info in run]
        blocks = got[0] if len(got) == 1 else torch.cat(got)  # one tensor: the map's view
        stop = start + blocks.shape[0]
        part_bias = None if bias is None else bias[start:stop]
        parts.append(_linear(f, run, run[0][1].type.lower(), blocks, module, part_bias))
        start = stop
    return parts[0] if len(parts) == 1 else StackedQuantizedLinear(parts)


def _rows(f: GGUFFile, info: TensorInfo, h: dict[str, Any]) -> torch.Tensor:
    """The ``(rows, row_bytes)`` blocks of a quantized tensor in llmcore's row order: a view
    of the map, or a permuted copy for llama's q and k."""
    from llmcore.ops import quant

    try:
        t = quant.quant_type(info.type.lower())
        rows = int(torch.Size(info.shape[:-1]).numel())
        row_bytes = t.nbytes((1, info.shape[-1]))
        raw = torch.from_numpy(f.data(info)).view(rows, row_bytes)
        bad = quant.first_bad_scale(t, raw, info.shape)
    except ValueError as exc:
        raise CheckpointError(f"{f.path}: tensor {info.name!r}: {exc}") from None
    if bad >= 0:
        raise CheckpointError(
            f"{f.path}: tensor {info.name!r}: block {bad} (row {bad // (row_bytes // t.block_bytes)})"
            f" has a NaN or infinite fp16 scale: the file is corrupt"
        )
    if h["model_type"] in PERMUTED_ARCHS and (".attn_q." in info.name or ".attn_k." in info.name):
        heads = h["num_attention_heads"] if ".attn_q." in info.name else h["num_key_value_heads"]
        raw = unpermute(raw, heads).contiguous()
    return raw


def _embedding(f, info, qtype, blocks, module: nn.Embedding) -> nn.Module:
    from llmcore.quant.layers import QuantizedEmbedding

    want = tuple(module.weight.shape)
    if tuple(info.shape) != want:
        raise CheckpointError(
            f"{f.path}: tensor {info.name!r} has shape {info.shape}, but the metadata implies {want}"
        )
    return QuantizedEmbedding(qtype, blocks, *want, dtype=module.weight.dtype)


def _bias(f, h, entries, path: str, module: nn.Module):
    """The module's bias from the file (rows stacked like the weight's) and the GGUF names
    read; None when the module has no bias or the file none for it (llmcore's zero)."""
    if getattr(module, "bias", None) is None:
        return None, set()
    arch = h["model_type"]
    found = []
    for name, info in f.tensors.items():
        entry = entries.get(hf_name(name, arch) or "")
        if entry is not None and entry.ours == f"{path}.bias":
            found.append((entry, info))
    if not found:
        return None, set()
    found.sort(key=lambda pair: (pair[0].rows or (0, 0))[0])
    chunks = []
    for _, info in found:
        t = read_tensor(f, info, torch.float32).float()
        if arch in PERMUTED_ARCHS and (".attn_q." in info.name or ".attn_k." in info.name):
            heads = (
                h["num_attention_heads"] if ".attn_q." in info.name else h["num_key_value_heads"]
            )
            t = unpermute(t, heads)
        chunks.append(t)
    bias = torch.cat(chunks)
    if bias.shape != module.bias.shape:
        raise CheckpointError(
            f"{f.path}: bias tensors {[i.name for _, i in found]} make {tuple(bias.shape)}, "
            f"the layer needs {tuple(module.bias.shape)}"
        )
    return bias, {info.name for _, info in found}


def _linear(f, tensors, qtype: str, blocks, module: nn.Linear, bias) -> nn.Module:
    from llmcore.components import create
    from llmcore.config import Component

    in_f = module.weight.shape[1]
    out_f = blocks.shape[0]
    names = ", ".join(repr(info.name) for _, info in tensors)
    if any(info.shape[-1] != in_f for _, info in tensors):
        shapes = [info.shape for _, info in tensors]
        raise CheckpointError(
            f"{f.path}: tensor(s) {names} of shape(s) {shapes} do not have the "
            f"{in_f} columns the metadata implies"
        )
    try:
        return create(
            "quantized_linear",
            Component(qtype),
            f"{f.path}: tensor(s) {names}",
            blocks=blocks,
            in_features=in_f,
            out_features=out_f,
            bias=bias,
        )
    except (ValueError, PluginError) as exc:
        raise CheckpointError(f"{f.path}: tensor(s) {names}: {exc}") from None


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
