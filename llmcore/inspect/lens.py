"""The logit lens: each layer's residual stream read out through the final norm and the LM
head, as if the model stopped there (nostalgebraist, 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LogitLens:
    """What each traced layer would predict; rows follow ``layers``.

    ``rank[l, t]`` is how many tokens layer ``l`` scores above the model's final prediction
    at position ``t`` (0: the layer already predicts it).
    """

    layers: list[int]
    top_ids: torch.Tensor  # (L, T, k)
    top_probs: torch.Tensor  # (L, T, k)
    rank: torch.Tensor  # (L, T) long


def logit_lens(
    model, residuals: dict[int, torch.Tensor], final_logits: torch.Tensor, k: int
) -> LogitLens:
    """The lens of ``residuals`` (layer -> ``(T, C)`` residual after that block).

    ``final_logits`` ``(T, V)`` are the model's own; their argmax is the final prediction
    whose rank each layer reports. The last layer's lens is the model's own output.
    """
    final = final_logits.argmax(-1)  # (T,)
    layers = sorted(residuals)
    ids, probs, ranks = [], [], []
    for layer in layers:
        logits = model.lm_head(model.norm_f(residuals[layer])).float()  # (T, V)
        p, i = torch.softmax(logits, dim=-1).topk(k, dim=-1)  # (T, k)
        mine = logits.gather(1, final[:, None])  # (T, 1) the final prediction's score here
        ranks.append((logits > mine).sum(-1).cpu())
        ids.append(i.cpu())
        probs.append(p.cpu())
    return LogitLens(layers, torch.stack(ids), torch.stack(probs), torch.stack(ranks))
