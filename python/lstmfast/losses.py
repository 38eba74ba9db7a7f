"""Losses for ``Model.compile``: the value and its gradient with respect to ``y_pred``, Keras 3 semantics.

Each loss first reduces the class (last) axis of ``y_pred [..., C]`` to one value per element
(``V = y_pred.shape[:-1]``: batch, and time for sequence outputs)::

    categorical_crossentropy         -sum_c t_c log(clip(p_c / sum_c p_c, eps, 1 - eps))
                     from_logits     -sum_c t_c log_softmax(x)_c
    sparse_categorical_crossentropy  the same with t = one_hot(label, C)
    binary_crossentropy              -mean_c [t log(clip(p)) + (1 - t) log(1 - clip(p))]
                     from_logits     mean_c [max(x, 0) - x t + log(1 + exp(-|x|))]
    mean_squared_error               mean_c (p - t)^2
    mean_absolute_error              mean_c |p - t|

with ``eps = 1e-7`` (Keras's ``backend.epsilon()``; the clipped probability gets no gradient where
the clip is active, as in Keras). The values are then reduced like Keras 3's default
``"sum_over_batch_size"``::

    loss = sum(w * values) / values.size

``w`` is 1, or ``sample_weight`` broadcast to ``V`` with its leading axes aligned (a ``(B,)`` weight
on ``(B, T)`` values weights every step of a sample; a trailing axis of size 1 is dropped first).
Keras 3 aligns trailing axes instead, so it rejects a ``(B,)`` weight on ``(B, T)`` values; the two
agree whenever the weight has the values' shape, is a scalar, or is ``(B,)``/``(B, 1)`` on ``(B,)``.
The denominator stays ``values.size`` whatever the weights (Keras 3). A mask of sequence steps passed
as ``sample_weight`` is used as given, so it only reproduces Keras's masked mean (the sum over valid
steps divided by their count) if it is pre-scaled by ``size / sum(mask)``, as ``models.py`` does.
``reduction="sum"`` drops the division. ``resolve`` adds Keras's shape-dependent "crossentropy".

Each loss states its formula once, in ``_formula``: the per-element values and their derivative
with respect to ``y_pred``, side by side, in array code on the array module of ``y_pred`` (NumPy, or
CuPy for a device array). ``Loss`` does the rest for all of them: the checks, the weights and the
reduction. ``value_and_grad`` returns a fresh gradient array of ``y_pred``'s shape and dtype.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import ops
from ._serialization import class_and_config, serialized
from ._typing import Array

__all__ = ["Loss", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "MeanAbsoluteError", "categorical_crossentropy",
           "sparse_categorical_crossentropy", "binary_crossentropy", "mean_squared_error",
           "mean_absolute_error", "get", "resolve", "serialize", "deserialize"]

EPSILON = 1e-7  # Keras backend.epsilon(): probability clip for the crossentropies
REDUCTIONS = ("sum_over_batch_size", "sum")


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


_L = TypeVar("_L", bound="Loss")


class Loss:
    """Base class. A subclass sets ``name`` and states its formula once, in
    ``_formula(y_true, y_pred, grad)``: it returns the per-element values (shape ``V``) and, when
    ``grad`` is true, their derivative ``d values / d y_pred`` (``y_pred``'s shape; else None),
    computed with the array module of ``y_pred``. It may also replace ``_check_true``; both see
    ``y_true`` already checked (``y_pred``'s shape and dtype, or the labels of the sparse loss).

    Subclasses written for the older hooks, ``_values(t, p)`` and an in-place
    ``_grad(t, p, scale, grad)`` that fills ``grad`` with ``scale * d(values)/d(y_pred)`` and returns
    ``sum(scale * values)`` (``scale`` 0-d or shaped ``V + (1,)``, with ``1/C`` folded in when
    ``_mean_over_classes``), keep working."""

    name = "loss"
    _mean_over_classes = False  # for the older _grad hook only: its scale includes 1/C

    def __init__(self, name: Optional[str] = None, reduction: str = "sum_over_batch_size") -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r} "
                             f"(reduction='none' is not supported: these losses return a float)")
        if name is not None:
            self.name = str(name)
        self.reduction = reduction
        self._scale_key = None
        self._scale_f = self._scale = self._scale_value = None

    # ---- public API --------------------------------------------------------------------------

    def __call__(self, y_true: ArrayLike, y_pred: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> float:
        """The reduced loss (a Python float)."""
        y_pred = _check_pred(y_pred)
        values = self._values(self._check_true(y_true, y_pred), y_pred)
        if sample_weight is not None:
            values = values * _weights(sample_weight, y_pred)
        total = float(_total(values))
        return total / values.size if self.reduction == "sum_over_batch_size" and values.size else total

    def value_and_grad(self, y_true: ArrayLike, y_pred: ArrayLike,
                       sample_weight: Optional[ArrayLike] = None) -> Tuple[Union[float, Array], Array]:
        """``(loss, dloss/dy_pred)``; the gradient is a fresh array of ``y_pred``'s shape and dtype.
        The loss is a Python float, or for a device ``y_pred`` a 0-d float64 device array (nothing is
        read back: ``float(loss)`` reads it)."""
        p = _check_pred(y_pred)
        return self._value_and_grad_of(self._check_true(y_true, p), p, sample_weight)

    def _checked_targets(self, y_true: np.ndarray, shape: tuple, dtype: DTypeLike) -> np.ndarray:
        """Host targets checked and converted as ``value_and_grad`` does for predictions of ``shape``
        and ``dtype``, before they move to a device (where checking them would read them back)."""
        return np.asarray(self._check_true(y_true, np.broadcast_to(np.zeros((), dtype), shape)))

    def _value_and_grad_of(self, t: Array, p: Array,
                           sample_weight: Optional[ArrayLike]) -> Tuple[Union[float, Array], Array]:
        """``value_and_grad`` of targets ``t`` already checked (``_check_true``)."""
        if p.size == 0:
            return 0.0, ops.array_module(p).zeros(p.shape, p.dtype)
        if type(self)._grad is not Loss._grad:
            return self._value_and_grad_in_place(t, p, sample_weight)
        values, grad = self._formula(t, p, True)
        scale = self._scale_for(p)
        if sample_weight is None:
            if self._scale_f != 1.0:  # 1 for a batch of one sample: nothing to scale
                grad *= scale
            return _total(values) * self._scale_value, grad
        scale = _weights(sample_weight, p) * scale
        grad *= scale[..., None]
        return _total(values * scale), grad

    def values(self, y_true: ArrayLike, y_pred: ArrayLike) -> Array:
        """Per-element loss values, shape ``y_pred.shape[:-1]`` (before weighting and reduction)."""
        y_pred = _check_pred(y_pred)
        return self._values(self._check_true(y_true, y_pred), y_pred)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls: Type[_L], config: dict) -> _L:
        config = dict(config)
        # keys Keras writes that carry nothing here when they hold their default
        if config.get("axis", -1) != -1:
            raise ValueError(f"{cls.__name__}: only axis=-1 is supported, got axis={config['axis']!r}")
        config.pop("axis", None)
        config.pop("dtype", None)
        if config.get("ignore_class") is not None:
            raise ValueError(f"{cls.__name__}: ignore_class is not supported, got {config['ignore_class']!r}")
        config.pop("ignore_class", None)
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ---- for subclasses ----------------------------------------------------------------------

    def _formula(self, y_true, y_pred, grad):  # pragma: no cover - abstract
        """``(values, d values / d y_pred or None)``."""
        raise NotImplementedError

    def _check_true(self, y_true, y_pred):
        return _dense_true(y_true, y_pred, self.name)

    def _values(self, y_true, y_pred):
        return self._formula(y_true, y_pred, False)[0]

    def _grad(self, y_true, y_pred, scale, grad):  # pragma: no cover - the older hook; see the class
        raise NotImplementedError

    # ---- the shared machinery ----------------------------------------------------------------

    def _scale_for(self, p):
        """d(loss)/d(element value), 1/len(values) (or 1 for reduction="sum"), as a 0-d array of
        ``p``'s dtype and array type; kept while they and the shape stay the same."""
        key = (p.shape, p.dtype, type(p))
        if key != self._scale_key:
            self._scale_f = 1.0 / (p.size // p.shape[-1]) if self.reduction == "sum_over_batch_size" else 1.0
            self._scale = ops.array_module(p).asarray(self._scale_f, p.dtype)
            self._scale_value = float(p.dtype.type(self._scale_f))  # as rounded to p's dtype, on the host
            self._scale_key = key
        return self._scale

    def _value_and_grad_in_place(self, t, p, sample_weight):
        """value_and_grad through the older ``_grad`` hook."""
        xp = ops.array_module(p)
        self._scale_for(p)
        f = self._scale_f / p.shape[-1] if self._mean_over_classes else self._scale_f
        scale = xp.asarray(f, p.dtype)
        if sample_weight is not None:
            scale = (_weights(sample_weight, p) * scale)[..., None]
        grad = xp.empty(p.shape, p.dtype)
        return self._grad(t, p, scale, grad), grad


def _total(values):
    """sum(values) as a Python float; a single value needs no reduction call (batch size 1). For a
    device array the sum stays there, a 0-d float64 array (the same rounding: summed in the values'
    dtype, then widened): a training step reads nothing back, and the caller reads its running sums
    when it needs them."""
    if type(values) is np.ndarray or ops.array_module(values) is np:
        return values.item() if values.size == 1 else float(values.sum())
    return values.sum().astype(np.float64)


def _check_pred(y_pred):
    p = ops.as_array(y_pred)
    if p.dtype.kind != "f":
        raise TypeError(f"y_pred must be a float array, got dtype {p.dtype}")
    if p.ndim == 0:
        raise ValueError("y_pred must have at least one axis (the class/unit axis), got a scalar")
    return p


def _dense_true(y_true, y_pred, name):
    """y_true with y_pred's shape and dtype; a missing or extra trailing axis of size 1 is fixed as
    Keras's squeeze_or_expand_to_same_rank does."""
    t = ops.as_array(y_true, like=y_pred)
    if t.shape != y_pred.shape:
        if t.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1 and t.shape == y_pred.shape[:-1]:
            t = t[..., None]
        elif t.ndim == y_pred.ndim + 1 and t.shape[-1] == 1 and t.shape[:-1] == y_pred.shape:
            t = t[..., 0]
        else:
            raise ValueError(f"{name}: y_true shape {_shape(t.shape)} does not match y_pred shape "
                             f"{_shape(y_pred.shape)}{_class_hint(name, t, y_pred)}")
    if t.dtype != y_pred.dtype:
        if t.dtype.kind not in "biuf":
            raise TypeError(f"{name}: y_true must be numeric, got dtype {t.dtype}")
        t = t.astype(y_pred.dtype)
    return t


def _class_hint(name, t, p) -> str:
    if name != "categorical_crossentropy" and "categorical" not in name:
        return ""
    C = p.shape[-1]
    hint = f": y_true must be one-hot with {C} classes (the last axis of y_pred)"
    if t.shape == p.shape[:-1] or (t.shape[:-1] == p.shape[:-1] and t.shape[-1] == 1):
        hint += "; for integer labels use sparse_categorical_crossentropy (or utils.to_categorical)"
    return hint


def _weights(sample_weight, y_pred):
    """sample_weight broadcast to V = y_pred.shape[:-1], leading axes aligned, in y_pred's dtype."""
    xp = ops.array_module(y_pred)
    V = y_pred.shape[:-1]
    w = xp.asarray(sample_weight)
    given = w.shape
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, got dtype {w.dtype}")
    if w.dtype != y_pred.dtype:
        w = w.astype(y_pred.dtype)
    if w.shape == V:
        return w
    if w.ndim == len(V) + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    if w.ndim <= len(V):
        w = w.reshape(w.shape + (1,) * (len(V) - w.ndim))
        try:
            return xp.broadcast_to(w, V)
        except ValueError:
            pass
    raise ValueError(f"sample_weight shape {_shape(given)} cannot be broadcast to the loss "
                     f"values shape {_shape(V)} (y_pred shape {_shape(y_pred.shape)} without its last axis; "
                     f"leading axes are aligned)")


class _Constants:
    """The constants of the formulas as 0-d arrays of one dtype and array module (ufuncs take
    them faster than Python floats); the clip bounds are eps and 1 - eps rounded to the dtype."""

    def __init__(self, xp, dtype):
        self.eps = xp.asarray(EPSILON, dtype)
        self.one_minus_eps = xp.asarray(1.0 - EPSILON, dtype)
        self.zero = xp.asarray(0.0, dtype)
        self.one = xp.asarray(1.0, dtype)


_CONSTANTS = {}


def _constants(xp, dtype) -> _Constants:
    k = _CONSTANTS.get((xp, dtype))
    if k is None:
        k = _CONSTANTS[xp, dtype] = _Constants(xp, dtype)
    return k


def _device_formula(name: str, from_logits: bool, t, p):
    """``(values, grad)`` of the loss ``name`` by one GPU kernel (``ops.device_loss``, with the clip
    bounds of ``p``'s dtype), or None where none applies (host arrays...): ``_formula`` runs on."""
    if type(p) is np.ndarray:
        return None
    bounds = _constants(np, p.dtype)
    return ops.device_loss(name, from_logits, t, p, float(bounds.eps), float(bounds.one_minus_eps))


def _check_smoothing(label_smoothing) -> float:
    s = float(label_smoothing)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return s


# ------------------------------------------------------------------------------------------------
# Crossentropy of one-hot (or soft) targets and of integer labels.
# ------------------------------------------------------------------------------------------------

def _crossentropy(t, p, from_logits, grad):
    """Per-element categorical crossentropy of targets ``t [..., C]`` against ``p [..., C]``
    (probabilities, or logits) and, if ``grad``, its derivative with respect to ``p``."""
    xp = ops.array_module(p)
    if from_logits:
        # values = -sum t log_softmax(x); d/dx = softmax(x) sum(t) - t
        z = p - p.max(-1, keepdims=True)
        e = xp.exp(z)
        se = e.sum(-1, keepdims=True)
        z -= xp.log(se)                                       # log_softmax(x)
        values = -(t * z).sum(-1)
        if not grad:
            return values, None
        e /= se
        e *= t.sum(-1, keepdims=True)
        e -= t
        return values, e
    # q = p / s, qc = clip(q); values = -sum t log(qc); u = t / qc where not clipped, else 0
    # (= -d values / d q); d values / d p = (sum_c u_c q_c - u) / s
    k = _constants(xp, p.dtype)
    s = p.sum(-1, keepdims=True)
    q = p / s
    qc = xp.maximum(q, k.eps)
    xp.minimum(qc, k.one_minus_eps, out=qc)
    values = -(t * xp.log(qc)).sum(-1)
    if not grad:
        return values, None
    u = xp.where(q == qc, t / qc, k.zero)
    q *= u
    d = q.sum(-1, keepdims=True) - u
    d /= s
    return values, d


class _SmoothedCrossentropy(Loss):
    """The options the categorical and binary crossentropies share: ``from_logits`` and
    ``label_smoothing``."""

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, name: Optional[str] = None,
                 reduction: str = "sum_over_batch_size") -> None:
        super().__init__(name, reduction)
        self.from_logits = bool(from_logits)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class CategoricalCrossentropy(_SmoothedCrossentropy):
    """Crossentropy of one-hot (or soft) targets ``[..., C]``. Probabilities are renormalised to
    sum to 1 along the class axis and clipped to ``[eps, 1 - eps]`` (Keras); ``from_logits=True``
    uses ``log_softmax``. ``label_smoothing`` s replaces t by ``t (1 - s) + s / C``."""

    name = "categorical_crossentropy"

    def _formula(self, t, p, grad):
        s = self.label_smoothing
        if s:
            t = t * (1.0 - s) + s / p.shape[-1]
        return _crossentropy(t, p, self.from_logits, grad)


class SparseCategoricalCrossentropy(Loss):
    """Crossentropy of integer labels ``[...]`` (or ``[..., 1]``) in ``[0, C)`` against
    ``y_pred [..., C]``: the formulas of ``CategoricalCrossentropy`` with one-hot targets."""

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False, name: Optional[str] = None,
                 reduction: str = "sum_over_batch_size") -> None:
        super().__init__(name, reduction)
        self.from_logits = bool(from_logits)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits}

    def _check_true(self, y_true, y_pred):
        t = ops.as_array(y_true, like=y_pred)
        V = y_pred.shape[:-1]
        if t.shape != V:
            if t.ndim and t.shape[-1] == 1 and t.shape[:-1] == V:
                t = t.reshape(V)
            else:
                raise ValueError(f"{self.name}: y_true shape {_shape(t.shape)} does not match y_pred shape "
                                 f"{_shape(y_pred.shape)}: expected integer labels of shape {_shape(V)} "
                                 f"(or {_shape(V + (1,))}) in [0, {y_pred.shape[-1]})"
                                 + ("; for one-hot targets use categorical_crossentropy"
                                    if t.shape == y_pred.shape else ""))
        # Labels given on the host are checked there, before they move: no read back from a device.
        host = t if type(t) is np.ndarray else (y_true if type(y_true) is np.ndarray else t)
        if t.dtype.kind not in "iu":
            if t.dtype.kind not in "bf":
                raise TypeError(f"{self.name}: y_true must hold integer labels, got dtype {t.dtype}")
            labels = t.astype(np.intp)
            if not bool((host.astype(np.intp) == host).all() if host is not t else (labels == t).all()):
                raise ValueError(f"{self.name}: y_true must hold integer class labels, got non-integer values "
                                 f"(one-hot targets need categorical_crossentropy)")
            t = labels
        if t.size:
            C = y_pred.shape[-1]
            lo, hi = int(host.min()), int(host.max())
            if lo < 0 or hi >= C:
                bad = lo if lo < 0 else hi
                raise ValueError(f"{self.name}: label {bad} is out of range: y_pred shape {_shape(y_pred.shape)} "
                                 f"has {C} classes, so labels must lie in [0, {C - 1}]")
        return t

    def _formula(self, t, p, grad):
        # the crossentropy of one-hot targets, with the values read at the label entries only
        xp = ops.array_module(p)
        fused = _device_formula(SparseCategoricalCrossentropy.name, self.from_logits, t, p) if grad else None
        if fused is not None:
            return fused
        C = p.shape[-1]
        at_label = xp.arange(0, t.size * C, C) + t.reshape(-1)    # flat indices of p[..., label]
        if self.from_logits:
            # values = logsumexp(x) - x_label; d/dx = softmax(x) - one_hot(label)
            m = p.max(-1, keepdims=True)
            e = xp.exp(p - m)
            se = e.sum(-1, keepdims=True)
            values = (xp.log(se) + m).reshape(t.shape) - p.reshape(-1)[at_label].reshape(t.shape)
            if not grad:
                return values, None
            e /= se
            e.reshape(-1)[at_label] -= 1.0
            return values, e
        # q = p_label / s, qc = clip(q); values = -log(qc); u = 1 / (qc s) where not clipped, else 0;
        # d values / d p_c = u q - u [c == label]
        k = _constants(xp, p.dtype)
        s = p.sum(-1)
        q = p.reshape(-1)[at_label].reshape(t.shape) / s
        qc = xp.maximum(q, k.eps)
        xp.minimum(qc, k.one_minus_eps, out=qc)
        values = -xp.log(qc)
        if not grad:
            return values, None
        u = (q == qc) / (qc * s)
        d = xp.empty(p.shape, p.dtype)
        d[...] = (u * q)[..., None]
        d.reshape(-1)[at_label] -= u.reshape(-1)
        return values, d


