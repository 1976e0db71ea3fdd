"""The fused LM-head loss: cross-entropy of ``h @ W.T`` without holding all the logits.

The LM head and its logits are most of a small model's FLOPs and memory: for GPT-2's
vocabulary one (B*T, 50257) fp32 logits tensor is larger than the rest of the activations.
:func:`linear_cross_entropy` computes the loss in row chunks and, because the loss is a
scalar, its gradients in the same pass; the softmax-minus-one-hot of a chunk is one C++ pass
over cache-resident rows (``csrc/loss``, :func:`_softmax_xent_`). :class:`LossWorkspace`
keeps the scratch buffers from one step to the next, and :class:`TiedGradient` /
:class:`TiedEmbedding` let a token embedding that shares the head's weight add its rows into
the loss's weight gradient in place.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from llmcore.ops.dtypes import CODES, LOSS_CPU


def _lm_head_chunk(vocab_size: int) -> int:
    """Rows of logits computed at once by the fused loss: about 24M logits (96 MB in fp32).
    In float32 every chunk adds its product into the (V, C) weight gradient, so fewer,
    larger chunks make fewer passes over it."""
    return max(64, (24 << 20) // max(1, vocab_size))


def _row_stride(vocab_size: int) -> int:
    """Row stride of a logits buffer: ``vocab_size`` rounded up to 16 elements. BLAS writes
    rows with an odd leading dimension such as GPT-2's 50257 markedly slower (a third, for
    fp32 on AVX-512) than rows that start on a cache-line boundary."""
    return -(-vocab_size // 16) * 16


def _poison_default() -> bool:
    """Whether scratch buffers start out filled with NaN (``LLMCORE_POISON_SCRATCH=1``): a
    debug switch that makes a kernel reading memory it did not write fail loudly on every
    machine, not only on those whose matmuls happen to read it (AMX tiles read whole blocks)."""
    return os.environ.get("LLMCORE_POISON_SCRATCH", "") not in ("", "0")


class LossWorkspace:
    """Buffers the fused loss reuses from one call to the next: its logits and, under
    autocast, the low-precision copy of the LM-head weight and of its gradient.

    Both live only inside the forward pass, so a training loop reuses the same memory every
    step instead of asking the OS for ~100 MB of fresh pages (first writes to new pages cost
    more than the arithmetic done on them). A :class:`Transformer` holds one; a call that
    finds it in use (a nested or concurrent forward) takes fresh buffers instead.

    With ``poison`` (default: the ``LLMCORE_POISON_SCRATCH`` environment variable) every
    buffer is filled with NaN each time it is handed out, so that a reader of memory nobody
    wrote shows up as NaN gradients in tests."""

    def __init__(self, poison: bool | None = None) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        # name -> (cols, stride, rows) whose padding columns are known to hold zeros
        self._zeroed: dict[str, tuple[int, int, int]] = {}
        self.busy = False
        self.poison = _poison_default() if poison is None else poison

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        """A tensor of ``shape`` backed by the buffer ``name`` when it fits. Its contents are
        whatever the last user left (NaN with ``poison``): callers write all of it."""
        n = math.prod(shape)
        buf = self._buffers.get(name)
        if (
            buf is None
            or buf.dtype != dtype
            or buf.device != torch.device(device)
            or buf.numel() < n
        ):
            buf = self._buffers[name] = torch.empty(n, dtype=dtype, device=device)
            self._zeroed.pop(name, None)
        if self.poison and dtype.is_floating_point:
            buf.fill_(float("nan"))
            self._zeroed.pop(name, None)
        return buf[:n].view(shape)

    def get_padded(
        self, name: str, rows: int, cols: int, dtype: torch.dtype, device
    ) -> torch.Tensor:
        """A ``(rows, cols)`` view whose row stride is ``cols`` rounded up to 16 elements, with
        zeros in the padding columns. Matmuls that read a strided operand may read whole
        blocks of K past ``cols`` (bfloat16 on AMX does): the padding must never hold
        garbage. It is zeroed when the buffer or its layout is new, not on every call."""
        stride = _row_stride(cols)
        full = self.get(name, (rows, stride), dtype, device)
        done = self._zeroed.get(name)
        if stride > cols and (done is None or done[:2] != (cols, stride) or done[2] < rows):
            full[:, cols:].zero_()
            self._zeroed[name] = (cols, stride, rows)
        return full[:, :cols]

    def clear(self) -> None:
        """Release the buffers (the next call allocates them again)."""
        self._buffers.clear()
        self._zeroed.clear()


_VOCAB_BLOCK = 8192  # vocabulary rows per product of the low-precision weight gradient


def _softmax_xent_(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int,
    grads: bool,
    grad_scale: float | torch.Tensor = 1.0,
):
    """Per-row NLL (fp32) of ``targets`` under ``logits`` (n, V); with ``grads`` the logits
    are overwritten with ``(softmax - onehot) * grad_scale`` (zero rows where the target is
    ignored).

    On CPU this is one C++ pass per row over cache-resident data; elsewhere torch ops in
    fp32 compute the same thing."""
    n, V = logits.shape
    native = logits.dtype in LOSS_CPU and (V == 1 or logits.stride(1) == 1)
    if logits.device.type == "cpu" and native:
        from llmcore import _C

        nll = torch.empty(n, dtype=torch.float32)
        targets = targets.to(torch.int64).contiguous()
        _C.softmax_cross_entropy(
            CODES[logits.dtype], n, V, logits.data_ptr(), logits.stride(0),
            targets.data_ptr(), ignore_index, nll.data_ptr(), grads, torch.get_num_threads(),
            float(grad_scale),
        )  # fmt: skip
        return nll
    valid = targets != ignore_index
    safe = torch.where(valid, targets, 0)[:, None]
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    picked = x.gather(1, safe).squeeze(1)
    top = x.amax(dim=-1, keepdim=True)
    e = x.sub(top).exp_()
    total = e.sum(dim=-1, keepdim=True)
    nll = ((top + total.log()).squeeze(1) - picked) * valid
    if grads:
        p = e.div_(total)
        p.scatter_add_(1, safe, -torch.ones_like(picked[:, None]))
        logits.copy_(p.mul_(valid[:, None] * grad_scale))
    return nll


class TiedGradient:
    """Hands the fused loss's LM-head weight gradient to the token embedding's backward when
    the two share one weight. The embedding then adds its few rows into that gradient in
    place, instead of autograd zero-filling a second (V, C) gradient and adding the two."""

    def __init__(self) -> None:
        self.grad_w: torch.Tensor | None = None
        self.given = False

    def give(self, grad_w: torch.Tensor | None) -> None:
        """Hand over the loss's (V, C) weight gradient (once per forward)."""
        if self.given:
            raise RuntimeError(
                "model.loss(): a second backward through the same loss is not supported "
                "with tied embeddings (the weight gradient is combined in place); compute the "
                "loss again, or set model.fuse_tied_gradient = False"
            )
        self.grad_w, self.given = grad_w, True

    def take(self) -> torch.Tensor | None:
        """The handed-over gradient (None if the loss gave none); the link lets go of it."""
        grad_w, self.grad_w = self.grad_w, None
        return grad_w


