"""KV memory in slots: one preallocated ``(n_layer, S, Hkv, max_len, D)`` cache whose rows
are handed to sequences and taken back, so one long request and many short ones share it
without reallocating anything.

Every slot has its own filled length. :meth:`SlotCache.batch` gives one pass of the
model's own ``hidden_states`` a view that it uses like its :class:`~llmcore.model.KVCache`
(``update`` per layer), writing each row's new keys at that row's length, with the per-row
positions and the mask that hides what other rows filled past a row's own end. (The lean
pass of :mod:`llmcore.serve.slot_forward` reads the cache directly.)
"""

from __future__ import annotations

import torch

from llmcore.errors import GenerationError


class SlotCache:
    """Keys and values of ``slots`` rows of up to ``max_len`` positions each.

    Besides each slot's filled length, the cache remembers which token ids its keys and
    values were computed from (``held``): a slot given back keeps its contents until it is
    handed out again, so a new prompt that starts like one already in a slot (a shared
    system prompt) can take over or copy that prefix instead of computing it
    (:meth:`alloc`).
    """

    #: the shortest prefix worth reusing
    MIN_REUSE = 4

    def __init__(self, model, slots: int, max_len: int, *, prefix_cache: bool = True) -> None:
        cfg = model.config
        w = model.lm_head.weight
        shape = (cfg.n_layer, slots, cfg.kv_heads, max_len, cfg.head_size)
        self.k = torch.zeros(shape, dtype=w.dtype, device=w.device)
        self.v = torch.zeros(shape, dtype=w.dtype, device=w.device)
        self.max_len = max_len
        self.prefix_cache = prefix_cache
        self.lengths = [0] * slots
        self.busy = [False] * slots
        # the ids whose keys fill positions [0, valid) of each slot: a running slot's
        # history list (valid: its length), a free slot's as it was given back
        self.held: list[list[int]] = [[] for _ in range(slots)]
        self.valid = [0] * slots
        self._released = [0] * slots  # when each free slot was given back (older first)
        self._clock = 0
        self.reused_tokens = 0  # prompt tokens taken from the cache instead of computed

    @property
    def free(self) -> list[int]:
        return [s for s, b in enumerate(self.busy) if not b]

    def alloc(self, tokens: list[int] | None = None, reuse: bool = True) -> tuple[int, int] | None:
        """``(slot, n)``: a free slot whose first ``n`` positions already hold the keys of
        ``tokens[:n]`` (n is 0 without a reusable prefix, and always leaves the last
        token to compute); None when every slot is taken. ``tokens`` becomes the slot's
        held list (the caller appends to it as the slot fills)."""
        free = self.free
        if not free:
            return None
        src, n = self._best_prefix(tokens) if (reuse and tokens and self.prefix_cache) else (0, 0)
        if n and not self.busy[src]:
            slot = src  # a free slot that holds the prefix: take it over
        else:
            # the free slot least worth keeping: empty ones, then the longest given back
            slot = min(free, key=lambda s: (self.valid[s] > 0, self._released[s], s))
            if n:
                self.k[:, slot, :, :n] = self.k[:, src, :, :n]
                self.v[:, slot, :, :n] = self.v[:, src, :, :n]
        self.busy[slot] = True
        self.lengths[slot] = n
        self.held[slot] = tokens if tokens is not None else []
        self.reused_tokens += n
        return slot, n

    def _best_prefix(self, tokens: list[int]) -> tuple[int, int]:
        """The slot with the longest prefix in common with ``tokens`` and its length."""
        best, best_n = 0, 0
        for s in range(len(self.busy)):
            have = self.lengths[s] if self.busy[s] else self.valid[s]
            n = _common_prefix(self.held[s], tokens, min(have, len(tokens) - 1))
            if n > best_n or (n == best_n and n and not self.busy[s]):
                best, best_n = s, n
        return (best, best_n) if best_n >= self.MIN_REUSE else (0, 0)

    def release(self, slot: int) -> None:
        """Give ``slot`` back; its contents stay reusable until it is handed out again."""
        self.valid[slot] = min(self.lengths[slot], len(self.held[slot]))
        self.held[slot] = list(self.held[slot][: self.valid[slot]])
        self.lengths[slot] = 0
        self.busy[slot] = False
        self._clock += 1
        self._released[slot] = self._clock

    @property
    def used(self) -> int:
        return sum(self.busy)

    def batch(self, slots: list[int], n_new: int, counts: list[int] | None = None) -> BatchView:
        """A view for one forward pass of ``n_new`` tokens per row of ``slots``, of which
        the first ``counts[b]`` of row b are real (default: all)."""
        counts = [n_new] * len(slots) if counts is None else counts
        for s, c in zip(slots, counts):
            if self.lengths[s] + c > self.max_len:
                raise GenerationError(
                    f"KV slot {s} overflow: {self.lengths[s] + c} positions > {self.max_len}"
                )
        return BatchView(self, slots, n_new, counts)


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """How many leading ids ``a`` and ``b`` share, at most ``limit``."""
    n = 0
    for x, y in zip(a[:limit], b[:limit]):
        if x != y:
            break
        n += 1
    return n


