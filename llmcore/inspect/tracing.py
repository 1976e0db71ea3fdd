"""One traced forward pass: the plain data record between a model and the page that shows it.

:func:`trace` runs the model once over a text and keeps what a reader wants to see: the
tokens with their ids and byte spans, the next-token distribution at every position, the
attention weights of the chosen layers and heads, the logit lens and the residual norms.

Attention weights come from a side path, not from the attention plugin: every
:class:`~llmcore.model.CausalSelfAttention` calls its ``observer`` with the q, k and v that
the plugin receives (rotated by the position plugin, so rope is included), and the weights
are recomputed as ``softmax(q k^T * scale + mask)`` under the causal and sliding-window mask,
where ``mask`` carries a position plugin's score bias (ALiBi). So the
fused plugins (``native``, ``sdpa``), which never materialise the weights, and third-party
plugins are traced alike. A plugin that does not declare ``standard = True`` (see
:class:`llmcore.contracts.Attention`) computes something else than that softmax; its record
says so instead of showing weights it does not use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import FunctionType

import torch

from llmcore.errors import ConfigError, GenerationError, LLMCoreError
from llmcore.inspect.lens import LogitLens, logit_lens
from llmcore.masks import allowed_keys

#: positions traced at most unless ``max_positions`` says otherwise: attention weights
#: grow as layers x heads x T^2, and the page has to carry them.
DEFAULT_MAX_POSITIONS = 512


@dataclass
class TracedToken:
    """One token: its id, its text (undecodable bytes replaced) and its byte span."""

    id: int
    text: str
    start: int  # byte offset of the token's first byte in the decoded text
    end: int  # byte offset after its last byte
    bytes: bytes


@dataclass
class Trace:
    """The record of one forward pass (see :func:`trace`); tensors are float32 on the CPU.

    ``attention`` is ``(len(layers), len(heads), T, T)``, row ``i`` the weights of query
    ``i`` over the keys; None where ``attention_note`` says why there are none.
    """

    tokens: list[TracedToken]
    top_ids: torch.Tensor  # (T, k) the k likeliest next tokens at each position
    top_probs: torch.Tensor  # (T, k) their probabilities
    entropy: torch.Tensor  # (T,) nats, of the next-token distribution
    loss: torch.Tensor  # (T,) -log p(actual next token); NaN at the last position
    layers: list[int]
    heads: list[int]
    attention: torch.Tensor | None
    attention_note: str | None
    lens: LogitLens
    residual_norms: torch.Tensor  # (n_layer + 1, T): embeddings, then after each block
    n_layer: int = 0
    n_head: int = 0

    @property
    def ids(self) -> list[int]:
        """The token ids, in order."""
        return [t.id for t in self.tokens]


def trace(
    model,
    tokenizer,
    text: str,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    top_k: int = 10,
    max_positions: int = DEFAULT_MAX_POSITIONS,
) -> Trace:
    """Trace ``text`` through ``model``: tokens, next-token distributions, attention weights
    of ``layers`` x ``heads`` (default all), the logit lens and residual norms.

    Args:
        model: a :class:`~llmcore.model.Transformer`.
        tokenizer: the model's tokenizer (``encode``, ``decode_bytes``).
        text: non-empty text of at most ``min(context, max_positions)`` tokens.
        layers, heads: indices to keep attention weights and the lens for (memory bound).
        top_k: how many next-token candidates to keep per position and lens cell.
        max_positions: the most tokens traced (attention weights grow with its square).

    Raises:
        GenerationError: empty text, or more tokens than the context or ``max_positions``.
        ConfigError: a layer or head index outside the model.
    """
    if not isinstance(text, str) or not text:
        raise GenerationError("trace: the text is empty; give at least one character")
    cfg = model.config
    ids = tokenizer.encode(text)
    if not ids:
        raise GenerationError(f"trace: {text!r} encodes to no tokens")
    limit = min(_context(model), int(max_positions))
    if len(ids) > limit:
        raise GenerationError(
            f"trace: the text is {len(ids)} tokens, more than the {limit} this trace takes "
            f"(context {_context(model)}, max_positions {max_positions}); shorten the text "
            "or raise max_positions"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"trace: top_k must be an integer >= 1, found {top_k!r}")
    layers = _indices(layers, cfg.n_layer, "layer")
    heads = _indices(heads, cfg.n_head, "head")
    note = _attention_note(model)
    recorder = _Recorder(layers, heads, record_weights=note is None)
    device = model.lm_head.weight.device
    x = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    with torch.no_grad(), recorder.attached(model):
        logits = model(x)[0].float()  # (T, V)
    k = min(top_k, logits.shape[-1])
    logp = torch.log_softmax(logits, dim=-1)  # (T, V)
    top_logp, top_ids = logp.topk(k, dim=-1)  # (T, k)
    loss = torch.full((len(ids),), float("nan"))
    nxt = torch.tensor(ids[1:], dtype=torch.long, device=logp.device)
    loss[:-1] = -logp[:-1].gather(1, nxt[:, None])[:, 0].cpu()
    with torch.no_grad():
        lens = logit_lens(model, {i: recorder.residuals[i] for i in layers}, logits, k)
    return Trace(
        tokens=_tokens(tokenizer, ids),
        top_ids=top_ids.cpu(),
        top_probs=top_logp.exp().cpu(),
        entropy=-(logp.exp() * logp).nan_to_num().sum(-1).cpu(),  # 0 * -inf counts as 0
        loss=loss,
        layers=layers,
        heads=heads,
        attention=torch.stack(recorder.weights).cpu() if note is None else None,
        attention_note=note,
        lens=lens,
        residual_norms=torch.stack(recorder.norms).cpu(),
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
    )


def _context(model) -> int:
    """How many positions the model can take: block_size, or its position table's length."""
    limit = getattr(model.position, "max_positions", None)
    return int(limit) if limit is not None else int(model.config.block_size)


