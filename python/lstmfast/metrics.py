"""Metrics for ``Model.compile(metrics=...)``: running, optionally weighted means, Keras 3 semantics.

A metric turns each batch into per-element values (a match 0/1 for the accuracies, the per-element
loss for the others), reduces them per sample (the mean over any axis past the batch axis, e.g. time)
and keeps ``total`` and ``count`` over the epoch, as Keras's ``reduce_to_samplewise_values``::

    no sample_weight:  total += sum_b mean(values_b);  count += B
    sample_weight w:   values averaged down to w's rank, then
                       total += sum(mean(values * w));  count += sum(mean(w))   (means past axis 0)

``result() = total / count`` (0 before any update). Totals are kept in float64: Python floats, or
0-d float64 device arrays once values from a device came in (a training step on the GPU reads
nothing back; ``result()`` reads, and ``Model`` reads every metric's sums in one copy per epoch
through ``get_state``/``set_state``).
The per-element values are stated once per metric, in array code on the array module of ``y_pred``
(NumPy, or CuPy for a device array); ``Mean`` does the reduction for all of them.

``"accuracy"``/``"acc"`` (and ``"crossentropy"``/``"ce"``) pick their variant from the shapes of the
first batch (``resolve``); the metric keeps the name the user wrote, as Keras logs it.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Type, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import losses as _losses
from . import ops
from ._serialization import class_and_config, serialized
from ._typing import Array

__all__ = ["Metric", "Mean", "MeanMetricWrapper", "BinaryAccuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "MeanSquaredError", "MeanAbsoluteError", "RootMeanSquaredError",
           "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
           "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy", "get", "resolve",
           "serialize", "deserialize"]

def _shape(shape) -> str:
    return _losses._shape(shape)


_M = TypeVar("_M", bound="Metric")


class Metric:
    """Base class: ``reset_state``, ``update_state``, ``result``. ``direction`` ("up" or "down")
    tells callbacks with ``mode="auto"`` whether larger is better."""

    name = "metric"
    direction = "down"

    def __init__(self, name: Optional[str] = None, dtype: DTypeLike = None) -> None:
        if name is not None:
            self.name = str(name)
        self.dtype = dtype
        self.reset_state()

    def reset_state(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_state(self, *args, **kwargs) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def result(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_state(self) -> list:
        """The running sums behind ``result()``, as floats that add up over parts of the data
        (data-parallel training sums them over the ranks); ``set_state`` restores them."""
        raise NotImplementedError(f"metric {self.name!r} ({type(self).__name__}) has no get_state/set_state: "
                                  f"data-parallel training needs them to sum it over the ranks")

    def set_state(self, values: Sequence[float]) -> None:
        raise NotImplementedError(f"metric {self.name!r} ({type(self).__name__}) has no get_state/set_state")

    def __call__(self, *args, **kwargs) -> float:
        """Update with one batch and return the running result (as Keras metric objects do)."""
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls: Type[_M], config: dict) -> _M:
        config = dict(config)
        config.pop("dtype", None)
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} result={self.result():.6g}>"


def _state_value(v) -> Any:
    """A running sum as ``set_state`` keeps it: a float, or a device scalar as it is (not read back)."""
    return v if ops.array_module(v) is not np and getattr(v, "shape", None) == () else float(v)


class Mean(Metric):
    """Running (weighted) mean of the values passed to ``update_state``; see the module docstring."""

    name = "mean"

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def get_state(self) -> list:
        return [self.total, self.count]

    def set_state(self, values: Sequence[float]) -> None:
        self.total, self.count = (_state_value(v) for v in values)

    def result(self) -> float:
        return float(self.total / self.count) if self.count else 0.0

    def update_state(self, values: ArrayLike, sample_weight: Optional[ArrayLike] = None) -> None:
        if type(values) is not np.ndarray and isinstance(values, (float, int, np.floating, np.integer)):
            if sample_weight is None:
                self.total += float(values)
                self.count += 1.0
                return
            if isinstance(sample_weight, (float, int, np.floating, np.integer)):
                self.total += float(values) * float(sample_weight)  # e.g. a batch loss weighted by its size
                self.count += float(sample_weight)
                return
        v = ops.as_array(values)
        v = v.astype(np.float64, copy=False)
        if v.size == 0:
            return
        if sample_weight is None:
            if v.ndim == 0:
                self.total += float(v)
                self.count += 1.0
                return
            if v.ndim > 1:
                v = v.reshape(v.shape[0], -1).mean(axis=1)
            self.total = self.total + _losses._total(v)  # a new value, never in place: see get_state
            self.count += float(v.shape[0])
            return
        xp = ops.array_module(v)
        w = xp.asarray(sample_weight).astype(np.float64, copy=False)
        vshape, wshape = v.shape, w.shape
        # Keras's squeeze_or_expand_to_same_rank(values, sample_weight)
        if v.ndim == w.ndim + 1 and v.shape[-1] == 1:
            if w.ndim == 1:
                w = w[:, None]
            else:
                v = v[..., 0]
        elif w.ndim == v.ndim + 1 and w.shape[-1] == 1:
            if v.ndim == 1:
                v = v[:, None]
            else:
                w = w[..., 0]
        if v.ndim > w.ndim:
            v = v.mean(axis=tuple(range(w.ndim, v.ndim)))
        try:
            w = xp.broadcast_to(w, v.shape)
        except ValueError:
            raise ValueError(f"{self.name}: sample_weight shape {_shape(wshape)} does not match the metric values "
                             f"shape {_shape(vshape)} (leading axes are aligned)") from None
        v = v * w
        if w.ndim > 1:
            w = w.mean(axis=tuple(range(1, w.ndim)))
            v = v.mean(axis=tuple(range(1, v.ndim)))
        self.total = self.total + _losses._total(v)
        self.count = self.count + _losses._total(w)


class MeanMetricWrapper(Mean):
    """Mean of ``fn(y_true, y_pred, **kwargs)`` (per-element values), weighted by sample_weight."""

    def __init__(self, fn: Callable[..., Array], name: Optional[str] = None, dtype: DTypeLike = None,
                 direction: Optional[str] = None, **kwargs: Any) -> None:
        self._fn = fn
        self._fn_kwargs = kwargs
        if direction is not None:
            self.direction = direction
        super().__init__(name if name is not None else getattr(fn, "__name__", "metric"), dtype)

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: Optional[ArrayLike] = None) -> None:
        kwargs = self._fn_kwargs
        values = self._fn(y_true, y_pred, **kwargs) if kwargs else self._fn(y_true, y_pred)
        super().update_state(values, sample_weight)

    def get_config(self) -> dict:
        return {"name": self.name, **self._fn_kwargs}


# ------------------------------------------------------------------------------------------------
# Accuracies.
# ------------------------------------------------------------------------------------------------

def _pred(y_pred):
    p = ops.as_array(y_pred)
    if p.ndim == 0:
        raise ValueError("y_pred must have at least one axis, got a scalar")
    return p


def _aligned(y_true, p, name):
    """y_true with the rank of y_pred (a missing or extra trailing axis of size 1 fixed), checked."""
    t = ops.as_array(y_true, like=p)
    if t.shape != p.shape:
        if t.ndim == p.ndim - 1 and p.shape[-1] == 1 and t.shape == p.shape[:-1]:
            t = t[..., None]
        elif t.ndim == p.ndim + 1 and t.shape[-1] == 1 and t.shape[:-1] == p.shape:
            t = t[..., 0]
        else:
            raise ValueError(f"{name}: y_true shape {_shape(t.shape)} does not match y_pred shape {_shape(p.shape)}")
    return t


def binary_accuracy(y_true: ArrayLike, y_pred: ArrayLike, threshold: float = 0.5) -> Array:
    """1.0 where ``y_true == (y_pred > threshold)``, per element."""
    p = _pred(y_pred)
    t = _aligned(y_true, p, "binary_accuracy")
    return (t.astype(p.dtype, copy=False) == (p > threshold)).astype(np.float64)


def categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """1.0 where ``argmax(y_true) == argmax(y_pred)`` (first maximum on ties), per row."""
    p = _pred(y_pred)
    t = ops.as_array(y_true, like=p)
    if t.shape != p.shape:
        raise ValueError(f"categorical_accuracy: y_true shape {_shape(t.shape)} does not match y_pred shape "
                         f"{_shape(p.shape)}: y_true must be one-hot with {p.shape[-1]} classes"
                         + ("; for integer labels use sparse_categorical_accuracy"
                            if t.shape in (p.shape[:-1], p.shape[:-1] + (1,)) else ""))
    return (t.argmax(-1) == p.argmax(-1)).astype(np.float64)


def sparse_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> Array:
    """1.0 where the integer label ``y_true`` equals ``argmax(y_pred)``, per row."""
    p = _pred(y_pred)
    t = _sparse_labels(y_true, p, "sparse_categorical_accuracy")
    return (t == p.argmax(-1)).astype(np.float64)


def _sparse_labels(y_true, p, name):
    t = ops.as_array(y_true, like=p)
    V = p.shape[:-1]
    if t.shape != V:
        if t.ndim and t.shape[-1] == 1 and t.shape[:-1] == V:
            t = t.reshape(V)
        else:
            raise ValueError(f"{name}: y_true shape {_shape(t.shape)} does not match y_pred shape {_shape(p.shape)}: "
                             f"expected integer labels of shape {_shape(V)} (or {_shape(V + (1,))})"
                             + ("; for one-hot targets use categorical_accuracy" if t.shape == p.shape else ""))
    return t


class BinaryAccuracy(MeanMetricWrapper):
    """How often ``y_pred > threshold`` equals the 0/1 target."""

    name = "binary_accuracy"
    direction = "up"

    def __init__(self, name: Optional[str] = None, dtype: DTypeLike = None, threshold: float = 0.5) -> None:
        super().__init__(binary_accuracy, name if name is not None else type(self).name, dtype,
                         threshold=float(threshold))
        self.threshold = float(threshold)


class CategoricalAccuracy(MeanMetricWrapper):
    """How often the argmax of the prediction matches the argmax of the one-hot target."""

    name = "categorical_accuracy"
    direction = "up"

    def __init__(self, name: Optional[str] = None, dtype: DTypeLike = None) -> None:
        super().__init__(categorical_accuracy, name if name is not None else type(self).name, dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often the argmax of the prediction equals the integer label."""

    name = "sparse_categorical_accuracy"
    direction = "up"

    def __init__(self, name: Optional[str] = None, dtype: DTypeLike = None) -> None:
        super().__init__(sparse_categorical_accuracy, name if name is not None else type(self).name, dtype)


