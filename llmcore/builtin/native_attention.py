"""Attention plugin ``native``: llmcore's own flash attention kernels.

The score matrix is never materialised: C++ kernels (wrapped by :mod:`llmcore.ops.attention`;
CPU with OpenMP and SIMD, CUDA when the extension was built with it) walk key/value tiles with an online
softmax, and the backward recomputes probabilities from the saved logsumexp, so memory is
O(T) rather than O(T^2). Inputs the kernels do not take (another dtype or device, a mask
that needs a gradient) fall back to torch's SDPA with a one-line warning.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from llmcore.builtin.attention import merge_masks
from llmcore.errors import ConfigError
from llmcore.hookspecs import hookimpl
from llmcore.masks import allowed_keys
from llmcore.ops.attention import (
    EagerFlashAttention,
    additive_mask,
    check_inputs,
    flash_attention,
    forward_into,
    kv_lengths,
    unsupported,
)


class NativeAttention:
    """Flash attention meeting :class:`llmcore.contracts.Attention`.

    Beyond the contract, ``kv_lens`` (int ``(B,)``) marks keys at positions
    ``>= kv_lens[b]`` as padding without building a mask. A query that sees no key at all
    returns zeros (as the ``math`` plugin does).
    """

    standard = True  # exactly the softmax formula (see contracts.Attention)

    def __init__(self, **params: object) -> None:
        if params:
            raise ConfigError(f"attention 'native' takes no params, got {sorted(params)}")
        self._warned: set[str] = set()

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = True,
        scale: float | None = None,
        mask: Tensor | None = None,
        window: int | None = None,
        kv_lens: Tensor | None = None,
    ) -> Tensor:
        check_inputs(q, k, v, window)
        needs_grad = torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad
        )
        reason = unsupported(q, mask, needs_grad)
        if reason is not None:
            if reason not in self._warned:
                self._warned.add(reason)
                warnings.warn(
                    f"native attention: {reason}; using torch SDPA instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return sdpa_fallback(
                q, k, v, causal=causal, scale=scale, mask=mask, window=window, kv_lens=kv_lens
            )
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        win = 0 if window is None else int(window)
        if mask is not None:
            mask = additive_mask(mask, q)
        if kv_lens is not None:
            kv_lens = kv_lengths(kv_lens, q)
        if not needs_grad and not torch.compiler.is_compiling() and q.device.type != "meta":
            # Lean inference path (decode steps): no dispatcher, no autograd bookkeeping.
            out = torch.empty_like(q)
            forward_into(q, k, v, out, None, mask, kv_lens, bool(causal), scale, win)
            return out
        if not torch.compiler.is_compiling() and q.device.type != "meta":
            return EagerFlashAttention.apply(q, k, v, mask, kv_lens, bool(causal), scale, win)
        return flash_attention(q, k, v, mask, kv_lens, bool(causal), scale, win)[0]


def sdpa_fallback(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    mask: Tensor | None = None,
    window: int | None = None,
    kv_lens: Tensor | None = None,
) -> Tensor:
    """The same contract through ``F.scaled_dot_product_attention`` (bottom-right causal)."""
    Tq, Tk = q.shape[2], k.shape[2]
    allowed = allowed_keys(Tq, Tk, causal, window, q.device)
    if kv_lens is not None:
        within = torch.arange(Tk, device=q.device) < kv_lens.to(q.device).view(-1, 1, 1, 1)
        allowed = within if allowed is None else allowed & within
    attn_mask = merge_masks(mask, allowed, q.dtype)
    if attn_mask is not None:
        # Rows that see no key would be NaN; the contract says zeros.
        visible = attn_mask if attn_mask.dtype == torch.bool else attn_mask > float("-inf")
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )
        return out.masked_fill(~visible.any(-1, keepdim=True), 0.0)
    return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


@hookimpl
def register_attentions(register):
    """Register the ``native`` attention."""
    register("native", NativeAttention)
