"""The public functions :func:`generate` and :func:`stream` and their result type."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from llmcore.generation.settings import check_settings, prompt_ids, resolve_settings
from llmcore.generation.streaming import Batch
from llmcore.generation.text import Token


@dataclass
class Generation:
    """One generated continuation (without the prompt)."""

    text: str
    ids: list[int]
    logprobs: list[float] | None = None
    finish_reason: str = "length"  # "length", "stop" (stop id, end-of-text or stop string)
    prompt_ids: list[int] = field(default_factory=list)
    score: float | None = None  # beam search: the length-penalised score


def stream(model, tokenizer, prompt, **settings) -> Iterator[Token]:
    """Yield the tokens of one prompt's continuation as they are chosen.

    ``prompt`` is text or a list of token ids; ``settings`` as in :mod:`llmcore.generation`.
    Joining the ``text`` of the yielded tokens gives :func:`generate`'s text. Settings and
    the prompt are checked here, before the first token is asked for.
    """
    s = resolve_settings(tokenizer, **settings)
    ids = prompt_ids(tokenizer, prompt)
    check_settings(model, s, len(ids))
    batch = Batch(model, tokenizer, [ids], s)
    return (token for _, token in batch)


def generate(model, tokenizer, prompts, **settings) -> list[Generation]:
    """Generate a continuation of each prompt (text, or token ids); returns one
    :class:`Generation` per prompt, in order. Prompts are decoded together as one batch;
    ``settings`` as in :mod:`llmcore.generation`."""
    if isinstance(prompts, str) or (
        isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)
    ):
        prompts = [prompts]
    s = resolve_settings(tokenizer, **settings)
    batch = Batch(model, tokenizer, [prompt_ids(tokenizer, p) for p in prompts], s)
    for _ in batch:
        pass
    return [
        Generation(
            row.text,
            row.ids,
            row.logprobs if s.logprobs else None,
            row.finish_reason,
            p,
            row.score,
        )
        for p, row in zip(batch.prompts, batch.rows)
    ]
