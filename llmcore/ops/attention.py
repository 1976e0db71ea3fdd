"""llmcore's own flash attention kernels (``csrc/attention``): checks, custom ops, autograd.

:func:`check_inputs` and :func:`unsupported` say once whether a call is valid and whether the
kernels can take it; everything after them assumes it can. ``llmcore::flash_attention``
returns ``(out, lse)`` and ``llmcore::flash_attention_backward`` returns ``(dq, dk, dv)``;
both have fake (meta) implementations, and the forward has a registered autograd formula
that calls the backward, so the op works under autograd and ``torch.compile``.
:class:`EagerFlashAttention` is the same pair for eager autograd, and :func:`forward_into`
the lean path for inference: it calls the kernel directly, without the dispatcher, for decode
steps where microseconds of overhead matter.

Kernel inputs: q ``(B, H, Tq, D)``, k/v ``(B, Hkv, Tk, D)``, one dtype and device; ``mask``
additive in the accumulation dtype (float32, or float64 for float64 inputs) and broadcastable
to ``(B, H, Tq, Tk)`` (see :func:`additive_mask`); ``kv_lens`` int64 ``(B,)``; ``window`` 0
means none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llmcore import _C
from llmcore.ops.dtypes import ATTENTION_CPU, ATTENTION_CUDA, CODES

MAX_HEAD_DIM = 1024  # the CPU kernel's limit; CUDA's is lower (see unsupported)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of the kernels (also the dtype of mask and lse)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_inputs(q: Tensor, k: Tensor, v: Tensor, window: int | None) -> None:
    """Raise ValueError unless q, k, v and ``window`` meet the attention contract."""
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
    if window is not None and window < 1:
        raise ValueError(f"attention window must be >= 1, got {window}")


def unsupported(q: Tensor, mask: Tensor | None, needs_grad: bool) -> str | None:
    """Why the kernels cannot take this (valid) call, or None when they can."""
    dev = q.device.type
    if dev == "cpu" or dev == "meta":
        if q.dtype not in ATTENTION_CPU:
            return f"dtype {q.dtype} is not supported on CPU (float32, bfloat16, float64 are)"
        if q.shape[-1] > MAX_HEAD_DIM:
            return f"head dim {q.shape[-1]} is above {MAX_HEAD_DIM}"
    elif dev == "cuda":
        if not _C.has_cuda_attention:
            return "llmcore was built without its CUDA kernels"
        if q.dtype not in ATTENTION_CUDA:
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


def additive_mask(mask: Tensor, q: Tensor) -> Tensor:
    """The mask as an additive tensor of the kernels' accumulation dtype, 4-d, broadcastable."""
    if mask.dim() > 4:
        raise ValueError(f"mask must broadcast to (B, H, Tq, Tk), got shape {tuple(mask.shape)}")
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    acc = acc_dtype(q.dtype)
    if mask.dtype == torch.bool:  # True keeps a key: 0 where kept, -inf where masked
        return torch.zeros(mask.shape, dtype=acc, device=mask.device).masked_fill_(
            ~mask, float("-inf")
        )
    return mask.to(acc)


def kv_lengths(kv_lens: Tensor, q: Tensor) -> Tensor:
    """``kv_lens`` as the contiguous int64 ``(B,)`` tensor on q's device the kernels read."""
    kv_lens = kv_lens.to(device=q.device, dtype=torch.int64).contiguous()
    if kv_lens.shape != (q.shape[0],):
        raise ValueError(f"kv_lens must have shape ({q.shape[0]},), got {tuple(kv_lens.shape)}")
    return kv_lens


def _launch(q: Tensor) -> tuple[int, bool, int]:
    """(dtype code, on CUDA, stream handle) for the kernel call."""
    if q.device.type == "cuda":
        return CODES[q.dtype], True, torch.cuda.current_stream(q.device).cuda_stream
    return CODES[q.dtype], False, 0


def _mask_args(
    mask: Tensor | None, shape: tuple[int, int, int, int]
) -> tuple[int, tuple[int, ...]]:
    if mask is None:
        return 0, (0, 0, 0, 0)
    m = mask.expand(shape)  # broadcast dims get stride 0: no copy
    return m.data_ptr(), m.stride()


