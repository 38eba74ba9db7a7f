"""Loads the CUDA kernels: ``lstm_kernels.cu`` with ``lstm_pointwise.cuh`` inlined, compiled once per
process and device by ``cupy.RawModule`` (and cached on disk by CuPy across processes).

Two families: the step kernels (one launch per time step, between cuBLAS GEMMs; any size) and the
sequence kernels (all steps in one cooperative launch, weights held in shared memory; small
batches, where launches dominate). ``lstmfast.cuda.ops`` chooses between them."""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import numpy as np

KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))
KERNEL_FILE = "lstm_kernels.cu"
HEADER_FILE = "lstm_pointwise.cuh"
KERNEL_NAMES = ("lstm_forward_step", "lstm_backward_step")
SEQUENCE_NAMES = ("lstm_forward_sequence", "lstm_backward_sequence")
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# CuPy adds -arch for the current device and -ftz=true (float32 denormals flush to zero).
OPTIONS = ("-std=c++17",)
THREADS_PER_BLOCK = 256


def read(name: str) -> str:
    with open(os.path.join(KERNEL_DIR, name), encoding="utf-8") as f:
        return f.read()


def source() -> str:
    """The kernel source as one string: the header is pasted in place of its #include, so CuPy's
    cache key (a hash of the source text) changes whenever either file does."""
    include = f'#include "{HEADER_FILE}"'
    kernels = read(KERNEL_FILE)
    if include not in kernels:
        raise RuntimeError(f"{KERNEL_FILE} no longer includes {HEADER_FILE}")
    return kernels.replace(include, read(HEADER_FILE), 1)


def name_expressions() -> list:
    """Template instantiations to compile, e.g. ``lstm_forward_step<float>``."""
    return [f"{kernel}<{ctype}>" for kernel in KERNEL_NAMES + SEQUENCE_NAMES for ctype in C_TYPES.values()]


class Kernels(NamedTuple):
    """The step kernels of one dtype, called CuPy's way: ``kernel((blocks,), (threads,), args)``."""

    forward_step: object
    backward_step: object


class SequenceKernels(NamedTuple):
    """The sequence kernels of one dtype (``cupy.cuda.Function``), launched cooperatively."""

    forward: object
    backward: object


@functools.lru_cache(maxsize=None)
def _module():
    import cupy
    return cupy.RawModule(code=source(), options=OPTIONS, name_expressions=name_expressions())


@functools.lru_cache(maxsize=None)
def _functions_on(device_id: int, dtype: np.dtype, names: tuple) -> tuple:
    """The kernels ``names`` for ``dtype`` on device ``device_id``; compiles on first use."""
    import cupy
    ctype = C_TYPES[dtype]
    with cupy.cuda.Device(device_id):
        module = _module()
        return tuple(module.get_function(f"{kernel}<{ctype}>") for kernel in names)


def get_sequence(dtype) -> SequenceKernels:
    """The sequence kernels for ``dtype`` on the current device; compiles on first use."""
    import cupy
    return SequenceKernels(*_functions_on(cupy.cuda.Device().id, np.dtype(dtype), SEQUENCE_NAMES))


def get(dtype) -> Kernels:
    """The kernels for ``dtype`` (float32 or float64) on the current device; compiles on first use."""
    import cupy
    return Kernels(*_functions_on(cupy.cuda.Device().id, np.dtype(dtype), KERNEL_NAMES))


def blocks(elements: int) -> int:
    """Blocks of THREADS_PER_BLOCK threads covering ``elements`` (>= 1) threads."""
    return (elements + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
