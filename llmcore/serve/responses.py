"""OpenAI-shaped response bodies and stream chunks built from engine deltas."""

from __future__ import annotations

import time
import uuid

from llmcore.serve.sequence import Delta


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def _piece(tok, token_id: int) -> str:
    return tok.decode_bytes([token_id]).decode("utf-8", errors="replace")


class Choices:
    """What each choice of one request has produced so far."""

    def __init__(self, chat: bool, model: str, tok, n: int, prompts: list) -> None:
        n_choices = len(prompts)
        self.chat, self.model, self.tok, self.n = chat, model, tok, n
        self.id, self.created = new_id(chat), int(time.time())
        self.text = [""] * n_choices
        self.finish: list[str | None] = [None] * n_choices
        self.lp: list[list] = [[] for _ in range(n_choices)]  # (id, logprob, tops) per token
        self.prompts = prompts  # (ids, text) of each choice's prompt
        self.prompt_lp: list = [None] * n_choices

    @property
    def done(self) -> bool:
        return all(f is not None for f in self.finish)

    def add(self, d: Delta) -> None:
        self.text[d.index] += "".join(t.text for t in d.tokens)
        for t, tops in zip(d.tokens, d.tops or [[]] * len(d.tokens)):
            self.lp[d.index].append((t.id, t.logprob, tops))
        if d.prompt_logprobs is not None:
            self.prompt_lp[d.index] = d.prompt_logprobs
        if d.finish_reason is not None:
            self.finish[d.index] = d.finish_reason

    # -- log-probabilities -----------------------------------------------------------------

    def _chat_lp(self, entries: list) -> dict:
        def one(i, lp):
            p = _piece(self.tok, i)
            return {"token": p, "logprob": lp, "bytes": list(p.encode())}

        return {
            "content": [
                {**one(i, lp), "top_logprobs": [one(j, v) for j, v in tops]}
                for i, lp, tops in entries
            ]
        }

    def _completion_lp(self, entries: list, offset: int) -> dict:
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for i, lp, tops in entries:
            p = _piece(self.tok, i)
            out["tokens"].append(p)
            out["token_logprobs"].append(lp)
            out["top_logprobs"].append({_piece(self.tok, j): v for j, v in tops} or None)
            out["text_offset"].append(offset)
            offset += len(p)
        return out

    def _logprobs(self, k: int, entries: list, with_prompt: bool):
        if self.chat:
            return self._chat_lp(entries)
        offset = 0
        if with_prompt and self.prompt_lp[k] is not None:
            ids = self.prompts[k][0]
            entries = [(i, lp, []) for i, lp in zip(ids, self.prompt_lp[k])] + entries
        else:
            offset = len(self.prompts[k][1]) if with_prompt else 0
        return self._completion_lp(entries, offset)

    # -- bodies ----------------------------------------------------------------------------

    def usage(self, generated: list[int]) -> dict:
        """Token counts: each distinct prompt once, every choice's generated tokens."""
        prompt = sum(len(ids) for ids, _ in self.prompts[:: self.n])
        done = sum(generated)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def body(self, want_lp: bool, echo: bool, generated: list[int]) -> dict:
        choices = []
        for k, text in enumerate(self.text):
            lp = self._logprobs(k, self.lp[k], echo) if want_lp else None
            if self.chat:
                msg = {"role": "assistant", "content": text}
                choices.append(
                    {"index": k, "message": msg, "logprobs": lp, "finish_reason": self.finish[k]}
                )
            else:
                full = self.prompts[k][1] + text if echo else text
                choices.append(
                    {"index": k, "text": full, "logprobs": lp, "finish_reason": self.finish[k]}
                )
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage(generated),
        }

    def chunk(self, d: Delta, want_lp: bool, first: bool, echo: bool) -> dict:
        text = "".join(t.text for t in d.tokens)
        entries = [
            (t.id, t.logprob, tops) for t, tops in zip(d.tokens, d.tops or [[]] * len(d.tokens))
        ]
        if self.chat:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            choice = {"index": d.index, "delta": delta}
        else:
            lead = self.prompts[d.index][1] if echo and first else ""
            choice = {"index": d.index, "text": lead + text}
        choice["logprobs"] = self._logprobs(d.index, entries, echo and first) if want_lp else None
        choice["finish_reason"] = d.finish_reason
        return self.wrap([choice])

    def wrap(self, choices: list, usage: dict | None = None) -> dict:
        out = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            out["usage"] = usage
        return out
