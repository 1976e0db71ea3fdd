"""Quantized tensors in GGUF's block formats, over llmcore._C's quant kernels (csrc/quant).

Types (GGUF's layouts, bit for bit): q8_0, q4_0, q4_1, q5_0, q5_1 (blocks of 32 values)
and q4_k, q5_k, q6_k (super-blocks of 256). A ``rows x cols`` tensor is stored as
``rows * cols / block_size`` blocks, row after row; ``cols`` must be a multiple of the
block size.

- :func:`dequantize` reads any byte buffer (``bytes``, a memory map, a NumPy or torch
  ``uint8`` array) without copying it, into float32 or bfloat16, bit identical to
  ``gguf.quants.dequantize``. A block whose fp16 scale is NaN or inf is an error naming the
  type and block index.
- :func:`quantize` writes q8_0, q4_0, q4_1, q5_0 and q5_1 bytes identical to
  ``gguf.quants.quantize``, and q4_k blocks of our own (gguf cannot quantize q4_k) in which
  every value is within ``max(d * sc_j / 2, dmin / 2)`` of its dequantized value (the
  block's fp16 factors ``d``, ``dmin`` and sub-block ``j``'s 6-bit scale ``sc_j``).
  NaN or inf values, or values too large for a block's fp16 scale, are an error naming the
  row.
- :func:`matmul` computes ``x @ W.T`` with ``W`` quantized. By default
  (``activations="int8"``, what llama.cpp does) each row of ``x`` is quantized once per
  call to 8 bits per block of 32 values (256 for q4_k/q5_k/q6_k times more than 16 rows
  of ``x``, where each sub-block's integer sum turns float once, times its scales;
  ``xd_b = max|x_k| / 127`` over block ``b``,
  ``xq_k = round(x_k / xd_b)``) and multiplied by the weights' quants in integer dot
  products; the result is within::

      sum_b e_b * sum_{k in b} |w_k|  +  (K / 16 + 16) * 2**-24 * E  +  U

  of the exact ``x . w``, where ``e_b = xd_b / 2 * (1 + 2**-20)`` (``max|x_k|`` where
  ``xd_b`` underflows to 0) bounds each activation's rounding and
  ``E = sum_k (|x_k| + e_b) * (|w_k| + 2 |o_k|)`` the float rounding of scales and sums,
  ``o_k`` being the offset of ``w_k``'s block (its value at quant 0: ``-8 d`` for q4_0,
  ``-128 d`` for q8_0, ``m`` for q4_1, ``-dmin m_j`` for q4_k, ``-32 d sc`` for q6_k),
  and ``U = 2**-149 * (K * 255 * 127 + sum_k |o_k| + K)`` (``K * 8064 * 127`` in place of
  ``K * 255 * 127`` with blocks of 256) covers scale products that fall
  below float32's normal range (only outputs near 1e-38 and below notice it).
  The activation term is about ``|x| |w| / 254`` per value at worst, ~0.1-0.3% of a
  typical output. ``activations="float32"`` keeps ``x`` exact instead (slower): the
  weights are dequantized exactly, so the only error is float32 accumulation,
  ``|y - y_exact| <= K * 2**-24 * sum_k |x_k w_k|``. NaN or inf in ``x``, or a corrupt
  (NaN/inf) block scale, makes the outputs it reaches non-finite on both paths.
- :class:`llmcore.quant.linear.QuantizedLinear` is the inference-only ``nn.Module`` over
  such a weight.

The integer kernels run at the instruction-set level llmcore._C chose (``_C.isa()``):
AVX-512 with VNNI's ``vpdpbusd`` where the CPU has it (``_C.quant_vnni(False)`` forces
the plain AVX-512 BW kernels), AVX2 (``vpmaddubsw``/``vpmaddwd``), or scalar loops; all
give results within the same bound. Many input rows decode each weight block once and
reuse it for all rows; OpenMP splits the output rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from llmcore import _C

_OUT_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
ACTIVATIONS = {"float32": 0, "int8": 1}  # how matmul treats x: exact, or 8-bit blocks


@dataclass(frozen=True)
class QuantType:
    """One quantized type: its name, GGML type id, values per block and bytes per block."""

    name: str
    ggml_type: int
    block_size: int
    block_bytes: int

    def nbytes(self, shape: tuple[int, ...] | list[int]) -> int:
        """Bytes of a tensor of ``shape``; ValueError when its rows do not split into blocks."""
        rows, cols = _rows_cols(self, shape)
        return rows * (cols // self.block_size) * self.block_bytes


QUANT_TYPES: dict[str, QuantType] = {
    name: QuantType(name, ggml, size, nbytes) for name, ggml, size, nbytes in _C.quant_types()
}
_BY_ID = {t.ggml_type: t for t in QUANT_TYPES.values()}
QUANTIZABLE = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k")


def quant_type(qtype: str | int | QuantType) -> QuantType:
    """The :class:`QuantType` of a name (``"q4_k"``, any case), a GGML type id or a QuantType."""
    if isinstance(qtype, QuantType):
        return qtype
    if isinstance(qtype, str) and qtype.lower() in QUANT_TYPES:
        return QUANT_TYPES[qtype.lower()]
    if isinstance(qtype, int) and not isinstance(qtype, bool) and int(qtype) in _BY_ID:
        return _BY_ID[int(qtype)]
    raise ValueError(
        f"unknown quantized type {qtype!r}; valid: {', '.join(QUANT_TYPES)} "
        f"(or their GGML type ids {sorted(_BY_ID)})"
    )


def _rows_cols(t: QuantType, shape: tuple[int, ...] | list[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 0 for s in shape):
        raise ValueError(f"{t.name}: shape {shape} must have at least one non-negative dim")
    cols = shape[-1]
    if cols % t.block_size:
        raise ValueError(
            f"{t.name}: row length {cols} (last dim of shape {shape}) is not a multiple of "
            f"the block size {t.block_size}"
        )
    return math.prod(shape[:-1]), cols


def _byte_buffer(raw: object) -> tuple[int, int, object]:
    """(address, length, owner) of a byte buffer, without copying it."""
    if isinstance(raw, torch.Tensor):
        if raw.dtype != torch.uint8 or raw.device.type != "cpu" or not raw.is_contiguous():
            raise ValueError(
                f"quantized blocks must be a contiguous CPU uint8 tensor, got {raw.dtype} "
                f"on {raw.device} (contiguous={raw.is_contiguous()})"
            )
        return raw.data_ptr(), raw.numel(), raw
    if isinstance(raw, np.ndarray):
        if raw.dtype != np.uint8 or not raw.flags.c_contiguous:
            raise ValueError(
                f"quantized blocks must be a C-contiguous uint8 array, got {raw.dtype}"
            )
        return raw.ctypes.data, raw.nbytes, raw
    try:
        arr = np.frombuffer(raw, dtype=np.uint8)  # bytes, bytearray, memoryview, mmap
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"quantized blocks must be a byte buffer, got {type(raw).__name__}: {e}"
        ) from None
    return (arr.ctypes.data if arr.size else 0), arr.size, arr


def _threads(threads: int | None) -> int:
    return torch.get_num_threads() if threads is None else max(1, int(threads))


def _check_length(t: QuantType, nbytes: int, shape: tuple[int, ...]) -> tuple[int, int]:
    rows, cols = _rows_cols(t, shape)
    need = rows * (cols // t.block_size) * t.block_bytes
    if nbytes != need:
        raise ValueError(
            f"{t.name}: buffer of {nbytes} bytes, but shape {tuple(shape)} takes "
            f"{need // t.block_bytes} blocks of {t.block_bytes} bytes = {need}"
        )
    return rows, cols


def dequantize(
    qtype: str | int | QuantType,
    raw: object,
    shape: tuple[int, ...] | list[int],
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
) -> torch.Tensor:
    """The ``shape`` tensor (float32 or bfloat16) whose blocks of ``qtype`` are in ``raw``."""
    t = quant_type(qtype)
    if dtype not in _OUT_DTYPES:
        raise ValueError(f"dequantize: dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    addr, nbytes, _owner = _byte_buffer(raw)
    rows, cols = _check_length(t, nbytes, tuple(shape))
    out = torch.empty(tuple(int(s) for s in shape), dtype=dtype)
    if out.numel():
        _C.quant_dequantize(
            t.ggml_type,
            addr,
            nbytes,
            rows,
            cols,
            out.data_ptr(),
            _OUT_DTYPES[dtype],
            _threads(threads),
        )
    return out


def quantize(
    qtype: str | int | QuantType, x: torch.Tensor, threads: int | None = None
) -> torch.Tensor:
    """The blocks of ``x`` in ``qtype``: a uint8 tensor of shape ``(*x.shape[:-1], row_bytes)``."""
    t = quant_type(qtype)
    if t.name not in QUANTIZABLE:
        raise ValueError(f"quantize: no quantizer for {t.name}; valid: {', '.join(QUANTIZABLE)}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"quantize: expected a floating-point tensor, got {type(x).__name__}")
    rows, cols = _rows_cols(t, tuple(x.shape))
    src = x.detach().to(device="cpu", dtype=torch.float32).contiguous()
    row_bytes = cols // t.block_size * t.block_bytes
    out = torch.empty((*x.shape[:-1], row_bytes), dtype=torch.uint8)
    if out.numel():
        _C.quant_quantize(
            t.ggml_type, src.data_ptr(), rows, cols, out.data_ptr(), out.numel(), _threads(threads)
        )
    return out


def matmul(
    x: torch.Tensor,
    qtype: str | int | QuantType,
    raw: object,
    shape: tuple[int, int],
    threads: int | None = None,
    activations: str = "int8",
) -> torch.Tensor:
    """``x @ W.T`` (float32) for ``x`` of shape ``(..., K)`` and ``W`` of ``shape (N, K)`` in ``raw``.

    ``activations``: ``"int8"`` (default, fast; error bound in the module docstring) or
    ``"float32"`` (exact activations, float32 accumulation only).
    """
    t = quant_type(qtype)
    if activations not in ACTIVATIONS:
        raise ValueError(
            f"{t.name}: activations must be one of {', '.join(ACTIVATIONS)}, got {activations!r}"
        )
    if len(shape) != 2:
        raise ValueError(
            f"{t.name}: the weight shape must be (out_features, in_features), got {shape}"
        )
    n_out, k = (int(s) for s in shape)
    addr, nbytes, _owner = _byte_buffer(raw)
    _check_length(t, nbytes, (n_out, k))
    if x.shape[-1] != k:
        raise ValueError(
            f"{t.name}: input's last dim is {x.shape[-1]}, the weight's in_features {k}"
        )
    x2 = x.detach().to(device="cpu", dtype=torch.float32).reshape(-1, k).contiguous()  # (M, K)
    y = torch.empty(x2.shape[0], n_out, dtype=torch.float32)  # (M, N)
    _C.quant_matmul(
        t.ggml_type,
        x2.data_ptr(),
        x2.shape[0],
        k,
        addr,
        nbytes,
        n_out,
        y.data_ptr(),
        _threads(threads),
        ACTIVATIONS[activations],
    )
    return y.reshape(*x.shape[:-1], n_out)


def first_bad_scale(qtype: str | int | QuantType, raw: object, shape: tuple[int, ...]) -> int:
    """Index of the first block whose fp16 scale (or min) is NaN or inf, or -1."""
    t = quant_type(qtype)
    addr, nbytes, _owner = _byte_buffer(raw)
    rows, cols = _check_length(t, nbytes, tuple(shape))
    return _C.quant_first_bad_scale(t.ggml_type, addr, nbytes, rows, cols)
