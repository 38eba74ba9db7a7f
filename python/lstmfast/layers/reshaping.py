"""Reshape and Permute: the batch axis stays, the rest is reshaped or reordered. No weights; the
backward pass undoes the forward one. As Keras 3, both drop the mask."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .. import ops
from .._typing import Arrays, InputShape, Mask, OutputShape
from .base import Layer, _cast, _first_shape, register

__all__ = ["Reshape", "Permute"]


def _int_tuple(value, what: str, layer: str) -> tuple:
    if isinstance(value, (int, np.integer)) or not isinstance(value, (list, tuple)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in value):
        raise ValueError(f"layer {layer!r}: {what} must be a tuple or list of ints, got {value!r}")
    return tuple(int(d) for d in value)


@register
class Reshape(Layer):
    """``[B, *s] -> [B, *target_shape]``; one entry of ``target_shape`` may be -1 (inferred)."""

    def __init__(self, target_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        target = _int_tuple(target_shape, "target_shape", self.name)
        if any(d < -1 for d in target) or target.count(-1) > 1:
            raise ValueError(f"layer {self.name!r}: target_shape entries must be non-negative ints, with at most one "
                             f"-1 (inferred), got {target_shape!r}")
        self.target_shape = target

    def _resolved(self, shape) -> tuple:
        """``target_shape`` for inputs of ``shape`` (batch included), -1 resolved; None where unknown."""
        rest = tuple(shape[1:])
        if any(d is None for d in rest):
            return tuple(None if d == -1 else d for d in self.target_shape)
        size = math.prod(rest)
        known = math.prod(d for d in self.target_shape if d != -1)
        if -1 in self.target_shape:
            fits = known > 0 and size % known == 0
            resolved = tuple(size // known if d == -1 else d for d in self.target_shape) if fits else None
        else:
            resolved = self.target_shape if known == size else None
        if resolved is None:
            raise ValueError(f"Reshape {self.name!r}: cannot reshape inputs of shape {tuple(shape)} ({size} entries "
                             f"per sample) to target_shape {self.target_shape}")
        return resolved

    def build(self, input_shape: InputShape) -> None:
        self._resolved(_first_shape(input_shape))
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _first_shape(input_shape)
        return (shape[0],) + self._resolved(shape)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        return x.reshape((x.shape[0],) + self._resolved(x.shape)), x.shape

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        return None if grad_outputs is None else grad_outputs.reshape(cache)

    def get_config(self) -> dict:
        return {**super().get_config(), "target_shape": list(self.target_shape)}


@register
class Permute(Layer):
    """Reorders the non-batch axes: output axis ``i`` (1-based) is input axis ``dims[i - 1]``."""

    def __init__(self, dims: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dims = _int_tuple(dims, "dims", self.name)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError(f"layer {self.name!r}: dims must be a permutation of 1..{len(dims)} (the batch axis 0 "
                             f"is not permuted), got {list(dims)}")
        self.dims = dims

    def _check_rank(self, shape) -> tuple:
        shape = tuple(shape)
        if len(shape) != len(self.dims) + 1:
            raise ValueError(f"Permute {self.name!r} with dims={list(self.dims)} needs inputs of rank "
                             f"{len(self.dims) + 1} (batch included), got shape {shape}")
        return shape

    def build(self, input_shape: InputShape) -> None:
        self._check_rank(_first_shape(input_shape))
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = self._check_rank(_first_shape(input_shape))
        return (shape[0],) + tuple(shape[d] for d in self.dims)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        self._check_rank(x.shape)
        return ops.array_module(x).ascontiguousarray(x.transpose((0,) + self.dims)), None

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        if grad_outputs is None:
            return None
        inverse = tuple(int(i) for i in np.argsort((0,) + self.dims))
        return ops.array_module(grad_outputs).ascontiguousarray(grad_outputs.transpose(inverse))

    def get_config(self) -> dict:
        return {**super().get_config(), "dims": list(self.dims)}
