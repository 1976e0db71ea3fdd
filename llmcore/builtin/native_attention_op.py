"""``torch.library`` custom ops over llmcore's own flash attention kernels in ``llmcore._C``.

``llmcore::flash_attention`` returns ``(out, lse)`` and ``llmcore::flash_attention_backward``
returns ``(dq, dk, dv)``; both have fake (meta) implementations, and the forward has a
registered autograd formula that calls the backward, so the op works under autograd and
``torch.compile``. :func:`forward_into` is the lean path for inference: it calls the kernel
directly, without the dispatcher, for decode steps where microseconds of overhead matter.

Inputs are already validated by the caller (:mod:`llmcore.builtin.native_attention`):
q ``(B, H, Tq, D)``, k/v ``(B, Hkv, Tk, D)``, one dtype and device; ``mask`` additive in the
accumulation dtype (float32, or float64 for float64 inputs) and broadcastable to
``(B, H, Tq, Tk)``; ``kv_lens`` int64 ``(B,)``; ``window`` 0 means none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llmcore import _C

#: dtype codes of the C++ kernels, per device type.
CPU_DTYPES: dict[torch.dtype, int] = {torch.float32: 0, torch.bfloat16: 1, torch.float64: 2}
CUDA_DTYPES: dict[torch.dtype, int] = {torch.bfloat16: 1, torch.float16: 3}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of the kernels (also the dtype of mask and lse)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _launch(q: Tensor) -> tuple[int, bool, int]:
    """(dtype code, on CUDA, stream handle) for the kernel call."""
    if q.device.type == "cuda":
        return CUDA_DTYPES[q.dtype], True, torch.cuda.current_stream(q.device).cuda_stream
    return CPU_DTYPES[q.dtype], False, 0


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
