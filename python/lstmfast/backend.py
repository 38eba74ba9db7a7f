"""Global settings shared by layers, initializers, dropout and fit: the random generator and the
default float type. ``lstmfast.utils.set_random_seed`` is the public way to seed."""
from __future__ import annotations

import random as _random

import numpy as np

_FLOATX = "float32"
_RNG = np.random.default_rng()


def floatx() -> str:
    """Default float dtype of new layers ('float32' unless changed)."""
    return _FLOATX


def set_floatx(value: str) -> None:
    """Set the default float dtype of new layers: 'float32' or 'float64'."""
    global _FLOATX
    if value not in ("float32", "float64"):
        raise ValueError(f"floatx must be 'float32' or 'float64', got {value!r}")
    _FLOATX = value


def get_rng() -> np.random.Generator:
    """The generator every random draw in lstmfast uses (initializers, dropout masks, shuffling)."""
    return _RNG


def set_rng(generator: np.random.Generator) -> None:
    """Use ``generator`` for lstmfast's random draws from now on (data-parallel ranks get their own)."""
    global _RNG
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator, got {type(generator).__name__}")
    _RNG = generator


def set_random_seed(seed: int) -> None:
    """Seed lstmfast's generator (and Python's and NumPy's legacy global ones, as Keras does), so a
    CPU training run is bitwise reproducible whatever the thread count."""
    global _RNG
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    _RNG = np.random.default_rng(int(seed))
    _random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    from .cuda import dropout  # the GPUs' dropout generators (lstmfast.cuda.dropout): counters to zero
    dropout.reset()
