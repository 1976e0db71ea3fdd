"""A safetensors file as torch views of one memory map: no per-tensor read, no copy.

Format: a little-endian uint64 header length, a JSON header (tensor name -> dtype, shape,
``data_offsets`` relative to the end of the header), then the data. A tensor here is a view
of the file's pages; ``param.copy_(view)`` then reads the pages once, casting on the fly, so
loading allocates nothing beyond the parameters themselves. The map is private
(copy-on-write): torch may wrap it writable without the file ever being written. Views kept
as parameters (:meth:`SafetensorsMap.keep_mapped`) hold the map until they are freed.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import struct
from pathlib import Path

import torch

from llmcore.errors import CheckpointError

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class SafetensorsMap:
    """Tensors of one safetensors file as views of its memory map (a context manager)."""

    def __init__(self, file: Path) -> None:
        self.file = file
        try:
            with open(file, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{file}: cannot read safetensors file: {exc}") from None
        try:
            (n,) = struct.unpack("<Q", self._map[:8])
            self.header = json.loads(self._map[8 : 8 + n])
            self.header.pop("__metadata__", None)
            self._base = 8 + n
        except (struct.error, ValueError) as exc:
            self._map.close()
            raise CheckpointError(f"{file}: corrupt safetensors header: {exc}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of tensor ``name``."""
        return tuple(self._entry(name)["shape"])

    def _entry(self, name: str) -> dict:
        try:
            return self.header[name]
        except KeyError:
            raise CheckpointError(f"{self.file}: tensor {name!r} is not in the file") from None

    def view(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as a view of the map (valid until :meth:`close`)."""
        entry = self._entry(name)
        dtype = DTYPES.get(entry.get("dtype"))
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        count = 1
        for s in shape:
            count *= s
        if (
            dtype is None
            or end - begin != count * dtype.itemsize
            or self._base + end > len(self._map)
        ):
            raise CheckpointError(
                f"{self.file}: tensor {name!r}: dtype {entry.get('dtype')!r}, shape {shape} "
                f"and its bytes {begin}..{end} do not agree (or run past the file's end)"
            )
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        flat = torch.frombuffer(self._map, dtype=dtype, count=count, offset=self._base + begin)
        return flat.view(shape)

    def keep_mapped(self) -> None:
        """Views outlive this object (parameters that are the file's pages): :meth:`close`
        leaves the map to them, and it is unmapped when the last of them is freed."""
        self._kept = True

    def close(self) -> None:
        """Drop the map, unless views were kept (:meth:`keep_mapped`)."""
        if getattr(self, "_kept", False):
            return  # torch's views hold the mmap object; unmapping now would pull their pages
        # a view still alive (BufferError): the map goes with the last view
        with contextlib.suppress(BufferError):
            self._map.close()

    def __enter__(self) -> SafetensorsMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
