"""The quantized linear layer: a weight kept in GGUF blocks, multiplied by llmcore's kernels.

:class:`QuantizedLinear` is what the built-in ``quantized_linear`` plugins build and what
``llmcore.load(file.gguf, quantized=True)`` puts in place of the model's projections. It is
inference-only: asked for gradients it raises TrainingError. How it multiplies (8-bit
activation blocks by default, or exact float32 activations) and the error bound of each way
are in :mod:`llmcore.ops.quant`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from llmcore import _C
from llmcore.errors import TrainingError
from llmcore.ops.quant import (
    ACTIVATIONS,
    QuantType,
    _check_length,
    dequantize,
    first_bad_scale,
    matmul,
    quant_type,
    quantize,
)


class QuantizedWeight:
    """What code that reads ``layer.weight`` of a quantized layer may ask: the dense weight's
    ``shape``, ``dtype`` (that of the activations it computes, float32), ``device`` and
    ``requires_grad`` (False), plus :meth:`dequantize`. It is not a tensor: arithmetic on it
    fails instead of silently dequantizing the whole matrix."""

    requires_grad = False
    dtype = torch.float32

    def __init__(self, qtype: QuantType, blocks: torch.Tensor, shape: tuple[int, int]) -> None:
        self.qtype, self.blocks, self.shape = qtype, blocks, torch.Size(shape)

    @property
    def device(self) -> torch.device:
        return self.blocks.device

    def dim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense weight."""
        return dequantize(self.qtype, self.blocks, tuple(self.shape), dtype)

    def __repr__(self) -> str:
        return f"QuantizedWeight({self.qtype.name}, shape={tuple(self.shape)})"


class QuantizedLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` held as GGUF blocks (inference only).

    Args:
        qtype: the blocks' type (name, GGML id or :class:`QuantType`).
        blocks: the raw blocks of ``out_features`` rows: a uint8 tensor (kept as is, no
            copy) or any other byte buffer (copied); held as a ``(out_features, row_bytes)``
            uint8 buffer.
        in_features: K, a multiple of the type's block size.
        out_features: N.
        bias: optional ``(out_features,)`` tensor, kept frozen in float32.
        activations: how :func:`matmul` treats the input: ``"int8"`` (default, fast) or
            ``"float32"`` (exact); an attribute, so it can be switched later.
    """

    def __init__(
        self,
        qtype: str | int | QuantType,
        blocks: object,
        in_features: int,
        out_features: int,
        bias: torch.Tensor | None = None,
        activations: str = "int8",
    ) -> None:
        super().__init__()
        self.qtype = quant_type(qtype)
        if activations not in ACTIVATIONS:
            raise ValueError(
                f"QuantizedLinear: activations must be one of {', '.join(ACTIVATIONS)}, "
                f"got {activations!r}"
            )
        self.activations = activations
        self.in_features, self.out_features = int(in_features), int(out_features)
        if isinstance(blocks, torch.Tensor):
            if blocks.dtype != torch.uint8:
                raise ValueError(f"QuantizedLinear: blocks must be uint8, got {blocks.dtype}")
            data = blocks.detach().to("cpu").contiguous()
        else:  # any other byte buffer is copied, so the module owns its weight
            data = torch.from_numpy(np.frombuffer(blocks, dtype=np.uint8).copy())
        shape = (self.out_features, self.in_features)
        _check_length(self.qtype, data.numel(), shape)
        row_bytes = self.in_features // self.qtype.block_size * self.qtype.block_bytes
        data = data.reshape(self.out_features, row_bytes)
        bad = first_bad_scale(self.qtype, data, shape)
        if bad >= 0:
            raise ValueError(f"{self.qtype.name}: block {bad} has a NaN or infinite fp16 scale")
        self.register_buffer("blocks", data)
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(
                f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}"
            )
        bias_f = None if bias is None else bias.detach().to(dtype=torch.float32, device="cpu")
        self.register_buffer("bias", bias_f)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, qtype: str | int | QuantType, activations: str = "int8"
    ) -> QuantizedLinear:
        """Quantize a dense ``nn.Linear``'s weight (see :func:`quantize`)."""
        blocks = quantize(qtype, linear.weight)
        return cls(qtype, blocks, linear.in_features, linear.out_features, linear.bias, activations)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense ``(out_features, in_features)`` weight."""
        return dequantize(self.qtype, self.blocks, (self.out_features, self.in_features), dtype)

    @property
    def weight(self) -> QuantizedWeight:
        """The weight's shape, dtype and device, for code that reads ``layer.weight``."""
        return QuantizedWeight(self.qtype, self.blocks, (self.out_features, self.in_features))

    def functional(self):
        """``forward`` as a plain function of ``x`` with the weight bound, for the lean
        decode step: no ``nn.Module`` dispatch and no buffer lookups per call, the same
        result. It holds the blocks as they are now: build it again after moving them."""
        if type(self).forward is not QuantizedLinear.forward:
            return None  # a subclass computes something else
        ggml, n, k = self.qtype.ggml_type, self.out_features, self.in_features
        bias, forward, blocks = self.bias, self.forward, self.blocks
        acts = ACTIVATIONS[self.activations]  # bound now, as the blocks are
        addr, nbytes = blocks.data_ptr(), blocks.numel()

        def linear(x: torch.Tensor) -> torch.Tensor:
            if x.dtype != torch.float32 or x.shape[-1] != k or x.requires_grad:
                return forward(x)  # the checks and conversions of the general path
            x2 = x.reshape(-1, k).contiguous()  # (M, K)
            y = torch.empty(x2.shape[0], n)  # (M, N)
            _C.quant_matmul(
                ggml, x2.data_ptr(), x2.shape[0], k, addr, nbytes, n, y.data_ptr(),
                torch.get_num_threads(), acts,
            )  # fmt: skip
            if bias is not None:
                y += bias
            return y.view(*x.shape[:-1], n)

        linear.blocks = blocks  # keeps the buffer (and a memory map under it) alive
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in_features) -> (..., out_features), in x's dtype
        if x.requires_grad and torch.is_grad_enabled():
            raise TrainingError(
                f"QuantizedLinear ({self.qtype.name}) has no gradients: to train, load the "
                "model dequantized (llmcore.load(path, quantized=False)) or dequantize the "
                "weight (QuantizedLinear.dequantize)"
            )
        n, k = self.out_features, self.in_features
        if x.dtype == torch.float32 and x.device.type == "cpu" and x.shape[-1] == k:
            # the common case, decode and prefill: no argument re-checks, one kernel call
            x2 = x.reshape(-1, k).contiguous()  # (M, K), a view when x is contiguous
            y = torch.empty(x2.shape[0], n)  # (M, N)
            b = self.blocks
            _C.quant_matmul(
                self.qtype.ggml_type, x2.data_ptr(), x2.shape[0], k, b.data_ptr(), b.numel(),
                n, y.data_ptr(), torch.get_num_threads(), ACTIVATIONS[self.activations],
            )  # fmt: skip
            y = y.view(*x.shape[:-1], n)
        else:
            y = matmul(x, self.qtype, self.blocks, (n, k), activations=self.activations)
        if self.bias is not None:
            y += self.bias
        return y if y.dtype == x.dtype or not x.is_floating_point() else y.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.qtype.name}, in_features={self.in_features}, "
            f"out_features={self.out_features}, activations={self.activations}"
        )
