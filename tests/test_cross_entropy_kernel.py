"""The C++ row-wise softmax cross-entropy behind the fused LM-head loss, against torch's
``log_softmax`` and ``softmax`` on the same logits, including hostile input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcore.ops.loss import _softmax_xent_, linear_cross_entropy


def reference(logits: torch.Tensor, targets: torch.Tensor, ignore: int = -100):
    x = logits.double()
    valid = targets != ignore
    safe = torch.where(valid, targets, 0)
    nll = -x.log_softmax(-1).gather(1, safe[:, None]).squeeze(1) * valid
    grad = (x.softmax(-1) - F.one_hot(safe, x.shape[1]).double()) * valid[:, None]
    return nll, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [1, 7, 16, 65, 1000, 50257])
def test_matches_torch(dtype, vocab):
    g = torch.Generator().manual_seed(vocab)
    n = 37
    logits = (torch.randn(n, vocab, generator=g) * 4).to(dtype)
    targets = torch.randint(vocab, (n,), generator=g)
    targets[::5] = -100
    want_nll, want_grad = reference(logits, targets)
    nll = _softmax_xent_(logits.clone(), targets, -100, grads=False)
    assert nll.dtype == torch.float32
    assert (nll.double() - want_nll).abs().max() <= 2e-6 * max(1.0, want_nll.abs().max())
    work = logits.clone()
    nll2 = _softmax_xent_(work, targets, -100, grads=True)
    assert torch.equal(nll, nll2)
    assert work.dtype == dtype
    # As close as torch's own softmax in the same dtype (float32 sums over a row round).
    torch_err = (logits.float().softmax(-1).to(dtype).double() - want_grad).abs()
    torch_err = torch_err.masked_fill(F.one_hot(targets.clamp(min=0), vocab).bool(), 0).max()
    tol = 2 * torch_err.item() + (1e-6 if dtype == torch.float32 else 8e-3)
    assert (work.double() - want_grad).abs().max() <= tol


def test_strided_rows_and_extreme_values():
    logits = torch.zeros(4, 40)
    logits[0, 3] = 1e30  # one huge logit: probability 1, no overflow
    logits[1] = -1e30
    logits[2, :20] = float("-inf")  # masked entries
    logits[3] = torch.linspace(-80, 80, 40)
    view = logits[:, :33]  # row stride 40, 33 columns
    targets = torch.tensor([3, 0, 25, 32])
    want_nll, want_grad = reference(view, targets)
    outside = logits[:, 33:].clone()
    nll = _softmax_xent_(view, targets, -100, grads=True)
    assert torch.isfinite(nll).all()
    assert (nll.double() - want_nll).abs().max() < 1e-5
    assert (view.double() - want_grad).abs().max() < 1e-6
    assert torch.equal(logits[:, 33:], outside)  # beyond the view: untouched


def test_int32_targets_and_column_strided_logits():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 6, generator=g)
    logits = base.t()  # (6, 40) with column stride 6: not the kernel's layout
    targets = torch.tensor([0, 5, 39, 7, 1, 2], dtype=torch.int32)
    want_nll, want_grad = reference(logits, targets.long())
    contiguous = logits.contiguous()
    nll = _softmax_xent_(logits, targets, -100, grads=True)
    assert (nll.double() - want_nll).abs().max() < 1e-5
    assert (logits.double() - want_grad).abs().max() < 1e-6
    nll_kernel = _softmax_xent_(contiguous, targets, -100, grads=False)  # int32 targets
    assert (nll_kernel.double() - want_nll).abs().max() < 1e-5


def test_nan_logits_give_nan_loss():
    logits = torch.randn(2, 50)
    logits[1, 7] = float("nan")
    nll = _softmax_xent_(logits, torch.tensor([1, 2]), -100, grads=True)
    assert torch.isfinite(nll[0]) and torch.isnan(nll[1])


@pytest.mark.parametrize("bad", [65, -1, 10**12])
def test_target_outside_the_vocabulary_raises(bad):
    logits = torch.randn(3, 65)
    before = logits.clone()
    with pytest.raises(IndexError, match=f"target {bad} .*vocabulary of 65"):
        _softmax_xent_(logits, torch.tensor([0, bad, 1]), -100, grads=True)
    assert torch.equal(logits, before)  # checked before anything is written


def test_empty_and_all_ignored():
    assert (
        _softmax_xent_(torch.empty(0, 10), torch.empty(0, dtype=torch.long), -100, True).numel()
        == 0
    )
    logits = torch.randn(3, 10)
    nll = _softmax_xent_(logits, torch.full((3,), -100), -100, grads=True)
    assert torch.equal(nll, torch.zeros(3)) and torch.equal(logits, torch.zeros(3, 10))


def test_fused_loss_in_float32_matches_cross_entropy():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 48, generator=g, requires_grad=True)
    w = torch.randn(5003, 48, generator=g, requires_grad=True)
    t = torch.randint(5003, (300,), generator=g)
    t[::9] = -100
    ours = linear_cross_entropy(h, w, t, -100, chunk=64)
    ref = F.cross_entropy(h @ w.t(), t)
    assert abs(ours.item() - ref.item()) < 1e-5 * ref.abs().item()
    for a, b in zip(torch.autograd.grad(ours, (h, w)), torch.autograd.grad(ref, (h, w))):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_scale_is_applied_in_the_kernel(dtype):
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(9, 300, generator=g) * 3).to(dtype)
    targets = torch.randint(300, (9,), generator=g)
    targets[4] = -100
    _, want = reference(logits, targets)
    work = logits.clone()
    _softmax_xent_(work, targets, -100, grads=True, grad_scale=0.125)
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    assert (work.double() - want * 0.125).abs().max() <= tol * 0.125
    with pytest.raises(ValueError, match="grad_scale"):
        _softmax_xent_(logits.clone(), targets, -100, grads=True, grad_scale=float("inf"))


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_loss_reuses_its_workspace_and_scales_weighted_losses(autocast):
    """Two calls through one workspace (the second reuses the first's buffers) give what
    fresh buffers give; a loss multiplied by a weight before backward scales both
    gradients; an odd vocabulary (padded logits rows) changes nothing."""
    from llmcore.ops.loss import LossWorkspace

    g = torch.Generator().manual_seed(1)
    h = torch.randn(70, 24, generator=g, requires_grad=True)
    w = torch.randn(1001, 24, generator=g, requires_grad=True)
    t = torch.randint(1001, (70,), generator=g)
    t[::6] = -100
    ws = LossWorkspace()
    dtype = torch.bfloat16 if autocast else torch.float32
    results = []
    for workspace in (None, ws, ws):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = linear_cross_entropy(h, w, t, -100, chunk=32, workspace=workspace)
        results.append((loss.detach(), *torch.autograd.grad(loss * 2.5, (h, w))))
        assert not ws.busy
    assert ws._buffers["logits"].dtype == dtype
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
    ref = F.cross_entropy(h.to(dtype).float() @ w.to(dtype).float().t(), t)
    loss, gh, gw = results[0]
    rgh, rgw = torch.autograd.grad(ref * 2.5, (h, w))
    tol = 1e-5 if not autocast else 2e-2
    assert abs(loss.item() - ref.item()) <= tol * ref.item()
    assert (gh - rgh).abs().max() <= tol * rgh.abs().max()
    assert (gw - rgw).abs().max() <= tol * rgw.abs().max()


def _tiny_tied_model():
    from llmcore.config import ModelConfig
    from llmcore.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32)
    assert cfg.tie_embeddings
    return build_model(cfg)


@pytest.mark.parametrize("autocast", [False, True])
def test_tied_embedding_gradient_is_combined_exactly(autocast):
    """loss() hands the LM head's weight gradient to the embedding's backward, which adds
    its rows in place: the same gradients as autograd's sum of two dense gradients, for a
    weighted loss and with gradient accumulation over two micro-batches."""
    model = _tiny_tied_model()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randint(97, (3, 16), generator=g) for _ in range(2)]

    def grads(fused: bool):
        model.fuse_tied_gradient = fused
        model.zero_grad(set_to_none=True)
        for x in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model.loss(x[:, :-1], x[:, 1:])
            (loss * 0.7).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    fused, plain = grads(True), grads(False)
    assert fused.keys() == plain.keys()
    for name in fused:
        assert torch.allclose(fused[name], plain[name], rtol=1e-5, atol=1e-7), name


def test_tied_embedding_gradient_refuses_a_second_backward():
    model = _tiny_tied_model()
    x = torch.randint(97, (2, 16))
    loss = model.loss(x[:, :-1], x[:, 1:])
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="fuse_tied_gradient"):
        loss.backward()
    model.fuse_tied_gradient = False  # the unfused path supports it
    loss = model.loss(x[:, :-1], x[:, 1:])
    loss.backward(retain_graph=True)
    loss.backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [65, 80, 50257])
def test_nan_filled_scratch_never_reaches_the_gradients(dtype, vocab):
    """Every reusable buffer starts out full of NaN (the workspace's debug switch), as
    leftover memory may on any machine: the gradients stay finite and equal to those from
    fresh, clean buffers, and the logits rows' padding columns hold zeros. bfloat16 matmuls
    on AMX read whole blocks of K past the row's end, so garbage there became NaN."""
    from llmcore.ops.loss import LossWorkspace, _row_stride

    g = torch.Generator().manual_seed(vocab)
    h = torch.randn(48, 32, generator=g, requires_grad=True)
    w = (torch.randn(vocab, 32, generator=g) * 0.2).requires_grad_()
    t = torch.randint(vocab, (48,), generator=g)
    t[::7] = -100
    autocast = dtype == torch.bfloat16

    def grads(workspace):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = linear_cross_entropy(h, w, t, -100, chunk=16, workspace=workspace)
        return (loss.detach(), *torch.autograd.grad(loss, (h, w)))

    clean = grads(LossWorkspace(poison=False))
    poisoned = LossWorkspace(poison=True)
    for _ in range(2):  # first use allocates, the second reuses (and is poisoned again)
        got = grads(poisoned)
        assert all(torch.isfinite(x).all() for x in got)
        assert all(torch.equal(a, b) for a, b in zip(clean, got))
    stride = _row_stride(vocab)
    logits = poisoned._buffers["logits"]
    assert logits.dtype == dtype
    rows = logits.numel() // stride
    padding = logits[: rows * stride].view(rows, stride)[:, vocab:]
    assert torch.equal(padding, torch.zeros_like(padding))


def test_poison_switch_follows_the_environment(monkeypatch):
    from llmcore.ops.loss import LossWorkspace

    monkeypatch.setenv("LLMCORE_POISON_SCRATCH", "1")
    ws = LossWorkspace()
    assert ws.poison
    buf = ws.get("x", (3, 4), torch.float32, "cpu")
    assert torch.isnan(buf).all()
    monkeypatch.setenv("LLMCORE_POISON_SCRATCH", "0")
    assert not LossWorkspace().poison
