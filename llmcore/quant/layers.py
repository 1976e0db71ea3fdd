"""The token embedding over quantized blocks.

An embedding lookup reads a few rows: :class:`QuantizedEmbedding` gathers their blocks and
dequantizes only those (bit identical to dequantizing the whole matrix, as every row is its
own run of blocks). A tied LM head is a :class:`~llmcore.quant.linear.QuantizedLinear` over the
very same blocks tensor, so the file's one matrix serves both ends.
"""

from __future__ import annotations

import torch
from torch import nn

from llmcore.ops import quant
from llmcore.quant.linear import QuantizedLinear, QuantizedWeight


class QuantizedEmbedding(nn.Module):
    """``ids -> rows`` of a ``(num_embeddings, embedding_dim)`` table held as GGUF blocks.

    Args:
        qtype: the blocks' type.
        blocks: ``(num_embeddings, row_bytes)`` uint8 tensor (kept as is: a view of a memory
            map stays one).
        num_embeddings, embedding_dim: the table's shape.
        dtype: the dtype of the rows it returns.
    """

    def __init__(
        self,
        qtype: str | int | quant.QuantType,
        blocks: torch.Tensor,
        num_embeddings: int,
        embedding_dim: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.qtype = quant.quant_type(qtype)
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        shape = (self.num_embeddings, self.embedding_dim)
        if not isinstance(blocks, torch.Tensor) or blocks.dtype != torch.uint8:
            raise ValueError("QuantizedEmbedding: blocks must be a uint8 tensor")
        row_bytes = self.qtype.nbytes((1, self.embedding_dim))
        if blocks.numel() != self.qtype.nbytes(shape):
            raise ValueError(
                f"{self.qtype.name}: {blocks.numel()} bytes of blocks, but a {shape} table "
                f"takes {self.qtype.nbytes(shape)}"
            )
        self.register_buffer("blocks", blocks.reshape(self.num_embeddings, row_bytes))
        self.out_dtype = dtype

    @property
    def weight(self) -> QuantizedWeight:
        """The table's shape, dtype and device, for code that reads ``wte.weight``."""
        return QuantizedWeight(self.qtype, self.blocks, (self.num_embeddings, self.embedding_dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # (...) long -> (..., embedding_dim)
        rows = self.blocks.index_select(0, ids.reshape(-1))  # (n, row_bytes), a small copy
        out = quant.dequantize(
            self.qtype, rows, (rows.shape[0], self.embedding_dim), _dense(self.out_dtype)
        )
        out = out if out.dtype == self.out_dtype else out.to(self.out_dtype)
        return out.view(*ids.shape, self.embedding_dim)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense table."""
        return self.weight.dequantize(dtype)

    def head(self) -> QuantizedLinear:
        """The tied LM head: a linear layer over this table's blocks (no copy)."""
        return QuantizedLinear(self.qtype, self.blocks, self.embedding_dim, self.num_embeddings)

    def extra_repr(self) -> str:
        return f"{self.qtype.name}, {self.num_embeddings}, {self.embedding_dim}"


def _dense(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.bfloat16) else torch.float32


class StackedWeight(QuantizedWeight):
    """The :class:`~llmcore.quant.linear.QuantizedWeight` face of a
    :class:`StackedQuantizedLinear`: its parts' rows, one after the other."""

    def __init__(self, layer: StackedQuantizedLinear) -> None:
        first = layer.parts[0].weight
        super().__init__(first.qtype, first.blocks, (layer.out_features, layer.in_features))
        self.layer = layer

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.cat([p.weight.dequantize(dtype) for p in self.layer.parts])


class StackedQuantizedLinear(nn.Module):
    """One linear layer whose rows are stored in several formats: llama.cpp's mixed files
    (Q4_K_M keeps ``attn_v`` in q6_k next to a q4_k ``attn_q`` and ``attn_k``) give the fused
    ``attn.qkv`` a quantized part per run of rows; the outputs are concatenated."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        if len({p.in_features for p in parts}) != 1:
            raise ValueError("StackedQuantizedLinear: the parts must share in_features")
        self.parts = nn.ModuleList(parts)
        self.in_features = parts[0].in_features
        self.out_features = sum(p.out_features for p in parts)

    @property
    def weight(self) -> StackedWeight:
        return StackedWeight(self)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense ``(out_features, in_features)`` weight."""
        return self.weight.dequantize(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in_features) -> (..., out_features): each part's rows, in order
        return torch.cat([p(x) for p in self.parts], dim=-1)

    def functional(self):
        """``forward`` over the parts' own functions (see QuantizedLinear.functional)."""
        fns = [getattr(p, "functional", lambda: None)() or p for p in self.parts]
        return lambda x: torch.cat([f(x) for f in fns], dim=-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