# ------------------------------------------------------------------------------------------------
# Binary crossentropy.
# ------------------------------------------------------------------------------------------------

class BinaryCrossentropy(_SmoothedCrossentropy):
    """Elementwise binary crossentropy, averaged over the last axis. Probabilities are clipped to
    ``[eps, 1 - eps]``; ``from_logits=True`` uses ``max(x, 0) - x t + log(1 + exp(-|x|))``.
    ``label_smoothing`` s replaces t by ``t (1 - s) + s / 2``."""

    name = "binary_crossentropy"

    def _formula(self, t, p, grad):
        xp = ops.array_module(p)
        k = _constants(xp, p.dtype)
        s = self.label_smoothing
        if s:
            t = t * (1.0 - s) + 0.5 * s
        fused = _device_formula(BinaryCrossentropy.name, self.from_logits, t, p) if grad else None
        if fused is not None:
            return fused
        C = p.shape[-1]
        if self.from_logits:
            # softplus(x) - x t, with max(x, 0) - x t first (no cancellation) and e = exp(-|x|);
            # d/dx = sigmoid(x) - t, sigmoid(x) = 1/(1+e) for x >= 0 and e/(1+e) otherwise
            e = xp.exp(-xp.abs(p))
            values = (xp.maximum(p, k.zero) - p * t + xp.log1p(e)).sum(-1) / C
            if not grad:
                return values, None
            return values, (xp.where(p >= k.zero, k.one, e) / (k.one + e) - t) / C
        # pc = clip(p); d/dp = (pc - t) / (pc (1 - pc)) where not clipped, else 0
        pc = xp.maximum(p, k.eps)
        xp.minimum(pc, k.one_minus_eps, out=pc)
        one_minus_pc = k.one - pc
        values = -(t * xp.log(pc) + (k.one - t) * xp.log(one_minus_pc)).sum(-1) / C
        if not grad:
            return values, None
        return values, xp.where(pc == p, (pc - t) / (pc * one_minus_pc * C), k.zero)


