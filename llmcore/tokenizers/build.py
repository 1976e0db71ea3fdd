"""Building the configured tokenizer: from its params, or trained on the run's data.

A tokenizer class with ``learns_from_data = True`` is trained (``cls.train(texts, **params)``)
when its config gives no params or only params of ``train``; otherwise it is built as
``cls(**params)`` (for example from a vocabulary file). A missing required ``train`` param is
a :class:`~llmcore.errors.ConfigError` naming ``tokenizer.<param>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from llmcore import plugins
from llmcore.errors import ConfigError, PluginError

from .vocab import BYTE_LEVEL_BPE


def _params(fn: Callable[..., Any], skip: int) -> tuple[list[inspect.Parameter], bool] | None:
    """The named params of ``fn`` after its first ``skip`` positional ones, and whether it
    takes ``**kwargs``; None when it has no readable signature."""
    try:
        params = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _accepts(fn: Callable[..., Any], skip: int, keys: Iterable[str]) -> bool:
    found = _params(fn, skip)
    if found is None:
        return True
    named, var_kw = found
    return var_kw or set(keys) <= {p.name for p in named}


def trains_on_data(cls: Any, params: dict[str, Any]) -> bool:
    """Whether the config ``params`` ask to train ``cls`` on the data rather than build it."""
    if not getattr(cls, "learns_from_data", False):
        return False
    if not params:
        return True
    # train(texts, ...): skip the data argument (a classmethod's cls is already bound)
    return _accepts(cls.train, 1, params) and not _accepts(cls, 0, params)


def missing_train_params(cls: Any, params: dict[str, Any]) -> list[str]:
    """The required params of ``cls.train`` (after the data) that ``params`` leaves out."""
    found = _params(cls.train, 1)
    if found is None:
        return []
    return [p.name for p in found[0] if p.default is p.empty and p.name not in params]


def check_train_params(name: str, cls: Any, params: dict[str, Any]) -> None:
    """ConfigError naming ``tokenizer.<param>`` for each required train param not set."""
    missing = missing_train_params(cls, params)
    if not missing:
        return
    fields = ", ".join(f"tokenizer.{m}" for m in missing)
    example = 4096 if missing[0] == "vocab_size" else "..."
    msg = (
        f"{fields}: tokenizer {name!r} is trained on the run's data and needs {fields} "
        f"(for example --set tokenizer.{missing[0]}={example})"
    )
    found = _params(cls, 0)
    loaders = [p.name for p in found[0] if not p.name.startswith("_")] if found else []
    if loaders:
        msg += ", or build it from an existing vocabulary with " + ", ".join(
            f"tokenizer.{p}" for p in loaders
        )
    raise ConfigError(msg)


def _tokenizer_class(name: str) -> Any:
    try:
        return plugins.factory("tokenizer", name)
    except PluginError as exc:
        raise ConfigError(f"tokenizer: {exc}") from None


def validate_tokenizer(name: str, params: dict[str, Any], where: str = "tokenizer") -> None:
    """ConfigError when the ``tokenizer`` section names an unknown plugin, an unknown param,
    or (for one trained on the data) leaves out a required train param."""
    from llmcore.components import check_entry
    from llmcore.config import Component

    cls = _tokenizer_class(name)
    trains = trains_on_data(cls, params)
    check_entry("tokenizer", Component(name, params), where, cls.train if trains else None)
    if trains:
        check_train_params(name, cls, params)


def tokenizer_from_config(name: str, params: dict[str, Any], texts: Callable[[], list[str]]) -> Any:
    """The tokenizer ``name`` built from ``params``, or trained on ``texts()`` (called only
    when training, so the data is read only then)."""
    cls = _tokenizer_class(name)
    if trains_on_data(cls, params):
        check_train_params(name, cls, params)
        return cls.train(texts(), **params)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"tokenizer: {name!r} rejected its params {params}: {exc}") from None


def train_tokenizer(
    files_or_iterable: Iterable[Any],
    vocab_size: int,
    pattern: str = "cl100k_base",
    special_tokens: Iterable[str] = (),
    **params: Any,
) -> Any:
    """Train a byte-level BPE tokenizer on files or an iterable of texts, with the registered
    tokenizer that reads byte-level BPE vocabularies."""
    from .load import tokenizer_class_for

    cls = tokenizer_class_for(BYTE_LEVEL_BPE)
    return cls.train(
        files_or_iterable,
        vocab_size,
        pattern=pattern,
        special_tokens=tuple(special_tokens),
        **params,
    )
