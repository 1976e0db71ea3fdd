"""The ``bpe`` tokenizer plugin: byte-level BPE, tiktoken-identical, C++ hot loops."""

from __future__ import annotations

from llmcore.hookspecs import hookimpl

from .tokenizer import BPETokenizer

__all__ = ["BPETokenizer", "register_tokenizers"]


@hookimpl
def register_tokenizers(register):
    register("bpe", BPETokenizer)