# ------------------------------------------------------------------------------------------------
# Regression losses.
# ------------------------------------------------------------------------------------------------

class MeanSquaredError(Loss):
    """``mean_c (p - t)^2``."""

    name = "mean_squared_error"

    def _formula(self, t, p, grad):
        d = p - t
        C = p.shape[-1]
        return (d * d).sum(-1) / C, ((2.0 / C) * d if grad else None)


class MeanAbsoluteError(Loss):
    """``mean_c |p - t|``; the gradient at p == t is 0 (``sign``), as in Keras's backends."""

    name = "mean_absolute_error"

    def _formula(self, t, p, grad):
        xp = ops.array_module(p)
        d = p - t
        C = p.shape[-1]
        return xp.abs(d).sum(-1) / C, (xp.sign(d) / C if grad else None)


# ------------------------------------------------------------------------------------------------
# Functional forms (per-element values, like keras.losses.<name>) and lookup.
# ------------------------------------------------------------------------------------------------

def categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                             label_smoothing: float = 0.0) -> Array:
    return CategoricalCrossentropy(from_logits, label_smoothing).values(y_true, y_pred)


def sparse_categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False) -> Array:
    return SparseCategoricalCrossentropy(from_logits).values(y_true, y_pred)


def binary_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                        label_smoothing: float = 0.0) -> Array:
    return BinaryCrossentropy(from_logits, label_smoothing).values(y_true, y_pred)


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    return MeanSquaredError().values(y_true, y_pred)


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    return MeanAbsoluteError().values(y_true, y_pred)


