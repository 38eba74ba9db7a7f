"""Normalisation layers: BatchNormalization (batch statistics in training, moving statistics in
inference) and LayerNormalization (statistics over the feature axes of each sample), with Keras 3's
arguments, weight layout and masking. See ``lstmfast.layers`` for the protocol."""
from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .. import ops
from .._typing import Arrays, InputShape, Mask, OutputShape
from ..initializers import InitializerLike
from .base import Layer, _cast, _first_shape, _refuse, _serialize_initializer, register

__all__ = ["BatchNormalization", "LayerNormalization"]

_MASK_EPSILON = 1e-7  # Keras's backend.epsilon(), added to the unmasked count of a masked batch


def _axis_index(axis, ndim: int, layer: str, argument: str = "axis") -> int:
    """``axis`` as an index in ``range(ndim)``; the error names the layer and the shape's rank."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"layer {layer!r}: {argument} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"layer {layer!r}: {argument}={axis} is out of bounds for inputs of rank {ndim}")
    return int(axis) % ndim


def _bool_flag(value, argument: str, layer: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"layer {layer!r}: {argument} must be True or False, got {value!r}")
    return bool(value)


def _nonnegative_float(value, argument: str, layer: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value >= 0:
        raise ValueError(f"layer {layer!r}: {argument} must be a float >= 0, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# BatchNormalization.
# ---------------------------------------------------------------------------------------------

@register
class BatchNormalization(Layer):
    """Normalises each channel of ``axis`` over all other axes (Keras 3 semantics).

    Training (``training=True`` and ``trainable``), with ``R`` the axes other than ``axis`` and
    ``w`` the mask broadcast over the features (1 everywhere without a mask)::

        n    = sum_R w                         (+1e-7 with a mask: Keras's epsilon)
        mean = sum_R(w x) / n
        var  = sum_R(w (x - mean)^2) / n        (biased)
        y    = gamma (x - mean) / sqrt(var + epsilon) + beta      at every position, masked or not
        moving_mean     = momentum moving_mean     + (1 - momentum) mean
        moving_variance = momentum moving_variance + (1 - momentum) var

    Otherwise (inference, or a frozen layer as in Keras) ``mean``, ``var`` are the moving ones
    and nothing is updated. The gradient flows through the batch statistics. Weights, in Keras's
    ``get_weights`` order: ``gamma [C]`` (``scale``), ``beta [C]`` (``center``), then the
    non-trainable ``moving_mean [C]``, ``moving_variance [C]`` (``non_trainable``: saved and
    counted, never given to the optimizer). The mask is passed on; a mask must have the inputs'
    rank minus one. Regularizers, constraints, ``renorm`` and ``synchronized`` are not supported.
    """

    supports_masking = True

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: InitializerLike = "zeros",
                 gamma_initializer: InitializerLike = "ones", moving_mean_initializer: InitializerLike = "zeros",
                 moving_variance_initializer: InitializerLike = "ones", beta_regularizer: None = None,
                 gamma_regularizer: None = None, beta_constraint: None = None, gamma_constraint: None = None,
                 renorm: bool = False, renorm_clipping: None = None, renorm_momentum: float = 0.99,
                 synchronized: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"BatchNormalization {self.name!r}: axis must be an int, got {axis!r}")
        self.axis = int(axis)
        self.momentum = _nonnegative_float(momentum, "momentum", self.name)
        self.epsilon = _nonnegative_float(epsilon, "epsilon", self.name)
        self.center = _bool_flag(center, "center", self.name)
        self.scale = _bool_flag(scale, "scale", self.name)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer
        _refuse(self.name, beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
                beta_constraint=beta_constraint, gamma_constraint=gamma_constraint,
                renorm_clipping=renorm_clipping)
        for argument, value in (("renorm", renorm), ("synchronized", synchronized)):
            if value:
                raise NotImplementedError(f"layer {self.name!r}: {argument}=True is not supported by lstmfast "
                                          f"(got {argument}={value!r}; only False)")
        self._reduction_axes = None

    def build(self, input_shape: InputShape) -> None:
        shape = _first_shape(input_shape)
        axis = _axis_index(self.axis, len(shape), self.name)
        if shape[axis] is None:
            raise ValueError(f"BatchNormalization {self.name!r}: axis {self.axis} of the input shape {shape} must "
                             "be known to build the layer")
        channels = (shape[axis],)
        if self.scale:
            self.add_weight("gamma", channels, self.gamma_initializer)
        if self.center:
            self.add_weight("beta", channels, self.beta_initializer)
        self.add_weight("moving_mean", channels, self.moving_mean_initializer, trainable=False)
        self.add_weight("moving_variance", channels, self.moving_variance_initializer, trainable=False)
        self._reduction_axes = tuple(i for i in range(len(shape)) if i != axis)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _first_shape(input_shape)
        _axis_index(self.axis, len(shape), self.name)
        return shape

    # -- computation ----------------------------------------------------------------------------

    def _check(self, x, mask):
        channels = self.weights["moving_mean"].shape[0]
        if x.ndim != len(self._reduction_axes) + 1 or x.shape[self.axis] != channels:
            raise ValueError(f"BatchNormalization {self.name!r} was built for inputs of rank "
                             f"{len(self._reduction_axes) + 1} with {channels} channels on axis {self.axis}, "
                             f"got shape {x.shape}")
        if mask is not None and np.ndim(mask) != x.ndim - 1:
            raise ValueError(f"BatchNormalization {self.name!r}: the mask must have one dimension less than the "
                             f"inputs, got mask shape {np.shape(mask)} for inputs of shape {x.shape}")

    def _param_shape(self, ndim: int) -> tuple:
        shape = [1] * ndim
        shape[self.axis] = -1
        return tuple(shape)

    def _affine(self, ndim: int):
        """gamma and beta shaped to broadcast against the inputs (None where absent)."""
        shape = self._param_shape(ndim)
        gamma = self.weights["gamma"].reshape(shape) if self.scale else None
        beta = self.weights["beta"].reshape(shape) if self.center else None
        return gamma, beta

    def _batch_moments(self, x, mask):
        """(mean, var, w, n) over the reduction axes, kept as broadcastable dims; ``w`` is the
        0/1 mask broadcast to ``x`` (None without a mask), ``n`` the (masked) count."""
        axes = self._reduction_axes
        if mask is None:
            n = math.prod(x.shape[a] for a in axes)
            mean = x.mean(axis=axes, keepdims=True)
            var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
            return mean, var, None, n
        xp = ops.array_module(x)
        m = ops.to_device_of(x, xp.asarray(mask)).astype(bool)
        w = xp.broadcast_to(m[..., None], x.shape).astype(x.dtype)
        n = w.sum(axis=axes, keepdims=True) + x.dtype.type(_MASK_EPSILON)
        mean = (w * x).sum(axis=axes, keepdims=True) / n
        var = (w * (x - mean) ** 2).sum(axis=axes, keepdims=True) / n
        return mean, var, w, n

    def _uses_batch_statistics(self, training) -> bool:
        return bool(training) and self.trainable  # Keras: a frozen BatchNormalization runs in inference mode

    def _update_moving(self, mean, var) -> None:
        momentum = self.momentum
        for key, stat in (("moving_mean", mean), ("moving_variance", var)):
            moving = self.weights[key]  # in place: the model, the optimizer and saving hold this array
            moving *= moving.dtype.type(momentum)
            moving += stat.reshape(-1).astype(moving.dtype, copy=False) * moving.dtype.type(1.0 - momentum)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        self._check(x, mask)
        gamma, beta = self._affine(x.ndim)
        batch = self._uses_batch_statistics(training)
        if batch:
            mean, var, w, n = self._batch_moments(x, mask)
            self._update_moving(mean, var)
        else:
            shape = self._param_shape(x.ndim)
            mean = self.weights["moving_mean"].reshape(shape)
            var = self.weights["moving_variance"].reshape(shape)
            w = n = None
        inv = 1.0 / np.sqrt(var + x.dtype.type(self.epsilon))
        centred = x - mean
        xhat = centred * inv
        y = xhat if gamma is None else xhat * gamma
        if beta is not None:
            y = y + beta
        return y, (centred, xhat, inv, w, n, batch)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self.forward(inputs, training, mask)[0]

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        centred, xhat, inv, w, n, batch = cache
        if grad_outputs is None:
            return None
        dy = _cast(grad_outputs, self._np_dtype)
        axes = self._reduction_axes
        if self.trainable:
            if self.scale:
                self.grads["gamma"] += (dy * xhat).sum(axis=axes)
            if self.center:
                self.grads["beta"] += dy.sum(axis=axes)
        gamma, _ = self._affine(dy.ndim)
        dxhat = dy if gamma is None else dy * gamma
        dx = dxhat * inv
        if not batch:
            return dx
        # y depends on every x through mean and var; mean, var depend on the unmasked x (w = 1).
        if w is None:
            w = dy.dtype.type(1)
            n = dy.dtype.type(math.prod(dy.shape[a] for a in axes))
        dvar = (dxhat * centred).sum(axis=axes, keepdims=True) * (-0.5 * inv ** 3)
        dmean = -dx.sum(axis=axes, keepdims=True) - 2 * dvar * (w * centred).sum(axis=axes, keepdims=True) / n
        return dx + w * (dmean + 2 * dvar * centred) / n

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": _serialize_initializer(self.beta_initializer),
                "gamma_initializer": _serialize_initializer(self.gamma_initializer),
                "moving_mean_initializer": _serialize_initializer(self.moving_mean_initializer),
                "moving_variance_initializer": _serialize_initializer(self.moving_variance_initializer)}


# ---------------------------------------------------------------------------------------------
# LayerNormalization.
# ---------------------------------------------------------------------------------------------

@register
class LayerNormalization(Layer):
    """Normalises each sample over ``axis`` (an int or a list of ints; Keras 3 semantics)::

        mean, var = mean and biased variance of x over axis
        y = gamma (x - mean) / sqrt(var + epsilon) + beta

    ``gamma``, ``beta`` have the shape of the normalised axes (in increasing axis order); Keras's
    ``get_weights`` order is gamma (``scale``), beta (``center``). ``rms_scaling=True`` is Keras's
    deprecated option, kept as Keras computes it: ``y = gamma x / sqrt(var + epsilon)``, no
    centring, no beta (it warns, as Keras does). The mask is passed on and not used.
    """

    supports_masking = True

    def __init__(self, axis: Union[int, Sequence[int]] = -1, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer: InitializerLike = "zeros",
                 gamma_initializer: InitializerLike = "ones", beta_regularizer: None = None,
                 gamma_regularizer: None = None, beta_constraint: None = None, gamma_constraint: None = None,
                 rms_scaling: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if not axis or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in axis):
                raise TypeError(f"LayerNormalization {self.name!r}: axis must be an int or a non-empty list of "
                                f"ints, got {axis!r}")
            self.axis = [int(a) for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = int(axis)
        else:
            raise TypeError(f"LayerNormalization {self.name!r}: axis must be an int or a list of ints, got {axis!r}")
        self.epsilon = _nonnegative_float(epsilon, "epsilon", self.name)
        self.center = _bool_flag(center, "center", self.name)
        self.scale = _bool_flag(scale, "scale", self.name)
        self.rms_scaling = _bool_flag(rms_scaling, "rms_scaling", self.name)
        if self.rms_scaling:
            warnings.warn(f"LayerNormalization {self.name!r}: rms_scaling=True is deprecated in Keras 3 (it "
                          "scales by the variance, not the root mean square); lstmfast computes it as Keras "
                          "does", UserWarning, stacklevel=2)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        _refuse(self.name, beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
                beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        self._axes = None
        self._param_shape = None

    def _resolve_axes(self, ndim: int) -> tuple:
        listed = self.axis if isinstance(self.axis, list) else [self.axis]
        axes = sorted({_axis_index(a, ndim, self.name) for a in listed})
        if len(axes) != len(listed):
            raise ValueError(f"LayerNormalization {self.name!r}: axis {self.axis} names an axis twice")
        return tuple(axes)

    def build(self, input_shape: InputShape) -> None:
        shape = _first_shape(input_shape)
        axes = self._resolve_axes(len(shape))
        if any(shape[a] is None for a in axes):
            raise ValueError(f"LayerNormalization {self.name!r}: the normalised axes {list(axes)} of the input "
                             f"shape {shape} must be known to build the layer")
        params = tuple(shape[a] for a in axes)
        if self.scale or self.rms_scaling:
            self.add_weight("gamma", params, self.gamma_initializer)
        if self.center and not self.rms_scaling:
            self.add_weight("beta", params, self.beta_initializer)
        self._axes = axes
        self._param_shape = tuple(shape[i] if i in axes else 1 for i in range(len(shape)))
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _first_shape(input_shape)
        self._resolve_axes(len(shape))
        return shape

    def _params(self):
        gamma = self.weights["gamma"].reshape(self._param_shape) if "gamma" in self.weights else None
        beta = self.weights["beta"].reshape(self._param_shape) if "beta" in self.weights else None
        return gamma, beta

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        if x.ndim != len(self._param_shape) or any(x.shape[a] != self._param_shape[a] for a in self._axes):
            sizes = ", ".join(f"{self._param_shape[a]} on axis {a}" for a in self._axes)
            raise ValueError(f"LayerNormalization {self.name!r} was built for inputs of rank {len(self._param_shape)} "
                             f"with {sizes}, got shape {x.shape}")
        axes = self._axes
        gamma, beta = self._params()
        mean = x.mean(axis=axes, keepdims=True)
        centred = x - mean
        var = (centred ** 2).mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + x.dtype.type(self.epsilon))
        xhat = (x if self.rms_scaling else centred) * inv
        y = xhat if gamma is None else xhat * gamma
        if beta is not None:
            y = y + beta
        return y, (x, centred, xhat, inv)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self.forward(inputs, training, mask)[0]

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        if grad_outputs is None:
            return None
        x, centred, xhat, inv = cache
        dy = _cast(grad_outputs, self._np_dtype)
        axes = self._axes
        rest = tuple(i for i in range(x.ndim) if i not in axes)
        gamma, _ = self._params()
        if self.trainable:
            if "gamma" in self.weights:
                self.grads["gamma"] += (dy * xhat).sum(axis=rest).reshape(self.grads["gamma"].shape)
            if "beta" in self.weights:
                self.grads["beta"] += dy.sum(axis=rest).reshape(self.grads["beta"].shape)
        dxhat = dy if gamma is None else dy * gamma
        count = x.dtype.type(math.prod(x.shape[a] for a in axes))
        if self.rms_scaling:
            # y = x inv: the variance (centred) depends on x, the numerator is x itself.
            dvar = (dxhat * x).sum(axis=axes, keepdims=True) * (-0.5 * inv ** 3)
            return dxhat * inv + 2 * dvar * centred / count
        mean_dxhat = dxhat.mean(axis=axes, keepdims=True)
        mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True)
        return inv * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "rms_scaling": self.rms_scaling,
                "beta_initializer": _serialize_initializer(self.beta_initializer),
                "gamma_initializer": _serialize_initializer(self.gamma_initializer)}
