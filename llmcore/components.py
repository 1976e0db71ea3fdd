"""Building components from config entries through the plugin manager.

A config entry (``model.norm``, ``train.optimizer``, ...) names a registered component and
its params. Each entry is checked against its plugin once: :func:`validate_components` checks
every entry of a config before a run starts, and :func:`create` checks only an entry that was
not checked before. What llmcore itself passes to a factory (and an entry therefore cannot
set) comes from :data:`llmcore.contracts.COMPONENT_KINDS`. Errors name the config file, the
field (``train.optimizer.lr``), the plugin and what would be valid.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from llmcore import plugins
from llmcore.config import Component, Config
from llmcore.errors import ConfigError, LLMCoreError, PluginError
from llmcore.tokenizers import validate_tokenizer


def config_entries(cfg: Config) -> Iterator[tuple[str, str, Component]]:
    """Every component entry of ``cfg`` as ``(field, kind, entry)``."""
    m, t, g, ft = cfg.model, cfg.train, cfg.generate, cfg.finetune
    yield "model.attention", "attention", m.attention
    yield "model.norm", "norm", m.norm
    yield "model.mlp", "mlp", m.mlp
    yield "model.position", "position", m.position
    yield "tokenizer", "tokenizer", Component(cfg.tokenizer.name, cfg.tokenizer.params)
    yield "train.optimizer", "optimizer", t.optimizer
    yield "train.schedule", "schedule", t.schedule
    for i, comp in enumerate(t.loggers):
        yield f"train.loggers[{i}]", "logger", comp
    for i, comp in enumerate(g.samplers):
        yield f"generate.samplers[{i}]", "sampler", comp
    yield "generate.decoder", "decoder", g.decoder
    if ft.adapter is not None:
        yield "finetune.adapter", "adapter", ft.adapter
    if ft.ppo.reward is not None:
        yield "finetune.ppo.reward", "reward", ft.ppo.reward
    for i, comp in enumerate(ft.metrics):
        yield f"finetune.metrics[{i}]", "reward", comp


def validate_components(cfg: Config) -> None:
    """Check every component name and param of ``cfg`` against the registered plugins.

    Raises:
        ConfigError: naming the config file (``cfg.source``), the field, the plugin and the
            valid names or params.
    """
    prefix = f"{cfg.source}: " if cfg.source else ""
    for where, kind, comp in config_entries(cfg):
        if kind == "tokenizer":  # trained from the data or built: its params differ
            validate_tokenizer(comp.name, comp.params, prefix + where)
        else:
            check_entry(kind, comp, prefix + where)


def check_entry(kind: str, comp: Component, where: str, factory: Any = None) -> plugins.Provider:
    """The provider of config entry ``comp`` (at field ``where``) after checking its params
    against ``factory`` (default: the registered factory; a tokenizer trained on the run's
    data is fed to its ``train`` instead).

    The param check runs once per entry: the registry remembers the entries it accepted,
    so building the same entry again (a norm in every block) only looks the name up.

    Raises:
        ConfigError: unknown name, unknown param, or a param that llmcore itself passes.
    """
    reg = plugins.registry()
    try:
        provider = reg.get(kind, comp.name)
    except PluginError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    key = (kind, comp.name, frozenset(comp.params))
    if key not in reg.accepted_entries:
        _check_params(provider, comp, where, factory or provider.factory)
        reg.accepted_entries.add(key)
    return provider


def _check_params(provider: plugins.Provider, comp: Component, where: str, factory: Any) -> None:
    kind = provider.kind
    reserved = plugins.component_kind(kind).given
    names = _keyword_params(factory)
    allowed = [n for n in names or () if n not in reserved]
    about = f"{kind} {comp.name!r} (plugin {provider.plugin!r})"
    for key in comp.params:
        if key in reserved:
            raise ConfigError(
                f"{where}.{key}: set by llmcore for {kind} {comp.name!r}, not a config param "
                f"(plugin {provider.plugin!r}); its params: {', '.join(allowed) or '(none)'}"
            )
        if names is not None and key not in names:
            raise ConfigError(
                f"{where}.{key}: unknown param of {about}; "
                f"its params: {', '.join(allowed) or '(none)'}"
            )


def _keyword_params(factory: Any) -> list[str] | None:
    """The keyword parameters of ``factory``; None when it takes any (``**params``) or its
    signature cannot be read."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def create(kind: str, comp: Component, where: str, /, **given: Any) -> Any:
    """Build config entry ``comp`` of ``kind`` found at field ``where``.

    Args:
        given: the arguments llmcore itself supplies; each must be one that the table of
            kinds lists for ``kind`` (``dim`` and ``bias`` for a norm, ...).
    """
    unlisted = set(given) - set(plugins.component_kind(kind).given)
    if unlisted:  # llmcore's own call sites and the table of kinds disagree
        raise TypeError(
            f"llmcore passes {kind} factories only {plugins.component_kind(kind).given}, "
            f"not {sorted(unlisted)}: add them to llmcore.contracts.COMPONENT_KINDS"
        )
    provider = check_entry(kind, comp, where)
    try:
        return provider.factory(**given, **comp.params)
    except LLMCoreError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: {kind} {comp.name!r} (plugin {provider.plugin!r}) rejected its params "
            f"{comp.params}: {exc}"
        ) from None


def build_optimizer(cfg: Config, model: Any) -> Any:
    """The configured optimizer over ``model``'s trainable parameters."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return create("optimizer", cfg.train.optimizer, "train.optimizer", named_params=named)


def build_schedule(cfg: Config, optimizer: Any) -> Any:
    """The configured learning-rate schedule for ``optimizer``."""
    return create("schedule", cfg.train.schedule, "train.schedule", optimizer=optimizer)


def build_sampler(cfg: Config) -> tuple[list[Any], Any]:
    """The configured logits-processor chain and decoder."""
    chain = [
        create("sampler", c, f"generate.samplers[{i}]") for i, c in enumerate(cfg.generate.samplers)
    ]
    decoder = create("decoder", cfg.generate.decoder, "generate.decoder")
    return chain, decoder


def build_loggers(cfg: Config, run_dir: Any) -> list[Any]:
    """The configured metric sinks writing into ``run_dir``."""
    return [
        create("logger", c, f"train.loggers[{i}]", run_dir=run_dir)
        for i, c in enumerate(cfg.train.loggers)
    ]
