"""The exception hierarchy: every error llmcore raises on purpose is an LLMCoreError.

The CLI prints these as one line without a traceback and exits non-zero; the Python API
raises them. Messages name the file, field, plugin or token at fault and what would be valid.
"""

from __future__ import annotations


class LLMCoreError(Exception):
    """Base class of llmcore's errors."""


class ConfigError(LLMCoreError, ValueError):
    """A config file or value is malformed, unknown or of the wrong type."""


class PluginError(LLMCoreError):
    """A plugin failed to load, registered a duplicate name, or a name is unknown."""


class CheckpointError(LLMCoreError):
    """A checkpoint is missing, corrupt, truncated, or does not match the model."""


class TokenizerError(LLMCoreError, ValueError):
    """A tokenizer file is invalid, or an id or input cannot be encoded/decoded."""


class DataError(LLMCoreError):
    """A data file is missing, unreadable, or too small for the configured block."""


class GenerationError(LLMCoreError, ValueError):
    """Generation settings or a prompt are invalid."""


class TrainingError(LLMCoreError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class LLMCoreWarning(UserWarning):
    """Base class of llmcore's warnings: something was recovered from or accepted on request,
    and the user should know."""


class CheckpointWarning(LLMCoreWarning):
    """A broken checkpoint or ``ckpt/latest`` was skipped for an older intact checkpoint."""


class TokenizerWarning(LLMCoreWarning):
    """A tokenizer was accepted although it is not what was asked for (a smaller vocabulary)."""
