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
from llmcore.quant.linear import QuantizedLinear
from tests.test_quant import ALL, HALF_FIELDS, random_blocks

LEVELS = _C.isa_levels()
DEFAULT = _C.isa()
# The kernels to hold to the reference: every level, and on a VNNI CPU the AVX-512 level
# without VNNI too (what an AVX-512 CPU without it runs).
KERNELS = LEVELS + (["avx512-novnni"] if "avx512" in LEVELS and _C.quant_cpu_has_vnni() else [])


def use_kernel(kernel: str) -> None:
    _C.set_isa(kernel.removesuffix("-novnni"))
    _C.quant_vnni(_C.quant_cpu_has_vnni() and not kernel.endswith("-novnni"))


def restore_kernel() -> None:
    _C.set_isa(DEFAULT)
    _C.quant_vnni(_C.quant_cpu_has_vnni())


@pytest.fixture(params=KERNELS)
def isa(request):
    """Force one kernel variant for the test, then restore the default."""
    use_kernel(request.param)
    try:
        yield request.param
    finally:
        restore_kernel()


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


K_QUANTS = ("q4_k", "q5_k", "q6_k")


def act_block(name: str, m: int) -> int:
    """Values per activation scale: 256 for K-quants times more than 16 rows, else 32."""
    return 256 if name in K_QUANTS and m > 16 else 32


