"""One forward pass over rows of a :class:`~llmcore.serve.kv_slots.SlotCache`, each row
in its own slot at its own position: the batched decode step of the server (one token per
row) and its batched prompt prefill (a chunk per row, right-padded to the longest).

It runs the operations of :class:`~llmcore.generation.lean.LeanStep` (the same weights
and plugin calls, looked up once), but for many slots at once:

- each row writes its new keys and values at its own slot and length (one indexed write
  per tensor when every row adds one token; a padded prefill row writes only its real
  tokens, so nothing past a row's end is ever written);
- attention runs once per run of neighbouring slots, on a view of the cache (no copy of
  the keys), with one additive mask per run built once per pass: query ``t`` of row ``b``
  sees the keys up to its own position (and within the model's sliding window);
- the final norm and the LM head run only on each row's last real token.

Models the lean step does not mirror (hooks, adapters on linear layers) take
:func:`slots_forward_plain`, the model's own ``hidden_states`` over a
:class:`~llmcore.serve.kv_slots.BatchView`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcore.generation.lean import _transposed_head, lean_step

#: From this many rows on, torch's GEMM is as fast as the transposed product LeanStep
#: takes for a few rows, and its (B, V) result is contiguous.
_GEMV_ROWS = 8


def runs_of(slots: list[int]) -> list[tuple[int, int]]:
    """``(first row, end row)`` of each run of consecutive slot numbers in ``slots``."""
    runs, a = [], 0
    for b in range(1, len(slots) + 1):
        if b == len(slots) or slots[b] != slots[b - 1] + 1:
            runs.append((a, b))
            a = b
    return runs


class SlotForward:
    """``forward(tokens (B, T), slots, counts) -> logits (B, V)`` of each row's last real
    token; ``counts[b]`` real tokens in row b (the rest is padding). Advances nothing:
    the caller commits the slots' lengths."""

    def __init__(self, model, cache) -> None:
        lean = lean_step(model, cache)
        if not _mirrors(lean):
            raise ValueError("the model does not take the lean path")
        self.cache, self.lean = cache, lean
        self.window = model.config.sliding_window
        # layers that run as a function of their own (quantized ones) where the lean step has them
        self.wte_fn = getattr(lean, "wte_fn", None)
        self.head_fn = getattr(lean, "head_fn", None)
        plain_head = self.head_fn is None and type(model.lm_head) is torch.nn.Linear
        self.head_t = _transposed_head(model.lm_head) if plain_head else None

    def _mask(self, starts: torch.Tensor, T: int, Tk: int) -> torch.Tensor:
        """Additive (R, 1, T, Tk): 0 where query t of row r sees key j, else -inf."""
        dev = starts.device
        pos = starts[:, None] + torch.arange(T, device=dev)[None, :]  # (R, T)
        keys = torch.arange(Tk, device=dev)
        ok = keys[None, None, :] <= pos[:, :, None]
        if self.window is not None:
            ok &= keys[None, None, :] > pos[:, :, None] - self.window
        m = torch.zeros(ok.shape, dtype=torch.float32, device=dev).masked_fill_(~ok, float("-inf"))
        return m[:, None]

    def __call__(
        self, tokens: torch.Tensor, slots: list[int], counts: list[int], every: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, V)`` of each row's last real token, and with ``every`` the
        final-norm states ``(B, T, C)`` of every position (for prompt log-probabilities)."""
        lean, cache = self.lean, self.cache
        B, T = tokens.shape
        dev = tokens.device
        lens = [cache.lengths[s] for s in slots]
        starts = torch.tensor(lens, device=dev)
        positions = (starts[:, None] + torch.arange(T, device=dev)[None, :]).clamp(
            max=cache.max_len - 1
        )  # a padding position past the end reads the last one; its output is dropped
        runs = runs_of(slots)
        masks = []
        for a, z in runs:
            Tk = min(max(lens[a:z]) + T, cache.max_len)
            masks.append(self._mask(starts[a:z], T, Tk))
        idx = torch.tensor(slots, device=dev)
        e = F.embedding(tokens, lean.wte) if self.wte_fn is None else self.wte_fn(tokens)
        x = lean.position.embed(e, positions)  # (B, T, C)
        for norm1, qw, qb, sizes, H, Hkv, D, attend, _w, pw, pb, norm2, mlp, kc, vc in lean.layers:
            q, k, v = _linear(norm1(x), qw, qb).split(sizes, dim=-1)
            q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k = k.view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
            v = v.view(B, T, Hkv, D).transpose(1, 2)
            q, k = lean.position.rotate(q, k, positions)
            if T == 1:
                kc[idx, :, starts] = k[:, :, 0]
                vc[idx, :, starts] = v[:, :, 0]
            else:
                for b, s in enumerate(slots):  # only the real tokens: padding writes nothing
                    kc[s, :, lens[b] : lens[b] + counts[b]] = k[b, :, : counts[b]]
                    vc[s, :, lens[b] : lens[b] + counts[b]] = v[b, :, : counts[b]]
            ys = []
            for (a, z), m in zip(runs, masks):
                s0, Tk = slots[a], m.shape[-1]
                ks, vs = kc[s0 : s0 + z - a, :, :Tk], vc[s0 : s0 + z - a, :, :Tk]
                ys.append(attend(q[a:z], ks, vs, causal=True, mask=m, window=None))
            y = ys[0] if len(ys) == 1 else torch.cat(ys)
            x = x + _linear(y.transpose(1, 2).reshape(B, T, H * D), pw, pb)
            x = x + mlp(norm2(x))
        last = torch.tensor(counts, device=dev) - 1
        h = lean.norm_f(x[torch.arange(B, device=dev), last])  # (B, C)
        return self._head(h), lean.norm_f(x) if every else None

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        lean = self.lean
        if self.head_fn is not None:
            return self.head_fn(h)
        if self.head_t is not None:
            # (B, C) @ (C, V) on the transposed copy: for one row it reads the weight at
            # full speed (see LeanStep), for 16 rows it is 10-15% faster on CPU than the
            # GEMM of F.linear, and its (B, V) result is contiguous for the sampler
            out = h @ self.head_t
            return out if lean.head_bias is None else out + lean.head_bias
        if 1 < h.shape[0] < _GEMV_ROWS and lean.head_bias is None:
            # a few rows: see LeanStep; contiguous, as the sampler reads rows
            return (lean.head @ h.t()).t().contiguous()
        return F.linear(h, lean.head, lean.head_bias)


def _linear(x: torch.Tensor, w, b) -> torch.Tensor:
    """A lean layer entry: ``(weight, bias)`` of a plain linear layer, or a function in
    the weight's place (a quantized layer's ``functional()``)."""
    return F.linear(x, w, b) if isinstance(w, torch.Tensor) else w(x)


def _mirrors(lean) -> bool:
    """Whether this pass computes what the lean step computes: not when the position adds
    a bias to the attention scores (ALiBi), which the model's own forward joins to the
    mask (this pass builds a mask per run of slots)."""
    return lean is not None and not getattr(lean, "biased", False)


def slot_forward(model, cache):
    """A :class:`SlotForward` for ``model``, or :func:`slots_forward_plain` bound to it when
    the lean step does not mirror the model."""
    if _mirrors(lean_step(model, cache)):
        return SlotForward(model, cache)
    return lambda tokens, slots, counts, every=False: slots_forward_plain(
        model, cache, tokens, slots, counts, every
    )


def slots_forward_plain(model, cache, tokens, slots, counts, every=False):
    """:class:`SlotForward`'s result through the model's own forward (any model)."""
    view = cache.batch(slots, tokens.shape[1], counts=counts)
    x = model.hidden_states(tokens, positions=view.positions, cache=view, mask=view.mask)
    B = tokens.shape[0]
    last = torch.tensor(counts, device=tokens.device) - 1
    h = x[torch.arange(B, device=tokens.device), last]
    return model.lm_head(h), x if every else None
