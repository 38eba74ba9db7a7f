"""Optimizers with Keras 3's update rules, updating NumPy (or CuPy) parameter arrays in place.

``base`` holds what every rule shares (the step: clipping, weight decay, the fused C++ update, the
slots and their state); each rule is one small module (``sgd``, ``adam``, ``adamw``, ``rmsprop``,
``adagrad``) with its equations in the class docstring; ``schedules`` holds the learning-rate
schedules. This module looks them up by name and (de)serializes them.
"""
from __future__ import annotations

from typing import Any, Dict, Union

from .._serialization import class_and_config, serialized
from .adagrad import Adagrad
from .adam import Adam
from .adamw import AdamW
from .base import Optimizer
from .loss_scale import LossScaleOptimizer
from .rmsprop import RMSprop
from .schedules import CosineDecay, ExponentialDecay, LearningRateSchedule, PiecewiseConstantDecay
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LossScaleOptimizer", "LearningRateSchedule",
           "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay", "get", "serialize", "deserialize"]

_CLASSES = {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad, LossScaleOptimizer)}
_BY_NAME = {k.lower(): c for k, c in _CLASSES.items() if c is not LossScaleOptimizer}  # it wraps another


# What ``compile(optimizer=...)`` and ``get`` take: a name, a ``{"class_name", "config"}`` dict or an Optimizer.
OptimizerLike = Union[str, Dict[str, Any], Optimizer]


def get(identifier: OptimizerLike) -> Optimizer:
    """An optimizer from a name ('sgd', 'adam', 'adamw', 'rmsprop', 'adagrad'; case-insensitive;
    Keras defaults), a ``{"class_name", "config"}`` dict, or an Optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")
        return cls()
    raise TypeError(f"optimizer must be a name, a dict or an Optimizer, got {type(identifier).__name__}")


def serialize(optimizer: OptimizerLike) -> dict:
    """JSON-ready ``{"class_name": ..., "config": {...}}`` (a schedule nests the same way)."""
    return serialized(get(optimizer))


def deserialize(config: OptimizerLike) -> Optimizer:
    """Inverse of ``serialize``; also accepts a name."""
    if isinstance(config, str):
        return get(config)
    name, cfg = class_and_config(config, "an optimizer")
    cls = _BY_NAME.get(str(name).lower()) or (LossScaleOptimizer if name == "LossScaleOptimizer" else None)
    if cls is None:
        raise ValueError(f"unknown optimizer class {name!r}; valid: {', '.join(sorted(_CLASSES))}")
    return cls.from_config(cfg)
