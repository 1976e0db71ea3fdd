"""BPETokenizer: byte-level BPE with tiktoken-identical ids, its hot loops in llmcore.ops.bpe."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from llmcore.errors import TokenizerError
from llmcore.ops import bpe as ops
from llmcore.tokenizers import BYTE_LEVEL_BPE, Vocabulary, read_vocabulary
from llmcore.tokenizers.pretokenizers import cpp_splitter
from llmcore.tokenizers.saved import write_bpe
from llmcore.tokenizers.tiktoken_ranks import ENDOFTEXT

from .regex_core import RegexCore

#: Encodings whose files ship with llmcore, so ``encoding=`` alone is enough.
BUNDLED = ("gpt2", "r50k_base")


def _bundled(encoding: str | None) -> Path | None:
    if encoding not in BUNDLED:
        return None
    from llmcore.datasets import tinyshakespeare_path

    return tinyshakespeare_path().parent / "tokenizers" / "gpt2"


def _core_of(data: Vocabulary, specials: dict[str, int]) -> tuple[str, Any]:
    """``(pattern, core)``: the C++ core where a C++ splitter reproduces the pre-tokenizer
    (a tiktoken family, or a llama.cpp regex sequence with a hand-written splitter), else the
    exact regex fallback (:mod:`.regex_core`). Both match added tokens in any text and drop
    single bytes the vocabulary lacks where its file asks for that (as Hugging Face
    tokenizers does)."""
    regexes = data.extra.get("split_regexes")
    added = data.extra.get("added_tokens") or {}
    drops = data.extra.get("missing_bytes") == "drop"
    name = str(data.pattern)
    splitter = ops.pattern_family(name) if regexes is None else cpp_splitter(name, tuple(regexes))
    if splitter is not None:
        core = ops.new_core(data.tokens, data.ranks, data.ids, specials, splitter, added, drops)
        return (name if regexes is not None else splitter), core
    core = RegexCore(data.tokens, data.ranks, data.ids, specials, regexes, added)
    return name, core


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
    #: the vocabulary kinds :meth:`from_vocabulary` builds from
    reads = (BYTE_LEVEL_BPE,)

    def __init__(
        self,
        path: str | PathLike[str] | None = None,
        encoding: str | None = None,
        *,
        pattern: str | None = None,
        special_tokens: dict[str, int] | None = None,
        _data: Vocabulary | None = None,
    ) -> None:
        if _data is None:
            if path is None:
                path = _bundled(encoding)
            if path is None:
                raise TokenizerError(
                    "bpe tokenizer: pass path= (a rank file, tokenizer.json or folder); "
                    f"encodings bundled with llmcore: {', '.join(BUNDLED)}"
                )
            _data = read_vocabulary(path, encoding, pattern, special_tokens)
        if _data.kind != BYTE_LEVEL_BPE:
            raise TokenizerError(
                f"{_data.source}: a {_data.kind} vocabulary is not byte-level BPE; load it "
                "with llmcore.load_tokenizer, which picks the tokenizer that reads it"
            )
        specials = dict(_data.special_tokens)
        self.encoding = _data.encoding
        self.pattern, self._core = _core_of(_data, specials)
        self._special_names = [k for k, _ in sorted(specials.items(), key=lambda kv: kv[1])]
        self._special = specials
        x = _data.extra
        #: the model's bos/eos ids and whether ``encode(..., add_special=True)`` adds them
        #: (``add_bos_token``/``add_eos_token`` of its tokenizer_config.json)
        self.bos_id: int | None = x.get("bos_id")
        self.eos_id: int | None = x.get("eos_id")
        self.add_bos = bool(x.get("add_bos")) and self.bos_id is not None
        self.add_eos = bool(x.get("add_eos")) and self.eos_id is not None
        # kept for vocabulary() and save(); the core holds its own copy
        self._vocab = Vocabulary(
            _data.tokens,
            _data.ranks,
            specials,
            self.pattern,
            _data.ids,
            encoding=self.encoding,
            extra=dict(_data.extra),
        )

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | PathLike[str], encoding: str | None = None, **kw: Any
    ) -> BPETokenizer:
        """Load any of the four formats (see the class docstring)."""
        return cls(path=path, encoding=encoding, **kw)

    @classmethod
    def from_vocabulary(cls, vocab: Vocabulary) -> BPETokenizer:
        """Build from a byte-level BPE vocabulary read by :mod:`llmcore.tokenizers`."""
        return cls(_data=vocab)

    @classmethod
    def from_ranks(
        cls,
        mergeable_ranks: dict[bytes, int],
        pattern: str,
        special_tokens: dict[str, int] | None = None,
    ) -> BPETokenizer:
        """Build from a tiktoken-style ``{token bytes: rank}`` mapping."""
        fam = ops.pattern_family(pattern)
        data = Vocabulary(
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

    def encode(
        self, text: str, allowed_special: Iterable[str] | str = (), *, add_special: bool = False
    ) -> list[int]:
        """Ids of ``text``; ``add_special=True`` adds bos/eos where :attr:`add_bos` /
        :attr:`add_eos` say (the model's files ask for it)."""
        ids = self._encode(text, allowed_special)
        if add_special and self.add_bos:
            ids.insert(0, self.bos_id)
        if add_special and self.add_eos:
            ids.append(self.eos_id)
        return ids

    def _encode(self, text: str, allowed_special: Iterable[str] | str) -> list[int]:
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

    def vocabulary(self) -> Vocabulary:
        """Every ordinary token's bytes, merge rank and id, the special tokens and pattern."""
        return self._vocab

    def save(self, path: str | PathLike[str]) -> None:
        write_bpe(Path(path), self.name, self._vocab)

    @property
    def pat_str(self) -> str:
        """The tiktoken regex equivalent to this tokenizer's pre-tokenizer."""
        if self.pattern not in ops.PAT_STR:
            raise TokenizerError(
                f"pre-tokenizer {self.pattern!r} is a sequence of regexes, not one tiktoken "
                f"regex: {self._vocab.extra.get('split_regexes')}"
            )
        return ops.PAT_STR[self.pattern]

    def __repr__(self) -> str:
        enc = f", encoding={self.encoding!r}" if self.encoding else ""
        return f"BPETokenizer(vocab_size={self.vocab_size}, pattern={self.pattern!r}{enc})"


__all__ = ["BPETokenizer"]
