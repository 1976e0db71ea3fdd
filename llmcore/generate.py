"""Text generation: prompt -> ids -> model with KV cache -> sampler chain -> decoder -> text."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from llmcore.errors import GenerationError


@dataclass
class Generation:
    """One generated continuation."""

    text: str
    ids: list[int]


@torch.inference_mode()
def stream(
    model,
    tokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    samplers: Sequence = (),
    decoder=None,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
) -> Iterator[int]:
    """Yield new token ids for one prompt as they are chosen."""
    from llmcore.builtin.decoders import Greedy

    decoder = decoder or Greedy()
    ids = tokenizer.encode(prompt)
    if not ids:
        if tokenizer.eot_id is None:
            raise GenerationError(
                "the prompt is empty and the tokenizer has no end-of-text token to start from"
            )
        ids = [tokenizer.eot_id]
    block = model.config.block_size
    if len(ids) + max_new_tokens > block:
        raise GenerationError(
            f"prompt of {len(ids)} tokens + max_new_tokens={max_new_tokens} exceeds the context of {block} tokens"
        )
    device = model.wte.weight.device
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(seed)
    model.eval()
    cache = model.new_cache(1, len(ids) + max_new_tokens)
    history = torch.tensor([ids], dtype=torch.long, device=device)
    logits = model(history, cache=cache)[:, -1, :]
    stop = set(stop_ids)
    for _ in range(max_new_tokens):
        scores = logits.float()
        for proc in samplers:
            scores = proc(history, scores)
        nxt = decoder(scores, gen)  # (1,)
        token = int(nxt[0])
        if token in stop:
            return
        yield token
        history = torch.cat([history, nxt[:, None]], dim=1)
        logits = model(nxt[:, None], cache=cache)[:, -1, :]


def generate(model, tokenizer, prompts: str | Sequence[str], **settings) -> list[Generation]:
    """Generate a continuation of each prompt; returns text and ids of each."""
    if isinstance(prompts, str):
        prompts = [prompts]
    out = []
    for prompt in prompts:
        ids = list(stream(model, tokenizer, prompt, **settings))
        out.append(Generation(tokenizer.decode(ids), ids))
    return out
