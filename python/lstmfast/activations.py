"""Activation functions with their backward passes, for Dense and Activation layers.

Each activation is an :class:`Activation` object: ``act(x)`` is the forward pass and
``act.backward(x, y, dy)`` returns ``dL/dx`` given the input ``x``, the output ``y = act(x)`` and
``dy = dL/dy``. Both ``x`` and ``y`` are passed so each derivative uses whichever is cheaper
(most use the output, as the engine does; swish and gelu need the input).

Names (Keras 3 semantics): ``linear`` (also None), ``relu``, ``sigmoid``, ``tanh``, ``softmax``
(last axis, max-subtracted), ``hard_sigmoid`` (Keras 3: ``relu6(x + 3) / 6``, slope 1/6 on
(-3, 3); Keras 2 and the LSTM engine's recurrent ``hard_sigmoid`` use ``clip(0.2 x + 0.5, 0, 1)``
instead), ``softplus``, ``softsign``, ``elu`` (alpha 1), ``selu``, ``swish``/``silu``, ``gelu`` (exact
``x * Phi(x)``, Keras 3's default ``approximate=False``), ``exponential``.

On a GPU (CuPy arrays) every activation but linear runs as one kernel (``lstmfast.cuda.activations``,
the same formulas per element), through ``ops.device_activation``.

At a kink (relu at 0, hard_sigmoid at +-3) the derivative taken is that of the open side the
output lies on (relu: 0 at x = 0, as Keras/TensorFlow).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Union

import numpy as np

from . import ops
from ._typing import Array

__all__ = ["Activation", "get", "serialize", "deserialize", "ACTIVATIONS", "linear", "relu", "sigmoid",
           "tanh", "softmax", "hard_sigmoid", "softplus", "softsign", "elu", "selu", "swish", "silu",
           "gelu", "exponential"]


class Activation:
    """An elementwise (or last-axis, for softmax) function with its backward pass."""

    __slots__ = ("name", "_forward", "_backward")

    def __init__(self, name: str, forward: Callable[[Array], Array],
                 backward: Callable[[Array, Array, Array], Array]) -> None:
        self.name = name
        self._forward = forward
        self._backward = backward

    def __call__(self, x: Array) -> Array:
        if type(x) is not np.ndarray:  # a device array: one kernel where the engine has one
            y = ops.device_activation(self.name, x)
            if y is not None:
                return y
        return self._forward(x)

    def backward(self, x: Array, y: Array, dy: Array) -> Array:
        """``dL/dx`` from the input ``x``, the output ``y`` and ``dL/dy`` (``dy`` is not modified)."""
        if type(dy) is not np.ndarray:
            dx = ops.device_activation_grad(self.name, x, y, dy)
            if dx is not None:
                return dx
        return self._backward(x, y, dy)

    def __repr__(self) -> str:
        return f"<activation {self.name}>"

    def __reduce__(self):  # pickles by name, so layers holding one pickle
        return (get, (self.name,))


# ---------------------------------------------------------------------------------------------
# Forward and backward, side by side.
# ---------------------------------------------------------------------------------------------

def _linear(x):
    return x


def _dlinear(x, y, dy):
    return dy


def _relu(x):
    return np.maximum(x, 0)


def _drelu(x, y, dy):
    return dy * (y > 0)


def _sigmoid(x):
    # exp of -|x| only, so no overflow for any x.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _dsigmoid(x, y, dy):
    return dy * y * (1 - y)


def _tanh(x):
    return np.tanh(x)


def _dtanh(x, y, dy):
    return dy * (1 - y * y)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _dsoftmax(x, y, dy):
    # Jacobian-vector product of softmax: dx = s * (g - sum(g * s)).
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def _hard_sigmoid(x):
    # Keras 3: relu6(x + 3) / 6.
    return np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype, copy=False)


def _dhard_sigmoid(x, y, dy):
    return dy * ((y > 0) & (y < 1)) / 6


def _softplus(x):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): no overflow.
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _dsoftplus(x, y, dy):
    return dy * _sigmoid(x)


def _softsign(x):
    return x / (1 + np.abs(x))


def _dsoftsign(x, y, dy):
    d = 1 + np.abs(x)
    return dy / (d * d)


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def _delu(x, y, dy):
    return dy * np.where(x > 0, 1, y + 1)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu(x):
    return (_SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0)))).astype(x.dtype, copy=False)


def _dselu(x, y, dy):
    # Negative side: y = scale * alpha * (e^x - 1), so dy/dx = y + scale * alpha.
    return dy * np.where(x > 0, _SELU_SCALE, y + _SELU_SCALE * _SELU_ALPHA)


def _swish(x):
    return x * _sigmoid(x)


def _dswish(x, y, dy):
    s = _sigmoid(x)
    return dy * (s + x * s * (1 - s))


_ERF = []


def _erf(x):
    """erf, elementwise: SciPy's when installed (looked up on first use), else math.erf per element."""
    if not _ERF:
        try:
            from scipy.special import erf
        except ImportError:
            erf = np.vectorize(math.erf, otypes=[np.float64])
        _ERF.append(erf)
    return _ERF[0](x)

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _gelu(x):
    # Exact form x * Phi(x) (Keras 3's gelu default, approximate=False).
    return (0.5 * x * (1 + _erf(x * _SQRT_HALF))).astype(x.dtype, copy=False)


