"""SentencePieceTokenizer: SentencePiece BPE and unigram models with sentencepiece's ids."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from llmcore.errors import TokenizerError
from llmcore.ops.sentencepiece import SPACE, new_model
from llmcore.tokenizers.saved import read_marker, write_marker
from llmcore.tokenizers.sentencepiece import (
    BYTE,
    CONTROL,
    UNKNOWN,
    read_model_file,
    saved_meta,
    vocabulary_of_meta,
)
from llmcore.tokenizers.vocab import SENTENCEPIECE, Vocabulary


class SentencePieceTokenizer:
    """A SentencePiece model (``tokenizer.model``, or pieces from a GGUF file) giving the
    sentencepiece library's ids. Meets :class:`llmcore.contracts.Tokenizer`.

    Args:
        path: a ``tokenizer.model`` file (or a folder holding one), read without the
            sentencepiece package.

    ``encode(text)`` gives what ``SentencePieceProcessor.encode(text)`` gives: no bos/eos.
    ``encode(text, add_special=True)`` adds bos and/or eos as the model asks
    (:attr:`add_bos`, :attr:`add_eos`: ``add_bos_token``/``add_eos_token`` of the model's
    files). Control pieces (``<s>``, ``</s>``) are the special tokens: their text in the
    input is ordinary text unless ``allowed_special`` names it; then the input is cut at
    them and each stretch between is normalized and segmented on its own.
    """

    name = "sentencepiece"
    learns_from_data = False
    #: the vocabulary kinds :meth:`from_vocabulary` builds from
    reads = (SENTENCEPIECE,)

    def __init__(
        self, path: str | PathLike[str] | None = None, *, _data: Vocabulary | None = None
    ) -> None:
        if _data is None:
            if path is None:
                raise TokenizerError("sentencepiece tokenizer: pass path= (a tokenizer.model)")
            _data = read_model_file(Path(path))
        if _data.kind != SENTENCEPIECE:
            raise TokenizerError(f"{_data.source}: a {_data.kind} vocabulary is not SentencePiece")
        x = _data.extra
        self._vocab = _data
        self.model: str = x["model"]
        self._types: list[int] = list(x["types"])
        self._pieces = list(_data.tokens)
        self.bos_id: int | None = x.get("bos_id")
        self.eos_id: int | None = x.get("eos_id")
        self.unk_id: int | None = x.get("unk_id")
        self.pad_id: int | None = x.get("pad_id")
        self.add_bos: bool = bool(x.get("add_bos"))
        self.add_eos: bool = bool(x.get("add_eos"))
        self._unk_surface = str(x.get("unk_surface", " \u2047 ")).encode()
        self._strip_first_space = bool(x["add_dummy_prefix"] or x["remove_extra_whitespaces"])
        # Metaspace prepend_scheme="first": no ▁ is added after a special token
        self._prefix_first = bool(x["add_dummy_prefix"])
        self._prefix_rest = self._prefix_first and not x.get("prefix_first_only")
        self._core = new_model(_data)
        self._special = dict(_data.special_tokens)
        by_length = sorted(self._special, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, by_length))) if by_length else None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | PathLike[str]) -> SentencePieceTokenizer:
        """A ``tokenizer.model`` file, or a folder saved by :meth:`save`."""
        p = Path(path)
        if p.is_dir() and (p / "llmcore-tokenizer.json").exists():
            return cls(_data=vocabulary_of_meta(read_marker(p), str(p)))
        return cls(path=p)

    @classmethod
    def from_vocabulary(cls, vocab: Vocabulary) -> SentencePieceTokenizer:
        """Build from a SentencePiece vocabulary read by :mod:`llmcore.tokenizers`."""
        return cls(_data=vocab)

    # ---- the contract -------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def eot_id(self) -> int | None:
        return self.eos_id

    def _segment(self, text: str, first: bool = True) -> list[int]:
        return self._core.encode(text, self._prefix_first if first else self._prefix_rest)

    def encode(
        self,
        text: str,
        allowed_special: Iterable[str] | str = (),
        *,
        add_special: bool = False,
    ) -> list[int]:
        """Ids of ``text``; ``add_special=True`` adds bos/eos as :attr:`add_bos`/:attr:`add_eos`
        say."""
        allowed = self._allowed(allowed_special)
        if not allowed:
            ids = self._segment(text)
        else:
            ids, pos = [], 0
            for m in self._special_re.finditer(text):  # type: ignore[union-attr]
                if m.group() not in allowed:
                    continue
                ids += self._segment(text[pos : m.start()], first=pos == 0)
                ids.append(self._special[m.group()])
                pos = m.end()
            ids += self._segment(text[pos:], first=pos == 0)
        if add_special and self.add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if add_special and self.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def _allowed(self, allowed_special: Iterable[str] | str) -> set[str]:
        if not allowed_special:
            return set()
        if allowed_special == "all":
            return set(self._special)
        allowed = {allowed_special} if isinstance(allowed_special, str) else set(allowed_special)
        unknown = allowed - self._special.keys()
        if unknown:
            raise TokenizerError(
                f"allowed_special names tokens this tokenizer lacks: {sorted(unknown)} "
                f"(it has {sorted(self._special)})"
            )
        return allowed

    def encode_ordinary(self, text: str) -> list[int]:
        return self._segment(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
        if num_threads < 0:
            raise TokenizerError(f"num_threads must be >= 0, got {num_threads}")
        return [self._segment(t) for t in texts]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of ``ids`` as sentencepiece decodes them: ``▁`` is a space, byte pieces
        are their byte, control pieces are nothing, the first piece's leading space goes."""
        out = bytearray()
        first = True
        n = len(self._pieces)
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise TokenizerError(f"token id {i} is out of range [0, {n})")
            kind, piece = self._types[i], self._pieces[i]
            if kind == CONTROL:
                continue
            if kind == BYTE:
                out.append(int(piece[3:5], 16))
                first = False
                continue
            if kind == UNKNOWN:
                out += self._unk_surface
                first = False
                continue
            if first and self._strip_first_space and piece.startswith(SPACE):
                piece = piece[len(SPACE) :]
            out += piece.replace(SPACE, b" ")
            first = False
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The text of one piece, UTF-8 encoded (a byte piece: its byte)."""
        if not 0 <= token_id < len(self._pieces):
            raise TokenizerError(f"token id {token_id} is out of range [0, {self.vocab_size})")
        if self._types[token_id] == BYTE:
            return bytes([int(self._pieces[token_id][3:5], 16)])
        return self._pieces[token_id]

    def vocabulary(self) -> Vocabulary:
        """The pieces, their scores and types, and the normalizer options."""
        return self._vocab

    def save(self, path: str | PathLike[str]) -> None:
        meta: dict[str, Any] = {"type": self.name, "format_version": 1}
        meta.update(saved_meta(self._vocab))
        meta.update(add_bos=self.add_bos, add_eos=self.add_eos)
        write_marker(Path(path), meta)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(model={self.model!r}, vocab_size={self.vocab_size})"


__all__ = ["SentencePieceTokenizer"]
