"""Conv1D, and the time-window helpers it shares with the 1-D pooling layers (``pooling``).

Shapes inside are channels_last, ``[B, T, C]`` (B = batch, T = time steps, C = channels); a layer
built with ``data_format="channels_first"`` takes and gives ``[B, C, T]`` and transposes at its
edges. A window of ``k`` taps at output step ``t`` reads the padded input at ``t * s + j * d``
(``s`` = stride, ``d`` = dilation, ``j < k``). Padding, as Keras 3:

* ``"valid"``: none; ``T_out = (T - d * (k - 1) - 1) // s + 1``, which must be positive.
* ``"same"``: ``T_out = ceil(T / s)``, ``total = max(0, (T_out - 1) * s + d * (k - 1) + 1 - T)``
  steps, ``total // 2`` on the left and the rest on the right.
* ``"causal"`` (Conv1D only): ``d * (k - 1)`` steps on the left; ``T_out = ceil(T / s)``.

Each layer computes with the array module of its inputs (NumPy or CuPy).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

from .. import activations, ops
from .._typing import Arrays, InputShape, Mask, OutputShape
from ..activations import ActivationLike
from ..initializers import InitializerLike
from .base import (
    Layer,
    _cast,
    _contiguous,
    _first_shape,
    _positive_int,
    _refuse,
    _serialize_initializer,
    register,
)

__all__ = ["Conv1D"]

DATA_FORMATS = ("channels_last", "channels_first")


# ---------------------------------------------------------------------------------------------
# Arguments and geometry (shared with pooling.py).
# ---------------------------------------------------------------------------------------------

def _size(value, what: str, layer: str) -> int:
    """A positive int given as an int or a tuple/list of one int (Keras's 1-D spelling)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"layer {layer!r}: {what} must be a positive int or a tuple of 1 int, got {value!r}")
        value = value[0]
    return _positive_int(value, what, layer)


def _padding(value, allowed: tuple, layer: str) -> str:
    padding = value.lower() if isinstance(value, str) else value
    if padding not in allowed:
        raise ValueError(f"layer {layer!r}: padding must be one of {', '.join(repr(p) for p in allowed)}, "
                         f"got {value!r}")
    return padding


def _data_format(value, layer: str) -> str:
    """None means 'channels_last' (Keras's default image_data_format)."""
    data_format = "channels_last" if value is None else value.lower() if isinstance(value, str) else value
    if data_format not in DATA_FORMATS:
        raise ValueError(f"layer {layer!r}: data_format must be 'channels_last' or 'channels_first', got {value!r}")
    return data_format


def _check_rank3(shape, layer, data_format: str) -> tuple:
    """``shape`` of a 3-D input, else a ValueError saying what the layer expects."""
    if len(shape) != 3:
        expected = "(batch, steps, channels)" if data_format == "channels_last" else "(batch, channels, steps)"
        raise ValueError(f"{type(layer).__name__} {layer.name!r} needs inputs of shape {expected} "
                         f"(data_format={data_format!r}), got shape {tuple(shape)}")
    return tuple(shape)


def _geometry(length: int, size: int, stride: int, dilation: int, padding: str, layer) -> tuple:
    """(left pad, right pad, output steps) of a window of ``size`` taps over ``length`` steps."""
    span = dilation * (size - 1) + 1  # steps one window covers
    if padding == "valid":
        n_out = (length - span) // stride + 1
        if n_out <= 0:
            raise ValueError(f"{type(layer).__name__} {layer.name!r}: an input of {length} steps is shorter than one "
                             f"window ({span} steps: size {size}, dilation {dilation}) with padding='valid'")
        return 0, 0, n_out
    n_out = (length - 1) // stride + 1
    if padding == "causal":
        return span - 1, 0, n_out
    total = max(0, (n_out - 1) * stride + span - length)
    return total // 2, total - total // 2, n_out


def _output_length(length, size: int, stride: int, dilation: int, padding: str, layer):
    """Output steps for ``length`` input steps (None stays None)."""
    return None if length is None else _geometry(length, size, stride, dilation, padding, layer)[2]


def _pad_time(x, left: int, right: int, fill):
    """``x [B, T, C]`` with ``left``/``right`` steps of ``fill`` added in time (``x`` itself without)."""
    if left == 0 and right == 0:
        return x
    B, T, C = x.shape
    padded = ops.array_module(x).full((B, left + T + right, C), fill, dtype=x.dtype)
    padded[:, left:left + T] = x
    return padded


def _windows(padded, size: int, stride: int, dilation: int, n_out: int):
    """The im2col gather: ``padded [B, Tp, C] -> windows [B, n_out, size, C]`` (a C-contiguous copy),
    ``windows[b, t, j] = padded[b, t * stride + j * dilation]``; strided views, no loop."""
    xp = ops.array_module(padded)
    span = dilation * (size - 1) + 1
    view = xp.lib.stride_tricks.sliding_window_view(padded, span, axis=1)  # [B, Tp - span + 1, C, span]
    view = view[:, :(n_out - 1) * stride + 1:stride, :, ::dilation]       # [B, n_out, C, size]
    return xp.ascontiguousarray(view.transpose(0, 1, 3, 2))


def _scatter_windows(grad_windows, padded_length: int, stride: int, dilation: int):
    """The col2im scatter-add, adjoint of ``_windows``: ``grad_windows [B, n_out, size, C] ->
    [B, padded_length, C]``, summing where windows overlap. One strided slice per tap: within a tap
    the output steps are ``stride`` apart, so no slice writes one step twice."""
    B, n_out, size, C = grad_windows.shape
    grad = ops.array_module(grad_windows).zeros((B, padded_length, C), dtype=grad_windows.dtype)
    last = (n_out - 1) * stride + 1
    for j in range(size):
        grad[:, j * dilation:j * dilation + last:stride] += grad_windows[:, :, j]
    return grad


def _to_channels_last(x, data_format: str):
    return x.transpose(0, 2, 1) if data_format == "channels_first" else x


def _from_channels_last(y, data_format: str):
    return _contiguous(y.transpose(0, 2, 1)) if data_format == "channels_first" else y


# ---------------------------------------------------------------------------------------------
# Conv1D.
# ---------------------------------------------------------------------------------------------

@register
class Conv1D(Layer):
    """1-D convolution (cross-correlation, as Keras) over time, ``kernel [k, C / G, F]``, ``bias [F]``.

    With the input padded in time to ``xp`` (see the module docstring), ``G = groups``, ``Cg = C / G``,
    ``Fg = F / G`` and filter ``f`` in group ``g = f // Fg``::

        y[b, t, f] = activation(bias[f] + sum_{j < k, c < Cg} xp[b, t*s + j*d, g*Cg + c] * kernel[j, c, f])

    Computed as im2col: the windows ``[B * T_out, k * Cg]`` of each group times its kernel
    ``[k * Cg, Fg]``, one GEMM per group (one in all for ``groups=1``). The mask is dropped, as Keras.
    """

    def __init__(self, filters: int, kernel_size: Union[int, Sequence[int]], strides: Union[int, Sequence[int]] = 1,
                 padding: str = "valid", data_format: Optional[str] = None,
                 dilation_rate: Union[int, Sequence[int]] = 1, groups: int = 1, activation: ActivationLike = None,
                 use_bias: bool = True, kernel_initializer: InitializerLike = "glorot_uniform",
                 bias_initializer: InitializerLike = "zeros", kernel_regularizer: None = None,
                 bias_regularizer: None = None, activity_regularizer: None = None, kernel_constraint: None = None,
                 bias_constraint: None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters", self.name)
        self.kernel_size = _size(kernel_size, "kernel_size", self.name)
        self.strides = _size(strides, "strides", self.name)
        self.padding = _padding(padding, ("valid", "same", "causal"), self.name)
        self.data_format = _data_format(data_format, self.name)
        self.dilation_rate = _size(dilation_rate, "dilation_rate", self.name)
        self.groups = _positive_int(groups, "groups", self.name)
        if self.filters % self.groups:
            raise ValueError(f"layer {self.name!r}: filters must be divisible by groups, got filters={self.filters}, "
                             f"groups={self.groups}")
        if self.strides > 1 and self.dilation_rate > 1:
            raise ValueError(f"layer {self.name!r}: strides > 1 cannot be combined with dilation_rate > 1 (as in "
                             f"Keras), got strides={self.strides}, dilation_rate={self.dilation_rate}")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        _refuse(self.name, kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                bias_constraint=bias_constraint)

    def _steps_and_channels(self, shape) -> tuple:
        _check_rank3(shape, self, self.data_format)
        return (shape[1], shape[2]) if self.data_format == "channels_last" else (shape[2], shape[1])

    def build(self, input_shape: InputShape) -> None:
        shape = _first_shape(input_shape)
        _, channels = self._steps_and_channels(shape)
        if channels is None:
            raise ValueError(f"Conv1D {self.name!r} needs a known number of input channels, got shape {shape}")
        if channels % self.groups:
            raise ValueError(f"Conv1D {self.name!r}: input channels must be divisible by groups={self.groups}, "
                             f"got {channels} channels (input shape {shape})")
        self.compute_output_shape(shape)  # a sequence shorter than one 'valid' window fails here
        self.add_weight("kernel", (self.kernel_size, channels // self.groups, self.filters), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _first_shape(input_shape)
        steps, _ = self._steps_and_channels(shape)
        n_out = _output_length(steps, self.kernel_size, self.strides, self.dilation_rate, self.padding, self)
        if self.data_format == "channels_last":
            return (shape[0], n_out, self.filters)
        return (shape[0], self.filters, n_out)

    def _input(self, inputs):
        """The input as channels_last ``[B, T, C]`` in the layer's dtype, its channels checked."""
        x = _cast(inputs, self._np_dtype)
        steps, channels = self._steps_and_channels(x.shape)
        expected = self.weights["kernel"].shape[1] * self.groups
        if channels != expected:
            raise ValueError(f"Conv1D {self.name!r} was built for {expected} input channels, got input of shape "
                             f"{x.shape} (data_format={self.data_format!r})")
        return _to_channels_last(x, self.data_format)

    def _grouped_kernel(self):
        """The kernel as ``[G, k * Cg, Fg]`` (a view when ``groups=1``)."""
        k, cg, f = self.weights["kernel"].shape
        g = self.groups
        return self.weights["kernel"].reshape(k, cg, g, f // g).transpose(2, 0, 1, 3).reshape(g, k * cg, f // g)

    def _convolve(self, x):
        """(pre-activation ``z [B, T_out, F]``, GEMM operand ``patches [G, B * T_out, k * Cg]``, geometry)."""
        B, T, C = x.shape
        k, g = self.kernel_size, self.groups
        left, right, n_out = _geometry(T, k, self.strides, self.dilation_rate, self.padding, self)
        windows = _windows(_pad_time(x, left, right, 0), k, self.strides, self.dilation_rate, n_out)
        # [B, n_out, k, C] -> [G, B * n_out, k * Cg] (a view when groups=1)
        patches = windows.reshape(B * n_out, k, g, C // g).transpose(2, 0, 1, 3).reshape(g, B * n_out, k * C // g)
        z = ops.matmul(patches, self._grouped_kernel(), precision=self._gemm_precision)  # [G, B * n_out, Fg]
        z = z.transpose(1, 0, 2).reshape(B, n_out, self.filters)
        if self.use_bias:
            z += self.weights["bias"]
        return z, patches, (T, left, right)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        z, _, _ = self._convolve(self._input(inputs))
        return _from_channels_last(self.activation(z), self.data_format)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        z, patches, geometry = self._convolve(self._input(inputs))
        y = self.activation(z)
        return _from_channels_last(y, self.data_format), (patches, geometry, z, y)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        patches, (T, left, right), z, y = cache
        xp = ops.array_module(z)
        if grad_outputs is None:
            dy = xp.zeros_like(y)
        else:
            dy = _to_channels_last(_cast(grad_outputs, self._np_dtype), self.data_format)
        dz = self.activation.backward(z, y, dy)                              # [B, n_out, F]
        B, n_out, F = dz.shape
        k, g = self.kernel_size, self.groups
        dz_grouped = dz.reshape(B * n_out, g, F // g).transpose(1, 0, 2)     # [G, B * n_out, Fg]
        if self.trainable:
            kernel_grad = self.grads["kernel"]
            if g == 1:  # the kernel's own layout: accumulate in place
                ops.matmul(patches[0], dz_grouped[0], trans_a=True, out=kernel_grad.reshape(-1, F), accumulate=True,
                           precision=self._gemm_precision)
            else:
                grouped = ops.matmul(patches, dz_grouped, trans_a=True, precision=self._gemm_precision)  # [G, k*Cg, Fg]
                kernel_grad.reshape(k, -1, g, F // g)[...] += grouped.reshape(g, k, -1, F // g).transpose(1, 2, 0, 3)
            if self.use_bias:
                self.grads["bias"] += dz.reshape(-1, F).sum(axis=0)
        d_patches = ops.matmul(dz_grouped, self._grouped_kernel(), trans_b=True,
                               precision=self._gemm_precision)  # [G, B * n_out, k * Cg]
        d_windows = d_patches.reshape(g, B, n_out, k, -1).transpose(1, 2, 3, 0, 4).reshape(B, n_out, k, -1)
        dx = _scatter_windows(d_windows, left + T + right, self.strides, self.dilation_rate)[:, left:left + T]
        return _from_channels_last(_contiguous(dx), self.data_format)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": [self.kernel_size],
                "strides": [self.strides], "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": [self.dilation_rate], "groups": self.groups, "activation": self.activation.name,
                "use_bias": self.use_bias, "kernel_initializer": _serialize_initializer(self.kernel_initializer),
                "bias_initializer": _serialize_initializer(self.bias_initializer)}
