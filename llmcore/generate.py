"""Text generation: prompt -> ids -> model with KV cache -> sampler chain -> decoder -> text.

The engine prefills every prompt once, then decodes one token per step against the model's
preallocated :class:`~llmcore.model.KVCache`, which each forward pass writes in place.
Prompts of different lengths are left-padded: each row gets its own positions and a bool
mask hides the padding (a padding query sees itself, so no attention row is empty).
Prompts of equal length take a path without masks. Per step the loop allocates almost
nothing: the token history is one preallocated tensor, positions advance in place, and
the next step's input is a view of the history.

Settings (keyword arguments of :func:`generate` and :func:`stream`):

- ``max_new_tokens``: at most this many new tokens per prompt (default 200).
- ``samplers``: logits processors ``(input_ids, logits) -> logits`` applied in order;
  ``decoder``: the final choice (default greedy), or a decoder with a ``search`` method
  (``beam``), which then runs the whole search itself.
- ``config``: a :class:`~llmcore.config.Config` (or its ``generate`` section) whose
  samplers, decoder, ``max_new_tokens``, ``seed`` and ``stop`` fill any setting not given.
- ``seed``: seeds the sampling generator (same seed, same prompts -> same output).
- ``stop_ids``: token ids that end a row (not included); the tokenizer's end-of-text id is
  one unless ``eot=False``. ``stop``: strings that end a row; the text ends before the stop
  string, and the ids are the tokens whose text begins before it.
- ``end_ids``: a sequence of token ids (say a chat template's end marker, which may take
  several tokens) that ends a row when the row's ids end with it; unlike ``stop_ids`` it is
  kept, at the end of the ids and the text.
- ``logprobs``: also return each chosen token's log-probability under the model (the raw
  distribution, before the samplers).

A prompt longer than the context is an error; so is ``prompt + max_new_tokens`` beyond
``model.block_size`` unless the model has a sliding window and a position plugin without a
table (``none``; the KV cache then holds the whole sequence). An empty prompt starts from
the tokenizer's beginning-of-text token (``bos_id``, else ``eot_id``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llmcore.errors import GenerationError
from llmcore.generation.lean import lean_step
from llmcore.generation.text import RowText, Token

DEFAULT_MAX_NEW_TOKENS = 200
#: Decode through :mod:`llmcore.generation.lean` when the model allows (False: always
#: through ``model.hidden_states``; identical logits for one row, last-bit rounding apart
#: for several).
LEAN = True


@dataclass
class Generation:
    """One generated continuation (without the prompt)."""

    text: str
    ids: list[int]
    logprobs: list[float] | None = None
    finish_reason: str = "length"  # "length", "stop" (stop id, end-of-text or stop string)
    prompt_ids: list[int] = field(default_factory=list)
    score: float | None = None  # beam search: the length-penalised score


# -- settings --------------------------------------------------------------------------------


@dataclass
class _Settings:
    max_new_tokens: int
    samplers: list
    decoder: object
    seed: int | None
    stop_ids: set[int]
    stop: list[str]
    logprobs: bool
    sliding_context: bool = False
    end_ids: list[int] = field(default_factory=list)


def _settings(
    tokenizer,
    *,
    config=None,
    max_new_tokens: int | None = None,
    samplers: Sequence | None = None,
    decoder=None,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
    stop: str | Sequence[str] | None = None,
    end_ids: Sequence[int] = (),
    eot: bool = True,
    logprobs: bool = False,
    sliding_context: bool | None = None,
) -> _Settings:
    from llmcore.builtin.samplers import fuse

    g = getattr(config, "generate", config)
    if g is not None:
        if samplers is None or decoder is None:
            from llmcore.components import build_sampler

            chain, dec = build_sampler(config if hasattr(config, "generate") else _Wrap(g))
            samplers = chain if samplers is None else samplers
            decoder = dec if decoder is None else decoder
        max_new_tokens = g.max_new_tokens if max_new_tokens is None else max_new_tokens
        seed = g.seed if seed is None else seed
        stop = list(g.stop) if stop is None else stop
        sliding_context = g.sliding_context if sliding_context is None else sliding_context
    if decoder is None:
        from llmcore.builtin.decoders import Greedy

        decoder = Greedy()
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise GenerationError(f"max_new_tokens must be an integer >= 0, found {max_new_tokens!r}")
    stop = [stop] if isinstance(stop, str) else list(stop or ())
    for s in stop:
        if not isinstance(s, str) or not s:
            raise GenerationError(f"stop strings must be non-empty strings, found {s!r}")
    ids = {int(i) for i in stop_ids}
    if eot and getattr(tokenizer, "eot_id", None) is not None:
        ids.add(int(tokenizer.eot_id))
    return _Settings(
        max_new_tokens,
        fuse(list(samplers or ())),
        decoder,
        seed,
        ids,
        stop,
        bool(logprobs),
        bool(sliding_context),
        [int(i) for i in end_ids],
    )


class _Wrap:
    """A Config-like holder for a bare ``generate`` section."""

    def __init__(self, g) -> None:
        self.generate = g


def _prompt_ids(tokenizer, prompt) -> list[int]:
    ids = list(prompt) if not isinstance(prompt, str) else tokenizer.encode(prompt)
    if ids:
        return [int(i) for i in ids]
    start = getattr(tokenizer, "bos_id", None)
    start = tokenizer.eot_id if start is None else start
    if start is None:
        raise GenerationError(
            "the prompt is empty and the tokenizer has no beginning- or end-of-text token to start from"
        )
    return [int(start)]


def _check(model, s: _Settings, n_prompt: int) -> None:
    """Settings against the model: samplers that know their limits, and the context."""
    for proc in s.samplers:
        if hasattr(proc, "check"):
            proc.check(model.config.vocab_size)
    _check_length(model, n_prompt, s.max_new_tokens, s.sliding_context)


def _check_length(model, n_prompt: int, max_new_tokens: int, sliding: bool = False) -> None:
    cfg = model.config
    block, total = cfg.block_size, n_prompt + max_new_tokens
    if total <= block or sliding:
        return
    if cfg.sliding_window:
        # Attention only looks back `window` keys, but absolute-position tables end at
        # block_size: only position plugins without a table can run past it.
        if cfg.position.name in ("learned", "rope"):
            raise GenerationError(
                f"{n_prompt} prompt + {max_new_tokens} new tokens exceed block_size={block}: "
                f"the sliding window allows longer contexts only with a position plugin "
                f"without a table ({cfg.position.name!r} positions end at block_size)"
            )
        return
    if n_prompt > block:
        raise GenerationError(
            f"the prompt has {n_prompt} tokens, longer than the model's context of {block} tokens"
        )
    raise GenerationError(
        f"a prompt of {n_prompt} tokens + max_new_tokens={max_new_tokens} exceeds the "
        f"model's context of {block} tokens; lower max_new_tokens to {max(block - n_prompt, 0)} "
        "or set generate.sliding_context to keep only the last block_size tokens"
    )


def _generator(model, seed: int | None) -> torch.Generator:
    gen = torch.Generator(device=model.lm_head.weight.device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


# -- the decode loop -------------------------------------------------------------------------


def _steps(
    model, prompts: list[list[int]], s: _Settings, gen: torch.Generator, done: list[bool]
) -> Iterator[tuple[list[int], list[float] | None]]:
    """Yield the chosen token of every row per step until all rows are ``done`` (the
    caller marks them) or ``max_new_tokens`` steps have run."""
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
    x = model.hidden_states(inp, positions=positions, cache=cache, mask=mask)
    logits = model.lm_head(x[:, -1])  # (B, V)
    # per-row positions (B, 1) when padded, else one position (1,) shared by every row
    pos = torch.tensor(lens, device=dev).view(B, 1) if padded else torch.full((1,), P, device=dev)
    samplers, decoder, want_lp = s.samplers, s.decoder, s.logprobs
    lean = lean_step(model, cache) if LEAN else None
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
        m = key_ok[..., : cur + 1] if padded else None
        if cur >= block:  # the cache is full: recompute over the last block_size tokens
            logits = model(history[:, cur + 1 - block : cur + 1])[:, -1]
        elif lean is not None:
            logits = lean(history[:, cur : cur + 1], pos, m)
        else:
            x = model.hidden_states(history[:, cur : cur + 1], positions=pos, cache=cache, mask=m)
            logits = model.lm_head(x[:, -1])
        pos += 1


class _Batch:
    """A batch of prompts decoded together; iterate for ``(row, Token)`` pairs."""

    def __init__(self, model, tokenizer, prompts: list[list[int]], s: _Settings) -> None:
        self.model, self.tok, self.prompts, self.s = model, tokenizer, prompts, s
        self.rows = [RowText(tokenizer, s.stop_ids, s.stop, s.logprobs, s.end_ids) for _ in prompts]

    def __iter__(self) -> Iterator[tuple[int, Token]]:
        s, model = self.s, self.model
        for p in self.prompts:
            _check(model, s, len(p))
        if hasattr(s.decoder, "search"):
            yield from self._search()
            return
        done = [False] * len(self.prompts)
        if s.max_new_tokens > 0:
            gen = _generator(model, s.seed)
            training = model.training
            model.eval()
            try:
                with torch.inference_mode():
                    for tokens, lps in _steps(model, self.prompts, s, gen, done):
                        for b, t in enumerate(tokens):
                            row = self.rows[b]
                            if row.done:
                                continue
                            for out in row.push(t, None if lps is None else lps[b]):
                                yield b, out
                            done[b] = row.done
            finally:
                model.train(training)
        for b, row in enumerate(self.rows):
            if not row.done:
                for out in row.finish("length"):
                    yield b, out

    def _search(self) -> Iterator[tuple[int, Token]]:
        s, model = self.s, self.model
        training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for b, p in enumerate(self.prompts):
                    ids, score = s.decoder.search(
                        model,
                        p,
                        max_new_tokens=s.max_new_tokens,
                        samplers=s.samplers,
                        stop_ids=s.stop_ids,
                        generator=_generator(model, s.seed),
                    )
                    row = self.rows[b]
                    row.score = score
                    for t in ids:
                        for out in row.push(t, None):
                            yield b, out
                        if row.done:
                            break
                    if not row.done:
                        for out in row.finish("stop" if len(ids) < s.max_new_tokens else "length"):
                            yield b, out
        finally:
            model.train(training)

    def results(self) -> list[Generation]:
        out = []
        for p, row in zip(self.prompts, self.rows):
            lps = row.logprobs if self.s.logprobs else None
            score = getattr(row, "score", None)
            out.append(Generation(row.text, row.ids, lps, row.finish_reason, p, score))
        return out


def stream(model, tokenizer, prompt, **settings) -> Iterator[Token]:
    """Yield the tokens of one prompt's continuation as they are chosen.

    ``prompt`` is text or a list of token ids; ``settings`` as in the module docstring.
    Joining the ``text`` of the yielded tokens gives :func:`generate`'s text. Settings and
    the prompt are checked here, before the first token is asked for.
    """
    s = _settings(tokenizer, **settings)
    ids = _prompt_ids(tokenizer, prompt)
    _check(model, s, len(ids))
    batch = _Batch(model, tokenizer, [ids], s)
    return (token for _, token in batch)


def generate(model, tokenizer, prompts, **settings) -> list[Generation]:
    """Generate a continuation of each prompt (text, or token ids); returns one
    :class:`Generation` per prompt, in order. Prompts are decoded together as one batch."""
    if isinstance(prompts, str) or (
        isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)
    ):
        prompts = [prompts]
    s = _settings(tokenizer, **settings)
    batch = _Batch(model, tokenizer, [_prompt_ids(tokenizer, p) for p in prompts], s)
    for _ in batch:
        pass
    return batch.results()
