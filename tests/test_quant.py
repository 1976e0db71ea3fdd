"""GGUF quantized blocks: layouts, dequantization and quantization against gguf.quants."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
import torch

from llmcore.ops import quant

gguf = pytest.importorskip("gguf")
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType  # noqa: E402

ALL = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k"]
EXACT = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]  # gguf.quants can quantize these
# Byte offsets of each block's fp16 factors, from GGUF's block definitions.
HALF_FIELDS = {
    "q4_0": [0],
    "q4_1": [0, 2],
    "q5_0": [0],
    "q5_1": [0, 2],
    "q8_0": [0],
    "q4_k": [0, 2],
    "q5_k": [0, 2],
    "q6_k": [208],
}


def gtype(name: str) -> GGMLQuantizationType:
    return GGMLQuantizationType[name.upper()]


def random_blocks(name: str, n_blocks: int, seed: int) -> np.ndarray:
    """Random bytes with finite random fp16 factors: any bit pattern of the quants."""
    rng = np.random.default_rng(seed)
    t = quant.quant_type(name)
    raw = rng.integers(0, 256, size=(n_blocks, t.block_bytes), dtype=np.uint8)
    for off in HALF_FIELDS[name]:
        halves = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        raw[:, off : off + 2] = halves.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def test_the_type_table_matches_gguf():
    assert sorted(quant.QUANT_TYPES) == sorted(ALL)
    for name in ALL:
        t = quant.quant_type(name)
        assert t.ggml_type == int(gtype(name))
        assert (t.block_size, t.block_bytes) == GGML_QUANT_SIZES[gtype(name)]
        assert quant.quant_type(t.ggml_type) is t and quant.quant_type(name.upper()) is t
    with pytest.raises(ValueError, match="unknown quantized type 'q3_k'; valid: q4_0"):
        quant.quant_type("q3_k")


@pytest.mark.parametrize("name", ALL)
def test_dequantize_is_bit_identical_to_gguf(name):
    t = quant.quant_type(name)
    rows, cols = 5, 3 * t.block_size
    raw = random_blocks(name, rows * 3, seed=1)
    expected = gguf.quants.dequantize(raw.reshape(rows, -1), gtype(name)).astype(np.float32)
    got = quant.dequantize(name, raw, (rows, cols))
    assert got.dtype == torch.float32 and got.shape == (rows, cols)
    np.testing.assert_array_equal(got.numpy().view(np.uint32), expected.view(np.uint32))
    bf = quant.dequantize(name, raw, (rows, cols), dtype=torch.bfloat16)
    assert torch.equal(
        bf.view(torch.int16), torch.from_numpy(expected).bfloat16().view(torch.int16)
    )
    threaded = quant.dequantize(name, raw, (rows, cols), threads=2)
    assert torch.equal(threaded, got)


def test_large_tensor_uses_threads_and_matches(tmp_path):
    raw = random_blocks("q4_k", 64 * 8, seed=2)
    expected = gguf.quants.dequantize(raw.reshape(64, -1), gtype("q4_k"))
    got = quant.dequantize("q4_k", raw, (64, 8 * 256), threads=2)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_every_kind_of_buffer_is_read_in_place(tmp_path):
    raw = random_blocks("q8_0", 12, seed=3)
    ref = quant.dequantize("q8_0", raw, (3, 128))
    path = tmp_path / "blocks.bin"
    path.write_bytes(b"\0" * 5 + raw.tobytes())
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)[5:]  # an odd address: blocks are read without alignment
        try:
            assert torch.equal(quant.dequantize("q8_0", view, (3, 128)), ref)
        finally:
            view.release()
    for buf in (raw.tobytes(), bytearray(raw.tobytes()), memoryview(raw), torch.from_numpy(raw)):
        assert torch.equal(quant.dequantize("q8_0", buf, (3, 128)), ref)
    assert quant.dequantize("q8_0", raw, (2, 6, 32)).shape == (2, 6, 32)


@pytest.mark.parametrize("name", ["q8_0", "q4_k"])
def test_bad_sizes_are_errors_naming_type_and_sizes(name):
    t = quant.quant_type(name)
    raw = random_blocks(name, 4, seed=4)
    with pytest.raises(ValueError, match=f"{name}: buffer of {raw.size - 1} bytes, but shape"):
        quant.dequantize(name, raw[:-1], (4, t.block_size))
    with pytest.raises(ValueError, match=f"{name}: buffer of {raw.size} bytes"):
        quant.dequantize(name, raw, (5, t.block_size))
    with pytest.raises(
        ValueError, match=f"row length {t.block_size + 1} .* multiple of the block size"
    ):
        quant.dequantize(name, raw, (1, t.block_size + 1))
    with pytest.raises(ValueError, match="uint8"):
        quant.dequantize(name, torch.zeros(4, dtype=torch.float32), (1, t.block_size))
    with pytest.raises(ValueError, match="dtype must be"):
        quant.dequantize(name, raw, (4, t.block_size), dtype=torch.float16)


def test_the_kernel_checks_sizes_itself():
    from llmcore import _C

    raw = random_blocks("q4_0", 2, seed=5)
    out = torch.empty(64)
    with pytest.raises(
        ValueError, match="q4_0: buffer of 36 bytes, but 1 x 96 values take 3 blocks"
    ):
        _C.quant_dequantize(2, raw.ctypes.data, 36, 1, 96, out.data_ptr(), 0, 1)
    with pytest.raises(ValueError, match="unknown type id 9"):
        _C.quant_dequantize(9, raw.ctypes.data, 36, 1, 64, out.data_ptr(), 0, 1)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bits", [0x7C00, 0xFC00, 0x7E00])
def test_non_finite_block_scale_is_an_error_naming_the_block(name, bits):
    t = quant.quant_type(name)
    raw = random_blocks(name, 6, seed=6).reshape(6, -1)
    off = HALF_FIELDS[name][-1]
    raw[4, off : off + 2] = np.array([bits], dtype=np.uint16).view(np.uint8)
    with pytest.raises(ValueError, match=f"{name}: block 4 has a NaN or infinite fp16 scale"):
        quant.dequantize(name, raw.reshape(-1), (2, 3 * t.block_size))
    assert quant.first_bad_scale(name, raw.reshape(-1), (2, 3 * t.block_size)) == 4


def hostile_rows(cols: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    rows = [
        rng.standard_normal(cols),
        rng.uniform(-1, 1, cols) * 1e4,
        rng.uniform(0, 1, cols),  # one sign only
        -rng.uniform(0, 1, cols),
        np.zeros(cols),
        np.full(cols, 0.37),
        rng.standard_normal(cols) * 1e-6,  # fp16 subnormal scales
        np.round(rng.standard_normal(cols) * 8) / 16,  # many exact ties
        rng.standard_normal(cols) * np.where(rng.uniform(size=cols) < 0.1, 100.0, 1.0),
    ]
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("name", EXACT)
def test_quantize_is_bit_identical_to_gguf(name):
    x = np.concatenate([hostile_rows(256), np.random.default_rng(8).standard_normal((40, 256))])
    x = x.astype(np.float32)
    expected = gguf.quants.quantize(x, gtype(name))
    got = quant.quantize(name, torch.from_numpy(x))
    assert got.dtype == torch.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("name", EXACT + ["q4_k"])
def test_quantize_rejects_nan_inf_and_scales_beyond_fp16(name):
    x = torch.randn(4, 256)
    x[2, 7] = float("nan")
    with pytest.raises(ValueError, match=f"quantize {name}: row 2 holds NaN or inf"):
        quant.quantize(name, x)
    x[2, 7] = float("inf")
    with pytest.raises(ValueError, match="row 2 holds NaN or inf"):
        quant.quantize(name, x)
    x[2, 7] = 0.0
    x[3, 5] = 3e10
    with pytest.raises(ValueError, match="row 3 holds values too large"):
        quant.quantize(name, x)
    with pytest.raises(ValueError, match="not a multiple of the block size"):
        quant.quantize(name, torch.randn(2, 48))


def test_quantize_refuses_types_without_a_quantizer():
    with pytest.raises(ValueError, match="no quantizer for q6_k; valid: q8_0"):
        quant.quantize("q6_k", torch.randn(1, 256))


def q4_k_fields(raw: np.ndarray):
    """(d, dmin, sc) of each Q4_K block, decoded with gguf's own unpacking."""
    blocks = raw.reshape(-1, 144)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, _ = gguf.quants.Q4_K.get_scale_min(blocks[:, 4:16].copy())
    return d, dmin, sc.astype(np.float32)


