"""Quantized models: weights kept in GGUF's block formats, multiplied by llmcore's kernels.

- ``llmcore.load("model.gguf", quantized=True)`` keeps every matrix stored in a format with a
  registered ``quantized_linear`` plugin (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k
  built in) as it is in the file: attention and MLP projections become
  :class:`~llmcore.quant.linear.QuantizedLinear`, the token embedding a
  :class:`~llmcore.quant.layers.QuantizedEmbedding` and a tied LM head reads the same blocks;
  a fused layer whose rows come in several formats is a
  :class:`~llmcore.quant.layers.StackedQuantizedLinear` (:mod:`llmcore.quant.from_gguf`).
- ``llmcore quantize MODEL --type q8_0|q4_0|q4_k --out PATH`` writes a quantized GGUF file
  (:mod:`llmcore.quant.export`).
- Training refuses a quantized model (:func:`check_trainable`).
- The layers quantize their input rows to 8-bit blocks of 32 before the integer dot
  products, as llama.cpp does (the error bound is in :mod:`llmcore.ops.quant`);
  :func:`set_activations` with ``"float32"`` makes them multiply the exact activations.
"""

from __future__ import annotations

from torch import nn

from llmcore.errors import TrainingError


def quantized_modules(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that hold quantized weights."""
    from llmcore.quant.linear import QuantizedWeight

    return [
        name
        for name, m in model.named_modules()
        if isinstance(getattr(type(m), "weight", None), property)
        and isinstance(getattr(m, "weight", None), QuantizedWeight)
    ]


def is_quantized(model: nn.Module) -> bool:
    """True when some module of ``model`` holds quantized weights."""
    return bool(quantized_modules(model))


def check_trainable(model: nn.Module) -> None:
    """Raise :class:`TrainingError` when ``model`` holds quantized weights, which have no
    gradients; the message says to load it dequantized instead."""
    names = quantized_modules(model)
    if names:
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise TrainingError(
            f"the model holds quantized weights ({names[0]}{more}), which cannot be trained: "
            "load it dequantized, llmcore.load(path, quantized=False) (the CLI's "
            "--no-keep-quantized), and train that"
        )


def set_activations(model: nn.Module, mode: str) -> int:
    """Set how every quantized linear layer of ``model`` treats its input: ``"int8"`` (the
    default: 8-bit blocks, integer dot products) or ``"float32"`` (exact activations, slower).
    Returns how many layers were set. A lean decode step binds the mode when it is built."""
    from llmcore.ops.quant import ACTIVATIONS
    from llmcore.quant.linear import QuantizedLinear

    if mode not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {', '.join(ACTIVATIONS)}, got {mode!r}")
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    for m in layers:
        m.activations = mode
    return len(layers)


__all__ = ["check_trainable", "is_quantized", "quantized_modules", "set_activations"]
