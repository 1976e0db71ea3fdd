"""y = x W^T with W in GGUF blocks, on every instruction-set level, and QuantizedLinear.

The reference is always torch: the weights dequantized (bit identical to gguf.quants, see
test_quant.py) times x in float64. The float32-activation path is held to float32
accumulation error; the default 8-bit-activation path to the closed-form bound of
llmcore.ops.quant's docstring.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmcore import _C
from llmcore.errors import TrainingError
from llmcore.ops import quant
from tests.test_quant import ALL, random_blocks

LEVELS = _C.isa_levels()
DEFAULT = _C.isa()


@pytest.fixture(params=LEVELS)
def isa(request):
    """Force one instruction-set level for the test, then restore the default."""
    _C.set_isa(request.param)
    try:
        yield request.param
    finally:
        _C.set_isa(DEFAULT)


# Byte range of each block's quants, and the byte that means quant 0 (an offset of 128 for
# q8_0's signed bytes): with them set, a block dequantizes to its offsets o_k.
QUANT_BYTES = {
    "q4_0": (2, 18, 0),
    "q4_1": (4, 20, 0),
    "q5_0": (2, 22, 0),
    "q5_1": (4, 24, 0),
    "q8_0": (2, 34, 0x80),
    "q4_k": (16, 144, 0),
    "q5_k": (16, 176, 0),
    "q6_k": (0, 192, 0),
}


def block_offsets(name: str, raw: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """o_k, the value each weight's block gives quant 0 (its offset in w = s q + o)."""
    t = quant.quant_type(name)
    lo, hi, zero = QUANT_BYTES[name]
    blocks = raw.reshape(-1, t.block_bytes).copy()
    blocks[:, lo:hi] = zero
    return quant.dequantize(name, blocks.reshape(-1), shape)


def int8_bound(x: torch.Tensor, w: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The documented bound of the 8-bit-activation product, (M, N), in float64."""
    m, k = x.shape
    amax = x.abs().reshape(m, k // 32, 32).amax(-1)  # float32, like the kernel
    d = amax / 127
    e = torch.where(d > 0, d.double() / 2 * (1 + 2.0**-20), amax.double())
    e = e.repeat_interleave(32, dim=1)  # (M, K): the error bound of each activation
    act = e @ w.double().abs().T
    env = (x.double().abs() + e) @ (w.double().abs() + 2 * o.double().abs()).T
    return act * (1 + 2.0**-20) + (k / 16 + 16) * 2.0**-24 * env


def check_int8(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, o: torch.Tensor) -> None:
    exact = x.double() @ w.double().T
    err = (y.double() - exact).abs()
    bound = int8_bound(x, w, o) + 1e-300
    assert torch.all(err <= bound), f"max err/bound {(err / bound).max().item():.3g}"


def check_against_float64(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    """The documented bound: |y - x.w| <= K * 2^-24 * sum_k |x_k w_k| (float32 sums)."""
    x64, w64 = x.double().reshape(-1, x.shape[-1]), w.double()
    exact = x64 @ w64.T  # (M, N)
    bound = x.shape[-1] * 2.0**-24 * (x64.abs() @ w64.abs().T) + 1e-30
    err = (y.double().reshape(exact.shape) - exact).abs()
    assert torch.all(err <= bound), f"max err/bound {(err / bound).max().item():.3g}"


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("m, n", [(1, 1), (1, 37), (3, 5), (17, 33)])
def test_matches_float64_reference_on_every_level(isa, name, m, n):
    t = quant.quant_type(name)
    k = 3 * t.block_size
    raw = random_blocks(name, n * 3, seed=m * 100 + n)
    w = quant.dequantize(name, raw, (n, k))  # (N, K)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(n))
    y = quant.matmul(x, name, raw, (n, k), threads=2)
    assert y.shape == (m, n) and y.dtype == torch.float32
    check_against_float64(y, x, w)


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_every_level_agrees_with_the_scalar_path(seed):
    rng = np.random.default_rng(seed)
    name = ALL[seed % len(ALL)]
    t = quant.quant_type(name)
    m, n, kb = int(rng.integers(1, 9)), int(rng.integers(1, 40)), int(rng.integers(1, 5))
    k = kb * t.block_size
    raw = random_blocks(name, n * kb, seed=1000 + seed)
    x = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32) * 3)
    w = quant.dequantize(name, raw, (n, k))
    results = {}
    try:
        for level in LEVELS:
            _C.set_isa(level)
            results[level] = quant.matmul(x, name, raw, (n, k), threads=1 + seed % 2)
    finally:
        _C.set_isa(DEFAULT)
    ref = results[LEVELS[0]]
    check_against_float64(ref, x, w)
    bound = 2 * k * 2.0**-24 * (x.double().abs() @ w.double().abs().T) + 1e-30
    for level, y in results.items():
        assert torch.all((y.double() - ref.double()).abs() <= bound), level


def test_prefill_sized_product_uses_threads():
    raw = random_blocks("q4_0", 96 * 8, seed=11)
    x = torch.randn(64, 256)
    w = quant.dequantize("q4_0", raw, (96, 256))
    check_against_float64(quant.matmul(x, "q4_0", raw, (96, 256), threads=2), x, w)


def test_matmul_errors():
    raw = random_blocks("q8_0", 4, seed=12)
    with pytest.raises(ValueError, match="input's last dim is 64, the weight's in_features 128"):
        quant.matmul(torch.randn(2, 64), "q8_0", raw, (1, 128))
    with pytest.raises(ValueError, match="q8_0: buffer of 136 bytes, but shape \\(2, 128\\)"):
        quant.matmul(torch.randn(2, 128), "q8_0", raw, (2, 128))
    with pytest.raises(ValueError, match="row length 100"):
        quant.matmul(torch.randn(2, 100), "q8_0", raw, (1, 100))
    assert quant.matmul(torch.randn(0, 128), "q8_0", raw, (1, 128)).shape == (0, 1)


@pytest.mark.parametrize("name", ["q8_0", "q4_0", "q4_k"])
def test_quantized_linear_matches_the_dequantized_dense_layer(name):
    torch.manual_seed(0)
    dense = torch.nn.Linear(512, 24)
    layer = quant.QuantizedLinear.from_linear(dense, name)
    assert list(layer.parameters()) == [] and layer.blocks.dtype == torch.uint8
    assert name in repr(layer)
    w = layer.dequantize()
    x = torch.randn(2, 3, 512)
    with torch.no_grad():
        y = layer(x)
        ref = x.double() @ w.double().T + dense.bias.double()
    assert y.shape == (2, 3, 24)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    ybf = layer(x.bfloat16())
    assert ybf.dtype == torch.bfloat16


def test_quantized_linear_refuses_training_and_corrupt_blocks():
    layer = quant.QuantizedLinear.from_linear(torch.nn.Linear(64, 4, bias=False), "q8_0")
    x = torch.randn(3, 64, requires_grad=True)
    with pytest.raises(TrainingError, match="dequantize .*LoRA"):
        layer(x)
    with torch.no_grad():
        assert layer(x).shape == (3, 4)
    raw = layer.blocks.clone()
    raw[2, 0:2] = torch.tensor([0x00, 0x7C], dtype=torch.uint8)  # block 4: d = +inf
    with pytest.raises(ValueError, match="q8_0: block 4 has a NaN or infinite fp16 scale"):
        quant.QuantizedLinear("q8_0", raw, 64, 4)
    with pytest.raises(
        ValueError, match="buffer of 272 bytes, but shape \\(5, 64\\) takes 10 blocks"
    ):
        quant.QuantizedLinear("q8_0", layer.blocks, 64, 5)
