"""llmcore: decoder-only transformer language models out of swappable parts.

Every component (tokenizer, attention, norm, MLP, position, optimizer, schedule, sampler,
decoder, logger) is supplied by a plugin and looked up by its registered name::

    import llmcore

    cfg = llmcore.load_config("shakespeare-char", ["model.norm=rmsnorm"])
    model = llmcore.build_model(cfg, vocab_size=65)
"""

from __future__ import annotations

__version__ = "0.1.0"

from llmcore.checkpoint import load_checkpoint
from llmcore.components import build_loggers, build_optimizer, build_sampler, build_schedule
from llmcore.config import Component, Config, load_config
from llmcore.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GenerationError,
    LLMCoreError,
    PluginError,
    TokenizerError,
    TrainingError,
)
from llmcore.generation import Generation, Token, generate, stream
from llmcore.hf import load_hf, load_hf_tokenizer
from llmcore.hookspecs import hookimpl
from llmcore.model import KVCache, Transformer, build_model
from llmcore.plugins import available, create
from llmcore.tokenizers import load_tokenizer, train_tokenizer
from llmcore.train.setup import build_tokenizer

__all__ = [
    "CheckpointError",
    "Component",
    "Config",
    "ConfigError",
    "DataError",
    "Generation",
    "GenerationError",
    "KVCache",
    "LLMCoreError",
    "PluginError",
    "Token",
    "TokenizerError",
    "TrainingError",
    "Transformer",
    "available",
    "build_loggers",
    "build_model",
    "build_optimizer",
    "build_sampler",
    "build_schedule",
    "build_tokenizer",
    "create",
    "generate",
    "hookimpl",
    "load_checkpoint",
    "load_config",
    "load_hf",
    "load_hf_tokenizer",
    "load_tokenizer",
    "stream",
    "train_tokenizer",
]
