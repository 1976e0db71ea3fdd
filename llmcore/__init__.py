"""llmcore: decoder-only transformer language models out of swappable parts."""
__version__ = "0.1.0"
