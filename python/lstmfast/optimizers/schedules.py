"""Learning-rate schedules: a learning rate as a function of the optimizer's step."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Type, TypeVar

from ._checks import real

__all__ = ["LearningRateSchedule", "ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay", "CosineDecay",
           "deserialize"]


_S = TypeVar("_S", bound="LearningRateSchedule")


class LearningRateSchedule:
    """A learning rate as a function of the step (``optimizer.iterations``)."""

    def __call__(self, step: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_config(cls: Type[_S], config: dict) -> _S:
        return cls(**config)


class _RateDecay(LearningRateSchedule):
    """What the exponential and inverse-time decays share: the decay rate per ``decay_steps``
    steps, ``p = step / decay_steps`` (``floor``-ed with ``staircase``), and their config."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float, staircase: bool = False,
                 name: Optional[str] = None) -> None:
        self.initial_learning_rate = real(initial_learning_rate, "initial_learning_rate", 0.0)
        self.decay_steps = real(decay_steps, "decay_steps", 0.0, low_open=True)
        self.decay_rate = real(decay_rate, "decay_rate", 0.0)
        self.staircase = bool(staircase)
        self.name = type(self).__name__ if name is None else name

    def _progress(self, step) -> float:
        p = float(step) / self.decay_steps
        return math.floor(p) if self.staircase else p

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_RateDecay):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; with ``staircase`` the
    exponent is ``floor(step / decay_steps)``."""

    def __call__(self, step: float) -> float:
        return self.initial_learning_rate * self.decay_rate ** self._progress(step)


class InverseTimeDecay(_RateDecay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)``; with ``staircase`` the
    ratio is ``floor(step / decay_steps)``. With ``decay_steps=1`` it is Keras 2's ``decay=``."""

    def __call__(self, step: float) -> float:
        return self.initial_learning_rate / (1.0 + self.decay_rate * self._progress(step))


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary."""

    def __init__(self, boundaries: Sequence[float], values: Sequence[float], name: str = "PiecewiseConstant") -> None:
        boundaries, values = list(boundaries), list(values)
        if len(boundaries) != len(values) - 1:
            raise ValueError(f"PiecewiseConstantDecay needs len(values) == len(boundaries) + 1, got "
                             f"{len(boundaries)} boundaries and {len(values)} values")
        if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must be increasing, got {boundaries}")
        self.boundaries = [float(b) for b in boundaries]
        self.values = [real(v, "values[]", 0.0) for v in values]
        self.name = name

    def __call__(self, step: float) -> float:
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]

    def get_config(self) -> dict:
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Optional linear warmup from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps``, then cosine decay over ``decay_steps`` from the peak ``p`` to ``alpha * p``:
    ``p * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)``."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, alpha: float = 0.0, name: str = "CosineDecay",
                 warmup_target: Optional[float] = None, warmup_steps: float = 0) -> None:
        self.initial_learning_rate = real(initial_learning_rate, "initial_learning_rate", 0.0)
        self.decay_steps = real(decay_steps, "decay_steps", 0.0, low_open=True)
        self.alpha = real(alpha, "alpha", 0.0, 1.0)
        self.warmup_target = real(warmup_target, "warmup_target", 0.0, allow_none=True)
        self.warmup_steps = real(warmup_steps, "warmup_steps", 0.0)
        self.name = name

    def _decay(self, step, peak):
        frac = min(step, self.decay_steps) / self.decay_steps
        return peak * ((1.0 - self.alpha) * 0.5 * (1.0 + math.cos(math.pi * frac)) + self.alpha)

    def __call__(self, step: float) -> float:
        step = float(step)
        if self.warmup_target is None:
            return self._decay(step, self.initial_learning_rate)
        if step < self.warmup_steps:
            return (self.warmup_target - self.initial_learning_rate) * step / self.warmup_steps \
                + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


_SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay, CosineDecay)}


def deserialize(config: dict) -> LearningRateSchedule:
    """A schedule from its ``{"class_name": ..., "config": {...}}`` form (as optimizers save it)."""
    name = config.get("class_name")
    cls = _SCHEDULES.get(name)
    if cls is None:
        raise ValueError(f"unknown learning-rate schedule {name!r}; valid: {', '.join(sorted(_SCHEDULES))}")
    return cls.from_config(config.get("config") or {})