def test_q4_k_dequantizes_like_gguf_within_the_stated_bound():
    x = np.concatenate([hostile_rows(512), np.random.default_rng(9).standard_normal((30, 512))])
    x = x.astype(np.float32)
    raw = quant.quantize("q4_k", torch.from_numpy(x)).numpy()
    expected = gguf.quants.dequantize(raw, gtype("q4_k")).astype(np.float32)
    got = quant.dequantize("q4_k", raw.reshape(-1), x.shape).numpy()
    np.testing.assert_array_equal(got, expected)
    d, dmin, sc = q4_k_fields(raw)  # per block: (B, 1), (B, 1), (B, 8)
    bound = np.maximum(d * sc / 2, dmin / 2)  # (B, 8): per sub-block of 32
    bound = np.repeat(bound, 32, axis=1).reshape(x.shape)
    err = np.abs(x.astype(np.float64) - got)
    assert np.all(err <= bound * (1 + 1e-5) + 1e-30)
    # And the bound itself is tight: about a 31st of each sub-block's range.
    rng_rows = x[-30:]
    rel = np.sqrt(np.mean((rng_rows - got[-30:]) ** 2)) / np.std(rng_rows)
    assert rel < 0.12


def test_q4_k_of_zeros_and_constants_is_exact_enough():
    x = torch.zeros(2, 256)
    x[1] = 0.37
    got = quant.dequantize("q4_k", quant.quantize("q4_k", x), (2, 256))
    assert torch.equal(got[0], torch.zeros(256))
    assert torch.allclose(got[1], x[1], rtol=2e-3)