# ------------------------------------------------------------------------------------------------
# Loss-valued metrics.
# ------------------------------------------------------------------------------------------------

class _LossMetric(MeanMetricWrapper):
    """Mean of a loss's per-element values (``losses.Loss.values``)."""

    _loss_class = None

    def __init__(self, name: Optional[str] = None, dtype: DTypeLike = None, **loss_kwargs: Any) -> None:
        self._loss = self._loss_class(**loss_kwargs)
        super().__init__(self._loss.values, name if name is not None else type(self).name, dtype)
        self._loss_kwargs = loss_kwargs

    def get_config(self) -> dict:
        return {"name": self.name, **self._loss_kwargs}


class MeanSquaredError(_LossMetric):
    name = "mean_squared_error"
    _loss_class = _losses.MeanSquaredError


class MeanAbsoluteError(_LossMetric):
    name = "mean_absolute_error"
    _loss_class = _losses.MeanAbsoluteError


class RootMeanSquaredError(_LossMetric):
    """``sqrt`` of the running (weighted) mean squared error."""

    name = "root_mean_squared_error"
    _loss_class = _losses.MeanSquaredError

    def result(self) -> float:
        return math.sqrt(super().result())


class BinaryCrossentropy(_LossMetric):
    name = "binary_crossentropy"
    _loss_class = _losses.BinaryCrossentropy

    def __init__(self, name: Optional[str] = None, dtype: DTypeLike = None, from_logits: bool = False,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(name, dtype, from_logits=from_logits, label_smoothing=label_smoothing)


class CategoricalCrossentropy(_LossMetric):
    name = "categorical_crossentropy"
    _loss_class = _losses.CategoricalCrossentropy

    def __init__(self, name: Optional[str] = None, dtype: DTypeLike = None, from_logits: bool = False,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(name, dtype, from_logits=from_logits, label_smoothing=label_smoothing)


class SparseCategoricalCrossentropy(_LossMetric):
    name = "sparse_categorical_crossentropy"
    _loss_class = _losses.SparseCategoricalCrossentropy

    def __init__(self, name: Optional[str] = None, dtype: DTypeLike = None, from_logits: bool = False) -> None:
        super().__init__(name, dtype, from_logits=from_logits)


# ------------------------------------------------------------------------------------------------
# "accuracy" / "crossentropy": the variant follows the loss and the shapes (Keras's compile rule).
# ------------------------------------------------------------------------------------------------

_AUTO = {"accuracy": "accuracy", "acc": "accuracy", "crossentropy": "crossentropy", "ce": "crossentropy"}


def _variant(y_true, y_pred) -> str:
    """'binary', 'sparse' or 'categorical': Keras 3's is_binary_or_sparse_categorical."""
    pshape, tshape = np.shape(y_pred), np.shape(y_true)
    if len(pshape) and pshape[-1] == 1:
        return "binary"
    if len(tshape) < len(pshape) or (len(tshape) and tshape[-1] == 1 and len(pshape) and pshape[-1] > 1):
        return "sparse"
    return "categorical"


# What ``compile(metrics=[...])`` and ``get`` take: a name, a ``{"class_name", "config"}`` dict, a Metric, or a
# function ``fn(y_true, y_pred) -> per-element values``.
MetricLike = Union[str, Dict[str, Any], Metric, Callable[..., Any]]


def resolve(identifier: MetricLike, loss_name: Union[None, str, _losses.Loss], y_true: ArrayLike,
            y_pred: ArrayLike) -> Metric:
    """The metric object for ``identifier`` given the loss (a name or a Loss) and one batch of
    targets and predictions. "accuracy"/"acc", by Keras 3's rule (``compile_utils.get_metric``):
    binary if y_pred's last axis is 1; else sparse categorical if y_true has fewer axes than y_pred
    or a last axis of 1; else categorical. The loss plays no part (Keras 3 ignores it: a multi-label
    binary_crossentropy model gets categorical accuracy). The name stays as written.
    "crossentropy"/"ce" (an lstmfast extension) pick the crossentropy metric the same way and take
    ``from_logits`` from a Loss instance."""
    if isinstance(identifier, _AutoMetric):
        identifier = identifier.name
    kind = _AUTO.get(identifier.lower()) if isinstance(identifier, str) else None
    if kind is None:
        return get(identifier)
    variant = _variant(y_true, y_pred)
    if kind == "accuracy":
        cls = {"binary": BinaryAccuracy, "sparse": SparseCategoricalAccuracy,
               "categorical": CategoricalAccuracy}[variant]
        return cls(name=identifier)
    from_logits = bool(getattr(loss_name, "from_logits", False))
    cls = {"binary": BinaryCrossentropy, "sparse": SparseCategoricalCrossentropy,
           "categorical": CategoricalCrossentropy}[variant]
    return cls(name=identifier, from_logits=from_logits)


class _AutoMetric(Metric):
    """"accuracy"/"crossentropy" before the first batch: resolves itself on the first update."""

    def __init__(self, name, loss=None):
        self._loss = loss
        self._metric = None
        self.direction = "up" if _AUTO[name.lower()] == "accuracy" else "down"
        super().__init__(name)

    def reset_state(self) -> None:
        if self._metric is not None:
            self._metric.reset_state()

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if self._metric is None:
            self._metric = resolve(self.name, self._loss, y_true, y_pred)
        self._metric.update_state(y_true, y_pred, sample_weight)

    def result(self) -> float:
        return self._metric.result() if self._metric is not None else 0.0

    def get_state(self) -> list:
        # Before its first update it has no metric yet, but the same two sums (zero) as the Mean it becomes.
        return self._metric.get_state() if self._metric is not None else [0.0, 0.0]

    def set_state(self, values) -> None:
        if self._metric is not None:
            self._metric.set_state(values)

    @property
    def resolved(self):
        """The concrete metric (None before the first update)."""
        return self._metric


# ------------------------------------------------------------------------------------------------
# Lookup.
# ------------------------------------------------------------------------------------------------

_CLASSES = {cls.__name__: cls for cls in (Mean, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
                                           MeanSquaredError, MeanAbsoluteError, RootMeanSquaredError,
                                           BinaryCrossentropy, CategoricalCrossentropy,
                                           SparseCategoricalCrossentropy)}
_NAMES = {cls.name: cls for cls in _CLASSES.values() if cls is not Mean}
_NAMES.update({"mse": MeanSquaredError, "mae": MeanAbsoluteError, "rmse": RootMeanSquaredError,
               "bce": BinaryCrossentropy})


def _valid_names():
    return sorted(set(_NAMES) | set(_AUTO) | set(_CLASSES))


def get(identifier: MetricLike, loss: Union[None, str, _losses.Loss] = None) -> Metric:
    """A Metric from a name (case-insensitive; Keras names, class names, 'mse'/'mae'/'acc'...), a
    ``{"class_name", "config"}`` dict, a Metric (returned as is), or a function
    ``fn(y_true, y_pred) -> per-element values`` (wrapped in a mean). "accuracy"/"acc" and
    "crossentropy"/"ce" return a metric that picks its variant on the first batch, using ``loss``."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in _AUTO:
            return _AutoMetric(identifier, loss)
        if key in _NAMES:
            return _NAMES[key](name=identifier)
        by_class = {k.lower(): c for k, c in _CLASSES.items()}
        if key in by_class:
            return by_class[key]()
        raise ValueError(f"unknown metric {identifier!r}; valid names: {', '.join(_valid_names())}")
    if callable(identifier):
        return MeanMetricWrapper(identifier)
    raise TypeError(f"metric must be a string, a dict, a Metric or a function, got {type(identifier).__name__}")


def serialize(metric: MetricLike) -> dict:
    metric = get(metric)
    if isinstance(metric, _AutoMetric):
        return {"class_name": "auto", "config": {"name": metric.name}}
    if type(metric).__name__ not in _CLASSES:
        raise TypeError(f"cannot serialize metric {metric!r}: only built-in metrics are serializable")
    return serialized(metric)


def deserialize(config: Union[str, Dict[str, Any]]) -> Metric:
    if isinstance(config, str):
        return get(config)
    name, cfg = class_and_config(config, "a metric")
    if name == "auto":
        return _AutoMetric(cfg["name"])
    cls = _CLASSES.get(name)
    if cls is None:
        raise ValueError(f"unknown metric class {name!r}; valid: {', '.join(sorted(_CLASSES))}")
    return cls.from_config(cfg)
