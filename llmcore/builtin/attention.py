"""Attention plugins ``math`` (the textbook formula, the reference) and ``sdpa`` (torch's
fused kernels). Both meet :class:`llmcore.contracts.Attention`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmcore.hookspecs import hookimpl
from llmcore.masks import allowed_keys


def merge_masks(
    mask: torch.Tensor | None, allowed: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """One mask for SDPA: bool if both are bool, else additive float of ``dtype``."""
    if allowed is None:
        float_mask = mask is not None and mask.dtype != torch.bool
        return mask.to(dtype) if float_mask else mask
    if mask is None:
        return allowed
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask.to(dtype).masked_fill(~allowed, float("-inf"))


def math_attention(q, k, v, *, causal=True, scale=None, mask=None, window=None):
    """``softmax(q k^T * scale + mask) v`` written out; the oracle for the fused plugins."""
    B, H, Tq, D = q.shape  # (B, H, Tq, D)
    Hkv, Tk = k.shape[1], k.shape[2]
    if Hkv != H:  # grouped-query attention: each kv head serves H // Hkv query heads
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    att = (q @ k.transpose(-2, -1)).float() * scale  # (B, H, Tq, Tk)
    allowed = allowed_keys(Tq, Tk, causal, window, q.device)
    if allowed is not None:
        att = att.masked_fill(~allowed, float("-inf"))
    if mask is not None:
        att = (
            att.masked_fill(~mask, float("-inf"))
            if mask.dtype == torch.bool
            else att + mask.float()
        )
    att = torch.softmax(att, dim=-1)
    att = torch.nan_to_num(att, nan=0.0)  # a query that sees no key attends to nothing
    return (att.to(v.dtype) @ v).to(q.dtype)  # (B, H, Tq, D)


def sdpa_attention(q, k, v, *, causal=True, scale=None, mask=None, window=None):
    """torch's ``F.scaled_dot_product_attention`` (flash / memory-efficient / math kernels)."""
    Tq, Tk = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if mask is None and window is None and (not causal or Tq == Tk or Tq == 1):
        # is_causal=True would align top-left; a single decode query must see every key.
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=causal and Tq > 1, scale=scale, enable_gqa=gqa
        )
    # one bottom-right causal query sees every key: only a window hides some (decode steps
    # with a padding mask or a score bias skip building an all-true mask per layer)
    single = Tq == 1 and window is None
    allowed = None if single else allowed_keys(Tq, Tk, causal, window, q.device)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=merge_masks(mask, allowed, q.dtype), scale=scale, enable_gqa=gqa
    )


def _math():
    return math_attention


def _sdpa():
    return sdpa_attention


# exactly the softmax formula, additive masks included (see contracts.Attention); said of the
# functions too, so that a model built by hand around them runs a score bias (ALiBi)
_math.standard = _sdpa.standard = True
math_attention.standard = sdpa_attention.standard = True


@hookimpl
def register_attentions(register):
    register("math", _math)
    register("sdpa", _sdpa)
