"""The plugin hooks: one per component kind.

A plugin is a module (or object) that implements some of these hooks with
``@llmcore.hookimpl`` and is declared under the ``llmcore`` entry-point group::

    # pyproject.toml of a plugin package
    [project.entry-points.llmcore]
    my_plugin = "my_plugin"

    # my_plugin.py
    import llmcore

    @llmcore.hookimpl
    def register_norms(register):
        register("scalenorm", ScaleNorm)

Every hook is called once when the plugin manager loads, with a ``register(name, factory)``
callback. ``name`` is the string users write in config files; ``factory`` is a class or a
callable that builds the component from keyword params (the config's params, plus the
arguments llmcore itself passes, listed per kind in :data:`llmcore.contracts.COMPONENT_KINDS`).

A name that two plugins register for the same kind belongs to neither: the clash is reported
on stderr when the plugins load, and using the name is an error naming both plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

from llmcore.contracts import COMPONENT_KINDS

hookspec = pluggy.HookspecMarker("llmcore")
hookimpl = pluggy.HookimplMarker("llmcore")

Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_tokenizers(register: Register) -> None:
    """Register tokenizer classes.

    Args:
        register: call ``register(name, cls)`` for each tokenizer. ``cls(**params)`` builds
            a tokenizer meeting :class:`llmcore.contracts.Tokenizer`; ``cls.load(path)``
            rebuilds a saved one; a tokenizer that learns its vocabulary from text also has
            ``cls.train(texts, **params)``.
    """


@hookspec
def register_attentions(register: Register) -> None:
    """Register attention implementations.

    Args:
        register: call ``register(name, factory)``; ``factory(**params)`` returns a callable
            meeting :class:`llmcore.contracts.Attention`.
    """


@hookspec
def register_norms(register: Register) -> None:
    """Register normalisation layers.

    Args:
        register: call ``register(name, factory)``; ``factory(dim, eps=..., bias=...,
            **params)`` returns an ``nn.Module`` (see :class:`llmcore.contracts.NormFactory`).
    """


@hookspec
def register_mlps(register: Register) -> None:
    """Register feed-forward blocks.

    Args:
        register: call ``register(name, factory)``; ``factory(dim, hidden_dim=None,
            bias=..., **params)`` returns an ``nn.Module`` mapping ``(B, T, C)`` to itself
            (see :class:`llmcore.contracts.MLPFactory`).
    """


@hookspec
def register_positions(register: Register) -> None:
    """Register position encodings.

    Args:
        register: call ``register(name, factory)``; ``factory(dim, head_dim, max_seq_len,
            **params)`` returns an ``nn.Module`` meeting :class:`llmcore.contracts.Position`.
    """


@hookspec
def register_optimizers(register: Register) -> None:
    """Register optimizers.

    Args:
        register: call ``register(name, factory)``; ``factory(named_params, **params)``
            returns a ``torch.optim.Optimizer`` (see
            :class:`llmcore.contracts.OptimizerFactory`).
    """


@hookspec
def register_schedules(register: Register) -> None:
    """Register learning-rate schedules.

    Args:
        register: call ``register(name, factory)``; ``factory(optimizer, **params)`` returns
            a ``torch.optim.lr_scheduler.LRScheduler`` stepped once per optimizer step (see
            :class:`llmcore.contracts.ScheduleFactory`).
    """


@hookspec
def register_samplers(register: Register) -> None:
    """Register logits processors for generation.

    Args:
        register: call ``register(name, factory)``; ``factory(**params)`` returns a callable
            ``(input_ids, logits) -> logits`` (:class:`llmcore.contracts.Sampler`). Samplers
            are chained in the order a config lists them.
    """


@hookspec
def register_decoders(register: Register) -> None:
    """Register decoders: the final choice of the next token.

    Args:
        register: call ``register(name, factory)``; ``factory(**params)`` returns a callable
            ``(logits, generator) -> ids`` (:class:`llmcore.contracts.Decoder`).
    """


@hookspec
def register_loggers(register: Register) -> None:
    """Register metric sinks for training runs.

    Args:
        register: call ``register(name, factory)``; ``factory(run_dir, **params)`` returns
            an object with ``log(metrics)`` and ``close()`` (:class:`llmcore.contracts.Logger`).
    """


@hookspec
def register_rewards(register: Register) -> None:
    """Register reward functions for reinforcement learning from feedback.

    Args:
        register: call ``register(name, factory)``; ``factory(**params)`` returns a callable
            ``(prompts, responses) -> scores`` (:class:`llmcore.contracts.RewardFunction`).
    """


@hookspec
def register_adapters(register: Register) -> None:
    """Register parameter-efficient fine-tuning adapters (for example LoRA).

    Args:
        register: call ``register(name, factory)``; ``factory(**params)`` returns an object
            with ``apply(model)`` and ``merge(model)`` (:class:`llmcore.contracts.Adapter`).
    """


@hookspec
def register_quantized_linears(register: Register) -> None:
    """Register linear layers over quantized weight blocks, one per block format.

    Args:
        register: call ``register(type_name, factory)`` with a GGUF type name (``"q4_0"``);
            ``factory(blocks, in_features, out_features, bias=None)`` returns an inference-only
            ``nn.Module`` (:class:`llmcore.contracts.QuantizedLinearFactory`).
    """


#: kind -> name of its hook, from the table of kinds (``tests/test_plugins.py`` checks that
#: every hook named there is a documented hookspec above, and no other is).
HOOK_OF_KIND: dict[str, str] = {kind.name: kind.hook for kind in COMPONENT_KINDS.values()}