def _dgelu(x, y, dy):
    cdf = 0.5 * (1 + _erf(x * _SQRT_HALF))
    return (dy * (cdf + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x))).astype(dy.dtype, copy=False)


def _exponential(x):
    return np.exp(x)


def _dexponential(x, y, dy):
    return dy * y


linear = Activation("linear", _linear, _dlinear)
relu = Activation("relu", _relu, _drelu)
sigmoid = Activation("sigmoid", _sigmoid, _dsigmoid)
tanh = Activation("tanh", _tanh, _dtanh)
softmax = Activation("softmax", _softmax, _dsoftmax)
hard_sigmoid = Activation("hard_sigmoid", _hard_sigmoid, _dhard_sigmoid)
softplus = Activation("softplus", _softplus, _dsoftplus)
softsign = Activation("softsign", _softsign, _dsoftsign)
elu = Activation("elu", _elu, _delu)
selu = Activation("selu", _selu, _dselu)
swish = Activation("swish", _swish, _dswish)
silu = swish
gelu = Activation("gelu", _gelu, _dgelu)
exponential = Activation("exponential", _exponential, _dexponential)

ACTIVATIONS = {a.name: a for a in (linear, relu, sigmoid, tanh, softmax, hard_sigmoid, softplus, softsign,
                                   elu, selu, swish, gelu, exponential)}
_ALIASES = {"silu": "swish"}


# What a layer's ``activation`` argument and ``get`` take: a name, None (linear), an Activation or a config dict.
ActivationLike = Union[None, str, Activation, Dict[str, Any]]


def get(identifier: ActivationLike) -> Activation:
    """An :class:`Activation` from a name, None (linear), an Activation, or a Keras-style config dict.

    A plain Python callable is refused: lstmfast needs the backward pass too (wrap it in
    ``Activation(name, forward, backward)``).
    """
    if identifier is None:
        return linear
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, dict):  # {"class_name": ..., "config": {"name": ...}} or {"name": ...}
        config = identifier.get("config", identifier)
        identifier = config.get("name", config.get("activation"))
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier, identifier)
        if key not in ACTIVATIONS:
            raise ValueError(f"unknown activation {identifier!r}; valid names: "
                             f"{', '.join(sorted(list(ACTIVATIONS) + list(_ALIASES)))}")
        return ACTIVATIONS[key]
    if callable(identifier):
        raise TypeError(f"activation {identifier!r} is a plain callable without a backward pass; use a name "
                        "(e.g. 'relu') or lstmfast.activations.Activation(name, forward, backward)")
    raise TypeError(f"activation must be a name, None or an Activation, got {type(identifier).__name__}")


def serialize(activation: ActivationLike) -> str:
    """The name stored in a layer config."""
    return get(activation).name


def deserialize(name: ActivationLike) -> Activation:
    return get(name)
