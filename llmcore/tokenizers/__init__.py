"""All tokenizer I/O: format detection, llmcore's save format, tiktoken rank files, Hugging
Face ``tokenizer.json``, GPT-2's files and the byte-level alphabet, each in one module.

The core never names a tokenizer plugin: a saved folder names its own in the marker file, and
any other vocabulary is built by the plugin that declares its kind in ``reads``.

    tok = llmcore.load_tokenizer("cl100k_base.tiktoken")
    tok = llmcore.train_tokenizer(["corpus.txt"], vocab_size=4096)
"""

from __future__ import annotations

from .build import tokenizer_from_config, train_tokenizer, validate_tokenizer
from .detect import detect_format
from .load import load_hf_tokenizer, load_tokenizer, read_vocabulary, tokenizer_class_for
from .saved import SAVE_FILE
from .tokenizer_json import TOKENIZER_FILE, save_hf_tokenizer
from .vocab import BYTE_LEVEL_BPE, CHARACTERS, Vocabulary

__all__ = [
    "BYTE_LEVEL_BPE",
    "CHARACTERS",
    "SAVE_FILE",
    "TOKENIZER_FILE",
    "Vocabulary",
    "detect_format",
    "load_hf_tokenizer",
    "load_tokenizer",
    "read_vocabulary",
    "save_hf_tokenizer",
    "tokenizer_class_for",
    "tokenizer_from_config",
    "train_tokenizer",
    "validate_tokenizer",
]
