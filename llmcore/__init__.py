"""llmcore: decoder-only transformer language models out of swappable parts.

Every component (tokenizer, attention, norm, MLP, position, optimizer, schedule, sampler,
decoder, logger) is supplied by a plugin and looked up by its registered name::

    import llmcore

    cfg = llmcore.load_config("shakespeare-char", ["model.norm=rmsnorm"])
    model = llmcore.build_model(cfg, vocab_size=65)

Threads: torch's intra-op pool and llmcore's own C++ kernels use the same OpenMP threads, as
many as torch.get_num_threads() (by default one per CPU this process may run on, see
``os.sched_getaffinity``; set ``OMP_NUM_THREADS`` to choose). Importing llmcore makes those
threads spin only briefly before they sleep while they wait (``GOMP_SPINCOUNT=10000``) unless
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is already set; OpenMP reads them once, when torch
is first imported, so this holds only when llmcore is imported before torch (always so for
the ``llmcore`` command). ``bench/bench_under_load.py`` measures the choice.
"""

from __future__ import annotations

import os as _os

# A waiting OpenMP thread spins for GOMP_SPINCOUNT (300000) iterations at every barrier
# before it sleeps. With another busy process on the same core, that spinning takes the time
# slice the working thread needs (a training step ran 3-30x slower under one busy process per
# core). Sleeping at once (OMP_WAIT_POLICY=PASSIVE) fixes that but makes every parallel region
# pay a wake-up: the default preset's step took 1.5-2x longer on an idle machine. A short spin
# keeps the idle speed and sleeps before it steals much of a busy core.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"

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
from llmcore.inspect import trace
from llmcore.loading import load
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
    "load",
    "load_checkpoint",
    "load_config",
    "load_hf",
    "load_hf_tokenizer",
    "load_tokenizer",
    "stream",
    "trace",
    "train_tokenizer",
]
