"""BPETokenizer: byte-level BPE with tiktoken-identical ids, its hot loops in llmcore._C.bpe."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from llmcore.errors import TokenizerError

from . import loaders
from .encodings import ENDOFTEXT, PAT_STR, pattern_family
from .loaders import BPEData


def _core_module():
    try:
        from llmcore import _C
    except ImportError as exc:  # pragma: no cover - a broken build
        raise TokenizerError(
            f"the bpe tokenizer needs the native extension llmcore._C: {exc}"
        ) from None
    return _C.bpe


#: Encodings whose files ship with llmcore, so ``encoding=`` alone is enough.
BUNDLED = ("gpt2", "r50k_base")


def _bundled(encoding: str | None) -> Path | None:
    if encoding not in BUNDLED:
        return None
    from llmcore.datasets import tinyshakespeare_path

    return tinyshakespeare_path().parent / "tokenizers" / "gpt2"


class BPETokenizer:
    """Byte-level BPE (tiktoken semantics: merge the adjacent pair whose concatenation has
    the lowest rank). Meets :class:`llmcore.contracts.Tokenizer`.

    Args:
        path: a ``.tiktoken`` rank file, a Hugging Face ``tokenizer.json``, a folder with GPT-2's
            ``encoder.json`` + ``vocab.bpe``, or a folder saved by :meth:`save`.
        encoding: for a rank file, the encoding (gpt2, r50k_base, p50k_base, cl100k_base,
            o200k_base); inferred from the file name when None.
        pattern: override the pre-tokenizer (same names); needed for custom rank files.
        special_tokens: override the special tokens ``{text: id}`` of a rank file.

    Special-token text in ``encode`` input is ordinary text unless ``allowed_special`` lists
    it. ``encode_bytes`` accepts any bytes: invalid UTF-8 bytes split like U+FFFD would
    (each its own non-letter character) and round-trip exactly through ``decode_bytes``.
    """

    name = "bpe"
    learns_from_data = True

    def __init__(
        self,
        path: str | PathLike[str] | None = None,
        encoding: str | None = None,
        *,
        pattern: str | None = None,
        special_tokens: dict[str, int] | None = None,
        _data: BPEData | None = None,
    ) -> None:
        if _data is None:
            if path is None:
                path = _bundled(encoding)
            if path is None:
                raise TokenizerError(
                    "bpe tokenizer: pass path= (a rank file, tokenizer.json or folder); "
                    f"encodings bundled with llmcore: {', '.join(BUNDLED)}"
                )
            _data = loaders.load_any(path, encoding, pattern, special_tokens)
        self._init(_data)

    def _init(self, data: BPEData) -> None:
        specials = dict(data.special_tokens)
        self.pattern = data.pattern
        self.encoding = data.encoding
        self._core = _core_module().Core(
            data.tokens,
            data.ranks,
            data.ids or [],
            sorted(specials.items(), key=lambda kv: kv[1]),
            data.pattern,
        )
        self._special_names = [k for k, _ in sorted(specials.items(), key=lambda kv: kv[1])]
        self._special = specials
        self._meta = BPEData(
            [], [], specials, data.pattern, encoding=data.encoding, source=data.source
        )
        # the token data is kept only as long as save() may need it: re-read from the core
        self._n_tokens = len(data.tokens)
        self._id_list = data.ids
        self._ranks_data = (data.tokens, data.ranks)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | PathLike[str], encoding: str | None = None, **kw: Any
    ) -> BPETokenizer:
        """Load any of the four formats (see the class docstring)."""
        return cls(path=path, encoding=encoding, **kw)

    @classmethod
    def from_ranks(
        cls,
        mergeable_ranks: dict[bytes, int],
        pattern: str,
        special_tokens: dict[str, int] | None = None,
    ) -> BPETokenizer:
        """Build from a tiktoken-style ``{token bytes: rank}`` mapping."""
        fam = pattern_family(pattern)
        data = BPEData(
            list(mergeable_ranks), list(mergeable_ranks.values()), dict(special_tokens or {}), fam
        )
        return cls(_data=data)

    @classmethod
    def train(
        cls,
        files_or_iterable: Any,
        vocab_size: int,
        pattern: str = "cl100k_base",
        special_tokens: Iterable[str] = (),
        *,
        num_threads: int = 0,
        progress: bool | None = None,
        out: str | PathLike[str] | None = None,
    ) -> BPETokenizer:
        """Train a byte-level BPE in C++ (see :mod:`llmcore.builtin.bpe.trainer`)."""
        from .trainer import train

        return train(
            cls,
            files_or_iterable,
            vocab_size,
            pattern,
            special_tokens,
            num_threads=num_threads,
            progress=progress,
            out=out,
        )

    # ---- the contract ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self._core.n_vocab)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def eot_id(self) -> int | None:
        return self._special.get(ENDOFTEXT)

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        if not allowed_special:
            return self._core.encode_ordinary(text)
        if allowed_special == "all":
            mask = [True] * len(self._special_names)
        else:
            allowed = (
                {allowed_special} if isinstance(allowed_special, str) else set(allowed_special)
            )
            unknown = allowed - self._special.keys()
            if unknown:
                raise TokenizerError(
                    f"allowed_special names tokens this tokenizer lacks: {sorted(unknown)} "
                    f"(it has {sorted(self._special)})"
                )
            mask = [n in allowed for n in self._special_names]
        return self._core.encode_special(text, mask)

    def encode_ordinary(self, text: str) -> list[int]:
        return self._core.encode_ordinary(text)

    def encode_bytes(self, data: bytes) -> list[int]:
        return self._core.encode_bytes(data)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
        if num_threads < 0:
            raise TokenizerError(f"num_threads must be >= 0, got {num_threads}")
        if not isinstance(texts, (list, tuple)):
            texts = list(texts)
        return self._core.encode_batch(texts, num_threads)

    @staticmethod
    def _as_ids(ids: Any) -> Any:
        if isinstance(ids, (list, tuple)):
            return ids
        tolist = getattr(ids, "tolist", None)
        if tolist is not None:
            ids = tolist()
            return ids if isinstance(ids, list) else [ids]
        return list(ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self._core.decode(self._as_ids(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._core.decode_bytes(self._as_ids(ids))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (special tokens give their text)."""
        if token_id < 0:
            raise TokenizerError(f"token id {token_id} is out of range [0, {self.vocab_size})")
        return self._core.token_bytes(token_id)

    def save(self, path: str | PathLike[str]) -> None:
        tokens, ranks = self._ranks_data
        data = BPEData(
            tokens, ranks, self._special, self.pattern, ids=self._id_list, encoding=self.encoding
        )
        loaders.save(data, Path(path))

    @property
    def pat_str(self) -> str:
        """The tiktoken regex equivalent to this tokenizer's pre-tokenizer."""
        return PAT_STR[self.pattern]

    def __repr__(self) -> str:
        enc = f", encoding={self.encoding!r}" if self.encoding else ""
        return f"BPETokenizer(vocab_size={self.vocab_size}, pattern={self.pattern!r}{enc})"


def split(text: str, pattern: str) -> list[str]:
    """Pre-tokenize ``text`` (the C++ splitter), for inspection and tests."""
    return _core_module().split(pattern_family(pattern), text)


__all__ = ["BPETokenizer", "split"]