def forward_into(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor | None,
    mask: Tensor | None,
    kv_lens: Tensor | None,
    causal: bool,
    scale: float,
    window: int,
) -> None:
    """Run the forward kernel, writing ``out`` (and ``lse`` ``(B, H, Tq)`` when given)."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    code, cuda, stream = _launch(q)
    mptr, ms = _mask_args(mask, (B, H, Tq, Tk))
    _C.attention_forward(
        code, B, H, Hkv, Tq, Tk, D,
        q.data_ptr(), q.stride(), k.data_ptr(), k.stride(), v.data_ptr(), v.stride(),
        out.data_ptr(), out.stride(), 0 if lse is None else lse.data_ptr(),
        mptr, ms, 0 if kv_lens is None else kv_lens.data_ptr(),
        scale, causal, window, torch.get_num_threads(), cuda, stream,
    )  # fmt: skip


def forward_with_lse(q, k, v, mask, kv_lens, causal, scale, window) -> tuple[Tensor, Tensor]:
    """Run the forward kernel into new ``out`` and ``lse`` tensors (what the backward needs)."""
    out = torch.empty_like(q)
    lse = q.new_empty(q.shape[:3], dtype=acc_dtype(q.dtype))
    forward_into(q, k, v, out, lse, mask, kv_lens, causal, scale, window)
    return out, lse


@torch.library.custom_op("llmcore::flash_attention", mutates_args=())
def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    kv_lens: Tensor | None,
    causal: bool,
    scale: float,
    window: int,
) -> tuple[Tensor, Tensor]:
    """Flash attention forward: ``(out (B, H, Tq, D), lse (B, H, Tq))``."""
    return forward_with_lse(q, k, v, mask, kv_lens, causal, scale, window)


@flash_attention.register_fake
def _flash_attention_fake(q, k, v, mask, kv_lens, causal, scale, window):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=acc_dtype(q.dtype))


def backward_grads(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    mask: Tensor | None,
    kv_lens: Tensor | None,
    causal: bool,
    scale: float,
    window: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the backward kernel: ``(dq, dk, dv)``, recomputing P from ``lse``."""
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if grad_out.dtype != q.dtype:
        grad_out = grad_out.to(q.dtype)
    code, cuda, stream = _launch(q)
    mptr, ms = _mask_args(mask, (B, H, Tq, Tk))
    _C.attention_backward(
        code, B, H, Hkv, Tq, Tk, D,
        q.data_ptr(), q.stride(), k.data_ptr(), k.stride(), v.data_ptr(), v.stride(),
        out.data_ptr(), out.stride(), grad_out.data_ptr(), grad_out.stride(), lse.data_ptr(),
        mptr, ms, 0 if kv_lens is None else kv_lens.data_ptr(),
        dq.data_ptr(), dq.stride(), dk.data_ptr(), dk.stride(), dv.data_ptr(), dv.stride(),
        scale, causal, window, torch.get_num_threads(), cuda, stream,
    )  # fmt: skip
    return dq, dk, dv


# Gradients (dq, dk, dv) of flash_attention, recomputing P from lse: backward_grads as a
# custom op (torch.compile traces through it; eager training calls backward_grads itself).
flash_attention_backward = torch.library.custom_op(
    "llmcore::flash_attention_backward", mutates_args=()
)(backward_grads)


@flash_attention_backward.register_fake
def _flash_attention_backward_fake(
    grad_out, q, k, v, out, lse, mask, kv_lens, causal, scale, window
):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, mask, kv_lens, causal, scale, window = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, mask, kv_lens)
    ctx.causal, ctx.scale, ctx.window = causal, scale, window


def _backward(ctx, grad_out, grad_lse):
    # lse is an auxiliary output for the backward; its gradient is not propagated.
    q, k, v, out, lse, mask, kv_lens = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = flash_attention_backward(
        grad_out, q, k, v, out, lse, mask, kv_lens, ctx.causal, ctx.scale, ctx.window
    )
    return dq, dk, dv, None, None, None, None, None


flash_attention.register_autograd(_backward, setup_context=_setup_context)


class EagerFlashAttention(torch.autograd.Function):
    """The same forward and backward as the custom ops, for eager autograd only.

    ``torch.library`` ops run their Python kernels through the dispatcher, which costs
    hundreds of microseconds per training step of a small model; a plain autograd Function
    calls the kernels directly. Under ``torch.compile`` the custom ops are used instead.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, kv_lens, causal, scale, window):
        out, lse = forward_with_lse(q, k, v, mask, kv_lens, causal, scale, window)
        ctx.save_for_backward(q, k, v, out, lse, mask, kv_lens)
        ctx.causal, ctx.scale, ctx.window = causal, scale, window
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, mask, kv_lens = ctx.saved_tensors
        dq, dk, dv = backward_grads(
            grad_out, q, k, v, out, lse, mask, kv_lens, ctx.causal, ctx.scale, ctx.window
        )
        return dq, dk, dv, None, None, None, None, None