class TiedEmbedding(torch.autograd.Function):
    """``F.embedding(idx, weight)`` whose weight gradient is the loss's (V, C) gradient,
    taken from ``link``, plus this lookup's rows."""

    @staticmethod
    def forward(ctx, idx, weight, link):
        ctx.save_for_backward(idx)
        ctx.link = link
        ctx.weight_meta = (weight.shape, weight.dtype)
        return F.embedding(idx, weight)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        shape, dtype = ctx.weight_meta
        grad_w = ctx.link.take()
        if grad_w is None:  # the loss contributed nothing (its backward did not run)
            grad_w = torch.zeros(shape, dtype=grad.dtype, device=grad.device)
        grad_w.index_add_(0, idx.reshape(-1), grad.reshape(-1, shape[1]).to(grad_w.dtype))
        return None, grad_w.to(dtype), None


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ weight.T`` against ``targets`` without materialising the
    ``(N, V)`` logits in fp32: rows are processed in chunks, and because the loss is a scalar
    its gradients are computed in the same pass (softmax minus one-hot, already divided by
    the number of targets), so backward only hands them over. Matmuls run in the autocast
    dtype when autocast is on; softmax in fp32. In a low-precision dtype the softmax
    gradients of every row are kept and the weight gradient is one matmul at the end (CPU
    matmuls cannot accumulate bf16 products into fp32)."""

    @staticmethod
    def forward(ctx, h, weight, targets, ignore_index, chunk, grads, workspace, tied):
        device_type = h.device.type
        dtype = h.dtype
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        acc = torch.promote_types(dtype, torch.float32)  # softmax and sums: fp32 at least
        low = dtype != acc
        if workspace is None or workspace.busy:
            workspace = LossWorkspace()  # fresh buffers, freed on return
        workspace.busy = True
        try:
            with torch.autocast(device_type, enabled=False):
                hx = h.to(dtype)
                if weight.dtype == dtype:
                    wx = weight
                else:
                    wx = workspace.get("weight", weight.shape, dtype, weight.device)
                    wx.copy_(weight)
                N, V = hx.shape[0], wx.shape[0]
                n_valid = (targets != ignore_index).sum().clamp_(min=1).to(acc)
                grad_scale = 1.0 / n_valid
                n_chunks = max(1, -(-N // chunk))
                chunk = -(-N // n_chunks)  # equal chunks: no sliver at the end
                keep_all = grads and low  # every row's gradient, for one weight matmul
                rows = N if keep_all else min(chunk, N)
                buf = workspace.get_padded("logits", rows, V, dtype, h.device)
                loss = torch.zeros((), dtype=acc, device=h.device)
                grad_h = torch.empty_like(hx) if grads else None
                grad_w = None
                if grads and not low:
                    grad_w = torch.empty(weight.shape, dtype=acc, device=h.device)
                if keep_all:  # whole-matrix products: BLAS runs them faster than chunks
                    torch.mm(hx, wx.t(), out=buf)
                    loss += _softmax_xent_(buf, targets, ignore_index, True, grad_scale).sum()
                    torch.mm(buf, wx, out=grad_h)
                    grad_w_low = workspace.get("grad_w", tuple(weight.shape), dtype, h.device)
                    # P^T h in blocks of vocabulary rows: for bf16 on CPU a sixth faster
                    # than one product with the whole transposed P.
                    for v in range(0, V, _VOCAB_BLOCK):
                        w = min(v + _VOCAB_BLOCK, V)
                        torch.mm(buf[:, v:w].t(), hx, out=grad_w_low[v:w])
                    grad_w = grad_w_low.to(acc)
                for s in range(0, 0 if keep_all else N, chunk):
                    e = min(s + chunk, N)
                    hc = hx[s:e]
                    logits = buf[: e - s]
                    torch.mm(hc, wx.t(), out=logits)
                    nll = _softmax_xent_(logits, targets[s:e], ignore_index, grads, grad_scale)
                    loss += nll.sum()
                    if grads:
                        torch.mm(logits, wx, out=grad_h[s:e])
                        if s == 0:
                            torch.mm(logits.t(), hc, out=grad_w)
                        else:
                            grad_w.addmm_(logits.t(), hc)
                if grads and not low and N == 0:
                    grad_w.zero_()
                loss /= n_valid
        finally:
            workspace.busy = False
        if grads:
            ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (h.dtype, weight.dtype)
        ctx.tied = tied
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.tied is not None and ctx.tied.given:
            ctx.tied.give(None)  # raises: the saved weight gradient was changed in place
        grad_h, grad_w = ctx.saved_tensors
        if grad_out.device.type != "cpu" or grad_out.item() != 1.0:  # a scaled or weighted loss
            grad_h, grad_w = grad_h * grad_out, grad_w * grad_out
        if ctx.tied is not None:  # the embedding's backward adds its rows and returns it
            ctx.tied.give(grad_w)
            return grad_h.to(ctx.dtypes[0]), None, None, None, None, None, None, None
        return (
            grad_h.to(ctx.dtypes[0]),
            grad_w.to(ctx.dtypes[1]),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk: int | None = None,
    workspace: LossWorkspace | None = None,
    tied: TiedGradient | None = None,
) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, targets)`` (mean over targets that are not
    ``ignore_index``; 0 when there are none) computed in row chunks, never holding all logits.
    ``h`` is ``(N, C)``, ``weight`` ``(V, C)``, ``targets`` ``(N,)``; ``workspace`` keeps the
    scratch buffers for the next call."""
    chunk = chunk or _lm_head_chunk(weight.shape[0])
    grads = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(
        h, weight, targets, ignore_index, chunk, grads, workspace, tied
    )
