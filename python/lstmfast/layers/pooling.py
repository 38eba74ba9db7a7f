"""1-D pooling over time: MaxPooling1D, AveragePooling1D (windows of ``pool_size`` steps, ``strides``
apart, padding 'valid' or 'same' as in ``convolutional``'s docstring), GlobalMaxPooling1D and
GlobalAveragePooling1D (over all steps). Masks as Keras 3: GlobalAveragePooling1D averages over the
unmasked steps and drops the mask; the others ignore and drop it."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .. import ops
from .._typing import Arrays, InputShape, Mask, OutputShape
from .base import Layer, _cast, _first_shape, register
from .convolutional import (
    _check_rank3,
    _data_format,
    _from_channels_last,
    _geometry,
    _output_length,
    _pad_time,
    _padding,
    _scatter_windows,
    _size,
    _to_channels_last,
    _windows,
)

__all__ = ["MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D", "GlobalAveragePooling1D"]


class _Pooling1D(Layer):
    """Windows of ``pool_size`` steps every ``strides`` steps (default ``pool_size``); subclasses
    reduce the windows ``[B, T_out, pool_size, C]`` over their third axis."""

    def __init__(self, pool_size: Union[int, Sequence[int]] = 2, strides: Union[None, int, Sequence[int]] = None,
                 padding: str = "valid", data_format: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_size = _size(pool_size, "pool_size", self.name)
        self.strides = self.pool_size if strides is None else _size(strides, "strides", self.name)
        self.padding = _padding(padding, ("valid", "same"), self.name)
        self.data_format = _data_format(data_format, self.name)

    def _steps(self, shape):
        _check_rank3(shape, self, self.data_format)
        return shape[1] if self.data_format == "channels_last" else shape[2]

    def build(self, input_shape: InputShape) -> None:
        self.compute_output_shape(input_shape)  # rank, and a sequence shorter than one 'valid' window
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _first_shape(input_shape)
        n_out = _output_length(self._steps(shape), self.pool_size, self.strides, 1, self.padding, self)
        if self.data_format == "channels_last":
            return (shape[0], n_out, shape[2])
        return (shape[0], shape[1], n_out)

    def _pooled_windows(self, inputs, fill):
        """(windows ``[B, T_out, pool_size, C]`` of the channels_last input padded with ``fill``,
        ``(T, left, right)``)."""
        x = _cast(inputs, self._np_dtype)
        self._steps(x.shape)
        x = _to_channels_last(x, self.data_format)
        T = x.shape[1]
        left, right, n_out = _geometry(T, self.pool_size, self.strides, 1, self.padding, self)
        return _windows(_pad_time(x, left, right, fill), self.pool_size, self.strides, 1, n_out), (T, left, right)

    def _input_grad(self, grad_windows, geometry):
        T, left, right = geometry
        dx = _scatter_windows(grad_windows, left + T + right, self.strides, 1)[:, left:left + T]
        return _from_channels_last(ops.array_module(dx).ascontiguousarray(dx), self.data_format)

    def get_config(self) -> dict:
        return {**super().get_config(), "pool_size": [self.pool_size], "padding": self.padding,
                "strides": [self.strides], "data_format": self.data_format}


@register
class MaxPooling1D(_Pooling1D):
    """``y[b, t, c] = max_j xp[b, t * strides + j, c]`` (padding counts as -inf). The gradient goes to
    the window's first maximum, the one the forward pass picked."""

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        windows, geometry = self._pooled_windows(inputs, -np.inf)
        winner = windows.argmax(axis=2)                                   # [B, T_out, C]
        y = windows.max(axis=2)
        return _from_channels_last(y, self.data_format), (winner, geometry)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        winner, geometry = cache
        if grad_outputs is None:
            return None
        dy = _to_channels_last(_cast(grad_outputs, self._np_dtype), self.data_format)
        xp = ops.array_module(dy)
        taps = xp.arange(self.pool_size).reshape(1, 1, -1, 1)
        grad_windows = (taps == winner[:, :, None, :]) * dy[:, :, None, :]  # [B, T_out, pool_size, C]
        return self._input_grad(grad_windows, geometry)


