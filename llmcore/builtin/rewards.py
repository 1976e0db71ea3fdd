"""Reward plugins: exact, computable scores of generated answers, for PPO and evaluation.

``names_character``: the answer is a speech line ``NAME: text`` and scores 1 when ``NAME``
is the character the prompt asks about, else 0. ``target_length``: the closer the answer's
length is to ``target`` characters, the higher (1 at the target, falling linearly to 0).
``format``: 1 when the answer is one ``NAME: text`` speech line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmcore.errors import ConfigError
from llmcore.hookspecs import hookimpl

#: ``NAME: text``: an upper-case speaker (words of capitals), a colon, a space, some text.
SPEECH_LINE = re.compile(r"^([A-Z][A-Z']*(?: [A-Z][A-Z']*)*): (\S.*)$")


def speaker(response: str) -> str | None:
    """The speaker of a ``NAME: text`` answer, or None when the answer has another form."""
    match = SPEECH_LINE.match(response.strip("\n"))
    return match.group(1) if match else None


def asked_character(prompt: str, names: Sequence[str]) -> str | None:
    """The first of ``names`` that occurs in ``prompt`` as a whole word."""
    for name in names:
        if re.search(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])", prompt):
            return name
    return None


class NamesCharacter:
    """1.0 when the answer's speaker is the character named in the prompt, else 0.0.

    Args:
        names: the characters a prompt may ask about.
    """

    def __init__(self, names: Sequence[str] = ()) -> None:
        if isinstance(names, str) or not names:
            raise ConfigError("names_character.names: give the list of character names")
        self.names = list(names)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        out = []
        for prompt, response in zip(prompts, responses, strict=True):
            who = asked_character(prompt, self.names)
            out.append(1.0 if who is not None and speaker(response) == who else 0.0)
        return out


class Format:
    """1.0 when the answer is one ``NAME: text`` speech line, else 0.0."""

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return [1.0 if speaker(r) is not None else 0.0 for r in responses]


class TargetLength:
    """``max(0, 1 - |len(answer) - target| / target)``: 1 at ``target`` characters.

    Args:
        target: the wished-for answer length in characters (> 0).
    """

    def __init__(self, target: int = 20) -> None:
        if not isinstance(target, int) or target <= 0:
            raise ConfigError(f"target_length.target: must be a positive integer, found {target!r}")
        self.target = target

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return [
            max(0.0, 1.0 - abs(len(r.strip("\n")) - self.target) / self.target) for r in responses
        ]


@hookimpl
def register_rewards(register):
    register("names_character", NamesCharacter)
    register("format", Format)
    register("target_length", TargetLength)
