"""Dropout masks drawn on the GPU, in one launch, by a generator whose state lives on the device
(``dropout_keep`` in ``activation_kernels.cu``, Philox4x32-10 in ``lf_random.cuh``).

Each device has one generator: a draw counter in device memory, which every launch reads and
advances itself. A mask is a function of the layer's key (two 32-bit words drawn once from its
seeded generator, or lstmfast's), the draw counter and the element's position, so nothing goes from
the host to the device per mask, and a CUDA graph of a training step draws new masks at each replay
as the eager step would. ``lstmfast.utils.set_random_seed`` (``backend.set_random_seed``) sets every
generator's counter back to zero, in place (graphs hold its address).

A seeded run on the GPU draws the same masks every time, but not the CPU run's masks (those come
from NumPy's generator on the host), and as the masks no longer draw from lstmfast's host
generator, its later draws (the shuffling of ``fit``) differ from the CPU run's too."""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, List, Tuple

import numpy as np

from .._typing import Array
from . import _kernels

__all__ = ["keep_mask", "counters", "reset"]

_MAX_BLOCKS = 1024  # the kernel strides over larger masks


class _Generator:
    """One device's draw counter and the kernel's block counter (zero between launches)."""

    def __init__(self, cp: ModuleType) -> None:
        self.offset = cp.zeros(1, np.uint64)
        self.done = cp.zeros(1, np.uint32)


_GENERATORS: dict = {}  # device id -> _Generator


def keep_mask(cp: ModuleType, shape: Tuple[int, ...], rate: float, dtype: Any, key: Tuple[int, int]) -> Array:
    """An inverted-dropout mask of ``shape`` and ``dtype`` (float32 or float64) on the current
    device: ``1 / (1 - rate)`` with probability ``1 - rate``, else 0; ``0 <= rate < 1``; ``key``:
    two integers in [0, 2**32)."""
    dtype = np.dtype(dtype)
    if dtype not in _kernels.C_TYPES:
        raise TypeError(f"keep_mask: dtype must be float32 or float64, got {dtype}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"keep_mask: rate must lie in [0, 1), got {rate}")
    if len(key) != 2 or not all(0 <= int(k) < 2 ** 32 for k in key):
        raise ValueError(f"keep_mask: key must be two integers in [0, 2**32), got {key!r}")
    device_id = cp.cuda.Device().id
    generator = _GENERATORS.get(device_id)
    if generator is None:
        generator = _GENERATORS[device_id] = _Generator(cp)
    keep = cp.empty(shape, dtype)
    if keep.size == 0:
        return keep
    groups = -(-keep.size // 4)
    blocks = min(-(-groups // _kernels.ACTIVATION_THREADS), _MAX_BLOCKS)
    _kernels.get_activation(dtype).dropout_keep(
        (blocks,), (_kernels.ACTIVATION_THREADS,),
        (np.int64(keep.size), np.float64(rate), np.float64(dtype.type(1 / (1 - rate))), np.uint32(key[0]),
         np.uint32(key[1]), generator.offset, generator.done, keep))
    return keep


def counters() -> List[Array]:
    """The draw counters of the devices' generators (state a training step writes)."""
    return [g.offset for g in _GENERATORS.values()]


def reset() -> None:
    """Every generator's draw counter back to zero (``backend.set_random_seed``)."""
    cp = sys.modules.get("cupy")
    for device_id, g in _GENERATORS.items():
        with cp.cuda.Device(device_id):
            g.offset.fill(0)
