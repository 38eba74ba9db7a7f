"""The layer activations on the GPU: one kernel launch for an activation or its gradient over a
whole array (``activation_kernels.cu``, per-element math in ``activation_rules.cuh``), where the
NumPy formulas of ``lstmfast.activations`` cost CuPy 3 to 8 launches each (sigmoid: 8 forward, 3
backward; softmax: 5 and 4). Reached through the engine boundary, ``lstmfast.ops.device_activation``
and ``device_activation_grad``, which decide when these kernels apply."""
from __future__ import annotations

from types import ModuleType

import numpy as np

from .._typing import Array
from . import _kernels

__all__ = ["CODES", "SOFTMAX", "forward", "backward"]

# The elementwise activations with a kernel: name -> code of activation_rules.cuh (ActivationCode).
CODES = {"relu": 0, "sigmoid": 1, "tanh": 2, "hard_sigmoid": 3, "softplus": 4, "softsign": 5, "elu": 6,
         "selu": 7, "swish": 8, "gelu": 9, "exponential": 10}
SOFTMAX = "softmax"  # over the last axis: its own kernels
_WARPS_PER_BLOCK = _kernels.ACTIVATION_THREADS // 32
_MAX_BLOCKS = 8192   # the elementwise kernels stride over larger arrays


def _launch(name: str, forward: bool, like: Array, arrays: tuple) -> None:
    """One launch of ``name``'s forward or backward kernel over ``like``'s shape; ``arrays`` are
    the kernel's pointer arguments."""
    kernels = _kernels.get_activation(like.dtype)
    block = (_kernels.ACTIVATION_THREADS,)
    if name == SOFTMAX:
        rows, cols = like.size // like.shape[-1], like.shape[-1]
        kernel = kernels.softmax_forward if forward else kernels.softmax_backward
        kernel((-(-rows // _WARPS_PER_BLOCK),), block, (np.int64(rows), np.int64(cols)) + arrays)
    else:
        kernel = kernels.forward if forward else kernels.backward
        kernel((min(_kernels.blocks(like.size), _MAX_BLOCKS),), block,
               (np.int64(like.size), np.int32(CODES[name])) + arrays)


def forward(cp: ModuleType, name: str, x: Array) -> Array:
    """``name(x)`` as a new array; ``x`` a C-contiguous float32/float64 CuPy array on the current
    device, holding at least one element (and, for softmax, at least one column)."""
    y = cp.empty(x.shape, x.dtype)
    _launch(name, True, x, (x, y))
    return y


def backward(cp: ModuleType, name: str, x: Array, y: Array, dy: Array) -> Array:
    """``dL/dx`` of ``name`` as a new array, from ``x``, ``y = name(x)`` and ``dy``: C-contiguous
    CuPy arrays of one shape and float dtype on the current device (``x`` unused by softmax)."""
    dx = cp.empty(dy.shape, dy.dtype)
    _launch(name, False, dy, (y, dy, dx) if name == SOFTMAX else (x, y, dy, dx))
    return dx
