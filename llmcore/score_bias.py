"""Attention-score biases from the position plugin (ALiBi), added to the attention mask.

A position plugin with ``score_bias(n_head, q_positions, k_positions)`` (see
:class:`llmcore.contracts.Position`) biases the scores of every attention call. The model
does not hand the bias to the attention plugin as something new: :func:`with_score_bias`
folds it into the call's ``mask``, an additive float tensor that every attention plugin
declaring ``standard`` or ``takes_score_bias`` adds to its scores. So the fused plugins,
the cached and batched decode paths and the tracer all see the same bias, and the model
refuses (:func:`check_takes_score_bias`) an attention plugin that would ignore it.

The bias needs the position of every key. Without a cache the keys are the queries' own
tokens. With one, the keys sit in consecutive cache slots and the last query sees its own
key last, which ties the slots to the given query positions; :func:`key_positions` says how.
"""

from __future__ import annotations

import torch

from llmcore.errors import ConfigError


def biases_scores(position) -> bool:
    """Whether the position plugin adds a bias to the attention scores."""
    return callable(getattr(position, "score_bias", None))


def takes_score_bias(attend) -> bool:
    """Whether an attention plugin (or its factory) declares that it adds an additive float
    mask to its scores: ``standard = True`` or ``takes_score_bias = True``."""
    return bool(getattr(attend, "standard", False) or getattr(attend, "takes_score_bias", False))


def check_takes_score_bias(model) -> None:
    """Raise ConfigError when the model's position biases the attention scores and the
    attention plugin of a block does not take the bias: neither it nor the factory that
    built it (``attn.score_bias_declared_for``, set by ``build_attention``) declares so."""
    if not biases_scores(model.position):
        return
    cfg = model.config
    for layer, block in enumerate(model.blocks):
        attend = block.attn.attend
        declared_for = getattr(block.attn, "score_bias_declared_for", (None,))[0]
        if not (takes_score_bias(attend) or declared_for is attend):
            raise ConfigError(
                f"model.position {getattr(cfg.position, 'name', cfg.position)!r} adds a bias "
                "to the attention scores, but the attention of block "
                f"{layer} ({getattr(attend, '__name__', type(attend).__name__)}; "
                f"model.attention {getattr(cfg.attention, 'name', cfg.attention)!r}) does not "
                "declare that it takes one (standard = True or takes_score_bias = True), so "
                "it would ignore the positions. Use an attention that adds its mask to the "
                "scores, such as 'sdpa', 'math' or 'native'"
            )


def key_count(T: int, cache, mask: torch.Tensor | None) -> int:
    """How many keys attention reads in a pass of ``T`` new tokens: ``T`` without a cache,
    else the mask's key dimension, or the cache's filled length plus ``T``."""
    if cache is None:
        return T
    if mask is not None and mask.shape[-1] != 1:
        return int(mask.shape[-1])
    return int(cache.length) + T


def key_positions(
    positions: torch.Tensor, tk: int, mask: torch.Tensor | None, cached: bool
) -> torch.Tensor:
    """The positions ``(Tk,)`` or ``(B, Tk)`` of the keys, for queries at ``positions``
    ``(T,)`` or ``(B, T)``.

    Without a cache they are the queries' own positions. With one, key slot ``j`` is at
    position ``j + c``, where ``c`` puts the last query's own key at the last query's
    position: its own key is the last it may see, the last slot (bottom-right causal
    layout) or, under a mask, the last key that the mask keeps for it (left-padded rows and
    the per-row lengths of served slots). A float mask keeps what is above its dtype's
    lowest value.
    """
    if not cached:
        return positions
    slots = torch.arange(tk, device=positions.device)
    last = positions[..., -1:]  # (1,) or (B, 1)
    if mask is None:
        return slots + (last - (tk - 1))
    m = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))[:, 0, -1, :]  # (B|1, Tk|1)
    keep = m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min
    own = torch.where(keep.expand(-1, tk), slots, -1).amax(-1, keepdim=True)  # (B|1, 1)
    return slots + (last - own)


def with_score_bias(
    position,
    n_head: int,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    tk: int,
    cached: bool,
) -> torch.Tensor | None:
    """``mask`` with the position plugin's score bias folded in (``mask`` itself when the
    plugin has none): an additive float32 mask broadcastable to ``(B, H, Tq, Tk)``, ``-inf``
    where a bool ``mask`` hides a key."""
    if not biases_scores(position):
        return mask
    kpos = key_positions(positions, tk, mask, cached)
    bias = position.score_bias(n_head, positions, kpos).float()
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return torch.where(mask, bias, float("-inf"))
    return bias + mask.float()
