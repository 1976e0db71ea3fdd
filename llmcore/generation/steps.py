"""The batched step loop: prefill every prompt once, then decode one token per row per
step against the model's preallocated :class:`~llmcore.model.KVCache`.

Prompts of different lengths are left-padded: each row gets its own positions and a bool
mask hides the padding (a padding query sees itself, so no attention row is empty).
Prompts of equal length take a path without masks. Per step the loop allocates almost
nothing: the token history is one preallocated tensor, positions advance in place, and
the next step's input is a view of the history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from llmcore.errors import GenerationError
from llmcore.generation.lean import lean_step
from llmcore.generation.settings import Settings
from llmcore.quant.decode_step import QuantDecodeStep, decode_step

#: Decode through :mod:`llmcore.generation.lean` when the model allows (False: always
#: through ``model.hidden_states``; identical logits for one row, last-bit rounding apart
#: for several). A quantized Llama-shape model decodes through the C++ step of
#: :mod:`llmcore.quant.decode_step` instead (its ``FUSED`` turns that off).
LEAN = True


def new_generator(model, seed: int | None) -> torch.Generator:
    """A generator on the model's device, seeded with ``seed`` (None: a random seed)."""
    gen = torch.Generator(device=model.lm_head.weight.device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


@dataclass
class _Prefilled:
    """The state after the prompts' forward pass."""

    history: torch.Tensor  # (B, P + n): left-padded prompts, then the chosen tokens
    cache: object  # the model's KVCache
    logits: torch.Tensor  # (B, V) for the first new token
    positions: torch.Tensor  # (B, 1) per row when padded, else (1,) shared by every row
    key_ok: torch.Tensor | None  # (B, 1, 1, P + n) keys that are not padding; None unpadded
    prompt_len: int  # P, the longest prompt
    step: object  # the decode step over `cache` (C++ or lean), or None: the model's forward


def _prefill(model, prompts: list[list[int]], s: Settings) -> _Prefilled:
    B, n = len(prompts), s.max_new_tokens
    block = model.config.block_size
    if s.sliding_context:  # condition on the last block_size tokens only (nanoGPT's way)
        prompts = [p[-block:] for p in prompts]
    lens = [len(p) for p in prompts]
    P = max(lens)
    vocab = model.config.vocab_size
    dev = model.lm_head.weight.device
    # The history the samplers see; left padding holds `vocab`, which they ignore.
    history = torch.full((B, P + n), vocab, dtype=torch.long, device=dev)
    for b, p in enumerate(prompts):
        history[b, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
    cache = model.new_cache(B, min(P + n, block) if s.sliding_context else P + n)
    padded = min(lens) != P
    if padded and s.sliding_context and P + n > block:
        raise GenerationError("sliding_context past block_size needs prompts of equal length")
    key_ok = None
    if padded:
        pad = torch.tensor([P - x for x in lens], device=dev)  # (B,)
        keys = torch.arange(P + n, device=dev)
        key_ok = (keys[None, :] >= pad[:, None])[:, None, None, :]  # (B, 1, 1, P + n)
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        diag = torch.eye(P, dtype=torch.bool, device=dev)  # a padding query sees itself
        mask = (causal & key_ok[..., :P]) | diag  # (B, 1, P, P)
        positions = (keys[None, :P] - pad[:, None]).clamp(min=0)  # (B, P)
        inp = history[:, :P].clamp(max=vocab - 1)
    else:
        mask, positions, inp = None, None, history[:, :P]
    step = (decode_step(model, cache) or lean_step(model, cache)) if LEAN else None
    if isinstance(step, QuantDecodeStep) and not padded:
        logits = step.prefill(inp)  # the same layers in C++, the head on the last token
    else:
        x = model.hidden_states(inp, positions=positions, cache=cache, mask=mask)
        logits = model.lm_head(x[:, -1])  # (B, V)
    pos = torch.tensor(lens, device=dev).view(B, 1) if padded else torch.full((1,), P, device=dev)
    return _Prefilled(history, cache, logits, pos, key_ok, P, step)


def decode_steps(
    model, prompts: list[list[int]], s: Settings, gen: torch.Generator, done: list[bool]
) -> Iterator[tuple[list[int], list[float] | None]]:
    """Yield the chosen token of every row (and its log-probability when asked) per step
    until all rows are ``done`` (the caller marks them) or ``max_new_tokens`` steps ran."""
    B, n = len(prompts), s.max_new_tokens
    block = model.config.block_size
    state = _prefill(model, prompts, s)
    history, cache, logits = state.history, state.cache, state.logits
    pos, key_ok, P, lean = state.positions, state.key_ok, state.prompt_len, state.step
    samplers, decoder, want_lp = s.samplers, s.decoder, s.logprobs
    for step in range(n):
        cur = P + step
        scores = logits
        lp = None
        if want_lp:
            raw = torch.log_softmax(logits.float(), dim=-1)
        for proc in samplers:
            scores = proc(history[:, :cur], scores)
        nxt = decoder(scores, gen)  # (B,)
        history[:, cur] = nxt
        if want_lp:
            lp = raw.gather(1, nxt.view(B, 1)).view(B).tolist()
        yield nxt.tolist(), lp
        if all(done) or step == n - 1:
            return
        m = key_ok[..., : cur + 1] if key_ok is not None else None
        if cur >= block:  # the cache is full: recompute over the last block_size tokens
            logits = model(history[:, cur + 1 - block : cur + 1])[:, -1]
        elif lean is not None:
            logits = lean(history[:, cur : cur + 1], pos, m)
        else:
            x = model.hidden_states(history[:, cur : cur + 1], positions=pos, cache=cache, mask=m)
            logits = model.lm_head(x[:, -1])
        pos += 1