_CLASSES = {cls.__name__: cls for cls in (CategoricalCrossentropy, SparseCategoricalCrossentropy,
                                           BinaryCrossentropy, MeanSquaredError, MeanAbsoluteError)}
_CANONICAL = {cls.name: cls for cls in _CLASSES.values()}
# every accepted string (lower case) -> canonical name
_ALIASES = {name: name for name in _CANONICAL}
_ALIASES.update({cls.__name__.lower(): cls.name for cls in _CLASSES.values()})
_ALIASES.update({"mse": "mean_squared_error", "mae": "mean_absolute_error", "bce": "binary_crossentropy"})


# What ``compile(loss=...)`` and ``get`` take: a name, a ``{"class_name", "config"}`` dict or a Loss.
LossLike = Union[str, Dict[str, Any], Loss]


def canonical_name(identifier: Union[str, Loss]) -> str:
    """The canonical Keras function name for a loss string or instance ('mse' -> 'mean_squared_error')."""
    if isinstance(identifier, Loss):
        return type(identifier).name
    key = str(identifier).lower()
    if key in ("crossentropy", "ce"):
        raise ValueError(f"loss {identifier!r} depends on the targets' shape: use "
                         f"lstmfast.losses.resolve({identifier!r}, y_true, y_pred)")
    if key not in _ALIASES:
        raise ValueError(f"unknown loss {identifier!r}; valid names: {', '.join(sorted(_ALIASES))}")
    return _ALIASES[key]


