"""What the callbacks that watch a logged quantity share: which way is better, and the weights.

``mode="auto"`` (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau) minimises a monitored quantity
whose name (without ``val_``) contains "loss" or "error" or is a known loss abbreviation, and maximises
one that contains "acc", "auc", "precision", "recall" or "f1"; otherwise a metric of the model with
the same name decides through its ``direction``; failing that EarlyStopping raises (as Keras 3) and
the others minimise (as Keras).
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["auto_direction", "check_mode", "copy_weights"]

_MIN_WORDS = ("loss", "error", "mse", "mae", "mape", "msle", "crossentropy", "hinge", "kld", "divergence")
_MAX_WORDS = ("acc", "auc", "precision", "recall", "f1", "iou")


def auto_direction(monitor: str, model):
    """'min', 'max' or None for a monitored name under mode='auto'."""
    name = monitor[4:] if monitor.startswith("val_") else monitor
    low = name.lower()
    if low == "ce" or any(w in low for w in _MIN_WORDS):
        return "min"
    if any(w in low for w in _MAX_WORDS):
        return "max"
    for m in getattr(model, "metrics", None) or ():
        if getattr(m, "name", None) == name and getattr(m, "direction", None) in ("up", "down"):
            return "max" if m.direction == "up" else "min"
    return None


def check_mode(mode, who):
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"{who} mode {mode!r} is unknown, fallback to auto mode.", stacklevel=3)
        return "auto"
    return mode


def copy_weights(model):
    return [np.array(w, copy=True) for w in model.get_weights()]