def int8_bound(x: torch.Tensor, w: torch.Tensor, o: torch.Tensor, block: int = 32) -> torch.Tensor:
    """The documented bound of the 8-bit-activation product, (M, N), in float64."""
    m, k = x.shape
    amax = x.abs().reshape(m, k // block, block).amax(-1)  # float32, like the kernel
    d = amax / 127
    e = torch.where(d > 0, d.double() / 2 * (1 + 2.0**-20), amax.double())
    e = e.repeat_interleave(block, dim=1)  # (M, K): the error bound of each activation
    act = e @ w.double().abs().T
    env = (x.double().abs() + e) @ (w.double().abs() + 2 * o.double().abs()).T
    # Scale products below float32's normal range round to a multiple of 2^-149 instead.
    top = 8064 if block == 256 else 255  # the largest integer weight factor
    underflow = 2.0**-149 * (k * top * 127 + o.double().abs().sum(1) + k)  # (N,)
    return act * (1 + 2.0**-20) + (k / 16 + 16) * 2.0**-24 * env + underflow


def check_int8(
    y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, o: torch.Tensor, block: int = 32
) -> None:
    exact = x.double() @ w.double().T
    err = (y.double() - exact).abs()
    bound = int8_bound(x, w, o, block) + 1e-300
    assert torch.all(err <= bound), f"max err/bound {(err / bound).max().item():.3g}"


def check_against_float64(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    """The documented bound: |y - x.w| <= K * 2^-24 * sum_k |x_k w_k| (float32 sums)."""
    x64, w64 = x.double().reshape(-1, x.shape[-1]), w.double()
    exact = x64 @ w64.T  # (M, N)
    bound = x.shape[-1] * 2.0**-24 * (x64.abs() @ w64.abs().T) + 1e-30
    err = (y.double().reshape(exact.shape) - exact).abs()
    assert torch.all(err <= bound), f"max err/bound {(err / bound).max().item():.3g}"


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("m, n", [(1, 1), (1, 37), (3, 5), (6, 7), (16, 9), (17, 33)])
def test_both_paths_match_the_reference_on_every_level(isa, name, m, n):
    t = quant.quant_type(name)
    k = 3 * t.block_size  # 96 for the legacy types: rows end inside a 64-value chunk
    raw = random_blocks(name, n * 3, seed=m * 100 + n)
    w = quant.dequantize(name, raw, (n, k))  # (N, K)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(n))
    y = quant.matmul(x, name, raw, (n, k), threads=2, activations="float32")
    assert y.shape == (m, n) and y.dtype == torch.float32
    check_against_float64(y, x, w)
    y8 = quant.matmul(x, name, raw, (n, k), threads=2)
    assert y8.shape == (m, n) and y8.dtype == torch.float32
    check_int8(y8, x, w, block_offsets(name, raw, (n, k)), act_block(name, m))


# fp16 bit patterns of hostile block factors: largest finite, smallest subnormal, a mid
# subnormal, zero, negative zero, and ordinary values of both signs.
HOSTILE_HALVES = np.array(
    [0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x0200, 0x0000, 0x8000, 0x2E66, 0xAE66], dtype=np.uint16
)


def hostile_blocks(name: str, n_blocks: int, seed: int) -> np.ndarray:
    """Random quants with each fp16 factor drawn from HOSTILE_HALVES."""
    rng = np.random.default_rng(seed)
    raw = random_blocks(name, n_blocks, seed).reshape(n_blocks, -1)
    for off in HALF_FIELDS[name]:
        halves = rng.choice(HOSTILE_HALVES, size=n_blocks)
        raw[:, off : off + 2] = halves.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def hostile_x(rng: np.random.Generator, m: int, k: int) -> torch.Tensor:
    """Rows of x of every scale: normal, huge, tiny (float32 subnormal), zero, one spike."""
    x = rng.standard_normal((m, k)).astype(np.float32)
    scales = np.array([1.0, 3e4, 1e-40, 0.0, 1e-3], dtype=np.float32)
    x *= scales[np.arange(m) % len(scales)][:, None]
    x[m // 2, k // 3] = 5e3  # one outlier in an otherwise ordinary row
    return torch.from_numpy(x)


@pytest.mark.parametrize("seed", range(16))
def test_fuzz_hostile_blocks_on_every_kernel(seed):
    rng = np.random.default_rng(seed)
    name = ALL[seed % len(ALL)]
    t = quant.quant_type(name)
    m, n, kb = int(rng.integers(1, 12)), int(rng.integers(1, 40)), int(rng.integers(1, 5))
    k = kb * t.block_size
    raw = hostile_blocks(name, n * kb, seed=2000 + seed)
    x = hostile_x(rng, m, k)
    w = quant.dequantize(name, raw, (n, k))
    o = block_offsets(name, raw, (n, k))
    try:
        for kernel in KERNELS:
            use_kernel(kernel)
            for threads in (1, 2):
                y = quant.matmul(x, name, raw, (n, k), threads=threads)
                assert torch.isfinite(y).all(), kernel
                check_int8(y, x, w, o)
                yf = quant.matmul(x, name, raw, (n, k), threads=threads, activations="float32")
                check_against_float64(yf, x, w)
    finally:
        restore_kernel()


@pytest.mark.parametrize("rows", [3, 20])  # 20: the K-quants' many-row tiles
@pytest.mark.parametrize("activations", ["int8", "float32"])
@pytest.mark.parametrize("name", ["q8_0", "q4_1", "q4_k", "q6_k"])
def test_non_finite_scales_and_inputs_reach_only_their_outputs(isa, name, activations, rows):
    t = quant.quant_type(name)
    n, kb = 6, 3
    raw = random_blocks(name, n * kb, seed=13).reshape(n * kb, -1)
    off = HALF_FIELDS[name][0]
    raw[2 * kb + 1, off : off + 2] = np.array([0x7C00], dtype=np.uint16).view(np.uint8)  # row 2
    raw[4 * kb, off : off + 2] = np.array([0x7E00], dtype=np.uint16).view(np.uint8)  # row 4
    x = torch.randn(rows, kb * t.block_size)
    x[1, 5] = float("nan")
    y = quant.matmul(x, name, raw.reshape(-1), (n, kb * t.block_size), activations=activations)
    bad = torch.zeros(rows, n, dtype=torch.bool)
    bad[:, [2, 4]] = True
    bad[1, :] = True
    assert not torch.isfinite(y[bad]).any() and torch.isfinite(y[~bad]).all()


@pytest.mark.parametrize("seed", range(6))
def test_k_quants_times_many_rows_agree_on_every_kernel(seed):
    # More than 16 rows of x take the K-quant tiles (activations in blocks of 256, integer
    # sub-block scales): hostile blocks and rows, each kernel against the bound and against
    # the scalar kernel, whose integer sums are the same.
    rng = np.random.default_rng(seed)
    name = K_QUANTS[seed % 3]
    m, n, kb = int(rng.integers(17, 40)), int(rng.integers(1, 24)), int(rng.integers(1, 4))
    k = kb * 256
    raw = hostile_blocks(name, n * kb, seed=3000 + seed)
    x = hostile_x(rng, m, k)
    w = quant.dequantize(name, raw, (n, k))
    o = block_offsets(name, raw, (n, k))
    try:
        use_kernel("scalar")
        ref = quant.matmul(x, name, raw, (n, k), threads=1)
        for kernel in KERNELS:
            use_kernel(kernel)
            y = quant.matmul(x, name, raw, (n, k), threads=2)
            assert torch.isfinite(y).all(), kernel
            check_int8(y, x, w, o, 256)
            err = (y.double() - ref.double()).abs()
            assert torch.all(err <= kernel_agreement_bound(x, w, o, 256) + 1e-300), kernel
    finally:
        restore_kernel()


@pytest.mark.parametrize("name", ["q8_0", "q4_0", "q4_k", "q6_k"])
def test_prefill_sized_product_tiles_and_threads(name):
    # 67 x 53: partial register tiles and weight panels on both sides.
    t = quant.quant_type(name)
    k = 2 * 256
    raw = random_blocks(name, 53 * k // t.block_size, seed=11)
    x = torch.randn(67, k)
    w = quant.dequantize(name, raw, (53, k))
    y = quant.matmul(x, name, raw, (53, k), threads=2)
    check_int8(y, x, w, block_offsets(name, raw, (53, k)), act_block(name, 67))
    o = block_offsets(name, raw, (53, k))
    for m in (1, 5, 66):  # a row alone (the fused few-row tiles)
        check_int8(quant.matmul(x[m : m + 1], name, raw, (53, k)), x[m : m + 1], w, o)
    check_against_float64(quant.matmul(x, name, raw, (53, k), activations="float32"), x, w)


# The types whose few-row products (M <= 4) take fused tiles on AVX-512 (int_fused.hpp).
FUSED = ["q4_0", "q5_0", "q8_0", "q4_k", "q6_k"]


def kernel_agreement_bound(
    x: torch.Tensor, w: torch.Tensor, o: torch.Tensor, block: int = 32
) -> torch.Tensor:
    """How far two kernels may differ: the same integer dot products of the same 8-bit
    activations, summed in float in another order (twice int8_bound's rounding term)."""
    m, k = x.shape
    amax = x.abs().reshape(m, k // block, block).amax(-1)
    e = (amax.double() / 127).repeat_interleave(block, dim=1)
    env = (x.double().abs() + e) @ (w.double().abs() + 2 * o.double().abs()).T
    top = 8064 if block == 256 else 255
    return 2 * (k / 16 + 16) * 2.0**-24 * env + 2.0**-149 * k * top * 127


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("kb", [1, 2, 3, 18])
def test_fused_few_rows_match_the_scalar_kernel(name, kb):
    # M = 1..4 rows (each fused tile height) and 6, 16 (groups of 4 over one weight tile),
    # N = 7 (a partial tile of 3 weight rows), K ending inside a 64-value chunk (odd kb of
    # a legacy type) or not.
    t = quant.quant_type(name)
    k, n = kb * t.block_size, 7
    raw = random_blocks(name, n * kb, seed=300 + kb)
    w = quant.dequantize(name, raw, (n, k))
    o = block_offsets(name, raw, (n, k))
    x = torch.randn(16, k, generator=torch.Generator().manual_seed(kb))
    rows = (1, 2, 3, 4, 6, 16)
    try:
        use_kernel("scalar")
        ref = {m: quant.matmul(x[:m], name, raw, (n, k), threads=1) for m in rows}
        for kernel in KERNELS:
            use_kernel(kernel)
            for m in rows:
                for threads in (1, 2):
                    y = quant.matmul(x[:m], name, raw, (n, k), threads=threads)
                    check_int8(y, x[:m], w, o)
                    err = (y.double() - ref[m].double()).abs()
                    bound = kernel_agreement_bound(x[:m], w, o)
                    assert torch.all(err <= bound), (kernel, m, (err / bound).max().item())
    finally:
        restore_kernel()


def test_vnni_switch():
    was = _C.quant_vnni()
    try:
        assert _C.quant_vnni(False) is False
        if _C.quant_cpu_has_vnni():
            assert _C.quant_vnni(True) is True
        else:
            with pytest.raises(ValueError, match="lacks AVX-512 VNNI"):
                _C.quant_vnni(True)
    finally:
        _C.quant_vnni(was)


def test_matmul_errors():
    raw = random_blocks("q8_0", 4, seed=12)
    with pytest.raises(ValueError, match="input's last dim is 64, the weight's in_features 128"):
        quant.matmul(torch.randn(2, 64), "q8_0", raw, (1, 128))
    with pytest.raises(ValueError, match="q8_0: buffer of 136 bytes, but shape \\(2, 128\\)"):
        quant.matmul(torch.randn(2, 128), "q8_0", raw, (2, 128))
    with pytest.raises(ValueError, match="row length 100"):
        quant.matmul(torch.randn(2, 100), "q8_0", raw, (1, 100))
    assert quant.matmul(torch.randn(0, 128), "q8_0", raw, (1, 128)).shape == (0, 1)
    with pytest.raises(ValueError, match="activations must be one of float32, int8, got 'fp8'"):
        quant.matmul(torch.randn(2, 128), "q8_0", raw, (1, 128), activations="fp8")
    x = torch.randn(2, 128)
    y = torch.empty(2, 1)
    with pytest.raises(ValueError, match="activations code must be 0"):
        _C.quant_matmul(8, x.data_ptr(), 2, 128, raw.ctypes.data, 136, 1, y.data_ptr(), 1, 7)
    with pytest.raises(ValueError, match="negative number of input rows"):
        _C.quant_matmul(8, x.data_ptr(), -2, 128, raw.ctypes.data, 136, 1, y.data_ptr(), 1)
    with pytest.raises(ValueError, match="input too large"):
        _C.quant_matmul(8, x.data_ptr(), 2**60, 128, raw.ctypes.data, 136, 1, y.data_ptr(), 1)
    with pytest.raises(ValueError, match="null buffer for x"):
        _C.quant_matmul(8, 0, 2, 128, raw.ctypes.data, 136, 1, y.data_ptr(), 1)
    with pytest.raises(ValueError, match="unknown type id 99"):
        _C.quant_matmul(99, x.data_ptr(), 2, 128, raw.ctypes.data, 136, 1, y.data_ptr(), 1)


@pytest.mark.parametrize("name", ["q8_0", "q4_0", "q4_k"])
def test_quantized_linear_matches_the_dequantized_dense_layer(name):
    torch.manual_seed(0)
    dense = torch.nn.Linear(512, 24)
    layer = QuantizedLinear.from_linear(dense, name, activations="float32")
    assert list(layer.parameters()) == [] and layer.blocks.dtype == torch.uint8
    assert name in repr(layer) and "activations=float32" in repr(layer)
    w = layer.dequantize()
    x = torch.randn(2, 3, 512)
    with torch.no_grad():
        y = layer(x)
        ref = x.double() @ w.double().T + dense.bias.double()
    assert y.shape == (2, 3, 24)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    layer.activations = "int8"  # the default
    with torch.no_grad():
        y8 = layer(x) - dense.bias
    o = block_offsets(name, layer.blocks.numpy(), (24, 512))
    check_int8(y8.reshape(6, 24), x.reshape(6, 512), w, o)
    assert QuantizedLinear.from_linear(dense, name).activations == "int8"
    ybf = layer(x.bfloat16())
    assert ybf.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="activations must be one of float32, int8"):
        QuantizedLinear(name, layer.blocks, 512, 24, activations="int4")


def test_quantized_linear_refuses_training_and_corrupt_blocks():
    layer = QuantizedLinear.from_linear(torch.nn.Linear(64, 4, bias=False), "q8_0")
    x = torch.randn(3, 64, requires_grad=True)
    with pytest.raises(TrainingError, match=r"quantized=False"):
        layer(x)
    with torch.no_grad():
        assert layer(x).shape == (3, 4)
    raw = layer.blocks.clone()
    raw[2, 0:2] = torch.tensor([0x00, 0x7C], dtype=torch.uint8)  # block 4: d = +inf
    with pytest.raises(ValueError, match="q8_0: block 4 has a NaN or infinite fp16 scale"):
        QuantizedLinear("q8_0", raw, 64, 4)
    with pytest.raises(
        ValueError, match="buffer of 272 bytes, but shape \\(5, 64\\) takes 10 blocks"
    ):
        QuantizedLinear("q8_0", layer.blocks, 64, 5)
