"""The ``sentencepiece`` tokenizer plugin: SentencePiece BPE and unigram models."""

from __future__ import annotations

from llmcore.hookspecs import hookimpl

from .tokenizer import SentencePieceTokenizer

__all__ = ["SentencePieceTokenizer", "register_tokenizers"]


@hookimpl
def register_tokenizers(register):
    register("sentencepiece", SentencePieceTokenizer)
