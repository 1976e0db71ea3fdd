"""A fine-tuning task whose success can be measured exactly, built from Tiny Shakespeare.

The prompt asks a character to speak (``"ROMEO, speak"``); an answer in the format is one
speech line ``NAME: text`` (scored by the ``format`` reward). SFT data teaches the format
with a *random* speaker, so an SFT model names the asked character only about 1 time in
``len(names)``; preference pairs prefer a line given to the character asked about over the same
line given to another, or over an answer out of format (scored by the
``names_character`` reward), which a reward model, DPO and PPO then learn.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

NAMES = ("ROMEO", "JULIET", "GLOUCESTER", "MENENIUS")


def speech_lines(text: str, names: Sequence[str], max_chars: int = 24) -> dict[str, list[str]]:
    """The first line of each speech of each character, cut at a word to ``max_chars``."""
    out: dict[str, list[str]] = {n: [] for n in names}
    for match in re.finditer(r"(?m)^([A-Z][A-Za-z ]+):\n([^\n]+)", text):
        name, line = match.group(1), match.group(2).strip()
        if name not in out or not line:
            continue
        words, cut = line.split(), ""
        for w in words:
            if len(cut) + len(w) + (1 if cut else 0) > max_chars:
                break
            cut = f"{cut} {w}" if cut else w
        if cut and cut[0].isalpha():
            out[name].append(cut)
    return out


def prompt_for(name: str) -> str:
    return f"{name}, speak"


def make_task(
    text: str,
    out_dir: str | Path,
    *,
    names: Sequence[str] = NAMES,
    n_sft: int = 2000,
    n_pairs: int = 2000,
    n_prompts: int = 400,
    max_chars: int = 24,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``sft.jsonl``, ``pairs.jsonl`` and ``prompts.jsonl`` into ``out_dir``."""
    rng = random.Random(seed)
    lines = speech_lines(text, names, max_chars)
    empty = [n for n, v in lines.items() if not v]
    if empty:
        raise ValueError(f"no speech lines found for {empty}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def line(name: str) -> str:
        return f"{name}: {rng.choice(lines[name])}"

    files = {k: out / f"{k}.jsonl" for k in ("sft", "pairs", "prompts")}
    with files["sft"].open("w", encoding="utf-8") as f:
        for _ in range(n_sft):
            asked, speaker = rng.choice(names), rng.choice(names)
            f.write(json.dumps({"prompt": prompt_for(asked), "response": line(speaker)}) + "\n")
    with files["pairs"].open("w", encoding="utf-8") as f:
        for _ in range(n_pairs):
            asked = rng.choice(names)
            other = rng.choice([n for n in names if n != asked])
            words = rng.choice(lines[asked])
            # mostly the same words under the wrong name (the pair differs only in what is
            # scored); sometimes an answer out of format, so a reward model learns that too
            rejected = rng.choice(
                [f"{other}: {words}"] * 4 + [words, f"{asked}:", words.split()[0].upper()]
            )
            rec = {
                "prompt": prompt_for(asked),
                "chosen": f"{asked}: {words}",
                "rejected": rejected,
            }
            f.write(json.dumps(rec) + "\n")
    with files["prompts"].open("w", encoding="utf-8") as f:
        for _ in range(n_prompts):
            f.write(json.dumps({"prompt": prompt_for(rng.choice(names))}) + "\n")
    return files
