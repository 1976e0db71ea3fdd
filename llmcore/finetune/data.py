"""Fine-tuning data: JSONL records -> token ids and masks -> padded or packed batches.

SFT records are ``{"prompt", "response"}`` or ``{"messages": [{"role", "content"}, ...]}``;
preference records (reward model, DPO) are ``{"prompt", "chosen", "rejected"}``; PPO reads
the ``prompt`` of either. Errors name the file and line. An example that truncation leaves
without a single answer token is skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llmcore.errors import DataError
from llmcore.finetune.chat import Chat

IGNORE = -100


@dataclass
class Record:
    """One JSONL record and where it came from."""

    data: dict
    where: str  # "file:line"


def read_jsonl(path: str | Path) -> list[Record]:
    """Every record of a JSONL file (or of the ``.jsonl`` files of a folder)."""
    p = Path(path)
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files or not files[0].exists():
        raise DataError(f"{p}: no such JSONL file (or folder of .jsonl files)")
    out = []
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{f}: cannot read: {exc}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{f}:{n}: not JSON: {exc}") from None
            if not isinstance(data, dict):
                raise DataError(f"{f}:{n}: a record must be a JSON object")
            out.append(Record(data, f"{f}:{n}"))
    if not out:
        raise DataError(f"{p}: holds no records")
    return out


def field_of(record: Record, name: str) -> str:
    """The string field ``name`` of ``record``; an error naming file and line otherwise."""
    value = record.data.get(name)
    if not isinstance(value, str):
        found = "missing" if name not in record.data else f"not a string ({value!r})"
        raise DataError(f"{record.where}: field {name!r} is {found}")
    return value


def split(records: list, val_fraction: float) -> tuple[list, list]:
    """The first records for training, the last ``val_fraction`` held out (at least one)."""
    if len(records) < 2:
        return records, records
    n_val = min(len(records) - 1, max(1, round(len(records) * val_fraction)))
    return records[:-n_val], records[-n_val:]


@dataclass
class Skipped:
    """Counts of examples left out, reported in the run's log."""

    truncated: int = 0
    where: list[str] = field(default_factory=list)

    def add(self, where: str) -> None:
        self.truncated += 1
        if len(self.where) < 5:
            self.where.append(where)


# -- SFT ------------------------------------------------------------------------------------------


@dataclass
class SFTExample:
    ids: list[int]  # the whole rendered conversation, at most max_len + 1 ids
    train: list[bool]  # per id: is it a target


def messages_of(record: Record) -> list[dict]:
    """The conversation of an SFT record."""
    if "messages" in record.data:
        msgs = record.data["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{record.where}: field 'messages' must be a non-empty list")
        return msgs
    return [
        {"role": "user", "content": field_of(record, "prompt")},
        {"role": "assistant", "content": field_of(record, "response")},
    ]


def sft_examples(
    records: list[Record], chat: Chat, max_len: int, skipped: Skipped
) -> list[SFTExample]:
    """Render and truncate SFT records; examples with no target left are skipped."""
    out = []
    for rec in records:
        r = chat.render(messages_of(rec), rec.where)
        ids, train = r.ids[: max_len + 1], r.train[: max_len + 1]
        if not any(train[1:]):  # the first id is never predicted
            skipped.add(rec.where)
            continue
        out.append(SFTExample(ids, train))
    return out


def pad_sft(batch: list[SFTExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs (B, T) and targets (B, T) with IGNORE off the answers."""
    T = max(len(e.ids) for e in batch) - 1
    x = torch.zeros(len(batch), T, dtype=torch.long)
    y = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.ids) - 1
        x[i, :n] = torch.tensor(e.ids[:-1])
        y[i, :n] = torch.tensor([t if keep else IGNORE for t, keep in zip(e.ids[1:], e.train[1:])])
    return x, y


def pack_sft(
    batch: list[SFTExample], block: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack examples into rows of ``block`` tokens, first fit in order.

    Returns inputs, targets (B, block), per-row positions restarting at each example, and a
    bool attention mask (B, 1, block, block) that keeps each example to itself.
    """
    rows: list[list[SFTExample]] = []
    used: list[int] = []
    for e in batch:
        n = len(e.ids) - 1
        for i, u in enumerate(used):
            if u + n <= block:
                rows[i].append(e)
                used[i] += n
                break
        else:
            rows.append([e])
            used.append(n)
    B = len(rows)
    x = torch.zeros(B, block, dtype=torch.long)
    y = torch.full((B, block), IGNORE, dtype=torch.long)
    pos = torch.zeros(B, block, dtype=torch.long)
    seg = torch.full((B, block), -1, dtype=torch.long)  # example index of each slot
    for b, row in enumerate(rows):
        at = 0
        for k, e in enumerate(row):
            n = len(e.ids) - 1
            x[b, at : at + n] = torch.tensor(e.ids[:-1])
            targets = [t if keep else IGNORE for t, keep in zip(e.ids[1:], e.train[1:])]
            y[b, at : at + n] = torch.tensor(targets)
            pos[b, at : at + n] = torch.arange(n)
            seg[b, at : at + n] = k
            at += n
    same = seg[:, :, None] == seg[:, None, :]  # (B, T, T)
    # a padding slot attends to itself only, so no row of the mask is empty
    eye = torch.eye(block, dtype=torch.bool)[None]
    mask = (same & (seg[:, :, None] >= 0)) | eye
    return x, y, pos, mask[:, None]


# -- preferences ----------------------------------------------------------------------------------


@dataclass
class PairExample:
    prompt: list[int]
    chosen: list[int]  # answer ids (with the end marker), after the prompt
    rejected: list[int]
    prompt_text: str = ""


def preference_examples(
    records: list[Record], chat: Chat, max_len: int, skipped: Skipped
) -> list[PairExample]:
    """Prompt and the two answers of each preference record, truncated to ``max_len + 1``
    ids in all; a pair where either answer is truncated to nothing is skipped."""
    out = []
    for rec in records:
        prompt_text = field_of(rec, "prompt")
        prompt = chat.prompt_text(prompt_text)
        chosen = chat.answer(field_of(rec, "chosen"))
        rejected = chat.answer(field_of(rec, "rejected"))
        room = max_len + 1 - len(prompt)
        if room <= 0:
            skipped.add(rec.where)
            continue
        out.append(PairExample(prompt, chosen[:room], rejected[:room], prompt_text))
    return out


def pad_sequences(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows (B, T) and the index of each row's last real id (B,)."""
    T = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
    return x, torch.tensor([len(s) - 1 for s in seqs])


def pad_responses(
    prompts: list[list[int]], responses: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + response`` rows for scoring answers.

    Returns:
        inputs (B, T) (every id but the last of each row), targets (B, T) with -1 off the
        answer, and the index of each row's last real id (B,).
    """
    seqs = [p + r for p, r in zip(prompts, responses)]
    T = max(len(s) for s in seqs) - 1
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    y = torch.full((len(seqs), T), -1, dtype=torch.long)
    last = torch.zeros(len(seqs), dtype=torch.long)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        x[i, : len(s) - 1] = torch.tensor(s[:-1])
        y[i, len(p) - 1 : len(s) - 1] = torch.tensor(s[len(p) :])
        last[i] = len(s) - 1
    return x, y, last


def prompts_of(records: list[Record]) -> list[Record]:
    """Records usable as PPO prompts: each needs a ``prompt`` (or ``messages``)."""
    for rec in records:
        if "messages" not in rec.data:
            field_of(rec, "prompt")
    return records
