"""The ``char`` tokenizer: one id per character, vocabulary learned from the training text.

This is nanoGPT's shakespeare-char tokenizer: the sorted set of characters of the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

from llmcore.errors import TokenizerError
from llmcore.hookspecs import hookimpl
from llmcore.tokenizers import CHARACTERS, Vocabulary
from llmcore.tokenizers.saved import read_marker, write_marker


class CharTokenizer:
    """Maps each character of a fixed alphabet to its index in the sorted alphabet.

    Args:
        chars: the alphabet (order is kept; ``train`` sorts it).
    """

    name = "char"
    learns_from_data = True  # the alphabet comes from the training text
    #: the vocabulary kinds :meth:`from_vocabulary` builds from
    reads = (CHARACTERS,)

    def __init__(self, chars: str | Sequence[str] = "") -> None:
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise TokenizerError("char tokenizer: the alphabet has duplicate characters")
        if any(len(c) != 1 for c in chars):
            raise TokenizerError("char tokenizer: every alphabet entry must be one character")
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, texts: Iterable[str], **_: object) -> CharTokenizer:
        """Learn the alphabet: the sorted set of characters of ``texts``."""
        alphabet: set[str] = set()
        for text in texts:
            alphabet.update(text)
        if not alphabet:
            raise TokenizerError("char tokenizer: cannot learn an alphabet from empty text")
        return cls(sorted(alphabet))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {}

    @property
    def eot_id(self) -> int | None:
        return None

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Ids of the characters of ``text``; a character outside the alphabet is an error."""
        try:
            return [self._stoi[c] for c in text]
        except KeyError as exc:
            raise TokenizerError(
                f"char tokenizer: character {exc.args[0]!r} is not in the alphabet of {len(self.chars)} characters"
            ) from None

    def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        try:
            return "".join(self.chars[i] if i >= 0 else _bad(i) for i in ids)
        except IndexError:
            bad = next(i for i in ids if not 0 <= i < len(self.chars))
            raise TokenizerError(
                f"char tokenizer: id {bad} is out of range 0..{len(self.chars) - 1}"
            ) from None

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def vocabulary(self) -> Vocabulary:
        """The alphabet as a vocabulary of whole characters (id = index)."""
        n = len(self.chars)
        tokens = [c.encode("utf-8") for c in self.chars]
        return Vocabulary(tokens, list(range(n)), {}, None, kind=CHARACTERS)

    @classmethod
    def from_vocabulary(cls, vocab: Vocabulary) -> CharTokenizer:
        """The tokenizer of a character vocabulary read by :mod:`llmcore.tokenizers`."""
        order = sorted(range(len(vocab.tokens)), key=vocab.id_list().__getitem__)
        return cls([vocab.tokens[i].decode("utf-8") for i in order])

    def save(self, path: str | PathLike[str]) -> None:
        write_marker(Path(path), {"type": self.name, "chars": "".join(self.chars)})

    @classmethod
    def load(cls, path: str | PathLike[str]) -> CharTokenizer:
        meta = read_marker(Path(path))
        chars = meta.get("chars")
        if not isinstance(chars, str):
            raise TokenizerError(f"{path}: not a saved char tokenizer: 'chars' is missing")
        return cls(chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _bad(i: int) -> str:
    raise IndexError(i)


@hookimpl
def register_tokenizers(register):
    register("char", CharTokenizer)
