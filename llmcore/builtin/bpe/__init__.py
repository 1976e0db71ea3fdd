"""The ``bpe`` tokenizer plugin: byte-level BPE, tiktoken-identical, C++ hot loops."""

from __future__ import annotations

from llmcore.hookspecs import hookimpl

from .encodings import ENCODINGS, PAT_STR
from .tokenizer import BPETokenizer, split

__all__ = ["BPETokenizer", "ENCODINGS", "PAT_STR", "split", "register_tokenizers"]


@hookimpl
def register_tokenizers(register):
    register("bpe", BPETokenizer)
