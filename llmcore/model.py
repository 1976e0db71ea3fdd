"""The transformer: a decoder-only language model built from finished parts.

    tokens -> embedding -> position.embed -> N x Block -> final norm -> LM head -> logits
    Block:  x + attention(norm(x)),  then  x + mlp(norm(x))

The modules here never look a component up by name: :func:`build_model` (with
:func:`build_block` and :func:`build_attention`) creates the configured norm, MLP, attention
and position plugins through :func:`llmcore.components.create` and passes them in, so a
:class:`Block` can be built from hand-made parts as well. Attention rotates q and k with
``position.rotate`` and calls the ``attention`` plugin; with a :class:`KVCache` the new keys
and values are written in place and attention reads the cache. A position plugin that biases
the attention scores (ALiBi) has its bias folded into the attention mask once per pass
(:mod:`llmcore.score_bias`). The fused LM-head loss lives in :mod:`llmcore.ops.loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmcore import plugins, score_bias
from llmcore.components import create
from llmcore.config import ModelConfig
from llmcore.ops.loss import LossWorkspace, TiedEmbedding, TiedGradient, linear_cross_entropy


def _dropout(p: float) -> nn.Module:
    """Dropout, or Identity when ``p == 0`` (a zero-rate Dropout still runs a kernel per call)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


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
    """Multi-head (or grouped-query) causal self-attention around an attention function.

    ``attend(q, k, v, causal=, mask=, window=)`` is the attention plugin; this module owns
    the projections and the head layout. ``layer`` is its index into a :class:`KVCache`.

    ``observer``, when set, is called as ``observer(layer, q, k, v, scale, window, mask=)``
    with the tensors the attention plugin receives (after the position rotation and the cache;
    ``mask`` includes a position's score bias) so that tracing (:mod:`llmcore.inspect`) can
    recompute attention weights that fused kernels never materialise. It is None by default
    and costs nothing then.
    """

    observer: Callable[..., None] | None = None

    def __init__(
        self,
        dim: int,
        n_head: int,
        n_kv_head: int,
        head_dim: int,
        attend: Callable[..., torch.Tensor],
        *,
        layer: int = 0,
        qkv_bias: bool = True,
        bias: bool = True,
        window: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.window = window
        # one matmul for q, k and v; with GQA k and v have fewer heads than q
        self.sizes = (n_head * head_dim, n_kv_head * head_dim, n_kv_head * head_dim)
        self.qkv = nn.Linear(dim, sum(self.sizes), bias=qkv_bias)
        self.proj = nn.Linear(n_head * head_dim, dim, bias=bias)
        self.attend = attend
        self.dropout = _dropout(dropout)

    def forward(self, x, position, positions, cache: KVCache | None = None, mask=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.sizes, dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = position.rotate(q, k, positions)  # rope turns q and k; learned returns them
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, Hkv, Tk, D): the past and the new
        if self.observer is not None:
            scale = 1.0 / math.sqrt(self.head_dim)
            self.observer(self.layer, q, k, v, scale, self.window, mask=mask)
        y = self.attend(q, k, v, causal=True, mask=mask, window=self.window)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, H*D)
        return self.dropout(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        norm1: nn.Module,
        attn: CausalSelfAttention,
        norm2: nn.Module,
        mlp: nn.Module,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = norm1
        self.attn = attn
        self.norm2 = norm2
        self.mlp = mlp
        self.dropout = _dropout(dropout)

    def forward(self, x, position, positions, cache=None, mask=None):
        x = x + self.attn(self.norm1(x), position, positions, cache, mask)
        return x + self.dropout(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """A decoder-only language model; ``forward(idx)`` returns logits ``(B, T, V)``.

    Built from finished parts (see :func:`build_model`); ``cfg`` is kept as ``config`` for
    the shape of caches and exports, and gives the dropout rate and initialisation.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        wte: nn.Embedding,
        position: nn.Module,
        blocks: list[Block],
        norm_f: nn.Module,
        lm_head: nn.Linear,
    ) -> None:
        super().__init__()
        self.config = cfg
        self.wte = wte
        self.position = position
        self.dropout = _dropout(cfg.dropout)
        self.blocks = nn.ModuleList(blocks)
        self.norm_f = norm_f
        self.lm_head = lm_head
        score_bias.check_takes_score_bias(self)
        self.loss_workspace = LossWorkspace()  # scratch of loss(), reused across steps
        # loss() with tied embeddings: one (V, C) weight gradient, see TiedGradient
        self.fuse_tied_gradient = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, init_std), residual projections scaled by
        1/sqrt(2 n_layer), zero biases, norms at one."""
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                # the projections that add into the residual stream: n_layer of each add up
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
        _tied: TiedGradient | None = None,
    ) -> torch.Tensor:
        """The final-norm outputs ``(B, T, C)`` for token ids ``idx`` (B, T)."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0  # decode continues after the cache
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        if _tied is None:
            tokens = self.wte(idx)  # (B, T, C)
        else:  # the loss hands its head-weight gradient to this lookup's backward
            tokens = TiedEmbedding.apply(idx, self.wte.weight, _tied)
        x = self.position.embed(tokens, positions)  # (B, T, C): learned adds wpe, rope does not
        x = self.dropout(x)
        if score_bias.biases_scores(self.position):  # ALiBi: the bias joins every block's mask
            score_bias.check_takes_score_bias(self)  # an attention swapped in since, too
            tk, cached = score_bias.key_count(T, cache, mask), cache is not None
            mask = score_bias.with_score_bias(
                self.position, self.config.n_head, positions, mask, tk, cached
            )
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
        # The fused loss knows only a bias-free nn.Linear head (LoRA or a bias: plain path).
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
            tied = TiedGradient()
        h = self.hidden_states(idx, _tied=tied)  # (B, T, C)
        if plain:
            logits = self.lm_head(h)  # (B, T, V)
            return F.cross_entropy(
                logits.view(-1, logits.size(-1)).float(),
                targets.reshape(-1),
                ignore_index=ignore_index,
            )
        # the LM head and its logits are most of the FLOPs and memory: fuse them with the loss
        return linear_cross_entropy(
            h.reshape(-1, h.size(-1)),  # (B*T, C)
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
            cfg.kv_heads,
            max_len or cfg.block_size,
            cfg.head_size,
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
            f"n_kv_head={c.kv_heads}, n_embd={c.n_embd}, block_size={c.block_size}, "
            f"vocab_size={c.vocab_size}"
        )


# -- builders: the only place the parts are looked up by name --------------------------------


def build_attention(cfg: ModelConfig, layer: int) -> CausalSelfAttention:
    """The attention of block ``layer``, around the configured attention plugin."""
    attn = CausalSelfAttention(
        cfg.n_embd,
        cfg.n_head,
        cfg.kv_heads,
        cfg.head_size,
        create("attention", cfg.attention, "model.attention"),
        layer=layer,
        qkv_bias=cfg.qkv_has_bias,
        bias=cfg.bias,
        window=cfg.sliding_window,
        dropout=cfg.dropout,
    )
    factory = plugins.factory("attention", getattr(cfg.attention, "name", cfg.attention))
    if score_bias.takes_score_bias(factory):  # said of what it builds (a plain function, say)
        attn.score_bias_declared_for = (attn.attend,)  # until attend is replaced
    return attn


def build_block(cfg: ModelConfig, layer: int) -> Block:
    """Block ``layer`` with the configured norm, attention and MLP plugins."""

    def norm() -> nn.Module:
        return create("norm", cfg.norm, "model.norm", dim=cfg.n_embd, bias=cfg.bias)

    # built in this order so that the random init draws as many numbers, in the same order,
    # as a model built before (reset_parameters re-draws them all after)
    norm1 = norm()
    attn = build_attention(cfg, layer)
    norm2 = norm()
    mlp = create(
        "mlp", cfg.mlp, "model.mlp", dim=cfg.n_embd, hidden_dim=cfg.mlp_hidden, bias=cfg.bias
    )
    return Block(norm1, attn, norm2, mlp, cfg.dropout)


def build_model(cfg, vocab_size: int | None = None) -> Transformer:
    """Build the model of a :class:`~llmcore.config.Config` (or a ModelConfig).

    ``vocab_size`` fills ``model.vocab_size`` when the config leaves it unset. The embedding,
    position, blocks (:func:`build_block`), final norm and head are made here, in that
    order, and handed to :class:`Transformer`.
    """
    mcfg: ModelConfig = cfg.model if hasattr(cfg, "model") else cfg
    if mcfg.vocab_size is None:
        if vocab_size is None:
            raise ValueError("model.vocab_size is not set: pass vocab_size (the tokenizer's)")
        mcfg.vocab_size = vocab_size
    wte = nn.Embedding(mcfg.vocab_size, mcfg.n_embd)
    position = create(
        "position",
        mcfg.position,
        "model.position",
        dim=mcfg.n_embd,
        head_dim=mcfg.head_size,
        max_seq_len=mcfg.block_size,
    )
    blocks = [build_block(mcfg, i) for i in range(mcfg.n_layer)]
    norm_f = create("norm", mcfg.norm, "model.norm", dim=mcfg.n_embd, bias=mcfg.bias)
    lm_head = nn.Linear(mcfg.n_embd, mcfg.vocab_size, bias=False)
    if mcfg.tie_embeddings:
        lm_head.weight = wte.weight  # one (V, C) matrix reads tokens in and scores them out
    return Transformer(mcfg, wte, position, blocks, norm_f, lm_head)
