"""A lean single-token decode step for :class:`~llmcore.model.Transformer`.

At small widths a decode step costs far more in Python dispatch than in arithmetic: each
``nn.Module.__call__`` (about 50 per step at 4 layers) and each temporary tensor view adds
microseconds while the matmuls take fewer. This step runs the same operations in the same
order as ``Transformer.hidden_states`` + ``lm_head``, so its logits are the same (the head's
matmul is arranged for speed on CPU: the same sums, rounded differently in the last bits;
small heads with one row are bit-identical), but:

- weights, the per-layer cache slices and the write index are looked up once, not per step;
- a norm or MLP component that offers ``functional()`` (a plain function of ``x`` computing
  its ``forward``, with its parameters bound; None when it cannot offer one now) runs as
  that function; any other component runs its own ``forward``. A subclass that overrides
  ``forward`` without overriding ``functional`` runs its ``forward``;
- ``nn.Linear`` layers run as ``F.linear``; quantized layers (:mod:`llmcore.quant`) as their
  ``functional()``, one kernel call each;
- the attention and position plugins are still called through their contract (a score
  bias of the position, ALiBi, joins the mask once per step, as in ``hidden_states``);
- the new key and value are written in place with one ``index_copy_`` per tensor.

It is used only when nothing observes the modules (no forward hooks) and every linear
layer is a plain ``nn.Linear`` or a built-in quantized one; otherwise :func:`lean_step`
returns None and the engine calls the model as usual (adapters such as LoRA wrap linear
layers, so they take that path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmcore.score_bias import biases_scores, key_count, with_score_bias


def _hooked(model: nn.Module) -> bool:
    from torch.nn.modules import module as M

    if M._global_forward_hooks or M._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _plain_forward(module: nn.Module):
    """The module's ``functional()`` when it offers one for its own ``forward``, else its
    bound ``forward`` (no ``nn.Module.__call__`` dispatch either way)."""
    owner = _defined_by(type(module), "functional")
    if owner is not None and owner is _defined_by(type(module), "forward"):
        fn = module.functional()
        if fn is not None:
            return fn
    return module.forward


def _defined_by(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO that defines ``name``."""
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


