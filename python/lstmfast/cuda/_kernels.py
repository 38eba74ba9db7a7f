"""Loads the CUDA kernels: ``lstm_kernels.cu`` with ``lstm_pointwise.cuh`` inlined,
``optim_kernels.cu`` with ``optim_rules.cuh`` and ``activation_kernels.cu`` with
``activation_rules.cuh``, each compiled once per process and device by ``cupy.RawModule`` (and
cached on disk by CuPy across processes).

Two LSTM families: the step kernels (one launch per time step, between cuBLAS GEMMs; any size) and
the sequence kernels (all steps in one cooperative launch, weights held in shared memory; small
batches, where launches dominate). ``lstmfast.cuda.ops`` chooses between them. The optimizer
kernels (one launch per step and dtype, ``lstmfast.cuda.optim``) are built without fused
multiply-adds, so that they round like the C++ step. The activation kernels (``lstmfast.cuda.activations``)
run a layer activation or its gradient in one launch."""
from __future__ import annotations

import functools
import os
import re
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
OPTIM_KERNEL_FILE = "optim_kernels.cu"
OPTIM_HEADER_FILE = "optim_rules.cuh"
OPTIM_UPDATE = "optim_update"            # templated on T
OPTIM_CLIP_SCALES = "optim_clip_scales"  # one for every dtype
# No FMA contraction: each multiply and add rounded on its own, as cpp/optim_cpu.cpp (-ffp-contract=off).
OPTIM_OPTIONS = OPTIONS + ("--fmad=false",)
OPTIM_THREADS = 256                      # kOptimThreads in optim_kernels.cu
ACTIVATION_KERNEL_FILE = "activation_kernels.cu"
ACTIVATION_HEADER_FILE = "activation_rules.cuh"
ACTIVATION_NAMES = ("activation_forward", "activation_backward", "softmax_forward", "softmax_backward",
                    "dropout_keep", "binary_crossentropy", "sparse_crossentropy")
RANDOM_HEADER_FILE = "lf_random.cuh"
LOSS_HEADER_FILE = "loss_rules.cuh"
ACTIVATION_THREADS = 256                 # kActivationThreads in activation_kernels.cu


def read(name: str) -> str:
    with open(os.path.join(KERNEL_DIR, name), encoding="utf-8") as f:
        return f.read()


_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)"\n', re.M)


def _pasted(text: str, seen: set) -> str:
    """``text`` with each #include of a header of this directory replaced by the header (itself
    pasted), the first time only (the headers are #pragma once)."""
    def paste(m):
        name = m.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return _pasted(read(name), seen)
    return _LOCAL_INCLUDE.sub(paste, text)


def source(kernel_file: str = KERNEL_FILE, header_file: str = HEADER_FILE) -> str:
    """The kernel source as one string: the header (and lf_math.cuh, which every header includes)
    pasted in place of its #include, so CuPy's cache key (a hash of the source text) changes
    whenever any of the files does."""
    kernels = read(kernel_file)
    if f'#include "{header_file}"' not in kernels:
        raise RuntimeError(f"{kernel_file} no longer includes {header_file}")
    return _pasted(kernels, set())


def optim_source() -> str:
    """The optimizer kernels' source (``optim_kernels.cu`` with ``optim_rules.cuh`` pasted in)."""
    return source(OPTIM_KERNEL_FILE, OPTIM_HEADER_FILE)


def activation_source() -> str:
    """The activation kernels' source (``activation_kernels.cu`` with ``activation_rules.cuh`` pasted in)."""
    return source(ACTIVATION_KERNEL_FILE, ACTIVATION_HEADER_FILE)


def name_expressions() -> list:
    """Template instantiations to compile, e.g. ``lstm_forward_step<float>``."""
    return [f"{kernel}<{ctype}>" for kernel in KERNEL_NAMES + SEQUENCE_NAMES for ctype in C_TYPES.values()]


