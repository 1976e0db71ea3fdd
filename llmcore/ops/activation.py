"""Activation functions on llmcore's own CPU kernels (``csrc/activation``).

:func:`gelu` with ``approximate="tanh"`` (GPT-2's) runs one C++ pass forward and one
backward on contiguous float32/bfloat16 CPU tensors, about three times faster than torch's
eager kernels on AVX-512; every other case (CUDA, other dtypes, the exact erf GELU,
``torch.compile``, which fuses it itself) is ``F.gelu``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcore.ops.dtypes import ACTIVATION_CPU, CODES


def _native(x: torch.Tensor) -> bool:
    """Whether the kernels take ``x``: contiguous, on CPU, in one of their dtypes."""
    return x.device.type == "cpu" and x.dtype in ACTIVATION_CPU and x.is_contiguous()


def _gelu_tanh_forward(x: torch.Tensor) -> torch.Tensor:
    from llmcore import _C

    y = torch.empty_like(x)
    _C.gelu_tanh_forward(
        CODES[x.dtype], x.numel(), x.data_ptr(), y.data_ptr(), torch.get_num_threads()
    )
    return y


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _gelu_tanh_forward(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous()
        if not _native(grad) or grad.shape != x.shape:
            return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")
        from llmcore import _C

        dx = torch.empty_like(x)
        _C.gelu_tanh_backward(
            CODES[x.dtype], x.numel(), grad.data_ptr(), x.data_ptr(), dx.data_ptr(),
            torch.get_num_threads(),
        )  # fmt: skip
        return dx


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``F.gelu(x, approximate=approximate)``, on llmcore's kernel where it has one."""
    if approximate != "tanh" or not _native(x) or torch.compiler.is_compiling():
        return F.gelu(x, approximate=approximate)
    if torch.is_grad_enabled() and x.requires_grad:
        return _GeluTanh.apply(x)
    return _gelu_tanh_forward(x)
