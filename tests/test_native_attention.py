"""The ``native`` attention kernels against an independent float64 reference.

The reference below is the textbook formula written out with torch ops in float64; the
``math`` plugin is also checked through llmcore's conformance helper.
"""

from __future__ import annotations

import math

import pytest
import torch

from llmcore import _C, plugins
from llmcore.builtin.native_attention import NativeAttention, sdpa_fallback
from llmcore.errors import ConfigError
from llmcore.ops.attention import flash_attention, flash_attention_backward
from llmcore.testing import check_attention


def reference(q, k, v, *, causal=True, scale=None, mask=None, window=None, kv_lens=None):
    """softmax(q k^T * scale + mask) v in float64, bottom-right causal, GQA by repetition."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale  # (B, H, Tq, Tk)
    qpos = torch.arange(Tq)[:, None] + (Tk - Tq)
    kpos = torch.arange(Tk)[None, :]
    ok = torch.ones(B, 1, Tq, Tk, dtype=torch.bool)
    if causal:
        ok = ok & (kpos <= qpos)
    if window is not None:
        ok = ok & (kpos > qpos - window)
    if kv_lens is not None:
        ok = ok & (kpos < kv_lens.view(-1, 1, 1, 1))
    if mask is not None and mask.dtype == torch.bool:
        ok = ok & mask
    elif mask is not None:
        s = s + mask.double()
    s = s.masked_fill(~ok, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # a query that sees no key -> zeros
    return p @ v


def make(B, H, Hkv, Tq, Tk, D, dtype=torch.float32, grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=g).to(dtype).requires_grad_(grad)
    k = torch.randn(B, Hkv, Tk, D, generator=g).to(dtype).requires_grad_(grad)
    v = torch.randn(B, Hkv, Tk, D, generator=g).to(dtype).requires_grad_(grad)
    return q, k, v


def compare(attn, q, k, v, tol, **kw):
    """Forward and the three gradients of ``attn`` against the float64 reference."""
    out = attn(q, k, v, **kw)
    assert out.shape == q.shape and out.dtype == q.dtype
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want = reference(*leaves, **kw)
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(g.to(out.dtype))
    want.backward(g)
    for name, got, ref in [("out", out, want)] + [
        (n, t.grad, r.grad) for n, t, r in zip(("dq", "dk", "dv"), (q, k, v), leaves)
    ]:
        err = (got.double() - ref).abs().max().item()
        bound = tol * max(1.0, ref.abs().max().item())
        assert err <= bound, f"{name}: max error {err:.3e} > {bound:.3e}"


# (B, H, Hkv, Tq, Tk, D): odd lengths, T = 1, head dims 32/64/80/128, GQA ratios 1/2/4/all,
# decode (Tq < Tk), more than one tile in both directions.
SHAPES = [
    (2, 4, 4, 37, 37, 64),
    (1, 4, 2, 1, 1, 32),
    (1, 8, 2, 65, 65, 80),
    (2, 4, 1, 130, 130, 32),
    (1, 2, 2, 3, 150, 128),
    (2, 6, 3, 1, 77, 64),
    (1, 4, 1, 50, 129, 80),
    (1, 2, 1, 200, 200, 40),
    (1, 2, 1, 20, 70, 256),
    (2, 4, 2, 7, 300, 64),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [True, False])
def test_float32_matches_reference(shape, causal):
    compare(NativeAttention(), *make(*shape), tol=2e-5, causal=causal)


@pytest.mark.parametrize("shape", SHAPES[::2], ids=lambda s: "x".join(map(str, s)))
def test_float64_matches_reference(shape):
    compare(NativeAttention(), *make(*shape, dtype=torch.float64), tol=1e-12, causal=True)


@pytest.mark.parametrize(
    "shape", [(2, 4, 2, 70, 70, 64), (1, 4, 4, 2, 90, 128), (1, 2, 1, 33, 100, 80)]
)
def test_bfloat16_matches_reference(shape):
    # Inputs are rounded to bf16 first; the reference then sees the same values, so what
    # remains is fp32 accumulation plus the rounding of the outputs.
    compare(NativeAttention(), *make(*shape, dtype=torch.bfloat16), tol=2e-2, causal=True)


def test_one_and_two_threads():
    # Two threads over a single kv head split its keys into chunks and sum partial dq.
    old = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            compare(NativeAttention(), *make(1, 4, 1, 150, 300, 64), tol=2e-5, causal=True)
    finally:
        torch.set_num_threads(old)


def test_masks_and_window():
    B, H, Hkv, Tq, Tk, D = 2, 4, 2, 45, 70, 32
    gen = torch.Generator().manual_seed(3)
    keep = torch.rand(B, 1, Tq, Tk, generator=gen) > 0.3
    keep[..., -1] = True  # every query keeps its own key
    compare(NativeAttention(), *make(B, H, Hkv, Tq, Tk, D), tol=2e-5, mask=keep)
    bias = torch.randn(1, H, 1, Tk, generator=gen)  # broadcast over batch and queries
    compare(NativeAttention(), *make(B, H, Hkv, Tq, Tk, D), tol=2e-5, mask=bias, causal=False)
    compare(NativeAttention(), *make(B, H, Hkv, Tq, Tk, D), tol=2e-5, window=9)
    compare(NativeAttention(), *make(B, H, Hkv, 3, Tk, D), tol=2e-5, window=20, causal=False)


def test_padding_lengths_and_rows_that_see_nothing():
    B, H, Hkv, Tq, Tk, D = 3, 2, 1, 40, 90, 64
    lens = torch.tensor([90, 17, 0])  # the last row is all padding: its outputs are zeros
    compare(NativeAttention(), *make(B, H, Hkv, Tq, Tk, D), tol=2e-5, kv_lens=lens, causal=False)
    q, k, v = make(B, H, Hkv, Tq, Tk, D)
    out = NativeAttention()(q, k, v, kv_lens=lens)
    assert torch.all(out[2] == 0)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_strided_inputs_and_scale():
    # (B, T, H, D) storage viewed as (B, H, T, D), as a model's projections produce it.
    B, T, H, D = 2, 33, 4, 64
    x = torch.randn(B, T, 3, H, D, requires_grad=True)
    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    out = NativeAttention()(q, k, v, scale=0.3)
    want = reference(q, k, v, scale=0.3)
    assert (out.double() - want).abs().max() < 2e-5
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_inference_path_matches_autograd_path():
    q, k, v = make(2, 12, 4, 1, 300, 64, grad=False)
    attn = NativeAttention()
    with torch.no_grad():
        lean = attn(q, k, v, causal=True)
    op, _ = flash_attention(q, k, v, None, None, True, 1.0 / 8.0, 0)
    assert torch.equal(lean, op)
    assert (lean.double() - reference(q, k, v)).abs().max() < 2e-5


def test_custom_op_gradients_match_eager_path():
    # Eager training calls the kernels through a plain autograd Function; torch.compile goes
    # through the registered custom op. Both must give the same output and gradients.
    shape = (2, 4, 2, 33, 33, 32)
    grads = []
    for use_op in (False, True):
        q, k, v = make(*shape)
        if use_op:
            out = flash_attention(q, k, v, None, None, True, 0.2, 0)[0]
        else:
            out = NativeAttention()(q, k, v, causal=True, scale=0.2)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(3)))
        grads.append([out.detach(), q.grad, k.grad, v.grad])
    for got, want in zip(*grads):
        assert torch.equal(got, want)


def test_gradcheck_float64():
    for causal, window, shape in [
        (True, None, (1, 4, 2, 5, 7, 8)),
        (False, 3, (2, 2, 1, 6, 6, 16)),
    ]:
        q, k, v = make(*shape, dtype=torch.float64)
        mask = torch.randn(1, 1, shape[3], shape[4], dtype=torch.float64)

        def f(q, k, v, causal=causal, window=window, mask=mask):
            return NativeAttention()(q, k, v, causal=causal, window=window, mask=mask)

        assert torch.autograd.gradcheck(f, (q, k, v))


def test_opcheck():
    q, k, v = make(2, 4, 2, 9, 13, 32)
    mask = torch.randn(1, 4, 1, 13)
    lens = torch.tensor([13, 5])
    for args in [(q, k, v, None, None, True, 0.25, 0), (q, k, v, mask, lens, False, 0.2, 4)]:
        torch.library.opcheck(flash_attention, args)
    out, lse = flash_attention(q, k, v, None, None, True, 0.25, 0)
    # The backward has no derivative of its own (no double backward): check it on plain tensors.
    bwd_args = [t.detach() for t in (torch.randn_like(out), q, k, v, out, lse)]
    torch.library.opcheck(flash_attention_backward, (*bwd_args, None, None, True, 0.25, 0))


def test_torch_compile_with_fake_tensors():
    attn = NativeAttention()
    q, k, v = make(1, 4, 2, 16, 16, 32)

    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(q, k, v):
        return attn(q, k, v, causal=True).sum()

    loss = f(q, k, v)
    loss.backward()
    want = reference(q, k, v).sum()
    assert abs(loss.item() - want.item()) < 1e-4
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_unsupported_dtype_falls_back_with_warning():
    attn = NativeAttention()
    q, k, v = make(1, 2, 2, 5, 5, 16, dtype=torch.float16, grad=False)
    with pytest.warns(RuntimeWarning, match="float16 is not supported on CPU"):
        out = attn(q, k, v)
    assert (out.double() - reference(q, k, v)).abs().max() < 2e-3
    bias = torch.randn(1, 1, 5, 5, requires_grad=True)
    q, k, v = make(1, 2, 2, 5, 5, 16)
    with pytest.warns(RuntimeWarning, match="mask that requires grad"):
        out = attn(q, k, v, mask=bias)
    assert (out.double() - reference(q, k, v, mask=bias.detach())).abs().max() < 1e-5


def test_sdpa_fallback_contract():
    q, k, v = make(2, 4, 2, 6, 20, 16, grad=False)
    lens = torch.tensor([20, 9])
    got = sdpa_fallback(q, k, v, window=5, kv_lens=lens)
    assert (got.double() - reference(q, k, v, window=5, kv_lens=lens)).abs().max() < 1e-5


def test_bad_inputs_raise():
    attn = NativeAttention()
    q, k, v = make(1, 3, 2, 4, 4, 8, grad=False)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        attn(q, k, v)
    q, k, v = make(1, 2, 2, 5, 4, 8, grad=False)
    with pytest.raises(ValueError, match="more queries"):
        attn(q, k, v)
    q, k, v = make(1, 2, 2, 4, 4, 8, grad=False)
    with pytest.raises(ValueError, match="window"):
        attn(q, k, v, window=0)
    with pytest.raises(ConfigError, match="no params"):
        NativeAttention(block=64)
    with pytest.raises(ValueError, match="dtype code"):
        _C.attention_forward(7, 1, 1, 1, 1, 1, 8, 1, (0, 0, 0, 1), 1, (0, 0, 0, 1), 1, (0, 0, 0, 1),
                             1, (0, 0, 0, 1), 0, 0, (0, 0, 0, 0), 0, 1.0, True, 0, 1)  # fmt: skip
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        _C.attention_forward(0, 1, 3, 2, 1, 1, 8, 1, (0, 0, 0, 1), 1, (0, 0, 0, 1), 1, (0, 0, 0, 1),
                             1, (0, 0, 0, 1), 0, 0, (0, 0, 0, 0), 0, 1.0, True, 0, 1)  # fmt: skip


def test_registered_as_native_and_conforms():
    attn = plugins.create("attention", "native")
    assert isinstance(attn, NativeAttention)
    check_attention(NativeAttention)


def test_empty_inputs():
    attn = NativeAttention()
    q, k, v = make(0, 2, 2, 4, 4, 8)
    assert attn(q, k, v).shape == (0, 2, 4, 8)
    q, k, v = make(1, 2, 2, 0, 4, 8)
    out = attn(q, k, v)
    out.sum().backward()
    assert out.shape == (1, 2, 0, 8) and torch.all(k.grad == 0)
