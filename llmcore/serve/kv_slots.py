"""KV memory in slots: one preallocated ``(n_layer, S, Hkv, max_len, D)`` cache whose rows
are handed to sequences and taken back, so one long request and many short ones share it
without reallocating anything.

Every slot has its own filled length. :meth:`SlotCache.batch` gives one forward pass a
view that the model uses like its :class:`~llmcore.model.KVCache` (``update`` per layer),
writing each row's new keys at that row's length, together with the per-row positions and
the attention mask that hides what other rows filled past a row's own end.
"""

from __future__ import annotations

import torch

from llmcore.errors import GenerationError


class SlotCache:
    """Keys and values of ``slots`` rows of up to ``max_len`` positions each."""

    def __init__(self, model, slots: int, max_len: int) -> None:
        cfg = model.config
        w = model.lm_head.weight
        shape = (cfg.n_layer, slots, cfg.kv_heads, max_len, cfg.head_size)
        self.k = torch.zeros(shape, dtype=w.dtype, device=w.device)
        self.v = torch.zeros(shape, dtype=w.dtype, device=w.device)
        self.max_len = max_len
        self.lengths = [0] * slots
        self.free = list(range(slots - 1, -1, -1))  # popped from the end: slot 0 first

    def alloc(self) -> int | None:
        """A free slot, emptied; None when every slot is taken."""
        if not self.free:
            return None
        slot = self.free.pop()
        self.lengths[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        """Give ``slot`` back (its contents are overwritten by the next owner)."""
        self.lengths[slot] = 0
        self.free.append(slot)

    @property
    def used(self) -> int:
        return len(self.lengths) - len(self.free)

    def batch(self, slots: list[int], n_new: int) -> BatchView:
        """A view for one forward pass of ``n_new`` tokens per row of ``slots``."""
        for s in slots:
            if self.lengths[s] + n_new > self.max_len:
                raise GenerationError(
                    f"KV slot {s} overflow: {self.lengths[s] + n_new} positions > {self.max_len}"
                )
        return BatchView(self, slots, n_new)

    def decode_view(self, slots: list[int]) -> BatchView:
        """A one-token view of the sorted ``slots`` (see :meth:`decode_rows`)."""
        rows = self.decode_rows(slots)
        return BatchView(self, rows, 1, start=slots[0])

    def decode_rows(self, slots: list[int]) -> list[int | None]:
        """The rows of a one-token decode of the sorted ``slots``: their whole span when the
        gaps are few (a gap is a row computed and thrown away, but the span reads the
        cache as a view instead of copying every live row's keys), else just ``slots``.
        None marks a gap."""
        lo, hi = slots[0], slots[-1]
        if hi - lo + 1 > 2 * len(slots):
            return list(slots)
        live = set(slots)
        return [s if s in live else None for s in range(lo, hi + 1)]


class BatchView:
    """The rows ``slots`` of a :class:`SlotCache` for one forward pass of ``T`` tokens.

    ``positions`` (B, T) and ``mask`` (B, 1, T, Tk) are what the model's forward needs; its
    ``update(layer, k, v)`` writes and returns the rows' keys and values ``(B, Hkv, Tk, D)``.
    ``length`` exists because the model advances it; the slots' own lengths advance in
    :meth:`commit`.
    """

    def __init__(self, cache: SlotCache, rows: list[int | None], T: int, start: int = 0) -> None:
        # a None row is a gap in a span of slots: slot `start + b`, computed and ignored
        slots = [start + b if s is None else s for b, s in enumerate(rows)]
        self.cache, self.slots, self.T = cache, slots, T
        self.live = [s for s in rows if s is not None]
        dev = cache.k.device
        lens = [cache.lengths[s] for s in slots]
        # (B,) where each row writes; a finished row's slot may be full: its throw-away key
        # goes to its last position
        self.lens = torch.tensor(lens, device=dev).clamp(max=cache.max_len - 1)
        self.idx = torch.tensor(slots, device=dev)  # (B,)
        # a gap writes one throw-away key at its slot's length: a free slot is refilled from
        # 0, a slot being prefilled rewrites that position with its next chunk
        self.Tk = max(cache.lengths[s] for s in self.live) + T
        # one contiguous run of slots reads as a view; otherwise gather the rows
        self.run = slots == list(range(slots[0], slots[0] + len(slots)))
        steps = torch.arange(T, device=dev)
        self.positions = self.lens[:, None] + steps[None, :]  # (B, T)
        keys = torch.arange(self.Tk, device=dev)
        # query t of row b sees the keys up to its own position (row b's length + t)
        self.mask = (keys[None, None, :] <= self.positions[:, :, None])[:, None]  # (B,1,T,Tk)
        self.positions = self.positions.clamp(max=cache.max_len - 1)  # a gap's, past the end
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write ``k, v`` (B, Hkv, T, D) at each row's length; return ``(B, Hkv, Tk, D)``."""
        c = self.cache
        if self.T == 1:  # one token per row: scatter them in one indexed write
            c.k[layer, self.idx, :, self.lens] = k[:, :, 0]
            c.v[layer, self.idx, :, self.lens] = v[:, :, 0]
        else:
            for b, s in enumerate(self.slots):
                start = c.lengths[s]
                c.k[layer, s, :, start : start + self.T] = k[b]
                c.v[layer, s, :, start : start + self.T] = v[b]
        if self.run:
            a, z = self.slots[0], self.slots[0] + len(self.slots)
            return c.k[layer, a:z, :, : self.Tk], c.v[layer, a:z, :, : self.Tk]
        return c.k[layer, self.idx, :, : self.Tk], c.v[layer, self.idx, :, : self.Tk]

    def commit(self) -> None:
        """Advance every live row's filled length by the ``T`` tokens just written."""
        for s in self.live:
            self.cache.lengths[s] += self.T
