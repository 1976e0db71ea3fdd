"""The contracts every component kind meets.

llmcore's core never imports an implementation: it asks the plugin manager for a registered
name and relies only on the protocols below. Tensors are ``torch.Tensor``; shapes use
B = batch, T = sequence, C = model width, H = query heads, Hkv = key/value heads,
D = head dim, V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

#: The component kinds, each with one hook in :mod:`llmcore.hookspecs`.
KINDS: tuple[str, ...] = (
    "tokenizer",
    "attention",
    "norm",
    "mlp",
    "position",
    "optimizer",
    "schedule",
    "sampler",
    "decoder",
    "logger",
    "reward",
    "adapter",
)


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids.

    A tokenizer plugin registers a class (or factory) that builds a tokenizer from keyword
    params. Tokenizers that learn their vocabulary from text (``char``) also offer
    ``train(texts, **params)`` as a classmethod; every tokenizer can ``save(path)`` into a
    folder and be rebuilt by the class-level ``load(path)``.
    """

    name: str

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        ...

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special-token text -> id (for example ``{"<|endoftext|>": 50256}``)."""
        ...

    @property
    def eot_id(self) -> int | None:
        """The end-of-text id that separates documents, or None when there is none."""
        ...

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Encode ``text``. Special-token text is ordinary text unless listed in
        ``allowed_special`` (a set of strings, or ``"all"``)."""
        ...

    def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
        """Encode many texts; ``num_threads=0`` uses every core. Same ids as ``encode``."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; invalid UTF-8 is replaced with U+FFFD."""
        ...

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Decode ids to the exact bytes they stand for."""
        ...

    def save(self, path: str | PathLike[str]) -> None:
        """Write the tokenizer into the folder ``path`` (created if needed)."""
        ...


class Attention(Protocol):
    """Scaled dot-product attention: ``softmax(q k^T * scale + mask) v``.

    Args:
        q: ``(B, H, Tq, D)``.
        k, v: ``(B, Hkv, Tk, D)`` with ``H % Hkv == 0`` (grouped-query attention: query
            head ``h`` reads key/value head ``h // (H // Hkv)``) and ``Tq <= Tk``.
        causal: query ``i`` sees keys ``j <= i + (Tk - Tq)`` (bottom-right aligned, so a
            single decode query sees the whole cache).
        scale: multiplies ``q k^T``; None means ``1 / sqrt(D)``.
        mask: optional, broadcastable to ``(B, H, Tq, Tk)``: a bool tensor (True = may
            attend) or an additive float tensor. Combined with ``causal``.
        window: optional sliding window: query at position p sees keys in
            ``(p - window, p]``.

    Returns:
        ``(B, H, Tq, D)`` in the dtype of ``q``.
    """

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool = True,
        scale: float | None = None,
        mask: torch.Tensor | None = None,
        window: int | None = None,
    ) -> torch.Tensor: ...


class NormFactory(Protocol):
    """Builds a normalisation layer over the last dimension: ``(x: (..., dim)) -> (..., dim)``."""

    def __call__(self, dim: int, *, eps: float = ..., bias: bool = ...) -> nn.Module: ...


class MLPFactory(Protocol):
    """Builds the feed-forward block: ``(x: (B, T, C)) -> (B, T, C)``.

    ``hidden_dim`` None lets the plugin choose its customary width.
    """

    def __call__(
        self, dim: int, *, hidden_dim: int | None = None, bias: bool = ...
    ) -> nn.Module: ...


class Position(Protocol):
    """Position information, either added to the embeddings or rotated into q and k.

    Built as ``factory(dim=C, head_dim=D, max_seq_len=T_max, **params)``; an ``nn.Module``.
    """

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Return ``x`` (B, T, C) with absolute positions ``positions`` (T,) or (B, T) added
        (or unchanged for relative schemes)."""
        ...

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``q`` (B, H, T, D) and ``k`` (B, Hkv, T, D) with positions applied (or
        unchanged for absolute schemes)."""
        ...


class OptimizerFactory(Protocol):
    """Builds an optimizer: ``(named_params, **params) -> torch.optim.Optimizer``.

    ``named_params`` yields ``(name, parameter)`` pairs of trainable parameters, so a
    factory can decide per parameter (for example weight decay only on 2-D weights).
    """

    def __call__(
        self, named_params: Iterable[tuple[str, nn.Parameter]], **params: Any
    ) -> torch.optim.Optimizer: ...


class ScheduleFactory(Protocol):
    """Builds a learning-rate schedule: ``(optimizer, **params) -> LRScheduler``.

    The scheduler is stepped once per optimizer step, after ``optimizer.step()``.
    """

    def __call__(
        self, optimizer: torch.optim.Optimizer, **params: Any
    ) -> torch.optim.lr_scheduler.LRScheduler: ...


class Sampler(Protocol):
    """A logits processor, in Hugging Face's argument order.

    Args:
        input_ids: ``(B, T)`` long, every token so far (prompt and generated).
        logits: ``(B, V)`` float scores for the next token.

    Returns:
        ``(B, V)`` processed scores; ``-inf`` removes a token. May modify ``logits`` in
        place and return it.
    """

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor: ...


class Decoder(Protocol):
    """The final choice of the next token, in one of two forms; a decoder declares its form
    with the class attribute ``runs_search``.

    **Step decoder** (``runs_search = False``; a decoder without the attribute, even a plain
    function, is one): the engine runs the model and calls the decoder once per step.

    Args:
        logits: ``(B, V)`` processed scores.
        generator: the ``torch.Generator`` that makes sampling reproducible.

    Returns:
        ``(B,)`` long ids.

    **Search decoder** (``runs_search = True``, such as ``beam``): the decoder runs the whole
    search for one prompt itself, so it may keep several hypotheses per prompt. The engine
    calls :meth:`search` once per prompt, in eval mode under ``torch.inference_mode()``,
    instead of calling the decoder per step; it still cuts the returned ids at stop strings
    and end markers.
    """

    runs_search: bool = False

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

    def search(
        self,
        model: nn.Module,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        samplers: Sequence[Sampler],
        stop_ids: set[int],
        generator: torch.Generator,
    ) -> tuple[list[int], float | None]:
        """Search decoders only: the new ids of the best continuation of ``prompt_ids``
        (at most ``max_new_tokens``; a stop id ends it and is not included) and its score
        (None when the search has none).

        ``model`` is a :class:`~llmcore.model.Transformer` (``new_cache``,
        ``hidden_states``, ``lm_head``); ``samplers`` process the scores before the choice,
        as in the step loop.
        """
        ...


class Logger(Protocol):
    """A metric sink. Built as ``factory(run_dir=..., **params)``."""

    def log(self, metrics: dict[str, Any]) -> None:
        """Record one step's metrics (``step`` is always present)."""
        ...

    def close(self) -> None:
        """Flush and release resources at the end of a run."""
        ...


class RewardFunction(Protocol):
    """Scores finished generations for reinforcement learning (PPO).

    Built as ``factory(**params)``; called with the prompts and the generated responses
    (text), returns one finite float per pair.
    """

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Sequence[float]: ...


class Adapter(Protocol):
    """Parameter-efficient fine-tuning that wraps a model's layers (for example LoRA).

    Built as ``factory(**params)``; ``apply(model)`` adds the adapter's trainable parameters,
    freezes the rest, and returns the model; ``merge(model)`` folds the adapter into the base
    weights and returns the plain model.
    """

    def apply(self, model: nn.Module) -> nn.Module: ...

    def merge(self, model: nn.Module) -> nn.Module: ...
