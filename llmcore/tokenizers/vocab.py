"""One tokenizer's vocabulary as plain data: what readers produce and exporters write."""

from __future__ import annotations

from dataclasses import dataclass, field

#: :attr:`Vocabulary.kind` of byte-level BPE (tiktoken, GPT-2, most HF tokenizer.json files)
BYTE_LEVEL_BPE = "byte-level-bpe"
#: :attr:`Vocabulary.kind` of a vocabulary of whole characters (no merges, no pre-tokenizer)
CHARACTERS = "characters"
#: :attr:`Vocabulary.kind` of a SentencePiece model (``tokenizer.model``, GGUF ``llama``)
SENTENCEPIECE = "sentencepiece"


@dataclass
class Vocabulary:
    """The ids of a tokenizer and what each stands for.

    ``tokens[i]`` is the byte string of output id ``ids[i]`` (``ids`` None: the id is the
    rank, as in every tiktoken encoding) and has merge priority ``ranks[i]`` (lower merges
    first). ``special_tokens`` maps special-token text to its id.

    ``kind`` says how text becomes ids. :data:`BYTE_LEVEL_BPE`: text is pre-tokenized by
    ``pattern`` (a family of :mod:`llmcore.ops.bpe`), each piece is UTF-8 encoded and merged
    by rank. :data:`CHARACTERS`: each character is one token (``tokens[i]`` is one character,
    UTF-8 encoded), with no merges and no pre-tokenizer (``pattern`` None). A tokenizer
    plugin names the kinds it can be built from in its class attribute ``reads``.
    :data:`SENTENCEPIECE`: ``tokens[i]`` is the UTF-8 text of piece ``i`` (id = index) and
    ``extra`` holds the model (``"bpe"``/``"unigram"``), the pieces' ``scores`` and ``types``
    and the normalizer options (see :mod:`llmcore.tokenizers.sentencepiece`).
    """

    tokens: list[bytes]
    ranks: list[int]
    special_tokens: dict[str, int]
    pattern: str | None
    ids: list[int] | None = None
    kind: str = BYTE_LEVEL_BPE
    encoding: str | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    def id_list(self) -> list[int]:
        """The output id of every ordinary token (``ids``, or the ranks)."""
        return list(self.ids) if self.ids is not None else list(self.ranks)
