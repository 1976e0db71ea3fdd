"""Loss and perplexity of a trained model on any text: ``llmcore eval RUN_DIR --data FILE``.

The text (a file, a folder of files, or a JSONL field) is tokenized as for training, with the
end-of-text token between documents, and cut into consecutive windows of ``block_size + 1``
tokens that overlap by one, so every token after the first is predicted exactly once. The
loss is the mean over all predicted tokens; perplexity is its exponential.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llmcore.errors import DataError


@dataclass
class EvalResult:
    """What :func:`evaluate` returns."""

    loss: float
    perplexity: float
    tokens: int  # tokens predicted
    checkpoint: Path


def token_ids(tokenizer, data: str | Path, jsonl_field: str = "text") -> np.ndarray:
    """The token ids of ``data`` joined with the end-of-text token when the tokenizer has one."""
    from llmcore.train.data import input_files, read_documents

    docs = read_documents(input_files(data), jsonl_field)
    eot = tokenizer.eot_id
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer.encode(doc))
        if eot is not None:
            ids.append(eot)
    if eot is not None and ids:
        ids.pop()  # nothing is predicted after the last document
    return np.asarray(ids, dtype=np.int64)


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    ids: np.ndarray | torch.Tensor,
    block_size: int,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
) -> tuple[float, int]:
    """Mean next-token loss of ``model`` over ``ids`` and the number of tokens predicted."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    n = len(ids) - 1
    if n < 1:
        raise DataError("the evaluation text has fewer than 2 tokens: nothing to predict")
    starts = list(range(0, n, block_size))
    total, count = 0.0, 0
    model.eval()
    amp = (
        torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else None
    )
    for b in range(0, len(starts), batch_size):
        group = starts[b : b + batch_size]
        T = min(block_size, n - group[0])
        x = torch.zeros(len(group), T, dtype=torch.int64)
        y = torch.full((len(group), T), -100, dtype=torch.int64)  # -100: padding, not scored
        for row, s in enumerate(group):
            m = min(T, n - s)
            x[row, :m] = ids[s : s + m]
            y[row, :m] = ids[s + 1 : s + 1 + m]
        scored = int((y != -100).sum())
        x, y = x.to(device), y.to(device)
        if amp is not None:
            with amp:
                loss = model.loss(x, y)
        else:
            loss = model.loss(x, y)
        total += float(loss) * scored
        count += scored
    return total / count, count


def evaluate(
    run: str | Path,
    data: str | Path,
    *,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "float32",
) -> EvalResult:
    """Loss and perplexity of the run (or checkpoint) ``run`` on the text ``data``."""
    from llmcore.loading import load
    from llmcore.train.setup import resolve_device

    dev = resolve_device(device)
    loaded = load(run, device=dev)
    ids = token_ids(loaded.tokenizer, data, loaded.config.data.jsonl_field)
    loss, count = mean_loss(
        loaded.model,
        ids,
        loaded.config.model.block_size,
        batch_size=batch_size,
        device=dev,
        dtype=dtype,
    )
    return EvalResult(loss, math.exp(min(loss, 700.0)), count, loaded.path)


__all__ = ["EvalResult", "evaluate", "mean_loss", "token_ids"]
