"""llmcore's GELU kernel (tanh approximation) against the same formula in float64 and
against torch's ``F.gelu``, including hostile input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcore.ops.activation import gelu

DTYPES = [torch.float32, torch.bfloat16]


def reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU-tanh and its derivative in float64, written as x * sigmoid(2u) (the same
    function as 0.5 x (1 + tanh u), without its cancellation for negative x)."""
    x = x.detach().double()
    k = math.sqrt(2 / math.pi)
    u = k * (x + 0.044715 * x**3)
    s = torch.sigmoid(2 * u)
    d = s + x * s * torch.sigmoid(-2 * u) * 2 * k * (1 + 3 * 0.044715 * x**2)
    return x * s, d


def check_close(ours: torch.Tensor, torch_value: torch.Tensor, want: torch.Tensor):
    """Ours is at least as close to the float64 value as torch's own kernel, up to one
    rounding step of the dtype at the largest magnitude."""
    eps = torch.finfo(ours.dtype).eps * max(1.0, want.abs().max().item())
    ours_err = (ours.double() - want).abs().max().item()
    torch_err = (torch_value.double() - want).abs().max().item()
    assert ours_err <= torch_err + eps, (ours_err, torch_err)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 70001])
def test_forward_and_backward_match_the_formula(dtype, n):
    g = torch.Generator().manual_seed(n)
    x = (torch.randn(n, generator=g) * 4).to(dtype).requires_grad_()
    dy = torch.randn(n, generator=g).to(dtype)
    want_y, want_d = reference(x)
    y = gelu(x, approximate="tanh")
    assert y.dtype == dtype and y.grad_fn is not None and "Gelu" in type(y.grad_fn).__name__
    check_close(y.detach(), F.gelu(x.detach(), approximate="tanh"), want_y)
    (dx,) = torch.autograd.grad(y, x, dy)
    torch_dx = torch.ops.aten.gelu_backward(dy, x.detach(), approximate="tanh")
    check_close(dx, torch_dx, want_d * dy.double())


def test_negative_tail_keeps_its_digits():
    """gelu(-5) is x * sigmoid(2u) ~ -2.29e-7: torch's 0.5 x (1 + tanh u) in float32 loses
    it to cancellation (-2.98e-7); the kernel's form does not."""
    x = torch.tensor([-5.0, -6.0, -7.0])
    want, _ = reference(x)
    assert ((gelu(x, "tanh").double() - want).abs() / want.abs()).max() < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_follow_torch(dtype):
    x = torch.tensor(
        [float("inf"), float("-inf"), float("nan"), 0.0, -0.0, 1e-30, -20.0, 40.0, 3e38, -3e38]
    ).to(dtype)
    x = x.repeat(3)  # vector lanes and the tail
    ours = gelu(x, "tanh")
    theirs = F.gelu(x, approximate="tanh")
    assert torch.equal(ours.isnan(), theirs.isnan())
    finite = ~theirs.isnan()
    assert torch.equal(ours[finite], theirs[finite])
    xg = x.clone().requires_grad_()
    (dx,) = torch.autograd.grad(gelu(xg, "tanh"), xg, torch.ones_like(x))
    tdx = torch.ops.aten.gelu_backward(torch.ones_like(x), x, approximate="tanh")
    assert torch.equal(dx.isnan(), tdx.isnan())
    assert torch.equal(dx[~tdx.isnan()], tdx[~tdx.isnan()])


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_bit_patterns(dtype):
    """Any bits in, no crash; wherever torch is finite for |x| < 1e4 the values agree."""
    g = torch.Generator().manual_seed(7)
    n = 4099
    bits = torch.randint(-(2**15), 2**15, (n * (2 if dtype == torch.float32 else 1),), generator=g)
    x = bits.to(torch.int16).view(dtype)
    ours = gelu(x, "tanh")
    theirs = F.gelu(x, approximate="tanh")
    assert torch.equal(ours.isnan(), theirs.isnan())
    ok = theirs.isfinite() & (x.abs() < 1e4)
    want, _ = reference(x)
    scale = torch.finfo(dtype).eps * want[ok].abs().clamp(min=1e-30)
    diff = (ours[ok].double() - want[ok]).abs()
    torch_diff = (theirs[ok].double() - want[ok]).abs()
    assert (diff <= torch_diff + scale + torch.finfo(dtype).tiny).all()


def test_empty_and_fallbacks():
    assert gelu(torch.empty(0), "tanh").shape == (0,)
    x = torch.randn(6, 8)
    strided = x.t()  # not contiguous: torch's kernel
    assert torch.equal(gelu(strided, "tanh"), F.gelu(strided, approximate="tanh"))
    assert torch.equal(gelu(x, "none"), F.gelu(x))  # the exact GELU is torch's
    x64 = x.double()
    assert torch.equal(gelu(x64, "tanh"), F.gelu(x64, approximate="tanh"))


def test_gradient_of_a_non_contiguous_upstream_gradient():
    x = torch.randn(8, 6, requires_grad=True)
    y = gelu(x, "tanh")
    up = torch.randn(6, 8).t()  # strided gradient from the next op
    (dx,) = torch.autograd.grad(y, x, up)
    want = torch.ops.aten.gelu_backward(up.double(), x.detach().double(), approximate="tanh")
    assert (dx.double() - want).abs().max() < 1e-6


def test_gelu_mlp_uses_it_and_matches_torch():
    from llmcore.builtin.mlps import GeluMLP

    torch.manual_seed(0)
    mlp = GeluMLP(16, approximate="tanh")
    x = torch.randn(3, 5, 16, requires_grad=True)
    ours = mlp(x)
    ref = mlp.proj(F.gelu(mlp.fc(x), approximate="tanh"))
    assert (ours - ref).abs().max() < 1e-6
    g1 = torch.autograd.grad(ours.sum(), [x, *mlp.parameters()])
    g2 = torch.autograd.grad(ref.sum(), [x, *mlp.parameters()])
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() < 1e-5


def test_bad_dtype_code_is_an_error():
    from llmcore import _C

    x = torch.zeros(4)
    with pytest.raises(ValueError, match="dtype"):
        _C.gelu_tanh_forward(5, 4, x.data_ptr(), x.data_ptr(), 1)
    with pytest.raises(ValueError, match="negative"):
        _C.gelu_tanh_backward(0, -1, x.data_ptr(), x.data_ptr(), x.data_ptr(), 1)
