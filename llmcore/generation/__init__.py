"""Internals of the generation engine (the public API is :mod:`llmcore.generate`)."""