def get(identifier: LossLike) -> Loss:
    """A Loss from a name (case-insensitive: Keras names, class names and aliases such as 'mse'),
    a ``{"class_name", "config"}`` dict, or a Loss instance (returned as is)."""
    if isinstance(identifier, Loss):
        return identifier
    if identifier is None:
        raise ValueError("loss is None; pass a loss name (e.g. 'mse', 'categorical_crossentropy') or a Loss")
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        return _CANONICAL[canonical_name(identifier)]()
    if callable(identifier):
        raise TypeError(f"loss {identifier!r} is a plain function; lstmfast needs the gradient too: subclass "
                        f"lstmfast.losses.Loss and implement _formula, or use a built-in loss "
                        f"({', '.join(sorted(_CANONICAL))})")
    raise TypeError(f"loss must be a string, a dict or a Loss, got {type(identifier).__name__}")


def resolve(identifier: LossLike, y_true: ArrayLike, y_pred: ArrayLike) -> Loss:
    """``get``, plus Keras 3's "crossentropy"/"ce": binary if y_pred's last axis is 1, sparse if
    y_true has fewer axes than y_pred or a last axis of 1, else categorical."""
    if isinstance(identifier, str) and identifier.lower() in ("crossentropy", "ce"):
        pshape, tshape = np.shape(y_pred), np.shape(y_true)
        if pshape and pshape[-1] == 1:
            return BinaryCrossentropy()
        if len(tshape) < len(pshape) or (tshape and tshape[-1] == 1 and pshape and pshape[-1] > 1):
            return SparseCategoricalCrossentropy()
        return CategoricalCrossentropy()
    return get(identifier)


def serialize(loss: LossLike) -> Dict[str, Any]:
    """JSON-ready form: ``{"class_name": ..., "config": {...}}``."""
    return serialized(get(loss))


def deserialize(config: LossLike) -> Loss:
    """Inverse of ``serialize``; also accepts a loss name."""
    if isinstance(config, str):
        return get(config)
    name, cfg = class_and_config(config, "a loss")
    cls = _CLASSES.get(name) or _CANONICAL.get(_ALIASES.get(str(name).lower(), ""))
    if cls is None:
        raise ValueError(f"unknown loss class {name!r}; valid: {', '.join(sorted(_CLASSES))}")
    return cls.from_config(cfg)
