"""Training data: text -> token ids in a memory-mapped file -> batches of windows.

Text files, a folder of them, or a field of JSONL records are tokenized once into
``<cache>/<hash>.bin`` (uint16 when the vocabulary fits, else uint32); the hash covers the
inputs and the tokenizer, so a second run starts at once. The last ``val_fraction`` of the
tokens is the validation split.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llmcore.errors import DataError


def input_files(path: str | Path) -> list[Path]:
    """The text files named by ``path``: a file, or every file in a folder (sorted)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataError(f"{p}: the data folder holds no files")
        return files
    if not p.exists():
        raise DataError(f"{p}: data file not found")
    return [p]


def read_documents(files: list[Path], jsonl_field: str = "text") -> list[str]:
    """The documents of ``files``: a whole text file is one document, a JSONL line is one."""
    docs: list[str] = []
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as exc:
            raise DataError(f"{f}: cannot read: {exc}") from None
        if b"\x00" in raw[:65536]:
            raise DataError(f"{f}: looks like a binary file (NUL bytes), not text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{f}: not UTF-8 text ({exc})") from None
        if f.suffix == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{f}:{n}: not JSON: {exc}") from None
                if not isinstance(record, dict) or not isinstance(record.get(jsonl_field), str):
                    raise DataError(f"{f}:{n}: the record has no string field {jsonl_field!r}")
                docs.append(record[jsonl_field])
        else:
            docs.append(text)
    return docs


def _digest(files: list[Path], tokenizer_id: str, jsonl_field: str) -> str:
    h = hashlib.sha256(tokenizer_id.encode())
    h.update(jsonl_field.encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def tokenizer_fingerprint(tokenizer) -> str:
    """A string that changes whenever the tokenizer's mapping can change."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        h = hashlib.sha256()
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def tokenize_to_file(docs: list[str], tokenizer, out: Path, progress: bool = True) -> np.memmap:
    """Encode ``docs`` (separated by the end-of-text token when there is one) into ``out``."""
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    eot = tokenizer.eot_id
    chunks: list[np.ndarray] = []
    from tqdm.auto import tqdm

    for doc in tqdm(
        docs, desc="tokenizing", unit="doc", disable=not progress or len(docs) < 2, leave=False
    ):
        ids = tokenizer.encode(doc)
        if eot is not None:
            ids.append(eot)
        chunks.append(np.asarray(ids, dtype=dtype))
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tokens.tofile(tmp)
    os.replace(tmp, out)
    (out.with_suffix(".json")).write_text(
        json.dumps({"dtype": np.dtype(dtype).name, "tokens": int(tokens.size)})
    )
    return np.memmap(out, dtype=dtype, mode="r")


def load_tokens(
    files: list[Path],
    tokenizer,
    cache_dir: Path,
    jsonl_field: str = "text",
    progress: bool = True,
    tokenizer_id: str | None = None,
) -> np.ndarray:
    """The token ids of ``files``, from the cache when the same inputs were seen before."""
    key = _digest(files, tokenizer_id or tokenizer_fingerprint(tokenizer), jsonl_field)
    out = cache_dir / f"{key}.bin"
    meta = out.with_suffix(".json")
    if out.exists() and meta.exists():
        info = json.loads(meta.read_text())
        return np.memmap(out, dtype=np.dtype(info["dtype"]), mode="r")
    return tokenize_to_file(read_documents(files, jsonl_field), tokenizer, out, progress)


@dataclass
class Splits:
    """Train and validation token arrays."""

    train: np.ndarray
    val: np.ndarray


def split_tokens(tokens: np.ndarray, val_fraction: float, block_size: int, source: str) -> Splits:
    """The first ``1 - val_fraction`` for training, the rest for validation; both must hold
    more than one block."""
    n = len(tokens)
    cut = int(n * (1 - val_fraction))
    train, val = tokens[:cut], tokens[cut:]
    for name, part in (("train", train), ("validation", val)):
        if len(part) <= block_size:
            raise DataError(
                f"{source}: the {name} split has {len(part)} tokens, fewer than one block of "
                f"{block_size} + 1; use more data or a smaller model.block_size"
            )
    return Splits(train, val)


def _as_int64(tokens: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        return tokens.to(torch.int64)
    return torch.from_numpy(np.asarray(tokens).astype(np.int64))


class RandomWindows:
    """Batches of ``batch_size`` random windows of ``block_size + 1`` tokens (nanoGPT's way).

    ``rows`` selects this process's share of each global batch: every rank draws the same
    global batch from the same generator and keeps its slice, so N processes together train
    on exactly the batch one process would."""

    def __init__(
        self,
        tokens: np.ndarray | torch.Tensor,
        block_size: int,
        batch_size: int,
        generator: torch.Generator,
        rows: slice | None = None,
    ) -> None:
        self.data = _as_int64(tokens)
        if len(self.data) <= block_size:
            raise DataError(f"{len(self.data)} tokens are fewer than one block of {block_size} + 1")
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = generator
        self.rows = rows or slice(None)
        self._offsets = torch.arange(block_size + 1)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(
            len(self.data) - self.block_size, (self.batch_size,), generator=self.generator
        )[self.rows]
        rows = self.data[ix[:, None] + self._offsets]  # (B, T + 1) in one gather
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class SequentialWindows:
    """Consecutive non-overlapping windows, epoch after epoch, in a seeded shuffled order."""

    def __init__(
        self,
        tokens: np.ndarray | torch.Tensor,
        block_size: int,
        batch_size: int,
        generator: torch.Generator,
        rows: slice | None = None,
    ) -> None:
        self.data = _as_int64(tokens)
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = generator
        self.rows = rows or slice(None)
        self.n_windows = (len(self.data) - 1) // block_size
        if self.n_windows < 1:
            raise DataError(f"{len(self.data)} tokens are fewer than one block of {block_size} + 1")
        self.epoch, self.position = 0, 0
        self._order = torch.randperm(self.n_windows, generator=generator)
        self._offsets = torch.arange(block_size + 1)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = []
        for _ in range(self.batch_size):
            if self.position >= self.n_windows:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = torch.randperm(self.n_windows, generator=self.generator)
            starts.append(int(self._order[self.position]) * self.block_size)
            self.position += 1
        rows = self.data[torch.tensor(starts[self.rows])[:, None] + self._offsets]
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "position": self.position,
            "order": self._order.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = state["order"]
