"""The transformer, assembled only from registered components.

    tokens -> embedding -> position.embed -> N x Block -> final norm -> LM head -> logits
    Block:  x + attention(norm(x)),  then  x + mlp(norm(x))

Attention rotates q and k with ``position.rotate`` and calls the ``attention`` plugin; with a
:class:`KVCache` the new keys and values are written in place and attention reads the cache.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from llmcore.components import create
from llmcore.config import ModelConfig


def _dropout(p: float) -> nn.Module:
    """Dropout, or Identity when ``p == 0`` (a zero-rate Dropout still runs a kernel per call)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


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

_NATIVE_XENT_DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # dtype codes of the C++ kernel


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
    native = logits.dtype in _NATIVE_XENT_DTYPES and (V == 1 or logits.stride(1) == 1)
    if logits.device.type == "cpu" and native:
        from llmcore import _C

        nll = torch.empty(n, dtype=torch.float32)
        targets = targets.to(torch.int64).contiguous()
        _C.softmax_cross_entropy(
            _NATIVE_XENT_DTYPES[logits.dtype], n, V, logits.data_ptr(), logits.stride(0),
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


class _TiedGradient:
    """Hands the fused loss's LM-head weight gradient to the token embedding's backward when
    the two share one weight. The embedding then adds its few rows into that gradient in
    place, instead of autograd zero-filling a second (V, C) gradient and adding the two."""

    def __init__(self) -> None:
        self.grad_w: torch.Tensor | None = None
        self.given = False

    def give(self, grad_w: torch.Tensor | None) -> None:
        if self.given:
            raise RuntimeError(
                "model.loss(): a second backward through the same loss is not supported "
                "with tied embeddings (the weight gradient is combined in place); compute the "
                "loss again, or set model.fuse_tied_gradient = False"
            )
        self.grad_w, self.given = grad_w, True

    def take(self) -> torch.Tensor | None:
        grad_w, self.grad_w = self.grad_w, None
        return grad_w


class _TiedEmbedding(torch.autograd.Function):
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
    tied: _TiedGradient | None = None,
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


class KVCache:
    """Preallocated keys and values of every layer: ``(n_layer, B, Hkv, max_len, D)``.

    ``length`` tokens are filled; a forward pass with T new tokens writes positions
    ``length .. length + T`` and then advances ``length``.
    """

    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` (B, Hkv, T, D) at the current position; return the filled cache."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention around an attention plugin."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head = cfg.n_head
        self.n_kv_head = cfg.n_kv_head or cfg.n_head
        self.head_dim = cfg.head_dim or cfg.n_embd // cfg.n_head
        self.window = cfg.sliding_window
        qkv_bias = cfg.bias if cfg.qkv_bias is None else cfg.qkv_bias
        self.sizes = (
            self.n_head * self.head_dim,
            self.n_kv_head * self.head_dim,
            self.n_kv_head * self.head_dim,
        )
        self.qkv = nn.Linear(cfg.n_embd, sum(self.sizes), bias=qkv_bias)
        self.proj = nn.Linear(self.n_head * self.head_dim, cfg.n_embd, bias=cfg.bias)
        self.attend = create("attention", cfg.attention, "model.attention")
        self.dropout = _dropout(cfg.dropout)

    def forward(self, x, position, positions, cache: KVCache | None = None, mask=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.sizes, dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = position.rotate(q, k, positions)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, Hkv, Tk, D)
        y = self.attend(q, k, v, causal=True, mask=mask, window=self.window)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.dropout(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.norm1 = create("norm", cfg.norm, "model.norm", dim=cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer)
        self.norm2 = create("norm", cfg.norm, "model.norm", dim=cfg.n_embd, bias=cfg.bias)
        self.mlp = create(
            "mlp", cfg.mlp, "model.mlp", dim=cfg.n_embd, hidden_dim=cfg.mlp_hidden, bias=cfg.bias
        )
        self.dropout = _dropout(cfg.dropout)

    def forward(self, x, position, positions, cache=None, mask=None):
        x = x + self.attn(self.norm1(x), position, positions, cache, mask)
        return x + self.dropout(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A decoder-only language model; ``forward(idx)`` returns logits ``(B, T, V)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError(
                "model.vocab_size must be set (build_model takes it from the tokenizer)"
            )
        self.config = cfg
        head_dim = cfg.head_dim or cfg.n_embd // cfg.n_head
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.position = create(
            "position",
            cfg.position,
            "model.position",
            dim=cfg.n_embd,
            head_dim=head_dim,
            max_seq_len=cfg.block_size,
        )
        self.dropout = _dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm_f = create("norm", cfg.norm, "model.norm", dim=cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.loss_workspace = LossWorkspace()  # scratch of loss(), reused across steps
        # loss() with tied embeddings: one (V, C) weight gradient, see _TiedGradient
        self.fuse_tied_gradient = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, init_std), residual projections scaled by
        1/sqrt(2 n_layer), zero biases, norms at one."""
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                out_proj = name.endswith(("attn.proj", "mlp.proj", "mlp.down"))
                nn.init.normal_(
                    module.weight,
                    0.0,
                    std / math.sqrt(2 * self.config.n_layer) if out_proj else std,
                )
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)

    def hidden_states(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        _tied: _TiedGradient | None = None,
    ) -> torch.Tensor:
        """The final-norm outputs ``(B, T, C)`` for token ids ``idx`` (B, T)."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        if _tied is None:
            tokens = self.wte(idx)
        else:
            tokens = _TiedEmbedding.apply(idx, self.wte.weight, _tied)
        x = self.position.embed(tokens, positions)  # (B, T, C)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, self.position, positions, cache, mask)
        if cache is not None:
            cache.length += T
        return self.norm_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, T, V)`` for token ids ``idx`` (B, T)."""
        return self.lm_head(self.hidden_states(idx, positions=positions, cache=cache, mask=mask))

    def loss(
        self, idx: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
    ) -> torch.Tensor:
        """Mean next-token cross-entropy of ``idx`` against ``targets`` (B, T)."""
        plain = self.lm_head.bias is not None or type(self.lm_head) is not nn.Linear
        plain = plain or torch.compiler.is_compiling()  # inductor fuses the plain loss itself
        tied = None
        if (
            not plain
            and self.fuse_tied_gradient
            and self.lm_head.weight is self.wte.weight
            and torch.is_grad_enabled()
            and self.wte.weight.requires_grad
            and type(self.wte) is nn.Embedding
        ):
            tied = _TiedGradient()
        h = self.hidden_states(idx, _tied=tied)
        if plain:
            logits = self.lm_head(h)
            return F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(),
                targets.reshape(-1),
                ignore_index=ignore_index,
            )
        # the LM head and its logits are most of the FLOPs and memory: fuse them with the loss
        return linear_cross_entropy(
            h.reshape(-1, h.size(-1)),
            self.lm_head.weight,
            targets.reshape(-1),
            ignore_index,
            workspace=self.loss_workspace,
            tied=tied,
        )

    def new_cache(
        self, batch: int, max_len: int | None = None, *, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty KV cache for ``batch`` rows of up to ``max_len`` (default block_size) tokens."""
        cfg = self.config
        w = self.wte.weight
        return KVCache(
            cfg.n_layer,
            batch,
            cfg.n_kv_head or cfg.n_head,
            max_len or cfg.block_size,
            cfg.head_dim or cfg.n_embd // cfg.n_head,
            dtype=dtype or w.dtype,
            device=w.device,
        )

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); without position embeddings if asked."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and hasattr(self.position, "wpe"):
            n -= self.position.wpe.weight.numel()
        return n

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"params={self.num_params() / 1e6:.2f}M, n_layer={c.n_layer}, n_head={c.n_head}, "
            f"n_kv_head={c.n_kv_head or c.n_head}, n_embd={c.n_embd}, block_size={c.block_size}, "
            f"vocab_size={c.vocab_size}"
        )


def build_model(cfg, vocab_size: int | None = None) -> Transformer:
    """Build the model of a :class:`~llmcore.config.Config` (or a ModelConfig).

    ``vocab_size`` fills ``model.vocab_size`` when the config leaves it unset.
    """
    mcfg = cfg.model if hasattr(cfg, "model") else cfg
    if mcfg.vocab_size is None:
        if vocab_size is None:
            raise ValueError("model.vocab_size is not set: pass vocab_size (the tokenizer's)")
        mcfg.vocab_size = vocab_size
    return Transformer(mcfg)
