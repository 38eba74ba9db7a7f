"""The GPU path: CUDA kernels (``lstm_kernels.cu``, ``lstm_pointwise.cuh``) driven through CuPy, and
the choice between it and the C++ engine.

Importing this package never imports CuPy; ``lstmfast.cuda.ops`` imports it on first use. Which
backend an ``lstmfast.ops`` call uses (``backend=None``):

1. CuPy arrays go to ``"cuda"``, NumPy arrays to ``"cpu"``; mixing the two is a TypeError (no
   hidden copies between host and device).
2. Inputs that are neither (lists, scalars) go to ``get_backend()``, ``"cpu"`` unless
   ``set_backend("cuda")`` was called.

An explicit ``backend="cpu"`` or ``"cuda"`` must agree with the arrays' kind.

Models follow ``get_backend()``: ``fit``/``evaluate``/``predict`` first move the weights, gradients
and optimizer state there (only when it changed), then copy each batch to the GPU once; the loss
and the metrics run on the host on the model's outputs.
"""
from __future__ import annotations

import sys
from typing import Iterable, Optional, Tuple

__all__ = ["BACKENDS", "set_backend", "get_backend", "resolve_backend", "is_available", "require_cupy",
           "require_gpu", "device_module", "to_host"]

BACKENDS = ("cpu", "cuda")
_NEEDS_CUPY = ("the CUDA backend needs CuPy: pip install lstmfast[gpu] (NVIDIA driver for CUDA 12 or newer; "
               "lstmfast[gpu-cuda13] for CUDA 13 wheels)")

_backend = "cpu"
_gpu_count: Optional[int] = None  # CUDA devices CuPy sees, cached after the first successful query


def require_cupy():
    """The ``cupy`` module, or ImportError saying how to install it."""
    try:
        import cupy
    except ImportError as e:
        raise ImportError(f"{_NEEDS_CUPY}; importing cupy failed: {e}") from e
    return cupy


def require_gpu():
    """The ``cupy`` module when at least one CUDA GPU is visible; otherwise ImportError (no CuPy) or
    RuntimeError (no GPU, no driver)."""
    global _gpu_count
    cupy = require_cupy()
    if _gpu_count:
        return cupy
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # CUDARuntimeError without a driver; its type lives in cupy_backends
        raise RuntimeError(f"no CUDA GPU is visible: cupy.cuda.runtime.getDeviceCount() failed with "
                           f"{type(e).__name__}: {e}") from e
    if count == 0:
        raise RuntimeError("no CUDA GPU is visible (cupy.cuda.runtime.getDeviceCount() == 0; "
                           "check CUDA_VISIBLE_DEVICES and the driver)")
    _gpu_count = count
    return cupy


def is_available() -> bool:
    """True when CuPy imports and sees at least one CUDA GPU."""
    try:
        require_gpu()
    except (ImportError, RuntimeError):
        return False
    return True


def _check_name(backend, what: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(repr(b) for b in BACKENDS)}, got {backend!r}")
    return backend


def set_backend(backend: str) -> None:
    """Backend for ``lstmfast.ops`` calls whose inputs do not decide it (see the module docstring).
    ``"cuda"`` fails here, not later, when CuPy or a GPU is missing."""
    global _backend
    _check_name(backend, "backend")
    if backend == "cuda":
        require_gpu()
    _backend = backend


def get_backend() -> str:
    """The backend set by ``set_backend``: ``"cpu"`` (default) or ``"cuda"``."""
    return _backend


def _cupy_ndarray():
    # Only a program that already imported CuPy can hold CuPy arrays: no import here.
    cupy = sys.modules.get("cupy")
    return getattr(cupy, "ndarray", None) if cupy is not None else None


def device_module(value):
    """The ``cupy`` module when ``value`` is a CuPy array, else None (imports nothing)."""
    cupy_ndarray = _cupy_ndarray()
    if cupy_ndarray is not None and isinstance(value, cupy_ndarray):
        return sys.modules["cupy"]
    return None


def to_host(value):
    """``value`` as a NumPy array when it is a CuPy array (a copy), else unchanged."""
    cupy = device_module(value)
    return value if cupy is None else cupy.asnumpy(value)


def scatter_add(out, index, rows) -> None:
    """``out[index[i]] += rows[i]`` on the GPU, repeated indices accumulating (np.add.at's meaning)."""
    device_module(out).add.at(out, index, rows)


def array_kind(value) -> Optional[str]:
    """``"cuda"`` for a CuPy array, ``"cpu"`` for a NumPy array, None for anything else."""
    cupy_ndarray = _cupy_ndarray()
    if cupy_ndarray is not None and isinstance(value, cupy_ndarray):
        return "cuda"
    import numpy as np
    return "cpu" if isinstance(value, np.ndarray) else None


_MOVE_HINT = {"cuda": "move it to the GPU with cupy.asarray(...)", "cpu": "bring it to the host with .get()"}
_KIND_NAME = {"cuda": "a cupy.ndarray", "cpu": "a numpy.ndarray"}


def resolve_backend(backend, named_arrays: Iterable[Tuple[str, object]]) -> str:
    """The backend an ops call runs on, given its ``backend=`` keyword and its (name, value) inputs."""
    if backend is not None:
        _check_name(backend, "backend")
    first = {}  # kind -> name of the first input of that kind
    for name, value in named_arrays:
        kind = array_kind(value)
        if kind is not None and kind not in first:
            first[kind] = name
    if len(first) == 2:
        raise TypeError(f"{first['cuda']} is a cupy.ndarray but {first['cpu']} is a numpy.ndarray; pass all "
                        f"arrays on one side ({_MOVE_HINT['cuda']}, or {_MOVE_HINT['cpu']})")
    if backend is None:
        return next(iter(first)) if first else _backend
    for kind, name in first.items():
        if kind != backend:
            raise TypeError(f"backend={backend!r} needs {'CuPy' if backend == 'cuda' else 'NumPy'} arrays, but "
                            f"{name} is {_KIND_NAME[kind]} ({_MOVE_HINT[backend]}, or pass backend=None)")
    return backend
