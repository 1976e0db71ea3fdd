"""Stopping a run cleanly on SIGINT or SIGTERM (Ctrl-C, torchrun, a scheduler preempting).

The first signal asks the engine to write a checkpoint at the next step boundary and stop
with :class:`TrainingInterrupted` (exit status 128 + the signal: 130 or 143); a second one
ends the process at once, as the signal would have without llmcore.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

from llmcore.errors import TrainingError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(TrainingError):
    """A run stopped by a signal after saving a checkpoint; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopRequests:
    """While entered, SIGINT and SIGTERM set :attr:`signum` instead of ending the process
    (only in the main thread, where Python can install handlers)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: end now, as the signal would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
