"""Deprecated location: the run-directory and checkpoint format lives in :mod:`metamem.runs`
(below evaluation, so that ``metamem eval`` loads runs without importing training).

Everything importable from here before is still importable; new code imports
:mod:`metamem.runs`.
"""

from metamem.files import atomic_write, write_text  # noqa: F401  (re-exports)
from metamem.runs import *  # noqa: F401,F403
from metamem.runs import ARCH_KEYS, CHECKPOINT_NAMES, RESUMABLE_KEYS, VERSION, save_config  # noqa: F401
