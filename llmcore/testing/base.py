"""What every conformance check shares: its error, and the one way to raise it."""

from __future__ import annotations


class ConformanceError(AssertionError):
    """A component does not meet its contract."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConformanceError(msg)
