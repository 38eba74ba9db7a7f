"""The GPU engine: CUDA kernels (``lstm_kernels.cu``, ``lstm_pointwise.cuh``) driven through CuPy
(``lstmfast.cuda.ops``), the fused optimizer step (``optim_kernels.cu``, ``optim_rules.cuh``, driven by
``lstmfast.cuda.optim``), the layer activations in one launch each (``activation_kernels.cu``,
``activation_rules.cuh``, ``lstmfast.cuda.activations``), CUDA graphs for fixed-shape calls
(``lstmfast.cuda.graphs``), and whether CuPy and a GPU are there.

Importing this package never imports CuPy; ``require_cupy``/``require_gpu`` import it on first use.
Which engine a call runs on, and moving arrays between host and device, is decided in one place,
the engine boundary ``lstmfast.ops`` (``set_backend``, ``get_backend``, ``to_backend``...).
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional

__all__ = ["is_available", "require_cupy", "require_gpu"]

_NEEDS_CUPY = ("the CUDA backend needs CuPy: pip install lstmfast[gpu] (NVIDIA driver for CUDA 12 or newer; "
               "lstmfast[gpu-cuda13] for CUDA 13 wheels)")

_gpu_count: Optional[int] = None  # CUDA devices CuPy sees, cached after the first successful query


def require_cupy() -> ModuleType:
    """The ``cupy`` module, or ImportError saying how to install it."""
    try:
        import cupy
    except ImportError as e:
        raise ImportError(f"{_NEEDS_CUPY}; importing cupy failed: {e}") from e
    return cupy


def require_gpu() -> ModuleType:
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

