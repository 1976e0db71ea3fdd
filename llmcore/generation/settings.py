"""Generation settings and prompts: keyword arguments and a config's ``generate`` section
resolved into one :class:`Settings`, prompts turned into ids, and both checked against the
model before the first token is asked for.

The engine names no plugin class: the default decoder is the one registered as
``greedy``, and it relies only on capabilities components declare:

- a sampler may offer ``check(vocab_size)`` (fail before the first step) and
  ``fused_with(following) -> sampler | None`` (one processor computing both, for speed);
- a position component declares ``max_positions``: how many positions it can encode (its
  table's length), or None when it has no table. A component that declares nothing is
  taken to end at ``block_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmcore import plugins
from llmcore.errors import GenerationError

DEFAULT_MAX_NEW_TOKENS = 200
#: The decoder registered under this name decodes when neither a call nor a config names one.
DEFAULT_DECODER = "greedy"


@dataclass
class Settings:
    """Every setting of one :func:`~llmcore.generation.generate` call, resolved."""

    max_new_tokens: int
    samplers: list
    decoder: object
    seed: int | None
    stop_ids: set[int]
    stop: list[str]
    logprobs: bool
    sliding_context: bool = False
    end_ids: list[int] = field(default_factory=list)
    #: the decoder runs the whole search itself (:class:`~llmcore.contracts.Decoder`)
    search: bool = False


def resolve_settings(
    tokenizer,
    *,
    config=None,
    max_new_tokens: int | None = None,
    samplers: Sequence | None = None,
    decoder=None,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
    stop: str | Sequence[str] | None = None,
    end_ids: Sequence[int] = (),
    eot: bool = True,
    logprobs: bool = False,
    sliding_context: bool | None = None,
) -> Settings:
    """The settings of a call: the keyword arguments, then the config's ``generate``
    section for any not given, then the defaults; checked."""
    g = getattr(config, "generate", config)
    if g is not None:
        if samplers is None or decoder is None:
            from llmcore.components import build_sampler

            chain, dec = build_sampler(config if hasattr(config, "generate") else _Wrap(g))
            samplers = chain if samplers is None else samplers
            decoder = dec if decoder is None else decoder
        max_new_tokens = g.max_new_tokens if max_new_tokens is None else max_new_tokens
        seed = g.seed if seed is None else seed
        stop = list(g.stop) if stop is None else stop
        sliding_context = g.sliding_context if sliding_context is None else sliding_context
    if decoder is None:
        decoder = plugins.create("decoder", DEFAULT_DECODER)
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise GenerationError(f"max_new_tokens must be an integer >= 0, found {max_new_tokens!r}")
    stop = [stop] if isinstance(stop, str) else list(stop or ())
    for s in stop:
        if not isinstance(s, str) or not s:
            raise GenerationError(f"stop strings must be non-empty strings, found {s!r}")
    ids = {int(i) for i in stop_ids}
    if eot and getattr(tokenizer, "eot_id", None) is not None:
        ids.add(int(tokenizer.eot_id))
    return Settings(
        max_new_tokens,
        fuse_samplers(list(samplers or ())),
        decoder,
        seed,
        ids,
        stop,
        bool(logprobs),
        bool(sliding_context),
        [int(i) for i in end_ids],
        runs_search(decoder),
    )


def fuse_samplers(chain: Sequence) -> list:
    """``chain`` with each processor merged with the one after it where it offers
    ``fused_with`` and accepts (the same results, computed faster)."""
    out: list = []
    for proc in chain:
        fuse = getattr(out[-1], "fused_with", None) if out else None
        fused = fuse(proc) if fuse is not None else None
        if fused is not None:
            out[-1] = fused
        else:
            out.append(proc)
    return out


def runs_search(decoder) -> bool:
    """Which form of :class:`~llmcore.contracts.Decoder` ``decoder`` declares: True for a
    search decoder, False for a step decoder (also when it declares nothing)."""
    declared = getattr(decoder, "runs_search", False)
    name = type(decoder).__name__
    if not isinstance(declared, bool):
        raise GenerationError(
            f"decoder {name}: runs_search must be True or False, found {declared!r}"
        )
    if declared and not callable(getattr(decoder, "search", None)):
        raise GenerationError(
            f"decoder {name} declares runs_search = True but has no "
            "search(model, prompt_ids, *, max_new_tokens, samplers, stop_ids, generator) method"
        )
    if not declared and not callable(decoder):
        raise GenerationError(
            f"decoder {name} is not callable: a step decoder is called as "
            "decoder(logits, generator) -> ids; a search decoder declares runs_search = True"
        )
    return declared


class _Wrap:
    """A Config-like holder for a bare ``generate`` section."""

    def __init__(self, g) -> None:
        self.generate = g


def prompt_ids(tokenizer, prompt) -> list[int]:
    """The ids of one prompt (text, or ids already); an empty prompt starts from the
    tokenizer's beginning-of-text token (``bos_id``, else ``eot_id``)."""
    ids = list(prompt) if not isinstance(prompt, str) else tokenizer.encode(prompt)
    if ids:
        return [int(i) for i in ids]
    start = getattr(tokenizer, "bos_id", None)
    start = tokenizer.eot_id if start is None else start
    if start is None:
        raise GenerationError(
            "the prompt is empty and the tokenizer has no beginning- or end-of-text token to start from"
        )
    return [int(start)]


def check_settings(model, s: Settings, n_prompt: int) -> None:
    """Settings against the model: samplers that know their limits, and the context."""
    for proc in s.samplers:
        if hasattr(proc, "check"):
            proc.check(model.config.vocab_size)
    check_length(model, n_prompt, s.max_new_tokens, s.sliding_context)


def check_length(model, n_prompt: int, max_new_tokens: int, sliding: bool = False) -> None:
    """Fail when ``n_prompt + max_new_tokens`` tokens do not fit the model's context."""
    cfg = model.config
    block, total = cfg.block_size, n_prompt + max_new_tokens
    if total <= block or sliding:
        return
    if cfg.sliding_window:
        # Attention only looks back `window` keys, but position tables end where they end:
        # only position components without a table can run past block_size.
        limit = getattr(getattr(model, "position", None), "max_positions", block)
        if limit is not None:
            raise GenerationError(
                f"{n_prompt} prompt + {max_new_tokens} new tokens exceed block_size={block}: "
                f"the sliding window allows longer contexts only with a position plugin "
                f"without a table ({cfg.position.name!r} positions end at block_size)"
            )
        return
    if n_prompt > block:
        raise GenerationError(
            f"the prompt has {n_prompt} tokens, longer than the model's context of {block} tokens"
        )
    raise GenerationError(
        f"a prompt of {n_prompt} tokens + max_new_tokens={max_new_tokens} exceeds the "
        f"model's context of {block} tokens; lower max_new_tokens to {max(block - n_prompt, 0)} "
        "or set generate.sliding_context to keep only the last block_size tokens"
    )
