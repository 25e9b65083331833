"""Run ``metamem ARGS...`` and SIGKILL it the n-th time it reaches a kill point.

``python tests/training/kill_at.py POINT N ARGS...``: replaces
:func:`metamem.files.kill_point` (a no-op in metamem) before the training code imports it,
so the ``N``-th time (1-based) the process reaches ``POINT`` it calls the point's
``before()`` and sends itself ``SIGKILL``: no ``finally`` block, ``atexit`` hook or buffered
write runs, exactly as with ``kill -9``. Used by ``test_kill_resume.py``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

import metamem.files


def arm(point: str, n: int) -> None:
    """Make the ``n``-th arrival at ``point`` kill the process."""
    reached = 0

    def kill_point(name: str, before: Callable[[], object] | None = None) -> None:
        nonlocal reached
        if name != point:
            return
        reached += 1
        if reached == n:
            if before is not None:
                before()
            os.kill(os.getpid(), signal.SIGKILL)

    metamem.files.kill_point = kill_point


if __name__ == "__main__":
    arm(sys.argv[1], int(sys.argv[2]))
    from metamem.cli.main import main  # imports the training code after arm()

    sys.exit(main(sys.argv[3:]))
