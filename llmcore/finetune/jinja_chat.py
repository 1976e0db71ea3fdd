"""Conversations -> ids through a model's own Jinja chat template, with assistant targets.

The text is exactly what the template renders (:mod:`llmcore.tokenizers.chat_template`). Two
things are then found in it:

- **Which characters came from message contents.** The conversation is rendered a second
  time with each content wrapped in two private-use markers (its outer whitespace left
  outside, so ``| trim`` trims the same). When the markers pair up and removing them gives
  the same text, they delimit the contents; otherwise only the special-token text inside
  contents is wrapped (what transformers' ``sanitize_control_tokens`` marks), checked the
  same way. Special tokens are looked for only in the template's own text, so text a user
  writes never becomes a special id: ``<|im_start|>`` in a message is ordinary characters.
- **Which characters an assistant wrote.** The prompt before an assistant turn (with the
  generation prompt) and the conversation through that turn are rendered; the second
  extends the first and the difference is the turn: the answer and the template's end of
  turn. Targets stop at the last stop id (say ``<|im_end|>``) inside that difference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmcore.errors import DataError, TokenizerError
from llmcore.finetune.chat import Rendered
from llmcore.tokenizers.chat_template import ChatTemplateRenderer

OPEN, CLOSE = "\U000f0000", "\U000f0001"  # never in real text; stripped from contents first
_PROBE = [{"role": "user", "content": ""}]  # the question an answer alone follows


class TemplateChat:
    """Renders conversations with a model's Jinja template through ``tokenizer``: the same
    methods as :class:`~llmcore.finetune.chat.Chat`."""

    def __init__(self, renderer: ChatTemplateRenderer, tokenizer, stop_ids: Sequence[int] = ()):
        self.renderer = renderer
        self.tokenizer = tokenizer
        self.stop_ids = [int(i) for i in stop_ids]
        specials = sorted(getattr(tokenizer, "special_tokens", None) or {}, key=len, reverse=True)
        self._special_ids = dict(getattr(tokenizer, "special_tokens", None) or {})
        self._special_re = re.compile("|".join(map(re.escape, specials))) if specials else None
        self._end: list[int] | None = None

    # -- the Chat interface ----------------------------------------------------------------------
    def render(self, messages: Sequence[dict], where: str = "<messages>") -> Rendered:
        """Ids of a whole conversation; each assistant turn through its end is a target."""
        messages = _checked(messages, where)
        text = self.renderer.render(messages)
        cuts = []
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            if i == 0:
                raise DataError(f"{where}: messages[0]: a conversation cannot open with an answer")
            before = self.renderer.render(messages[:i], add_generation_prompt=True)
            through = self.renderer.render(messages[: i + 1])
            if not (through.startswith(before) and text.startswith(through)):
                raise DataError(
                    f"{where}: messages[{i}]: the chat template of {self.renderer.where} does not "
                    "render the conversation prefix by prefix, so the answer's tokens cannot be "
                    "told apart"
                )
            cuts.append((len(before), len(through)))
        return self._encode(text, self._content_ranges(messages, False, text), cuts)

    def prompt(self, messages: Sequence[dict], where: str = "<messages>") -> list[int]:
        """Ids of ``messages`` and the generation prompt: where an answer starts."""
        messages = _checked(messages, where)
        text = self.renderer.render(messages, add_generation_prompt=True)
        return self._encode(text, self._content_ranges(messages, True, text), []).ids

    def prompt_text(self, prompt: str) -> list[int]:
        """Prompt ids of a single user message."""
        return self.prompt([{"role": "user", "content": prompt}])

    def answer(self, response: str) -> list[int]:
        """Ids of an answer as the model should produce it: content then the end of turn."""
        r = self.render([*_PROBE, {"role": "assistant", "content": response}])
        return [i for i, keep in zip(r.ids, r.train) if keep]

    def encode_content(self, text: str) -> list[int]:
        """Message text -> ids (special-token text stays ordinary text)."""
        return self.tokenizer.encode(text) if text else []

    def strip_end(self, ids: Sequence[int]) -> tuple[list[int], bool]:
        """An answer's ids without its end of turn, and whether it was there."""
        ids, end = list(ids), self.end_ids
        if end and ids[len(ids) - len(end) :] == end:
            return ids[: len(ids) - len(end)], True
        if ids and ids[-1] in self.stop_ids:
            return ids[:-1], True
        return ids, False

    # -- pieces -----------------------------------------------------------------------------------
    @property
    def end_ids(self) -> list[int]:
        """The ids ending an answer: what the template writes after an empty one, from its
        first special id on (``<|im_end|>``, not the newline after it)."""
        if self._end is None:
            ids = self.answer("")
            specials = set(self._special_ids.values())
            first = next((k for k, i in enumerate(ids) if i in specials), 0)
            self._end = ids[first:] or self.stop_ids[:1]
        return self._end

    def _content_ranges(self, messages, gen: bool, text: str) -> list[tuple[int, int]]:
        """Character ranges of ``text`` that came from message contents (never special)."""
        for wrap in (_wrap_whole, self._wrap_specials):
            marked = [
                {**m, "content": wrap(m["content"])} if isinstance(m.get("content"), str) else m
                for m in messages
            ]
            found = _unmark(self.renderer.render(marked, add_generation_prompt=gen))
            if found is not None and found[0] == text:
                return found[1]
        raise TokenizerError(
            f"{self.renderer.where}: the chat template changes message contents in a way that "
            "hides which text is the user's; it cannot be encoded safely"
        )

    def _wrap_specials(self, content: str) -> str:
        content = _clean(content)
        if self._special_re is None:
            return content
        return self._special_re.sub(lambda m: OPEN + m.group(0) + CLOSE, content)

    def _encode(self, text: str, protected, cuts) -> Rendered:
        """Ids of ``text``: special tokens only in the template's own text, every other run
        encoded as plain text, split where an assistant turn starts or ends."""
        bounds = {0, len(text)} | {c for span in cuts for c in span}
        specials: list[tuple[int, int]] = []
        at = 0
        for start, end in [*protected, (len(text), len(text))]:
            if self._special_re is not None:  # the template's own text: text[at:start]
                specials += [
                    (m.start(), m.end()) for m in self._special_re.finditer(text, at, start)
                ]
            at = end
        for s, e in specials:
            bounds |= {s, e}
        starts = {s for s, _ in specials}
        ids: list[int] = []
        train: list[bool] = []
        edges = sorted(bounds)
        for a, b in zip(edges, edges[1:]):
            piece = text[a:b]
            got = [self._special_ids[piece]] if a in starts else self.tokenizer.encode(piece)
            ids += got
            train += [any(s <= a < e for s, e in cuts)] * len(got)
        return Rendered(ids, self._trim_targets(ids, train))

    def _trim_targets(self, ids: list[int], train: list[bool]) -> list[bool]:
        """Each target run ends at its last stop id (the template's text after it is not
        the model's to write)."""
        if not self.stop_ids:
            return train
        out = list(train)
        k = 0
        while k < len(out):
            if not out[k]:
                k += 1
                continue
            end = k
            while end < len(out) and out[end]:
                end += 1
            stops = [j for j in range(k, end) if ids[j] in self.stop_ids]
            if stops:
                for j in range(stops[-1] + 1, end):
                    out[j] = False
            k = end
        return out


def _clean(content: str) -> str:
    return content.replace(OPEN, "").replace(CLOSE, "")


def _wrap_whole(content: str) -> str:
    content = _clean(content)
    core = content.strip()
    if not core:
        return content
    lead = content[: len(content) - len(content.lstrip())]
    return lead + OPEN + core + CLOSE + content[len(lead) + len(core) :]


def _unmark(marked: str) -> tuple[str, list[tuple[int, int]]] | None:
    """The text without markers and the ranges they enclosed; None when they do not pair."""
    out: list[str] = []
    ranges = []
    n = 0
    start = None
    for part in re.split(f"({OPEN}|{CLOSE})", marked):
        if part == OPEN:
            if start is not None:
                return None
            start = n
        elif part == CLOSE:
            if start is None:
                return None
            ranges.append((start, n))
            start = None
        else:
            out.append(part)
            n += len(part)
    return ("".join(out), ranges) if start is None else None


def _checked(messages: Sequence[dict], where: str) -> list[dict]:
    """Messages as dicts with a string role (the template checks the rest)."""
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with a string 'role'")
        out.append(msg)
    return out
