"""The whole decode step of a quantized Llama-shape model in C++.

At batch 1 a quantized decode step reads few bytes per weight, so the Python around the
kernels (some 15 module calls and temporary tensors per layer) costs more than the reads:
about 9 ms per token on a 30-layer model, against 4-5 ms of weight reads. For a model that
is exactly the Llama shape, :func:`decode_step` hands the layer loop to one C++ call
(``llmcore._C.QuantDecodePlan``, ``csrc/quant/decode_step.cpp``): the same operations in
the same order as :class:`~llmcore.generation.lean.LeanStep`, over the same KV cache, so
prefill, sampling and everything else stay in Python and the logits are the Python step's
up to float rounding.

It applies when every part is one it mirrors exactly, and otherwise returns None (the lean
step or the model's own forward runs):

- a :class:`~llmcore.model.Transformer` in eval mode, float32 on the CPU, no forward hooks and
  no attention observer (tracing);
- the token embedding a :class:`~llmcore.quant.layers.QuantizedEmbedding` or a float32
  ``nn.Embedding``; the head and every projection a built-in quantized linear layer;
- :class:`~llmcore.builtin.positions.RotaryPosition` (any rope scaling: its tables are used);
- in every block the built-in RMSNorm twice, :class:`~llmcore.model.CausalSelfAttention` with
  a standard attention plugin (``standard = True``) and no sliding window, and the built-in SwiGLU.

Set ``FUSED = False`` to always take the Python step.
"""

from __future__ import annotations

import torch
from torch import nn

from llmcore import _C
from llmcore.ops.quant import ACTIVATIONS

#: Use the C++ step when the model allows it.
FUSED = True


def _quantized_linear(layer: nn.Module) -> tuple | None:
    """``(in, out, bias address, parts)`` of a built-in quantized linear layer, or None."""
    from llmcore.quant.layers import StackedQuantizedLinear
    from llmcore.quant.linear import QuantizedLinear

    if type(layer) is QuantizedLinear:
        parts, bias = [layer], layer.bias
    elif type(layer) is StackedQuantizedLinear:
        parts, bias = list(layer.parts), None
        if any(type(p) is not QuantizedLinear or p.bias is not None for p in parts):
            return None
    else:
        return None
    specs = []
    for p in parts:
        b = p.blocks
        if not b.is_contiguous() or b.device.type != "cpu":
            return None
        acts = ACTIVATIONS[p.activations]
        specs.append((p.qtype.ggml_type, b.data_ptr(), b.numel(), p.out_features, acts))
    addr = 0 if bias is None else bias.data_ptr()
    return (layer.in_features, layer.out_features, addr, specs)


