"""Building components from config entries through the plugin manager.

Every builder here goes through :func:`llmcore.plugins.registry`; errors name the config
field (``train.optimizer.lr``), the component and what would be valid.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from llmcore import plugins
from llmcore.config import Component, Config
from llmcore.errors import ConfigError, LLMCoreError, PluginError
from llmcore.tokenizers import validate_tokenizer


def check_params(
    kind: str, comp: Component, where: str, given_by_llmcore: Iterable[str] = ()
) -> None:
    """Raise ConfigError when ``comp`` names an unknown component or passes an unknown param."""
    try:
        provider = plugins.registry().get(kind, comp.name)
    except PluginError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        sig = inspect.signature(provider.factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    names = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    reserved = set(given_by_llmcore)
    allowed = [n for n in names if n not in reserved]
    for key in comp.params:
        if key in reserved:
            raise ConfigError(
                f"{where}.{key}: set by llmcore for {kind} {comp.name!r}, not a config param"
            )
        if key not in names:
            raise ConfigError(
                f"{where}.{key}: unknown param of {kind} {comp.name!r} (plugin {provider.plugin!r}); "
                f"its params: {', '.join(allowed) or '(none)'}"
            )


def create(kind: str, comp: Component, where: str, /, **given: Any) -> Any:
    """Build ``comp`` of ``kind``; ``given`` are the arguments llmcore itself supplies."""
    check_params(kind, comp, where, given)
    try:
        return plugins.create(kind, comp.name, **given, **comp.params)
    except LLMCoreError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: {kind} {comp.name!r} rejected its params {comp.params}: {exc}"
        ) from None


def validate_components(cfg: Config) -> None:
    """Check every component name and param of ``cfg`` against the registered plugins."""
    m = cfg.model
    check_params("attention", m.attention, "model.attention")
    check_params("norm", m.norm, "model.norm", ("dim", "bias"))
    check_params("mlp", m.mlp, "model.mlp", ("dim", "hidden_dim", "bias"))
    check_params("position", m.position, "model.position", ("dim", "head_dim", "max_seq_len"))
    validate_tokenizer(cfg.tokenizer.name, cfg.tokenizer.params)
    check_params("optimizer", cfg.train.optimizer, "train.optimizer", ("named_params",))
    check_params("schedule", cfg.train.schedule, "train.schedule", ("optimizer",))
    for i, comp in enumerate(cfg.train.loggers):
        check_params("logger", comp, f"train.loggers[{i}]", ("run_dir",))
    for i, comp in enumerate(cfg.generate.samplers):
        check_params("sampler", comp, f"generate.samplers[{i}]")
    check_params("decoder", cfg.generate.decoder, "generate.decoder")


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
