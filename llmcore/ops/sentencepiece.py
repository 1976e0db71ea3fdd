"""The Python face of ``csrc/sentencepiece``: the C++ SentencePiece encoder of one model.

The C++ ``Model`` normalizes text (the precompiled character map, user-defined pieces, the
whitespace options) and segments it: BPE by piece score, the leftmost best pair first (or by
a Hugging Face merge list's ranks), unigram by Viterbi with float32 sums (float64 for Hugging
Face's Unigram), then byte fallback or merged unknown ids. Both follow sentencepiece's
bpe_model.cc and unigram_model.cc (as of 0.2.1, the rebasing of long unigram path sums
included: see csrc/sentencepiece/model.cpp), so ties break as the library breaks them.
"""

from __future__ import annotations

from typing import Any

from llmcore.ops import native
from llmcore.tokenizers.vocab import Vocabulary

SPACE = "\u2581".encode()  # ▁, the piece text of a space


def _native() -> Any:
    return native("sentencepiece", "the sentencepiece tokenizer")


def new_model(vocab: Vocabulary) -> Any:
    """The C++ encoder of a SentencePiece vocabulary (see
    :mod:`llmcore.tokenizers.sentencepiece` for its ``extra`` fields).

    ``encode(text, dummy_prefix)`` gives the ids of one stretch of text; ``dummy_prefix``
    says whether a ``▁`` goes in front. ``normalize(text, dummy_prefix)`` gives the bytes
    the segmenter sees.
    """
    x = vocab.extra
    merges = x.get("merges")
    if merges is not None:
        merges = [(str(a).encode(), str(b).encode()) for a, b in merges]
    unk = x.get("unk_id")
    options = {
        key: bool(x.get(key, default))
        for key, default in (
            ("add_dummy_prefix", True),
            ("remove_extra_whitespaces", True),
            ("escape_whitespaces", True),
            ("treat_whitespace_as_suffix", False),
            ("prefix_unless_space", False),
        )
    }
    return _native().Model(
        list(vocab.tokens),
        [float(s) for s in x["scores"]],
        [int(t) for t in x["types"]],
        -1 if unk is None else int(unk),
        bool(x["byte_fallback"]),
        str(x["model"]),
        merges,
        bool(x.get("float64_scores", False)),
        bool(x.get("ignore_merges", False)),
        bytes(x.get("charsmap", b"")),
        options,
    )
