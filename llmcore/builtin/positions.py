"""Position plugins: ``learned`` (GPT-2's absolute embeddings), ``rope`` (rotary, with
linear, Llama 3, yarn or per-frequency scaling), ``alibi`` (a per-head linear bias on the
attention scores) and ``none``.

Each declares ``max_positions``, the number of positions it can encode: the length of its
table (``learned``, ``rope``), or None when it has none (``alibi``, ``none``), so that
generation knows whether a sliding-window model may run past ``block_size``.
"""

from __future__ import annotations

import torch
from torch import nn

from llmcore.builtin import rope_scaling
from llmcore.hookspecs import hookimpl


class NoPosition(nn.Module):
    """No position information (attention's causal mask is the only order signal)."""

    max_positions: int | None = None  # no table: any position works

    def __init__(self, dim: int, head_dim: int, max_seq_len: int) -> None:
        super().__init__()

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x

    def rotate(self, q, k, positions):
        return q, k


class LearnedPosition(NoPosition):
    """A trained embedding per absolute position, added to the token embeddings."""

    def __init__(self, dim: int, head_dim: int, max_seq_len: int) -> None:
        super().__init__(dim, head_dim, max_seq_len)
        self.max_positions = max_seq_len
        self.wpe = nn.Embedding(max_seq_len, dim)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x + self.wpe(positions)  # (B, T, C) + (T, C) or (B, T, C)


class RotaryPosition(NoPosition):
    """Rotary position embedding on q and k, rotating dimension pairs ``(i, i + D/2)``
    (the Hugging Face / Llama layout).

    Args:
        theta: base of the frequencies.
        scaling: optional frequency scaling, ``{"type": "linear" | "llama3" | "yarn" |
            "factors", ...}`` (see :mod:`llmcore.builtin.rope_scaling`).
    """

    def __init__(
        self,
        dim: int,
        head_dim: int,
        max_seq_len: int,
        *,
        theta: float = 10000.0,
        scaling: dict | None = None,
    ) -> None:
        super().__init__(dim, head_dim, max_seq_len)
        if head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, found {head_dim}")
        self.theta = theta
        self.scaling = dict(scaling) if scaling else None
        self.max_positions = max_seq_len  # the cos/sin tables below end there
        # fp32 throughout, as the reference implementations compute it, so logits match.
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
        )
        attention_factor = 1.0
        if self.scaling:
            inv_freq, attention_factor = rope_scaling.scale(inv_freq, self.scaling, theta)
        t = torch.arange(max_seq_len, dtype=torch.int64).float()
        freqs = torch.outer(t, inv_freq)  # (T, D/2)
        # yarn's attention factor scales cos and sin (so q.k by its square), as in HF
        self.register_buffer("cos", freqs.cos() * attention_factor, persistent=False)
        self.register_buffer("sin", freqs.sin() * attention_factor, persistent=False)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        cos = self.cos[positions]  # (T, D/2) or (B, T, D/2)
        sin = self.sin[positions]
        if cos.dim() == 3:  # per-row positions: (B, 1, T, D/2)
            cos, sin = cos[:, None], sin[:, None]
        return _rotate(q, cos, sin), _rotate(k, cos, sin)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, scaling={self.scaling}"


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)


def alibi_slopes(n_head: int) -> list[float]:
    """ALiBi's head slopes (Press et al., 2022): ``2^(-8 (h + 1) / n)`` for ``n`` a power of
    two; otherwise the slopes of the largest power of two ``p < n``, then every other slope
    of ``2 p`` heads (the odd multiples of ``-4 / p`` as exponents) for the remaining heads."""
    if n_head < 1:
        raise ValueError(f"alibi needs at least one attention head, found {n_head}")
    p = 1 << (n_head.bit_length() - 1)  # the largest power of two <= n_head
    slopes = [2.0 ** (-8.0 * (h + 1) / p) for h in range(p)]
    # the heads past p interleave between the first ones: 2^(-8 (2i + 1) / (2p))
    slopes += [2.0 ** (-8.0 * (2 * i + 1) / (2 * p)) for i in range(n_head - p)]
    return slopes


class AlibiPosition(NoPosition):
    """Attention with Linear Biases: no embedding and no rotation, but query ``i`` of head
    ``h`` scores key ``j`` with an added ``-m_h * (i - j)`` (``m_h`` from
    :func:`alibi_slopes`), so attention fades with distance. Nothing is learned and nothing
    ends at ``max_seq_len``: any length works, longer than the training length too."""

    def __init__(self, dim: int, head_dim: int, max_seq_len: int) -> None:
        super().__init__(dim, head_dim, max_seq_len)
        self._slopes: dict[tuple[int, torch.device], torch.Tensor] = {}

    def slopes(self, n_head: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``(n_head,)`` float32 slopes on ``device`` (made once per head count and device)."""
        key = (n_head, torch.device(device))
        if key not in self._slopes:
            self._slopes[key] = torch.tensor(alibi_slopes(n_head), device=device)
        return self._slopes[key]

    def score_bias(
        self, n_head: int, q_positions: torch.Tensor, k_positions: torch.Tensor
    ) -> torch.Tensor:
        """``-m_h * (q - k)``: float32, ``(1 or B, H, Tq, Tk)`` for positions ``(Tq,)`` or
        ``(B, Tq)`` and ``(Tk,)`` or ``(B, Tk)`` (see :class:`llmcore.contracts.Position`)."""
        # float before the subtraction: exact below 2^24 positions, and one pass over Tq x Tk
        q = q_positions.float().view(-1, q_positions.shape[-1])  # (B or 1, Tq)
        k = k_positions.float().view(-1, k_positions.shape[-1])  # (B or 1, Tk)
        distance = q[:, :, None] - k[:, None, :]  # (B or 1, Tq, Tk)
        m = self.slopes(n_head, distance.device)
        return distance[:, None] * -m[None, :, None, None]  # (B or 1, H, Tq, Tk)


@hookimpl
def register_positions(register):
    register("learned", LearnedPosition)
    register("rope", RotaryPosition)
    register("alibi", AlibiPosition)
    register("none", NoPosition)
