"""The built-in ``quantized_linear`` plugins: :class:`~llmcore.quant.linear.QuantizedLinear`
for every GGUF block format llmcore's kernels multiply by (q8_0, q4_0, q4_1, q5_0, q5_1,
q4_k, q5_k, q6_k), registered under the format's name."""

from __future__ import annotations

from llmcore.hookspecs import hookimpl


def _factory(qtype: str):
    from llmcore.quant.linear import QuantizedLinear

    def build(blocks, in_features: int, out_features: int, bias=None) -> QuantizedLinear:
        return QuantizedLinear(qtype, blocks, in_features, out_features, bias)

    build.__name__ = build.__qualname__ = f"quantized_linear_{qtype}"
    return build


@hookimpl
def register_quantized_linears(register):
    from llmcore.ops.quant import QUANT_TYPES

    for name in QUANT_TYPES:
        register(name, _factory(name))
