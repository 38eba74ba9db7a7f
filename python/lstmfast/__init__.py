"""lstmfast: a fast, practical LSTM library (C++/OpenMP engine, Keras-style API)."""
from __future__ import annotations

import os as _os
import warnings as _warnings
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# The engine's OpenMP threads wait at most this many spins for new work before they sleep
# (libgomp's GOMP_SPINCOUNT; its default, 300,000, keeps them spinning for about a millisecond).
# Spinning saves a wake-up when the machine is idle, but beside another busy process (a second
# training, NumPy's BLAS threads) the spinning threads take the cores the others need: two training
# steps side by side on 2 cores ran 3.8-8x slower each, 2.0x with 1,000 spins (bench/sharing.py). It is
# set only while the engine loads (libgomp reads it then), not for other libraries, and never when
# GOMP_SPINCOUNT or OMP_WAIT_POLICY is already set.
_ENGINE_SPINCOUNT = "1000"
_spin_chosen = "GOMP_SPINCOUNT" in _os.environ or "OMP_WAIT_POLICY" in _os.environ
if not _spin_chosen:
    _os.environ["GOMP_SPINCOUNT"] = _ENGINE_SPINCOUNT
try:
    from . import _core
finally:
    if not _spin_chosen:
        del _os.environ["GOMP_SPINCOUNT"]
from . import ops, reference  # noqa: E402  (these import the engine: after it has loaded)
from ._results import LSTMGradients, LSTMOutput  # noqa: E402
from .ops import get_backend, set_backend  # noqa: E402

__version__ = _core.__version__
__all__ = ["ops", "reference", "build_info", "set_num_threads", "get_num_threads", "set_simd_level",
           "set_backend", "get_backend",
           "LSTMOutput", "LSTMGradients", "load_model", "Sequential", "Model", "Input", "__version__"]

_SIMD_LEVELS = ("portable", "avx2", "avx512", "avx512emu")


def build_info() -> dict:
    """Version, SIMD level in use (and the best this CPU supports), thread count, OpenMP."""
    return {
        "version": __version__,
        "simd": _core.simd_level(),
        "simd_supported": _core.simd_level_supported(),
        "threads": _core.num_threads(),
        "openmp": _core.openmp_enabled(),
    }


def set_num_threads(n: int) -> None:
    """Threads for the engine, 0..1024 (0 = OpenMP's default). Results do not depend on it."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    return _core.num_threads()


def set_simd_level(level: str) -> None:
    """Force a SIMD level ('portable', 'avx2', 'avx512'); it must be supported by this CPU.
    The environment variable LSTMFAST_SIMD does the same at import time. 'avx512emu' is for
    testing: the AVX-512 level's code shapes (16 float lanes, its tiles and blocking) run with
    AVX2 instructions, on any CPU with AVX2; it is slower and never chosen by itself."""
    _core.set_simd_level(level)


def _check_simd_env() -> None:
    want = _os.environ.get("LSTMFAST_SIMD", "").strip().lower()
    if want and want != _core.simd_level():
        why = "is not a SIMD level" if want not in _SIMD_LEVELS else "is not supported by this CPU"
        _warnings.warn(f"LSTMFAST_SIMD={want!r} {why} (levels: {', '.join(_SIMD_LEVELS)}); "
                       f"using {_core.simd_level()!r}", RuntimeWarning, stacklevel=2)


_check_simd_env()

if _TYPE_CHECKING:  # what __getattr__ below loads on first use, named for type checkers
    from . import activations as activations
    from . import backend as backend
    from . import callbacks as callbacks
    from . import cli as cli
    from . import config as config
    from . import datasets as datasets
    from . import distributed as distributed
    from . import initializers as initializers
    from . import interop as interop
    from . import layers as layers
    from . import losses as losses
    from . import metrics as metrics
    from . import mixed_precision as mixed_precision
    from . import models as models
    from . import optimizers as optimizers
    from . import preprocessing as preprocessing
    from . import saving as saving
    from . import tasks as tasks
    from . import utils as utils
    from .layers import Input
    from .models import Model, Sequential, load_model

# `import lstmfast as keras` reaches Keras's module surface through these (keras.layers, keras.utils, ...).
_LAZY_SUBMODULES = ("layers", "models", "optimizers", "losses", "metrics", "callbacks", "saving", "utils",
                    "activations", "initializers", "backend", "tasks", "cli", "datasets", "preprocessing",
                    "distributed", "interop", "mixed_precision", "config")


def __getattr__(name: str) -> _Any:
    # The training API loads on first use, so `import lstmfast` stays quick for ops users.
    import importlib
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "load_model":
        from .models import load_model
        return load_model
    if name == "Input":
        from .layers import Input
        return Input
    if name in ("Sequential", "Model"):
        return getattr(importlib.import_module(".models", __name__), name)
    raise AttributeError(f"module 'lstmfast' has no attribute {name!r}")
