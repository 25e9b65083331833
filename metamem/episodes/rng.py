"""The counter-based random numbers of episodes live in :mod:`metamem.rng` (a base module, so
that :mod:`metamem.types` can use them without importing the episode sampler); this module
re-exports them under their original import path."""

from metamem.rng import *  # noqa: F401,F403  (re-exports)
from metamem.rng import __all__  # noqa: F401