def _indices(chosen: Sequence[int] | None, n: int, what: str) -> list[int]:
    """``chosen`` checked against ``range(n)`` (None: all of them)."""
    if chosen is None:
        return list(range(n))
    out = []
    for i in chosen:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise ConfigError(
                f"trace: unknown {what} index {i!r}; the model has {what}s 0..{n - 1}"
            )
        out.append(i)
    if not out:
        raise ConfigError(f"trace: no {what} chosen; give indices in 0..{n - 1} or None for all")
    return sorted(set(out))


def _attention_note(model) -> str | None:
    """None when every layer's attention is the standard softmax, else why no weights."""
    from llmcore import plugins

    comp = model.config.attention
    name = getattr(comp, "name", comp)
    try:
        factory = plugins.factory("attention", name)
        built = factory(**dict(getattr(comp, "params", None) or {}))
    except LLMCoreError:  # not a registered plugin: only what each function declares
        factory = built = None
    for block in model.blocks:
        attend = block.attn.attend
        if getattr(attend, "standard", False):
            continue
        # the factory may declare it for what it builds (a plain function, say); it holds for
        # the attention in the model only if that is what the factory builds
        made_here = built is attend or (
            not isinstance(attend, FunctionType) and type(built) is type(attend)
        )
        if not (made_here and getattr(factory, "standard", False)):
            name = getattr(attend, "__name__", type(attend).__name__) if not made_here else name
            return (
                f"attention plugin {name!r} does not declare standard = True: it computes "
                "something other than softmax(q k^T * scale), so no softmax weights are shown"
            )
    return None


def _tokens(tokenizer, ids: list[int]) -> list[TracedToken]:
    """Each id's bytes, text and byte span in the decoded text."""
    out, pos = [], 0
    for i in ids:
        raw = token_bytes(tokenizer, i)
        out.append(TracedToken(i, raw.decode("utf-8", errors="replace"), pos, pos + len(raw), raw))
        pos += len(raw)
    return out


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The bytes one id stands for (a BPE token may be part of a UTF-8 character)."""
    if hasattr(tokenizer, "decode_bytes"):
        return bytes(tokenizer.decode_bytes([token_id]))
    return tokenizer.decode([token_id]).encode("utf-8")


class _Recorder:
    """The observer set on every attention module, and hooks on the blocks, for one pass."""

    def __init__(self, layers: list[int], heads: list[int], *, record_weights: bool) -> None:
        self.layers, self.heads = set(layers), heads
        self.record_weights = record_weights
        self.weights: list[torch.Tensor] = []  # per traced layer: (len(heads), T, T)
        self.residuals: dict[int, torch.Tensor] = {}  # layer -> (T, C) after the block
        self.norms: list[torch.Tensor] = []  # (T,) residual norms, embeddings first

    def __call__(self, layer, q, k, v, scale, window, mask=None) -> None:
        if not self.record_weights or layer not in self.layers:
            return
        H, Hkv = q.shape[1], k.shape[1]
        kv_head = torch.tensor([h // (H // Hkv) for h in self.heads], device=q.device)
        qh = q[0, self.heads].float()  # (h, T, D)
        kh = k[0, kv_head].float()  # (h, Tk, D): GQA reads the kv head of each query head
        att = qh @ kh.transpose(-2, -1) * scale  # (h, T, Tk)
        if mask is not None:  # a score bias (ALiBi), or a bool mask
            m = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))[0]  # (H|1, T, Tk)
            m = m[self.heads] if m.shape[0] > 1 else m
            att = att.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else att + m.float()
        ok = allowed_keys(q.shape[2], k.shape[2], True, window, q.device)
        att = torch.softmax(att.masked_fill(~ok, float("-inf")), dim=-1)
        self.weights.append(att.nan_to_num(0.0))

    def attached(self, model):
        """A context that sets the observer and hooks, and removes them on exit."""
        recorder = self

        class _Attached:
            def __enter__(self):
                self.saved = [b.attn.observer for b in model.blocks]
                self.handles = [model.blocks[0].register_forward_pre_hook(recorder._embedded)]
                for i, b in enumerate(model.blocks):
                    b.attn.observer = recorder
                    self.handles.append(b.register_forward_hook(recorder._after(i)))
                return self

            def __exit__(self, *exc):
                for b, obs in zip(model.blocks, self.saved):
                    b.attn.observer = obs
                for h in self.handles:
                    h.remove()
                return False

        return _Attached()

    def _embedded(self, module, args) -> None:
        self.norms.append(args[0][0].float().norm(dim=-1))  # (T,)

    def _after(self, layer: int):
        def hook(module, args, out) -> None:
            x = out[0].float()  # (T, C)
            self.norms.append(x.norm(dim=-1))
            if layer in self.layers:
                self.residuals[layer] = out[0]

        return hook
