"""What a ladder's worker process does first (kept apart from the ladder: it must import nothing heavy)."""

from __future__ import annotations

import os


def die_with_parent(parent: int | None = None) -> None:
    """In a worker process: be killed when the run's main process dies (a kill -9 of the run must not
    leave workers writing into the run directory). A spawned worker takes seconds to start (its
    imports); if the run died meanwhile, it was adopted before it could ask, so it checks and leaves."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)