def _float32_cpu(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def _rms_weight(norm: nn.Module) -> tuple[torch.Tensor, float] | None:
    from llmcore.builtin.norms import RMSNorm

    if type(norm) is not RMSNorm or not _float32_cpu(norm.weight):
        return None
    return norm.weight.detach(), float(norm.eps)


def _attention_ok(attn: nn.Module) -> bool:
    """A CausalSelfAttention whose plugin computes exactly the softmax formula (it declares
    ``standard = True``, see :class:`llmcore.contracts.Attention`), with no window."""
    from llmcore.model import CausalSelfAttention

    return (
        type(attn) is CausalSelfAttention
        and attn.window is None
        and attn.observer is None
        and getattr(attn.attend, "standard", False) is True
    )


class QuantDecodeStep:
    """``step(tokens (B, 1), positions, mask) -> logits (B, V)`` through the C++ plan,
    advancing ``cache.length`` by one (the interface of the lean step)."""

    def __init__(self, plan, cache, vocab: int, keep: list) -> None:
        self.plan, self.cache, self.vocab = plan, cache, vocab
        self.keep = keep  # every tensor the plan holds an address of

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        B = tokens.shape[0]
        tok = tokens.reshape(B).contiguous()
        pos = positions.reshape(-1).contiguous()
        if pos.numel() not in (1, B):
            raise ValueError(f"decode step: {pos.numel()} positions for {B} rows")
        ok_addr, ok_stride = 0, 0
        if mask is not None:  # (B, 1, 1, n) keys each row may see
            m = mask.reshape(B, mask.shape[-1])
            if m.dtype != torch.bool or m.stride(-1) != 1:
                m = m.to(torch.bool).contiguous()
            ok_addr, ok_stride = m.data_ptr(), m.stride(0)
        return self._run(tok, B, 1, pos, pos.numel() == 1, ok_addr, ok_stride)

    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, V)`` of the last of ``tokens`` ``(B, T)`` (prompts of one length, no
        padding) at positions ``cache.length ..``, advancing ``cache.length`` by ``T``."""
        B, T = tokens.shape
        pos = torch.arange(self.cache.length, self.cache.length + T)
        return self._run(tokens.contiguous(), B, T, pos, True, 0, 0)

    def _run(self, tok, B, T, pos, shared, ok_addr, ok_stride) -> torch.Tensor:
        cache = self.cache
        logits = torch.empty(B, self.vocab)
        self.plan.step(
            tok.data_ptr(), B, T, pos.data_ptr(), shared, cache.length, ok_addr, ok_stride,
            logits.data_ptr(), torch.get_num_threads(),
        )  # fmt: skip
        cache.length += T
        return logits


def decode_step(model, cache) -> QuantDecodeStep | None:
    """A :class:`QuantDecodeStep` for ``model`` over ``cache``, or None when the model is not
    one it mirrors exactly (see the module's docstring)."""
    from llmcore.builtin.mlps import SwiGLU
    from llmcore.builtin.positions import NoPosition, RotaryPosition
    from llmcore.generation.lean import _hooked
    from llmcore.model import Block, Transformer
    from llmcore.quant.layers import QuantizedEmbedding

    if not FUSED or type(model) is not Transformer or model.training or _hooked(model):
        return None
    pos = model.position
    if type(pos) is not RotaryPosition or type(pos).embed is not NoPosition.embed:
        return None
    if not (_float32_cpu(pos.cos) and _float32_cpu(pos.sin)) or not _float32_cpu(cache.k):
        return None
    if not _float32_cpu(cache.v):
        return None
    head, final = _quantized_linear(model.lm_head), _rms_weight(model.norm_f)
    if head is None or final is None:
        return None
    wte = model.wte
    if type(wte) is QuantizedEmbedding and wte.out_dtype == torch.float32:
        if not wte.blocks.is_contiguous():
            return None
        emb = (wte.qtype.ggml_type, wte.blocks.data_ptr(), wte.blocks.numel())
        keep = [wte.blocks]
    elif type(wte) is nn.Embedding and _float32_cpu(wte.weight):
        emb = (-1, wte.weight.data_ptr(), wte.weight.numel() * 4)
        keep = [wte.weight]
    else:
        return None
    layers = []
    for i, blk in enumerate(model.blocks):
        if type(blk) is not Block or not _attention_ok(blk.attn) or type(blk.mlp) is not SwiGLU:
            return None
        n1, n2 = _rms_weight(blk.norm1), _rms_weight(blk.norm2)
        lin = [_quantized_linear(m) for m in (blk.attn.qkv, blk.attn.proj)]
        lin += [_quantized_linear(m) for m in (blk.mlp.gate, blk.mlp.up, blk.mlp.down)]
        if n1 is None or n2 is None or None in lin:
            return None
        layers.append((n1, n2, lin, cache.k[i], cache.v[i]))
    a = model.blocks[0].attn if len(model.blocks) else None
    if a is None or any(
        (b.attn.n_head, b.attn.n_kv_head, b.attn.head_dim) != (a.n_head, a.n_kv_head, a.head_dim)
        for b in model.blocks
    ):
        return None
    dims = (wte.embedding_dim, a.n_head, a.n_kv_head, a.head_dim, wte.num_embeddings)
    _, batch, _, max_len, _ = cache.k.shape
    plan = _C.QuantDecodePlan(
        dims, (batch, max_len, pos.cos.shape[0]), emb[0], emb[1], emb[2],
        pos.cos.data_ptr(), pos.sin.data_ptr(), final[0].data_ptr(), final[1], head,
    )  # fmt: skip
    keep += [pos.cos, pos.sin, final[0], model.lm_head]
    for (w1, e1), (w2, e2), (qkv, proj, gate, up, down), kc, vc in layers:
        plan.add_layer(
            w1.data_ptr(), e1, qkv, proj, w2.data_ptr(), e2, gate, up, down,
            kc.data_ptr(), vc.data_ptr(),
        )  # fmt: skip
        keep += [w1, w2]
    keep.append(model)  # the blocks and biases the linear specs point into
    return QuantDecodeStep(plan, cache, wte.num_embeddings, keep)
