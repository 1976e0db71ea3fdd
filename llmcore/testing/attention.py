"""The conformance check of the attention contract (:class:`llmcore.contracts.Attention`):
which keys and heads each query reads, and, for a plugin that declares itself standard,
the formula itself against a softmax written out here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmcore.testing.base import _require

_ATTENTION_CASES = [  # B, H, Hkv, Tq, Tk, D, causal
    (2, 4, 4, 7, 7, 16, True),
    (1, 4, 2, 5, 5, 8, False),
    (2, 4, 1, 1, 9, 16, True),
    (1, 2, 2, 3, 8, 8, True),
]


def check_attention(factory: Callable[..., Any], **params: Any) -> None:
    """Attention meets :class:`llmcore.contracts.Attention`.

    Every implementation must keep the shapes and dtype; let query ``i`` read no key after
    ``i + (Tk - Tq)``; give query head ``h`` the key/value head ``h // (H // Hkv)``; ignore
    keys that the mask or the window hides; and answer the last queries against a cache
    exactly as the full pass does. One that declares ``standard = True`` (on its factory or
    on what the factory builds) must also equal the textbook softmax formula.
    """
    attend = factory(**params)
    gen = torch.Generator().manual_seed(0)
    for B, H, Hkv, Tq, Tk, D, causal in _ATTENTION_CASES:
        q, k, v = (
            torch.randn(B, h, t, D, generator=gen) for h, t in ((H, Tq), (Hkv, Tk), (Hkv, Tk))
        )
        out = attend(q, k, v, causal=causal)
        _require(
            isinstance(out, torch.Tensor) and out.shape == q.shape and out.dtype == q.dtype,
            f"attention must return {tuple(q.shape)} {q.dtype}, got "
            f"{tuple(getattr(out, 'shape', ()))} {getattr(out, 'dtype', type(out))}",
        )
        _require(bool(torch.isfinite(out).all()), "attention produced non-finite values")
    _check_attention_reads(attend, gen)
    if getattr(attend, "standard", False) or getattr(factory, "standard", False):
        _check_attention_formula(attend, gen)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5))


def _check_attention_reads(attend: Callable[..., Any], gen: torch.Generator) -> None:
    """Which keys and heads each query reads, shown by changing what it must not read."""
    q, k, v = (torch.randn(2, 4, 6, 8, generator=gen) for _ in range(3))
    kv = (k[:, ::2].contiguous(), v[:, ::2].contiguous())  # 2 key/value heads for 4 queries
    later = [t.clone() for t in kv]
    for t in later:
        t[:, :, -1] += torch.randn(t[:, :, -1].shape, generator=gen)
    full = attend(q, *kv, causal=True)  # (B, H, T, D)
    _require(
        _close(attend(q, *later, causal=True)[:, :, :-1], full[:, :, :-1]),
        "causal attention let a query read a key after its own position",
    )
    grouped = [t.repeat_interleave(2, dim=1) for t in kv]  # head h reads kv head h // 2
    _require(
        _close(attend(q, *grouped, causal=True), full),
        "grouped-query attention must give query head h the key/value head h // (H // Hkv)",
    )
    for m in (1, 3):  # the last m queries against the whole cache
        _require(
            _close(attend(q[:, :, -m:], *kv, causal=True), full[:, :, -m:]),
            f"{m} decode queries against a cache differ from the full pass: causal masking "
            "must be bottom-right aligned",
        )
    _require(
        _close(attend(q, *kv, causal=True, mask=torch.ones(1, 1, 6, 6, dtype=torch.bool)), full),
        "an all-true mask changed the result",
    )
    hidden = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    hidden[..., 0] = False  # no query may read key 0
    first = [t.clone() for t in kv]
    for t in first:
        t[:, :, 0] += torch.randn(t[:, :, 0].shape, generator=gen)
    _require(
        _close(
            attend(q, *first, causal=False, mask=hidden), attend(q, *kv, causal=False, mask=hidden)
        ),
        "attention read a key that the mask hides",
    )
    _require(
        _close(
            attend(q, *first, causal=True, window=3)[:, :, 3:],
            attend(q, *kv, causal=True, window=3)[:, :, 3:],
        ),
        "a query read a key outside its sliding window",
    )


def _check_attention_formula(attend: Callable[..., Any], gen: torch.Generator) -> None:
    """A standard attention equals the textbook formula (the registered ``math`` plugin)."""
    from llmcore import plugins

    reference = plugins.create("attention", "math")
    for B, H, Hkv, Tq, Tk, D, causal in _ATTENTION_CASES:
        q, k, v = (
            torch.randn(B, h, t, D, generator=gen) for h, t in ((H, Tq), (Hkv, Tk), (Hkv, Tk))
        )
        err = (
            (attend(q, k, v, causal=causal) - reference(q, k, v, causal=causal)).abs().max().item()
        )
        _require(
            err < 1e-4,
            f"attention declares standard = True but differs from the softmax formula by "
            f"{err:.2e} for B={B} H={H} Hkv={Hkv} Tq={Tq} Tk={Tk} D={D} causal={causal}",
        )
    # an additive float mask per head, as a position's score bias (ALiBi) arrives
    q, k, v = (torch.randn(2, 4, 6, 8, generator=gen) for _ in range(3))
    bias = torch.randn(1, 4, 6, 6, generator=gen)
    err = (attend(q, k, v, mask=bias) - reference(q, k, v, mask=bias)).abs().max().item()
    _require(
        err < 1e-4,
        f"attention declares standard = True but adds an additive float mask differently "
        f"from the softmax formula (by {err:.2e})",
    )
