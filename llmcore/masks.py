"""Which keys each query may see: the one reference of attention's ``causal`` and ``window``.

Every attention plugin (:class:`llmcore.contracts.Attention`), the lean decode path and the
tracer build their masks from :func:`allowed_keys`, so that a window or causal rule means
the same thing everywhere.
"""

from __future__ import annotations

import torch


def allowed_keys(
    tq: int, tk: int, causal: bool, window: int | None, device: torch.device
) -> torch.Tensor | None:
    """Bool (Tq, Tk) mask of the keys each query may see under :class:`Attention`'s
    ``causal`` and ``window`` (bottom-right aligned); None when it sees them all. The
    reference every attention plugin and the tracer share."""
    if not causal and window is None:
        return None
    qpos = torch.arange(tk - tq, tk, device=device)[:, None]
    kpos = torch.arange(tk, device=device)[None, :]
    ok = torch.ones(tq, tk, dtype=torch.bool, device=device)
    if causal:
        ok &= kpos <= qpos
    if window is not None:
        ok &= kpos > qpos - window
    return ok
