"""Attention plugin ``native``: llmcore's own flash attention kernels.

The score matrix is never materialised: C++ kernels (``llmcore._C``, CPU with OpenMP and
SIMD; CUDA when the extension was built with it) walk key/value tiles with an online
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

from llmcore import _C
from llmcore.builtin.attention import allowed_keys, merge_masks
from llmcore.builtin.native_attention_op import (
    CPU_DTYPES,
    CUDA_DTYPES,
    EagerFlashAttention,
    acc_dtype,
    flash_attention,
    forward_into,
)
from llmcore.errors import ConfigError
from llmcore.hookspecs import hookimpl

_MAX_HEAD_DIM = 1024  # the CPU kernel's limit; CUDA's is lower (see _unsupported)


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
        _check_shapes(q, k, v)
        if window is not None and window < 1:
            raise ValueError(f"attention window must be >= 1, got {window}")
        needs_grad = torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad
        )
        reason = _unsupported(q, mask, needs_grad)
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
            mask = _additive(mask, q)
        if kv_lens is not None:
            kv_lens = kv_lens.to(device=q.device, dtype=torch.int64).contiguous()
            if kv_lens.shape != (q.shape[0],):
                raise ValueError(
                    f"kv_lens must have shape ({q.shape[0]},), got {tuple(kv_lens.shape)}"
                )
        if not needs_grad and not torch.compiler.is_compiling() and q.device.type != "meta":
            # Lean inference path (decode steps): no dispatcher, no autograd bookkeeping.
            out = torch.empty_like(q)
            forward_into(q, k, v, out, None, mask, kv_lens, bool(causal), scale, win)
            return out
        if not torch.compiler.is_compiling() and q.device.type != "meta":
            return EagerFlashAttention.apply(q, k, v, mask, kv_lens, bool(causal), scale, win)
        return flash_attention(q, k, v, mask, kv_lens, bool(causal), scale, win)[0]


def _check_shapes(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention expects 4-d q, k, v (B, H, T, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, H, Tq, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(
            f"k and v must be (B={B}, Hkv, Tk, D={D}), got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if H % k.shape[1] != 0:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({k.shape[1]})")
    if Tq > k.shape[2]:
        raise ValueError(f"more queries ({Tq}) than keys ({k.shape[2]})")
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} on {q.device}/{k.device}/{v.device}"
        )


def _unsupported(q: Tensor, mask: Tensor | None, needs_grad: bool) -> str | None:
    """Why the kernels cannot take this call, or None when they can."""
    dev = q.device.type
    if dev == "cpu" or dev == "meta":
        if q.dtype not in CPU_DTYPES:
            return f"dtype {q.dtype} is not supported on CPU (float32, bfloat16, float64 are)"
        if q.shape[-1] > _MAX_HEAD_DIM:
            return f"head dim {q.shape[-1]} is above {_MAX_HEAD_DIM}"
    elif dev == "cuda":
        if not _C.has_cuda_attention:
            return "llmcore was built without its CUDA kernels"
        if q.dtype not in CUDA_DTYPES:
            return f"dtype {q.dtype} is not supported on CUDA (float16, bfloat16 are)"
        D = q.shape[-1]
        if D % 16 != 0 or D > 256:
            return f"head dim {D} is not supported on CUDA (multiples of 16 up to 256 are)"
        if needs_grad and D > 128:
            return f"head dim {D} has no CUDA backward (multiples of 16 up to 128 do)"
    else:
        return f"device {q.device} is not supported"
    if mask is not None and mask.requires_grad and torch.is_grad_enabled():
        return "a mask that requires grad is not supported"
    if mask is not None and mask.device != q.device:
        return f"mask on {mask.device} while q is on {q.device}"
    return None


def _additive(mask: Tensor, q: Tensor) -> Tensor:
    """The mask as an additive tensor of the kernels' accumulation dtype, 4-d, broadcastable."""
    if mask.dim() > 4:
        raise ValueError(f"mask must broadcast to (B, H, Tq, Tk), got shape {tuple(mask.shape)}")
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    acc = acc_dtype(q.dtype)
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=acc, device=mask.device).masked_fill_(
            ~mask, float("-inf")
        )
    return mask.to(acc)


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
