"""A lean single-token decode step for :class:`~llmcore.model.Transformer`.

At small widths a decode step costs far more in Python dispatch than in arithmetic: each
``nn.Module.__call__`` (about 50 per step at 4 layers) and each temporary tensor view adds
microseconds while the matmuls take fewer. This step runs the same operations in the same
order as ``Transformer.hidden_states`` + ``lm_head``, so its logits are bit-identical (for
several rows the head's matmul is arranged differently: same sums, last-bit rounding), but:

- weights, the per-layer cache slices and the write index are looked up once, not per step;
- known built-in components (the ``layernorm`` norm, the ``gelu`` MLP, ``nn.Linear``) run
  as plain functional calls; any other norm or MLP plugin runs its own ``forward``;
- the attention and position plugins are still called through their contract;
- the new key and value are written in place with one ``index_copy_`` per tensor.

It is used only when nothing observes the modules (no forward hooks) and every linear
layer is a plain ``nn.Linear``; otherwise :func:`lean_step` returns None and the engine
calls the model as usual (adapters such as LoRA wrap linear layers, so they take that path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _hooked(model: nn.Module) -> bool:
    from torch.nn.modules import module as M

    if M._global_forward_hooks or M._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _norm(module: nn.Module):
    from llmcore.builtin.norms import LayerNorm

    if type(module) is LayerNorm:
        shape, w, b, eps = module.weight.shape, module.weight, module.bias, module.eps
        return lambda x: F.layer_norm(x, shape, w, b, eps)
    return module.forward


def _mlp(module: nn.Module):
    from llmcore.builtin.mlps import GeluMLP

    if type(module) is GeluMLP and type(module.fc) is nn.Linear and type(module.proj) is nn.Linear:
        fw, fb, pw, pb = module.fc.weight, module.fc.bias, module.proj.weight, module.proj.bias
        approx = module.approximate
        return lambda x: F.linear(F.gelu(F.linear(x, fw, fb), approximate=approx), pw, pb)
    return module.forward


class LeanStep:
    """``step(tokens (B, 1), positions, mask) -> logits (B, V)`` against ``cache``,
    advancing ``cache.length`` by one."""

    def __init__(self, model, cache) -> None:
        self.cache = cache
        self.wte = model.wte.weight
        self.position = model.position
        self.norm_f = _norm(model.norm_f)
        self.head = model.lm_head.weight
        self.head_bias = model.lm_head.bias
        self.index = torch.zeros(1, dtype=torch.long, device=self.wte.device)  # write slot
        self.layers = []
        for i, blk in enumerate(model.blocks):
            a = blk.attn
            self.layers.append(
                (
                    _norm(blk.norm1),
                    a.qkv.weight,
                    a.qkv.bias,
                    a.sizes,
                    a.n_head,
                    a.n_kv_head,
                    a.head_dim,
                    a.attend,
                    a.window,
                    a.proj.weight,
                    a.proj.bias,
                    _norm(blk.norm2),
                    _mlp(blk.mlp),
                    cache.k[i],  # (B, Hkv, max_len, D) views written in place
                    cache.v[i],
                )
            )

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        B = tokens.shape[0]
        cache = self.cache
        n = cache.length + 1  # keys after this step's write
        if n > cache.max_len:
            raise ValueError(f"KV cache overflow: {n} positions > max_len {cache.max_len}")
        self.index.fill_(cache.length)
        x = self.position.embed(F.embedding(tokens, self.wte), positions)  # (B, 1, C)
        for (
            norm1,
            qw,
            qb,
            sizes,
            H,
            Hkv,
            D,
            attend,
            window,
            pw,
            pb,
            norm2,
            mlp,
            kc,
            vc,
        ) in self.layers:
            q, k, v = F.linear(norm1(x), qw, qb).split(sizes, dim=-1)
            q = q.view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D)
            k = k.view(B, 1, Hkv, D).transpose(1, 2)  # (B, Hkv, 1, D)
            v = v.view(B, 1, Hkv, D).transpose(1, 2)
            q, k = self.position.rotate(q, k, positions)
            kc.index_copy_(2, self.index, k)
            vc.index_copy_(2, self.index, v)
            y = attend(q, kc[:, :, :n], vc[:, :, :n], causal=True, mask=mask, window=window)
            x = x + F.linear(y.transpose(1, 2).reshape(B, 1, H * D), pw, pb)
            x = x + mlp(norm2(x))
        cache.length = n
        h = self.norm_f(x)[:, -1]  # (B, C)
        if B > 1 and self.head_bias is None:
            # For a few rows, (V, C) @ (C, B) reads the head's weight about 1.7x faster on
            # CPU than torch's (B, C) @ (C, V) GEMM (the same sums, rounded differently in
            # the last bits, as any change of batch size already does).
            return (self.head @ h.t()).t()  # (B, V), a transposed view
        return F.linear(h, self.head, self.head_bias)  # (B, V)


def lean_step(model, cache) -> LeanStep | None:
    """A :class:`LeanStep` for ``model``, or None when the model is not one it mirrors
    exactly (another model class, forward hooks, wrapped linear layers, training mode)."""
    from llmcore.model import Block, CausalSelfAttention, Transformer

    if type(model) is not Transformer or model.training or _hooked(model):
        return None
    if type(model.wte) is not nn.Embedding or type(model.lm_head) is not nn.Linear:
        return None
    for blk in model.blocks:
        if type(blk) is not Block or type(blk.attn) is not CausalSelfAttention:
            return None
        if type(blk.attn.qkv) is not nn.Linear or type(blk.attn.proj) is not nn.Linear:
            return None
    return LeanStep(model, cache)
