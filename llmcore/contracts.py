"""The contracts every component kind meets.

llmcore's core never imports an implementation: it asks the plugin manager for a registered
name and relies only on the protocols below. Tensors are ``torch.Tensor``; shapes use
B = batch, T = sequence, C = model width, H = query heads, Hkv = key/value heads,
D = head dim, V = vocabulary.

:data:`COMPONENT_KINDS`, at the end, is the one table of kinds: the plugin hooks, config
validation and the conformance checks of :mod:`llmcore.testing` are all derived from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from llmcore.tokenizers.vocab import Vocabulary


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids.

    A tokenizer plugin registers a class (or factory) that builds a tokenizer from keyword
    params. Every tokenizer can ``save(path)`` into a folder (whose ``llmcore-tokenizer.json``
    marker gives ``name`` as its ``type``) and be rebuilt by the class-level ``load(path)``.

    Class-level, optional:

    * ``learns_from_data = True`` with a classmethod ``train(texts, **params)``: the
      tokenizer is trained on a run's data when its config gives no params or only params of
      ``train`` (a required one left out is a ConfigError naming ``tokenizer.<param>``).
    * ``reads``: the :class:`~llmcore.tokenizers.vocab.Vocabulary` kinds (for example
      ``llmcore.tokenizers.BYTE_LEVEL_BPE``) that the classmethod ``from_vocabulary(vocab)``
      builds from; ``llmcore.load_tokenizer`` uses it for tiktoken, tokenizer.json and
      GPT-2 files, which name no plugin.
    """

    #: the registered name, written into saved folders
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

    def vocabulary(self) -> Vocabulary:
        """What every id stands for, as exporters write it: the ordinary tokens' bytes, merge
        ranks and ids, the special tokens, the pre-tokenizer pattern and the vocabulary kind
        (byte-level BPE, or whole characters). The tokenizer must not be changed through it."""
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

    Other score functions (linear, sigmoid, ... attention) meet the contract too: what it
    fixes is the shapes, which keys and key/value heads each query reads, and that the last
    queries against a cache give what the full pass gives. An implementation that computes
    exactly the softmax formula above declares ``standard = True`` (an attribute of its
    factory or of what the factory builds); :func:`llmcore.testing.check_attention` then also
    compares its values with the formula. Another that adds an additive float ``mask`` to its
    scores as the formula does declares ``takes_score_bias = True``: only such plugins can
    run a position that biases the scores (``Position.score_bias``, ALiBi).
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
    """Position information: added to the embeddings, rotated into q and k, or added to
    the attention scores.

    Built as ``factory(dim=C, head_dim=D, max_seq_len=T_max, **params)``; an ``nn.Module``.

    A scheme that biases the scores (ALiBi) also has the optional method
    ``score_bias(n_head, q_positions, k_positions) -> Tensor``: the additive bias, float,
    broadcastable to ``(B, H, Tq, Tk)``, for queries at ``q_positions`` ``(Tq,)`` or
    ``(B, Tq)`` over keys at ``k_positions`` ``(Tk,)`` or ``(B, Tk)``. The model adds it to
    the ``mask`` of every attention call (cached and batched decode included), so the
    attention plugin must take an additive float mask: one that declares ``standard = True``
    or ``takes_score_bias = True`` (see :class:`Attention`); a model built with any other
    is refused. It is added before the causal mask hides the later keys, so it need not
    hide them itself.
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


class QuantizedLinearFactory(Protocol):
    """Builds an inference-only linear layer over weights held in a quantized block format.

    Registered under the format's GGUF type name (``"q8_0"``, ``"q4_k"``); a GGUF file loaded
    with ``llmcore.load(path, quantized=True)`` gets one for every matrix stored in a
    registered format.

    Args:
        blocks: ``(out_features, row_bytes)`` uint8 tensor of the raw blocks, row after row
            (possibly a view of the file's memory map: never written to).
        in_features, out_features: the weight's shape ``(out_features, in_features)``.
        bias: optional ``(out_features,)`` float tensor.

    Returns:
        an ``nn.Module`` mapping ``(..., in_features)`` to ``(..., out_features)`` in the
        input's dtype, whose ``weight`` attribute has ``dtype``, ``device``, ``shape`` and
        ``dequantize()`` (the dense weight), and which refuses to run with gradients.
    """

    def __call__(
        self,
        blocks: torch.Tensor,
        in_features: int,
        out_features: int,
        bias: torch.Tensor | None = None,
    ) -> nn.Module: ...


@dataclass(frozen=True)
class ComponentKind:
    """One kind of component: how plugins register it and how llmcore builds it.

    Attributes:
        name: the kind, as ``llmcore.create(kind, ...)`` and error messages spell it.
        hook: the hook of :mod:`llmcore.hookspecs` through which plugins register it.
        protocol: the contract. For norm, mlp, optimizer and schedule, whose products are
            plain torch objects, it is the contract of the factory; otherwise of what the
            factory builds.
        given: the keyword arguments llmcore itself passes to every factory of the kind
            (the model's width, the parameters to optimise, ...). A config entry cannot set
            them; everything else in the entry is passed on as the plugin's own params.
        check: the name of the conformance check in :mod:`llmcore.testing` run by
            ``check_component(kind, factory)``, or None where there is none. A name, not the
            function, so that this module depends on torch only.
    """

    name: str
    hook: str
    protocol: type
    given: tuple[str, ...] = ()
    check: str | None = None


#: The one table of component kinds, by name.
COMPONENT_KINDS: dict[str, ComponentKind] = {
    k.name: k
    for k in (
        ComponentKind("tokenizer", "register_tokenizers", Tokenizer, (), "check_tokenizer_class"),
        ComponentKind("attention", "register_attentions", Attention, (), "check_attention"),
        ComponentKind("norm", "register_norms", NormFactory, ("dim", "bias"), "check_norm"),
        ComponentKind(
            "mlp", "register_mlps", MLPFactory, ("dim", "hidden_dim", "bias"), "check_mlp"
        ),
        ComponentKind(
            "position",
            "register_positions",
            Position,
            ("dim", "head_dim", "max_seq_len"),
            "check_position",
        ),
        ComponentKind(
            "optimizer",
            "register_optimizers",
            OptimizerFactory,
            ("named_params",),
            "check_optimizer",
        ),
        ComponentKind(
            "schedule", "register_schedules", ScheduleFactory, ("optimizer",), "check_schedule"
        ),
        ComponentKind("sampler", "register_samplers", Sampler, (), "check_sampler"),
        ComponentKind("decoder", "register_decoders", Decoder, (), "check_decoder"),
        ComponentKind("logger", "register_loggers", Logger, ("run_dir",), "check_logger"),
        ComponentKind("reward", "register_rewards", RewardFunction, (), "check_reward"),
        ComponentKind("adapter", "register_adapters", Adapter, ()),
        ComponentKind(
            "quantized_linear",
            "register_quantized_linears",
            QuantizedLinearFactory,
            ("blocks", "in_features", "out_features", "bias"),
            "check_quantized_linear",
        ),
    )
}

#: The kind names, in the table's order.
KINDS: tuple[str, ...] = tuple(COMPONENT_KINDS)
