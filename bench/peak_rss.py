"""A process's peak resident memory, as every bench script's child processes report it."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM``, which starts afresh at exec.
    Not ``ru_maxrss`` where ``/proc`` has ``VmHWM``: Linux carries ``ru_maxrss`` over from the
    parent across fork and exec, so every child would report at least the bench's own size."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
