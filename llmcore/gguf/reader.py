"""Read a GGUF file's header: its metadata and the index of its tensors, over a memory map.

Layout (GGUF versions 2 and 3, little-endian): the magic ``GGUF``, a uint32 version, uint64
tensor and metadata counts, the metadata (key, uint32 type, value), then per tensor its name,
uint32 dim count, uint64 dims (innermost first, as ggml orders them), uint32 type and uint64
offset into the data section, which starts at the next multiple of ``general.alignment``.

Nothing but the header is parsed: a tensor's bytes are a view of the memory map, read when
the tensor is loaded. The map is private (copy-on-write), so torch can wrap its pages
without copying and without ever writing to the file.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmcore.errors import CheckpointError, ConfigError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# metadata value type -> (name, struct format) of the scalar types
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("uint8", "<B"),
    1: ("int8", "<b"),
    2: ("uint16", "<H"),
    3: ("int16", "<h"),
    4: ("uint32", "<I"),
    5: ("int32", "<i"),
    6: ("float32", "<f"),
    7: ("bool", "<?"),
    10: ("uint64", "<Q"),
    11: ("int64", "<q"),
    12: ("float64", "<d"),
}
_STRING, _ARRAY = 8, 9

#: GGML tensor type id -> name, for the types that can be loaded (see :mod:`llmcore.gguf.tensors`)
TENSOR_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    30: "BF16",
}
# (values per block, bytes per block) of each loadable type
BLOCKS: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file: ``shape`` in torch order (outermost first), its GGML type
    name and the byte range ``[start, stop)`` of its data in the file."""

    name: str
    shape: tuple[int, ...]
    type: str
    start: int
    stop: int


class _Cursor:
    """Reads little-endian values from the map; running off its end names what was read."""

    def __init__(self, buf: mmap.mmap, file: Path) -> None:
        self.buf, self.pos, self.file = buf, 0, file

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise CheckpointError(
                f"{self.file}: truncated GGUF file: it ends inside {what} "
                f"(offset {self.pos}, {len(self.buf)} bytes in all)"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = self.take(self.scalar("<Q", what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="surrogateescape")

    def value(self, kind: int, what: str) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind][1], what)
        if kind == _STRING:
            return self.string(what)
        if kind == _ARRAY:
            item = self.scalar("<I", what)
            n = self.scalar("<Q", what)
            if item in _SCALARS:  # one read for the whole array (scores, token types)
                fmt = _SCALARS[item][1]
                raw = self.take(n * struct.calcsize(fmt), what)
                return np.frombuffer(raw, dtype=np.dtype(fmt)).tolist()
            return [self.value(item, f"{what}[{i}]") for i in range(n)]
        raise CheckpointError(f"{self.file}: {what}: unknown metadata value type {kind}")


class GGUFFile:
    """The header of a GGUF file and its memory map (a context manager: closing unmaps it).

    Attributes:
        path: the file.
        version: 2 or 3.
        metadata: key -> value (arrays as lists).
        types: key -> the value's type name (``"uint32"``, ``"string"``, ``"array"``).
        tensors: name -> :class:`TensorInfo`, in file order.

    Raises:
        CheckpointError: not a GGUF file (magic), an unsupported version, a truncated header
            or data section, or a tensor of a type that cannot be loaded (naming it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            raise CheckpointError(f"{self.path}: cannot read GGUF file: {exc}") from None
        try:
            self._parse()
        except BaseException:
            self._map.close()
            raise

    def _parse(self) -> None:
        cur = _Cursor(self._map, self.path)
        magic = cur.take(4, "the magic")
        if magic != MAGIC:
            raise CheckpointError(
                f"{self.path}: not a GGUF file: magic {magic!r}, expected {MAGIC!r}"
            )
        self.version = cur.scalar("<I", "the version")
        if self.version not in VERSIONS:
            raise CheckpointError(
                f"{self.path}: GGUF version {self.version} is not supported; supported: "
                f"{', '.join(map(str, VERSIONS))}"
            )
        n_tensors = cur.scalar("<Q", "the tensor count")
        n_kv = cur.scalar("<Q", "the metadata count")
        self.metadata: dict[str, Any] = {}
        self.types: dict[str, str] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key {i}")
            kind = cur.scalar("<I", f"the type of metadata {key!r}")
            self.metadata[key] = cur.value(kind, f"metadata {key!r}")
            self.types[key] = {_STRING: "string", _ARRAY: "array"}.get(
                kind, _SCALARS.get(kind, ("?",))[0]
            )
        infos = [self._tensor_info(cur, i) for i in range(n_tensors)]
        align = self.get("general.alignment", int, DEFAULT_ALIGNMENT)
        if align <= 0:
            raise ConfigError(f"{self.path}: general.alignment {align} must be positive")
        base = -(-cur.pos // align) * align
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, kind, offset in infos:
            if kind not in TENSOR_TYPES:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} has GGML type {kind}, which cannot be "
                    f"loaded; loadable: {', '.join(TENSOR_TYPES.values())}"
                )
            tname = TENSOR_TYPES[kind]
            per, nbytes = BLOCKS[tname]
            if shape and shape[-1] % per:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r}: row length {shape[-1]} is not a multiple "
                    f"of the {tname} block size {per}"
                )
            start = base + offset
            stop = start + int(np.prod(shape, dtype=np.int64)) // per * nbytes
            if stop > len(self._map):
                raise CheckpointError(
                    f"{self.path}: truncated GGUF file: tensor {name!r} needs bytes "
                    f"{start}..{stop}, the file has {len(self._map)}"
                )
            self.tensors[name] = TensorInfo(name, shape, tname, start, stop)

    @staticmethod
    def _tensor_info(cur: _Cursor, i: int) -> tuple[str, tuple[int, ...], int, int]:
        name = cur.string(f"the name of tensor {i}")
        n_dims = cur.scalar("<I", f"tensor {name!r}")
        dims = [cur.scalar("<Q", f"tensor {name!r}") for _ in range(n_dims)]
        kind = cur.scalar("<I", f"tensor {name!r}")
        offset = cur.scalar("<Q", f"tensor {name!r}")
        return name, tuple(reversed(dims)), kind, offset

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """The value of metadata ``key`` checked to be a ``kind``; a missing key is
        ``default`` (or an error when none is given). Errors name the file and key."""
        if key not in self.metadata:
            if default is ...:
                raise ConfigError(f"{self.path}: metadata {key!r} is missing")
            return default
        value = self.metadata[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            want = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(
                f"{self.path}: metadata {key!r} is a {self.types.get(key)} ({value!r:.60}), "
                f"expected {want}"
            )
        return value

    def data(self, info: TensorInfo) -> np.ndarray:
        """The raw bytes of a tensor: a uint8 view of the memory map (no copy)."""
        return np.frombuffer(
            self._map, dtype=np.uint8, count=info.stop - info.start, offset=info.start
        )

    def close(self) -> None:
        """Unmap the file; views handed out by :meth:`data` must be gone by then."""
        # a view still alive (BufferError): the map goes when the last view does
        with contextlib.suppress(BufferError):
            self._map.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
