"""Typed configuration: tokenizer, model, data, train, generate and finetune sections.

A config is one YAML (or TOML or JSON) file. Components are named by their registered name
plus params, written either as a bare name (``norm: rmsnorm``) or as a mapping
(``norm: {name: rmsnorm, eps: 1.0e-6}``). Validation reports the dotted path of a bad field,
what was found and what is allowed; unknown keys are errors. Presets ship as package data.

- :mod:`llmcore.config.sections`: the dataclasses, one per section, and their plain-data form;
- :mod:`llmcore.config.files`: reading files and presets, ``--set`` overrides, writing YAML;
- :mod:`llmcore.config.convert`: checking plain data into the dataclasses by their type hints.
"""

from llmcore.config.convert import check_consistency, config_from_dict
from llmcore.config.files import (
    _apply_override,
    dump_yaml,
    load_config,
    presets,
    read_config_file,
)
from llmcore.config.sections import (
    ChatTemplate,
    Component,
    Config,
    DataConfig,
    DPOConfig,
    FinetuneConfig,
    GenerateConfig,
    ModelConfig,
    PPOConfig,
    RewardModelConfig,
    SFTConfig,
    TokenizerConfig,
    TrainConfig,
)

__all__ = [
    "ChatTemplate",
    "Component",
    "Config",
    "DPOConfig",
    "DataConfig",
    "FinetuneConfig",
    "GenerateConfig",
    "ModelConfig",
    "PPOConfig",
    "RewardModelConfig",
    "SFTConfig",
    "TokenizerConfig",
    "TrainConfig",
    "_apply_override",
    "check_consistency",
    "config_from_dict",
    "dump_yaml",
    "load_config",
    "presets",
    "read_config_file",
]
