"""The chat format: messages -> token ids, with the positions an assistant is trained on.

Each message is rendered as ``<role marker> content <end>`` and encoded piece by piece, so
which tokens belong to an assistant's answer is known from the pieces themselves, never by
searching the ids for marker patterns. The template lives in the tokenizer section of the
config and is saved with every checkpoint; training and chat read the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmcore.config import ChatTemplate, Config
from llmcore.errors import ConfigError, DataError, LLMCoreError

ROLES = ("system", "user", "assistant")


def chat_for(loaded, cfg: Config | None = None):
    """The chat format of a loaded model (a :class:`~llmcore.checkpoint.LoadedCheckpoint`):
    its own Jinja ``chat_template`` when it has one (an HF folder, a GGUF file; see
    :mod:`llmcore.finetune.jinja_chat`), else the config's marker template (llmcore's own
    runs). ``cfg`` defaults to the checkpoint's config."""
    cfg = loaded.config if cfg is None else cfg
    if not loaded.chat_template:
        return Chat(chat_template_of(cfg), loaded.tokenizer)
    from llmcore.finetune.jinja_chat import TemplateChat
    from llmcore.tokenizers.chat_template import (
        ChatTemplateRenderer,
        read_special_tokens_map,
        special_tokens_of,
    )

    stop_ids = tuple(loaded.stop_ids)
    specials = special_tokens_of(loaded.tokenizer, stop_ids)
    path = Path(loaded.path)
    if path.is_dir():  # an HF folder names its bos/eos text itself
        specials.update(read_special_tokens_map(path))
    renderer = ChatTemplateRenderer(loaded.chat_template, f"{path}: chat_template", specials)
    return TemplateChat(renderer, loaded.tokenizer, stop_ids)


def chat_template_of(cfg: Config) -> ChatTemplate:
    """The config's chat template, or the default plain-text one when it names none."""
    return cfg.tokenizer.chat_template or ChatTemplate()


@dataclass
class Rendered:
    """A rendered conversation: ids and, per id, whether it is an assistant target."""

    ids: list[int]
    train: list[bool]


class Chat:
    """Renders conversations with ``template`` through ``tokenizer``."""

    def __init__(self, template: ChatTemplate, tokenizer) -> None:
        self.template = template
        self.tokenizer = tokenizer
        self._allowed = "all" if template.special else ()
        self.markers: dict[str, list[int]] = {}
        for field in ("bos", *ROLES, "end"):
            text = getattr(template, field)
            try:
                self.markers[field] = self._encode(text)
            except LLMCoreError as exc:
                raise ConfigError(
                    f"tokenizer.chat_template.{field}: {text!r} cannot be encoded: {exc}"
                ) from None
        if not self.markers["end"]:
            raise ConfigError("tokenizer.chat_template.end: must not be empty (answers end there)")

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, allowed_special=self._allowed) if text else []

    def encode_content(self, text: str) -> list[int]:
        """Message text -> ids (special-token text in content stays ordinary text)."""
        return self.tokenizer.encode(text) if text else []

    @property
    def end_ids(self) -> list[int]:
        """The ids that end an answer."""
        return self.markers["end"]

    def render(self, messages: Sequence[dict], where: str = "<messages>") -> Rendered:
        """Ids of a whole conversation; assistant contents and their end marker are targets."""
        ids = list(self.markers["bos"])
        train = [False] * len(ids)
        for i, msg in enumerate(messages):
            role, content = _check_message(msg, f"{where}: messages[{i}]")
            head = self.markers[role]
            body = self.encode_content(content) + self.end_ids
            ids += head + body
            train += [False] * len(head) + [role == "assistant"] * len(body)
        return Rendered(ids, train)

    def prompt(self, messages: Sequence[dict], where: str = "<messages>") -> list[int]:
        """Ids of ``messages`` followed by the assistant marker: where an answer starts."""
        return self.render(messages, where).ids + self.markers["assistant"]

    def prompt_text(self, prompt: str) -> list[int]:
        """Prompt ids of a single user message."""
        return self.prompt([{"role": "user", "content": prompt}])

    def answer(self, response: str) -> list[int]:
        """Ids of an answer as the model should produce it: content then the end marker."""
        return self.encode_content(response) + self.end_ids

    def strip_end(self, ids: Sequence[int]) -> tuple[list[int], bool]:
        """An answer's ids without its end marker, and whether the marker was there."""
        end = self.end_ids
        ids = list(ids)
        if len(ids) >= len(end) and ids[len(ids) - len(end) :] == end:
            return ids[: len(ids) - len(end)], True
        return ids, False


def _check_message(msg: object, where: str) -> tuple[str, str]:
    if not isinstance(msg, dict):
        raise DataError(f"{where}: a message must be an object with role and content")
    role, content = msg.get("role"), msg.get("content")
    if role not in ROLES:
        raise DataError(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise DataError(f"{where}: missing string field 'content'")
    return role, content
