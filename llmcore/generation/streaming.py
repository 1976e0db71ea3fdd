"""A batch of prompts decoded together, streamed row by row: the step loop's ids (or a
search decoder's finished hypotheses) go through each row's :class:`RowText`, and every
released :class:`Token` comes out as ``(row, token)`` as soon as it is known."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from llmcore.generation.settings import Settings, check_settings
from llmcore.generation.steps import decode_steps, new_generator
from llmcore.generation.text import RowText, Token


class Batch:
    """A batch of prompts decoded together; iterate for ``(row, Token)`` pairs, then read
    each row's result from ``rows``."""

    def __init__(self, model, tokenizer, prompts: list[list[int]], s: Settings) -> None:
        self.model, self.tok, self.prompts, self.s = model, tokenizer, prompts, s
        self.rows = [RowText(tokenizer, s.stop_ids, s.stop, s.logprobs, s.end_ids) for _ in prompts]

    def __iter__(self) -> Iterator[tuple[int, Token]]:
        s, model = self.s, self.model
        for p in self.prompts:
            check_settings(model, s, len(p))
        if s.search:
            yield from self._search()
            return
        done = [False] * len(self.prompts)
        if s.max_new_tokens > 0:
            gen = new_generator(model, s.seed)
            training = model.training
            model.eval()
            try:
                with torch.inference_mode():
                    for tokens, lps in decode_steps(model, self.prompts, s, gen, done):
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
                        generator=new_generator(model, s.seed),
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
