"""Batched sampling of answers for PPO rollouts and evaluation.

Prompts of different lengths are left-padded: padding slots get position 0 and are hidden
from every real query by an attention mask, so each row is sampled exactly as it would be
alone. The model's KV cache holds the rows; the configured sampler chain and decoder choose
each token; a row stops at the chat template's end marker.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmcore.errors import GenerationError


@torch.no_grad()
def sample_answers(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    end_ids: Sequence[int],
    max_new_tokens: int,
    samplers: Sequence = (),
    decoder=None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Answer ids for each prompt (ending with ``end_ids`` unless cut at ``max_new_tokens``)."""
    from llmcore.builtin.decoders import Multinomial

    decoder = decoder or Multinomial()
    device = model.wte.weight.device
    B = len(prompts)
    L = max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise GenerationError("an empty prompt cannot be answered")
    total = L + max_new_tokens
    if total > model.config.block_size:
        raise GenerationError(
            f"prompt of {L} tokens + max_new_tokens={max_new_tokens} exceeds the context of "
            f"{model.config.block_size} tokens"
        )
    was_training = model.training
    model.eval()
    ids = torch.zeros(B, L, dtype=torch.long, device=device)
    valid = torch.zeros(B, total, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        ids[i, L - len(p) :] = torch.tensor(list(p), device=device)
        valid[i, L - len(p) : L] = True
    lengths = valid[:, :L].sum(1)  # (B,)
    positions = (valid[:, :L].long().cumsum(1) - 1).clamp(min=0)  # (B, L)
    eye = torch.eye(L, dtype=torch.bool, device=device)
    mask = valid[:, None, None, :L] | eye  # (B, 1, L, L); a pad slot sees itself
    cache = model.new_cache(B, total)
    logits = model(ids, positions=positions, cache=cache, mask=mask)[:, -1, :]
    history = ids
    end = list(end_ids)
    out: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        scores = logits.float()
        for proc in samplers:
            scores = proc(history, scores)
        tok = decoder(scores, generator)  # (B,)
        for i in torch.nonzero(~done).flatten().tolist():
            out[i].append(int(tok[i]))
            if out[i][-len(end) :] == end:
                done[i] = True
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        valid[:, L + step] = True
        history = torch.cat([history, tok[:, None]], dim=1)
        pos = (lengths + step)[:, None]  # (B, 1)
        logits = model(
            tok[:, None], positions=pos, cache=cache, mask=valid[:, None, None, : L + step + 1]
        )[:, -1, :]
    model.train(was_training)
    return out
