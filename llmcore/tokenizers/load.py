"""Loading any tokenizer path: read its vocabulary once, then build the plugin that owns it.

A saved llmcore folder names its plugin in the marker file; every other format (tiktoken
rank file, Hugging Face tokenizer.json, GPT-2's files) is read here into a
:class:`~llmcore.tokenizers.vocab.Vocabulary`, and the tokenizer is built by the registered
plugin that declares that vocabulary kind in its ``reads`` attribute.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from llmcore import plugins
from llmcore.errors import TokenizerError

from . import detect as fmt
from .gpt2_files import read_gpt2_folder
from .saved import read_bpe, read_marker
from .sentencepiece import MODEL_FILE, read_model_file
from .tiktoken_ranks import read_tiktoken_file
from .tokenizer_json import TOKENIZER_FILE, read_tokenizer_json
from .vocab import Vocabulary


def read_vocabulary(
    path: str | PathLike[str],
    encoding: str | None = None,
    pattern: str | None = None,
    special_tokens: dict[str, int] | None = None,
) -> Vocabulary:
    """The vocabulary of any format llmcore reads (see :func:`load_tokenizer`).

    ``encoding``, ``pattern`` and ``special_tokens`` describe a tiktoken rank file (see
    :func:`~llmcore.tokenizers.tiktoken_ranks.read_tiktoken_file`); ``pattern`` also
    overrides a tokenizer.json's pre-tokenizer.
    """
    kind, where = fmt.detect_format(Path(path))
    if kind == fmt.SAVED:
        return read_bpe(where)
    if kind == fmt.GPT2:
        return read_gpt2_folder(where)
    if kind == fmt.TOKENIZER_JSON:
        return read_tokenizer_json(where, pattern)
    if kind == fmt.SENTENCEPIECE_MODEL:
        return read_model_file(where)
    return read_tiktoken_file(where, encoding, pattern, special_tokens)


def tokenizer_class_for(kind: str, source: str = "") -> Any:
    """The registered tokenizer class that is built from vocabularies of ``kind`` (it lists
    the kind in its ``reads``); ``source`` names the file for the error."""
    found = plugins.available("tokenizer")
    for provider in found.values():  # built-in plugins are registered first
        if kind in getattr(provider.factory, "reads", ()):
            return provider.factory
    raise TokenizerError(
        f"{source or 'tokenizer'}: no registered tokenizer reads {kind} vocabularies "
        f"(registered tokenizers: {', '.join(sorted(found)) or '(none)'})"
    )


def _build(vocab: Vocabulary) -> Any:
    return tokenizer_class_for(vocab.kind, vocab.source).from_vocabulary(vocab)


def load_tokenizer(path: str | PathLike[str], encoding: str | None = None) -> Any:
    """Load a tokenizer from disk.

    A folder written by ``tok.save(path)`` (it holds ``llmcore-tokenizer.json``, whose
    ``type`` names the registered tokenizer) is rebuilt by that plugin's ``load``; any other
    path (a tiktoken ``.tiktoken`` rank file, a Hugging Face ``tokenizer.json`` or a folder
    holding one, a folder with GPT-2's ``encoder.json`` and ``vocab.bpe``) is read into a
    vocabulary and built by the plugin that reads its kind (``from_vocabulary``). A
    SentencePiece ``tokenizer.model`` (or a folder holding one) is read the same way.
    ``encoding`` names the encoding of a rank file whose name does not say it.
    """
    kind, where = fmt.detect_format(Path(path))
    if kind == fmt.SAVED:
        name = read_marker(where)["type"]
        return plugins.factory("tokenizer", name).load(where)
    return _build(read_vocabulary(where, encoding))


def load_hf_tokenizer(path: str | PathLike[str]) -> Any:
    """The llmcore tokenizer of a Hugging Face folder (or of a ``tokenizer.json`` itself).

    Raises:
        TokenizerError: no tokenizer.json (nor a SentencePiece tokenizer.model), not JSON,
            or a model llmcore does not read.
    """
    p = Path(path)
    if p.is_dir() and not (p / TOKENIZER_FILE).exists() and (p / MODEL_FILE).exists():
        return _build(read_model_file(p / MODEL_FILE))  # a SentencePiece model only
    return _build(read_tokenizer_json(p / TOKENIZER_FILE if p.is_dir() else p))