class LeanStep:
    """``step(tokens (B, 1), positions, mask) -> logits (B, V)`` against ``cache``,
    advancing ``cache.length`` by one."""

    def __init__(self, model, cache) -> None:
        self.cache = cache
        self.wte = model.wte.weight
        # a quantized embedding or head runs as its own forward (wte_fn / head_fn)
        self.wte_fn = None if type(model.wte) is nn.Embedding else model.wte.forward
        self.head_fn = None if type(model.lm_head) is nn.Linear else model.lm_head.functional()
        self.position = model.position
        self.n_head = model.config.n_head
        self.biased = biases_scores(model.position)
        self.norm_f = _plain_forward(model.norm_f)
        self.head = model.lm_head.weight
        self.head_bias = model.lm_head.bias
        plain_head = self.head_fn is None and cache.k.shape[1] == 1
        self.head_t = _transposed_head(model.lm_head) if plain_head else None
        self.index = torch.zeros(1, dtype=torch.long, device=self.wte.device)  # write slot
        self.layers = []
        for i, blk in enumerate(model.blocks):
            a = blk.attn
            self.layers.append(
                (
                    _plain_forward(blk.norm1),
                    *_linear(a.qkv),
                    a.sizes,
                    a.n_head,
                    a.n_kv_head,
                    a.head_dim,
                    a.attend,
                    a.window,
                    *_linear(a.proj),
                    _plain_forward(blk.norm2),
                    _plain_forward(blk.mlp),
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
        e = F.embedding(tokens, self.wte) if self.wte_fn is None else self.wte_fn(tokens)
        x = self.position.embed(e, positions)  # (B, 1, C)
        if self.biased:
            tk = key_count(1, cache, mask)
            mask = with_score_bias(self.position, self.n_head, positions, mask, tk, True)
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
            q, k, v = (F.linear(norm1(x), qw, qb) if qb is not _FN else qw(norm1(x))).split(
                sizes, dim=-1
            )
            q = q.view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D)
            k = k.view(B, 1, Hkv, D).transpose(1, 2)  # (B, Hkv, 1, D)
            v = v.view(B, 1, Hkv, D).transpose(1, 2)
            q, k = self.position.rotate(q, k, positions)
            kc.index_copy_(2, self.index, k)
            vc.index_copy_(2, self.index, v)
            y = attend(q, kc[:, :, :n], vc[:, :, :n], causal=True, mask=mask, window=window)
            y = y.transpose(1, 2).reshape(B, 1, H * D)
            x = x + (F.linear(y, pw, pb) if pb is not _FN else pw(y))
            x = x + mlp(norm2(x))
        cache.length = n
        h = self.norm_f(x)[:, -1]  # (B, C)
        if self.head_fn is not None:
            return self.head_fn(h)
        if B == 1 and self.head_t is not None:
            # One row: torch's matrix-vector product over the (V, C) weight reads it at about
            # a third of the memory bandwidth; (1, C) @ (C, V) on a transposed copy reads it
            # at nearly full speed (the same sums, rounded differently in the last bits).
            out = h @ self.head_t
            return out if self.head_bias is None else out + self.head_bias
        if B > 1 and self.head_bias is None:
            # For a few rows, (V, C) @ (C, B) reads the head's weight about 1.7x faster on
            # CPU than torch's (B, C) @ (C, V) GEMM (the same sums, rounded differently in
            # the last bits, as any change of batch size already does).
            return (self.head @ h.t()).t()  # (B, V), a transposed view
        return F.linear(h, self.head, self.head_bias)  # (B, V)


#: the bias slot of a linear layer that runs as a function (the weight slot holds it)
_FN = object()


def _linear(layer: nn.Module) -> tuple:
    """``(weight, bias)`` of an ``nn.Linear``, or ``(function, _FN)`` of a quantized one."""
    if type(layer) is nn.Linear:
        return layer.weight, layer.bias
    return layer.functional(), _FN


#: Below this many weights the head is cheap to read either way.
_TRANSPOSE_MIN = 1 << 20


def _transposed_head(head: nn.Linear) -> torch.Tensor | None:
    """A (C, V) contiguous copy of the head's (V, C) weight, kept on the module until the
    weight changes (its version counter or storage moves), so generate calls pay it once."""
    w = head.weight
    if w.numel() < _TRANSPOSE_MIN or w.device.type != "cpu":
        return None
    key = (w._version, w.data_ptr(), w.dtype)
    cached = getattr(head, "_llmcore_transposed", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    copy = w.detach().t().contiguous()
    head._llmcore_transposed = (key, copy)  # a plain attribute: not in the state dict
    return copy


def lean_step(model, cache) -> LeanStep | None:
    """A :class:`LeanStep` for ``model``, or None when the model is not one it mirrors
    exactly (another model class, forward hooks, wrapped linear layers, training mode)."""
    from llmcore.model import Block, CausalSelfAttention, Transformer

    if type(model) is not Transformer or model.training or _hooked(model):
        return None
    from llmcore.quant.layers import QuantizedEmbedding, StackedQuantizedLinear
    from llmcore.quant.linear import QuantizedLinear

    # exactly these: a subclass may compute more
    linear = (nn.Linear, QuantizedLinear, StackedQuantizedLinear)
    if (
        type(model.wte) not in (nn.Embedding, QuantizedEmbedding)
        or type(model.lm_head) not in linear
    ):
        return None
    for blk in model.blocks:
        if type(blk) is not Block or type(blk.attn) is not CausalSelfAttention:
            return None
        if type(blk.attn.qkv) not in linear or type(blk.attn.proj) not in linear:
            return None
    return LeanStep(model, cache)
