"""Data shipped with llmcore: Tiny Shakespeare, the default training text."""

from importlib import resources
from pathlib import Path


def tinyshakespeare_path() -> Path:
    """Path of the bundled Tiny Shakespeare text."""
    return Path(str(resources.files("llmcore.datasets") / "tinyshakespeare.txt"))
