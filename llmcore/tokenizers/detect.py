"""What a tokenizer path holds: which of the formats llmcore reads, and which file to read."""

from __future__ import annotations

from pathlib import Path

from llmcore.errors import TokenizerError

from .gpt2_files import is_gpt2_folder
from .saved import SAVE_FILE, marker_of
from .sentencepiece import MODEL_FILE
from .tokenizer_json import TOKENIZER_FILE

SAVED = "llmcore"  # a folder written by a tokenizer's save(): SAVE_FILE names the plugin
GPT2 = "gpt2-files"  # a folder with GPT-2's encoder.json + vocab.bpe
TOKENIZER_JSON = "tokenizer.json"  # a Hugging Face tokenizer.json (or a folder holding one)
SENTENCEPIECE_MODEL = "sentencepiece"  # a SentencePiece tokenizer.model (protobuf)
TIKTOKEN = "tiktoken"  # any other file: a tiktoken rank file


def _is_model_proto(path: Path) -> bool:
    # a ModelProto starts with its first piece, field 1 length-delimited (tag byte 0x0a);
    # a tiktoken rank file is base64 text and never starts with a newline
    if path.suffix == ".model":
        return True
    try:
        with path.open("rb") as f:
            return f.read(1) == b"\n"
    except OSError:
        return False


def detect_format(path: Path) -> tuple[str, Path]:
    """``(format, file or folder to read)`` of ``path``.

    Raises:
        TokenizerError: ``path`` does not exist, or is a folder with none of the formats.
    """
    marker = marker_of(path)
    if marker is not None:
        return SAVED, marker.parent
    if path.is_dir():
        if is_gpt2_folder(path):
            return GPT2, path
        if (path / TOKENIZER_FILE).exists():
            return TOKENIZER_JSON, path / TOKENIZER_FILE
        if (path / MODEL_FILE).exists():
            return SENTENCEPIECE_MODEL, path / MODEL_FILE
        raise TokenizerError(
            f"{path}: folder has no {SAVE_FILE}, {TOKENIZER_FILE}, {MODEL_FILE}, or "
            "encoder.json + vocab.bpe"
        )
    if not path.exists():
        raise TokenizerError(f"{path}: no such tokenizer file or folder")
    if path.suffix == ".json":
        return TOKENIZER_JSON, path
    if _is_model_proto(path):
        return SENTENCEPIECE_MODEL, path
    return TIKTOKEN, path