class BatchView:
    """The rows ``slots`` of a :class:`SlotCache` for one forward pass of ``T`` tokens per
    row, of which the first ``counts[b]`` of row b are real (the rest right padding: never
    written, and its outputs are thrown away).

    ``positions`` (B, T) and ``mask`` (B, 1, T, Tk) are what the model's forward needs; its
    ``update(layer, k, v)`` writes the real keys and values and returns the rows' keys and
    values ``(B, Hkv, Tk, D)`` (gathered when the slots are not one contiguous run).
    ``length`` exists because the model advances it; the slots' lengths advance in
    :meth:`commit`.
    """

    def __init__(self, cache: SlotCache, slots: list[int], T: int, counts: list[int]) -> None:
        self.cache, self.slots, self.T, self.counts = cache, slots, T, counts
        dev = cache.k.device
        lens = [cache.lengths[s] for s in slots]
        self.lens = torch.tensor(lens, device=dev)  # (B,) where each row writes
        self.idx = torch.tensor(slots, device=dev)  # (B,)
        self.Tk = min(max(lens) + T, cache.max_len)
        # one contiguous run of slots reads as a view; otherwise gather the rows
        self.run = slots == list(range(slots[0], slots[0] + len(slots)))
        steps = torch.arange(T, device=dev)
        positions = self.lens[:, None] + steps[None, :]  # (B, T)
        keys = torch.arange(self.Tk, device=dev)
        # query t of row b sees the keys up to its own position (row b's length + t)
        self.mask = (keys[None, None, :] <= positions[:, :, None])[:, None]  # (B,1,T,Tk)
        self.positions = positions.clamp(max=cache.max_len - 1)  # padding past the end
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write the real tokens of ``k, v`` (B, Hkv, T, D) at each row's length; return
        ``(B, Hkv, Tk, D)``."""
        c = self.cache
        if self.T == 1:  # one token per row: scatter them in one indexed write
            c.k[layer, self.idx, :, self.lens] = k[:, :, 0]
            c.v[layer, self.idx, :, self.lens] = v[:, :, 0]
        else:
            for b, s in enumerate(self.slots):
                start, n = c.lengths[s], self.counts[b]
                c.k[layer, s, :, start : start + n] = k[b, :, :n]
                c.v[layer, s, :, start : start + n] = v[b, :, :n]
        if self.run:
            a, z = self.slots[0], self.slots[0] + len(self.slots)
            return c.k[layer, a:z, :, : self.Tk], c.v[layer, a:z, :, : self.Tk]
        return c.k[layer, self.idx, :, : self.Tk], c.v[layer, self.idx, :, : self.Tk]

    def commit(self) -> None:
        """Advance every row's filled length by its real tokens just written."""
        for s, n in zip(self.slots, self.counts):
            self.cache.lengths[s] += n
