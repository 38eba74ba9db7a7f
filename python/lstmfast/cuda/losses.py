"""Losses on the GPU: the values and the gradient of binary crossentropy and sparse categorical
crossentropy, on probabilities or logits, in one launch each (``binary_crossentropy`` and
``sparse_crossentropy`` in ``activation_kernels.cu``, per-element math in ``loss_rules.cuh``),
where the NumPy formulas of ``lstmfast.losses`` cost CuPy 13 to 21 launches. Reached through the
engine boundary, ``lstmfast.ops.device_loss``, which decides when these kernels apply."""
from __future__ import annotations

from types import ModuleType
from typing import Tuple

import numpy as np

from .._typing import Array
from . import _kernels

__all__ = ["binary_crossentropy", "sparse_crossentropy"]

_WARPS_PER_BLOCK = _kernels.ACTIVATION_THREADS // 32


def _launch(kernel, p: Array, second: Array, from_logits: bool, eps: float, one_minus_eps: float,
            values: Array, grad: Array) -> None:
    cols = p.shape[-1]
    rows = p.size // cols
    kernel((-(-rows // _WARPS_PER_BLOCK),), (_kernels.ACTIVATION_THREADS,),
           (np.int64(rows), np.int64(cols), np.int32(from_logits), np.float64(eps), np.float64(one_minus_eps),
            p, second, values, grad))


def binary_crossentropy(cp: ModuleType, t: Array, p: Array, from_logits: bool, eps: float,
                        one_minus_eps: float) -> Tuple[Array, Array]:
    """``(values [...], grad [..., C])`` of binary crossentropy (``losses.BinaryCrossentropy._formula``)
    for C-contiguous CuPy arrays ``t`` and ``p`` of one shape and float dtype, at least one element;
    ``eps``/``one_minus_eps``: the clip bounds in ``p``'s dtype."""
    values, grad = cp.empty(p.shape[:-1], p.dtype), cp.empty(p.shape, p.dtype)
    _launch(_kernels.get_activation(p.dtype).binary_crossentropy, p, t, from_logits, eps, one_minus_eps, values,
            grad)
    return values, grad


def sparse_crossentropy(cp: ModuleType, labels: Array, p: Array, from_logits: bool, eps: float,
                        one_minus_eps: float) -> Tuple[Array, Array]:
    """``(values [...], grad [..., C])`` of sparse categorical crossentropy
    (``losses.SparseCategoricalCrossentropy._formula``) for a C-contiguous CuPy array ``p`` and
    int64 ``labels`` of shape ``p.shape[:-1]`` in [0, C) (checked by the caller)."""
    values, grad = cp.empty(p.shape[:-1], p.dtype), cp.empty(p.shape, p.dtype)
    _launch(_kernels.get_activation(p.dtype).sparse_crossentropy, p, labels, from_logits, eps, one_minus_eps,
            values, grad)
    return values, grad