@register
class AveragePooling1D(_Pooling1D):
    """``y[b, t, c]`` = the mean of the window's input steps; with 'same' padding the padded steps are
    left out of the count (as Keras, on its TensorFlow and JAX backends). ``pool_size`` has no default
    (as Keras)."""

    def __init__(self, pool_size: Union[int, Sequence[int]], strides: Union[None, int, Sequence[int]] = None,
                 padding: str = "valid", data_format: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, **kwargs)

    def _counts(self, geometry, windows):
        """Input (not padding) steps in each of the ``windows``, ``[T_out, 1]`` on their device."""
        T, left, right = geometry
        real = np.zeros((1, left + T + right, 1), self._np_dtype)
        real[:, left:left + T] = 1
        counts = _windows(real, self.pool_size, self.strides, 1, windows.shape[1]).sum(axis=2)[0]
        return ops.to_device_of(windows, counts)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        windows, geometry = self._pooled_windows(inputs, 0)
        counts = self._counts(geometry, windows)
        return _from_channels_last(windows.sum(axis=2) / counts, self.data_format), (counts, geometry)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        counts, geometry = cache
        if grad_outputs is None:
            return None
        dy = _to_channels_last(_cast(grad_outputs, self._np_dtype), self.data_format) / counts  # [B, T_out, C]
        B, n_out, C = dy.shape
        grad_windows = ops.array_module(dy).broadcast_to(dy[:, :, None, :], (B, n_out, self.pool_size, C))
        return self._input_grad(grad_windows, geometry)


class _GlobalPooling1D(Layer):
    """A reduction over all time steps: ``[B, T, C] -> [B, C]`` (``keepdims``: ``[B, 1, C]``;
    channels_first: ``[B, C, T] -> [B, C]`` or ``[B, C, 1]``)."""

    def __init__(self, data_format: Optional[str] = None, keepdims: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_format = _data_format(data_format, self.name)
        self.keepdims = bool(keepdims)
        self._axis = 1 if self.data_format == "channels_last" else 2  # the time axis

    def build(self, input_shape: InputShape) -> None:
        _check_rank3(_first_shape(input_shape), self, self.data_format)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _check_rank3(_first_shape(input_shape), self, self.data_format)
        channels = shape[2] if self.data_format == "channels_last" else shape[1]
        if not self.keepdims:
            return (shape[0], channels)
        return (shape[0], 1, channels) if self.data_format == "channels_last" else (shape[0], channels, 1)

    def _input(self, inputs):
        x = _cast(inputs, self._np_dtype)
        _check_rank3(x.shape, self, self.data_format)
        return x

    def _keepdims_grad(self, grad_outputs):
        """``grad_outputs`` with the time axis kept (size 1)."""
        dy = _cast(grad_outputs, self._np_dtype)
        return dy if self.keepdims else ops.array_module(dy).expand_dims(dy, self._axis)

    def _reduced(self, y):
        return y if self.keepdims else y.squeeze(self._axis)

    def get_config(self) -> dict:
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


@register
class GlobalMaxPooling1D(_GlobalPooling1D):
    """The maximum over time; the gradient goes to the first maximum. A mask is ignored and dropped
    (as Keras 3)."""

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = self._input(inputs)
        xp = ops.array_module(x)
        winner = xp.expand_dims(x.argmax(axis=self._axis), self._axis)    # the time index of each max
        return self._reduced(x.max(axis=self._axis, keepdims=True)), (winner, x.shape)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        winner, shape = cache
        if grad_outputs is None:
            return None
        dy = self._keepdims_grad(grad_outputs)
        xp = ops.array_module(dy)
        steps = xp.arange(shape[self._axis]).reshape((1, -1, 1) if self._axis == 1 else (1, 1, -1))
        return (steps == winner) * dy


@register
class GlobalAveragePooling1D(_GlobalPooling1D):
    """The mean over time; with a mask ``[B, T]``, the mean over the unmasked steps (masked entries
    are left out, not multiplied by zero). As Keras 3, a row with every step masked gives NaN (0 / 0)
    and the output has no mask."""

    supports_masking = True

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
        return None

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = self._input(inputs)
        xp = ops.array_module(x)
        if mask is None:
            return self._reduced(x.mean(axis=self._axis, keepdims=True)), (None, None, x.shape)
        steps = x.shape[self._axis]
        mask = ops.to_device_of(x, mask)
        if tuple(mask.shape) != (x.shape[0], steps):
            raise ValueError(f"GlobalAveragePooling1D {self.name!r}: mask must have shape (batch, steps) = "
                             f"{(x.shape[0], steps)}, got {tuple(mask.shape)}")
        keep = xp.expand_dims(mask.astype(bool), 3 - self._axis)               # broadcasts against x
        counts = keep.sum(axis=self._axis, keepdims=True).astype(x.dtype)     # [B, 1, 1]
        total = xp.where(keep, x, x.dtype.type(0)).sum(axis=self._axis, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):  # an all-masked row: 0 / 0 = NaN, as Keras
            y = total / counts
        return self._reduced(y), (keep, counts, x.shape)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        keep, counts, shape = cache
        if grad_outputs is None:
            return None
        dy = self._keepdims_grad(grad_outputs)
        xp = ops.array_module(dy)
        if keep is None:
            return xp.broadcast_to(dy / dy.dtype.type(shape[self._axis]), shape).copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            share = dy / counts
        return xp.where(keep, share, dy.dtype.type(0))  # masked steps get exactly 0, also in all-masked rows
