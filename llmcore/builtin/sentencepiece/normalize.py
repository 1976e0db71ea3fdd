"""SentencePiece's normalizer: the precompiled character map and the whitespace rules.

The character map of a ``tokenizer.model`` (``NormalizerSpec.precompiled_charsmap``, e.g.
NFKC) is a Darts double-array trie over UTF-8 bytes followed by the replacement strings:
at each position the longest matching key is replaced, else one character is copied. Spaces
then become ``▁`` (U+2581), runs of spaces collapse and a ``▁`` is put in front, each as the
model's options say. User-defined pieces are matched first and copied untouched.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

from llmcore.errors import TokenizerError

SPACE = "\u2581".encode()  # ▁, the piece text of a space
REPLACEMENT = "\ufffd".encode()
_SPACES = re.compile(b" +")


class CharsMap:
    """The precompiled character map: longest-prefix replacement over UTF-8 bytes."""

    def __init__(self, blob: bytes, source: str = "") -> None:
        if len(blob) < 4:
            raise TokenizerError(f"{source}: precompiled_charsmap is {len(blob)} bytes (< 4)")
        (trie_size,) = struct.unpack_from("<I", blob)
        if trie_size % 4 or 4 + trie_size > len(blob):
            raise TokenizerError(f"{source}: precompiled_charsmap trie size {trie_size} is bad")
        self._units = struct.unpack_from(f"<{trie_size // 4}I", blob, 4)
        self._strings = blob[4 + trie_size :]

    def longest(self, data: bytes, pos: int) -> tuple[int, bytes] | None:
        """``(bytes matched, replacement)`` of the longest key at ``data[pos:]``, or None."""
        units = self._units
        node = (units[0] >> 10) << ((units[0] & 512) >> 6)
        best: tuple[int, bytes] | None = None
        for i in range(pos, len(data)):
            c = data[i]
            node ^= c
            if node >= len(units):
                break
            unit = units[node]
            if unit & 0x800000FF != c:  # the label: this byte does not continue a key
                break
            node ^= (unit >> 10) << ((unit & 512) >> 6)
            if unit >> 8 & 1:  # a key ends here: the leaf holds the replacement's offset
                start = units[node] & 0x7FFFFFFF
                end = self._strings.index(b"\0", start)
                best = (i + 1 - pos, self._strings[start:end])
        return best


def _char_len(data: bytes, pos: int) -> int:
    """The length of the valid UTF-8 character at ``pos``, or 0 for a malformed byte."""
    b = data[pos]
    n = 1 if b < 0x80 else 2 if 0xC2 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4
    if b >= 0xF5 or (b >= 0x80 and b < 0xC2):
        return 0
    try:
        data[pos : pos + n].decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return n


class Normalizer:
    """Text -> the normalized UTF-8 bytes that SentencePiece models segment."""

    def __init__(
        self,
        charsmap: bytes,
        user_defined: Iterable[bytes],
        *,
        add_dummy_prefix: bool,
        remove_extra_whitespaces: bool,
        escape_whitespaces: bool,
        treat_whitespace_as_suffix: bool = False,
        prefix_unless_space: bool = False,
        source: str = "",
    ) -> None:
        self._map = CharsMap(charsmap, source) if charsmap else None
        self._user = sorted(set(user_defined), key=len, reverse=True)
        self.add_dummy_prefix = add_dummy_prefix
        self.remove_extra = remove_extra_whitespaces
        self.escape = escape_whitespaces
        self.suffix = treat_whitespace_as_suffix
        # Hugging Face's Metaspace adds no ▁ in front of text that starts with a space
        self.prefix_unless_space = prefix_unless_space

    def _prefix(self, data: bytes, pos: int) -> tuple[bytes, int]:
        for u in self._user:  # user-defined pieces are never normalized
            if data.startswith(u, pos):
                return u, len(u)
        if self._map is not None:
            hit = self._map.longest(data, pos)
            if hit is not None:
                return hit[1], hit[0]
        n = _char_len(data, pos)
        return (REPLACEMENT, 1) if n == 0 else (data[pos : pos + n], n)

    def _plain(self, text: str) -> bytes | None:
        """The same as :meth:`__call__` without a character map or user-defined pieces, with
        string operations (None for text with lone surrogates, which the slow path maps)."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            return None
        if self.remove_extra:
            data = _SPACES.sub(b" ", data).strip(b" ")
        if not data:
            return b""
        space = SPACE if self.escape else b" "
        if self.escape:
            data = data.replace(b" ", SPACE)
        prefix = self.add_dummy_prefix and not self.suffix
        if prefix and self.prefix_unless_space and data.startswith(space):
            prefix = False
        if prefix:
            data = space + data
        if self.add_dummy_prefix and self.suffix:
            data += space
        return data

    def __call__(self, text: str) -> bytes:
        """The normalized bytes of ``text`` (empty when it is only whitespace)."""
        if self._map is None and not self._user:
            plain = self._plain(text)
            if plain is not None:
                return plain
        data = text.encode("utf-8", errors="surrogatepass")
        pos = 0
        if self.remove_extra:
            while pos < len(data):
                piece, n = self._prefix(data, pos)
                if piece != b" ":
                    break
                pos += n
        if pos >= len(data):
            return b""
        space = SPACE if self.escape else b" "
        prefix = self.add_dummy_prefix and not self.suffix
        if prefix and self.prefix_unless_space and data.startswith(b" ", pos):
            prefix = False
        out = bytearray(space if prefix else b"")
        prev_space = self.remove_extra
        while pos < len(data):
            piece, n = self._prefix(data, pos)
            pos += n
            if prev_space:
                piece = piece.lstrip(b" ")
            if piece:
                out += piece.replace(b" ", SPACE) if self.escape else piece
                prev_space = piece.endswith(b" ")
            prev_space = prev_space and self.remove_extra
        if self.remove_extra:
            while out.endswith(space):
                del out[len(out) - len(space) :]
        if self.add_dummy_prefix and self.suffix:
            out += space
        return bytes(out)