def optim_name_expressions() -> list:
    """The optimizer kernels to compile: ``optim_update<float>``, ``<double>``, ``optim_clip_scales``."""
    return [f"{OPTIM_UPDATE}<{ctype}>" for ctype in C_TYPES.values()] + [OPTIM_CLIP_SCALES]


def activation_name_expressions() -> list:
    """The activation kernels to compile: each of ACTIVATION_NAMES for float and double."""
    return [f"{kernel}<{ctype}>" for kernel in ACTIVATION_NAMES for ctype in C_TYPES.values()]


class Kernels(NamedTuple):
    """The step kernels of one dtype, called CuPy's way: ``kernel((blocks,), (threads,), args)``."""

    forward_step: object
    backward_step: object


class SequenceKernels(NamedTuple):
    """The sequence kernels of one dtype (``cupy.cuda.Function``), launched cooperatively."""

    forward: object
    backward: object


class OptimKernels(NamedTuple):
    """The optimizer kernels for one dtype, called CuPy's way: ``kernel((blocks,), (threads,), args)``."""

    update: object       # optim_update<T>
    clip_scales: object  # optim_clip_scales (the same for every dtype)


class ActivationKernels(NamedTuple):
    """The activation kernels of one dtype, called CuPy's way: ``kernel((blocks,), (threads,), args)``."""

    forward: object           # activation_forward<T>
    backward: object          # activation_backward<T>
    softmax_forward: object   # softmax_forward<T>
    softmax_backward: object  # softmax_backward<T>
    dropout_keep: object      # dropout_keep<T>
    binary_crossentropy: object  # binary_crossentropy<T>
    sparse_crossentropy: object  # sparse_crossentropy<T>


# The three modules: their source, options and name expressions.
_MODULES = {"lstm": (source, OPTIONS, name_expressions),
            "optim": (optim_source, OPTIM_OPTIONS, optim_name_expressions),
            "activation": (activation_source, OPTIONS, activation_name_expressions)}


@functools.lru_cache(maxsize=None)
def _module(name: str):
    import cupy
    code, options, names = _MODULES[name]
    return cupy.RawModule(code=code(), options=options, name_expressions=names())


@functools.lru_cache(maxsize=None)
def _functions_on(device_id: int, module: str, names: tuple) -> tuple:
    """The kernels ``names`` (name expressions) of ``module`` on device ``device_id``; compiles on first use."""
    import cupy
    with cupy.cuda.Device(device_id):
        compiled = _module(module)
        return tuple(compiled.get_function(name) for name in names)


def _current(module: str, names) -> tuple:
    import cupy
    return _functions_on(cupy.cuda.Device().id, module, tuple(names))


def get(dtype) -> Kernels:
    """The step kernels for ``dtype`` (float32 or float64) on the current device; compiles on first use."""
    ctype = C_TYPES[np.dtype(dtype)]
    return Kernels(*_current("lstm", (f"{kernel}<{ctype}>" for kernel in KERNEL_NAMES)))


def get_sequence(dtype) -> SequenceKernels:
    """The sequence kernels for ``dtype`` on the current device; compiles on first use."""
    ctype = C_TYPES[np.dtype(dtype)]
    return SequenceKernels(*_current("lstm", (f"{kernel}<{ctype}>" for kernel in SEQUENCE_NAMES)))


def get_optim(dtype) -> OptimKernels:
    """The optimizer kernels for ``dtype`` (float32 or float64) on the current device; compiles on first use."""
    ctype = C_TYPES[np.dtype(dtype)]
    return OptimKernels(*_current("optim", (f"{OPTIM_UPDATE}<{ctype}>", OPTIM_CLIP_SCALES)))


def get_activation(dtype) -> ActivationKernels:
    """The activation kernels for ``dtype`` (float32 or float64) on the current device; compiles on first use."""
    ctype = C_TYPES[np.dtype(dtype)]
    return ActivationKernels(*_current("activation", (f"{kernel}<{ctype}>" for kernel in ACTIVATION_NAMES)))


def blocks(elements: int) -> int:
    """Blocks of THREADS_PER_BLOCK threads covering ``elements`` (>= 1) threads."""
    return (elements + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
