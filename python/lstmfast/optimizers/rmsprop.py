"""RMSprop, plain or centered, with optional momentum."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ._checks import real
from .base import LearningRate, Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """``v = rho v + (1 - rho) g^2``; ``denominator = v + epsilon``, or centered
    (``mg = rho mg + (1 - rho) g``) ``v - mg^2 + epsilon``; ``increment = lr g / sqrt(denominator)``
    (epsilon inside the square root, as Keras 3); with momentum ``m = momentum m + increment`` and
    ``var -= m``, else ``var -= increment``."""

    _default_name = "rmsprop"

    def __init__(self, learning_rate: LearningRate = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, weight_decay: Optional[float] = None,
                 clipnorm: Optional[float] = None, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, name: Optional[str] = None) -> None:
        self.rho = real(rho, "rho", 0.0, 1.0)
        self.momentum = real(momentum, "momentum", 0.0, 1.0)
        self.epsilon = real(epsilon, "epsilon", 0.0)
        self.centered = bool(centered)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)

    @property
    def slot_names(self) -> Tuple[str, ...]:
        return ("velocity",) + (("momentum",) if self.momentum > 0 else ()) \
            + (("average_gradient",) if self.centered else ())

    def _update(self, b, c, lr, t):
        g, s, v = b["grad"], b["scratch"], b["velocity"]
        rho = self.rho
        np.multiply(v, c(rho), v)
        np.multiply(g, g, s)
        np.multiply(s, c(1.0 - rho), s)
        np.add(v, s, v)                                         # v = rho v + (1 - rho) g^2
        if self.centered:
            mg = b["average_gradient"]
            np.multiply(mg, c(rho), mg)
            np.multiply(g, c(1.0 - rho), s)
            np.add(mg, s, mg)                                   # mg = rho mg + (1 - rho) g
            np.multiply(mg, mg, s)
            np.subtract(v, s, s)
            np.add(s, c(self.epsilon), s)
        else:
            np.add(v, c(self.epsilon), s)
        np.sqrt(s, s)
        np.multiply(g, lr, g)
        np.divide(g, s, g)                                      # increment
        if self.momentum > 0:
            m = b["momentum"]
            np.multiply(m, c(self.momentum), m)
            np.add(m, g, m)
            return "momentum", -1
        return "grad", -1

    def _fused_rule(self, lr, t):
        rule = (8 if self.momentum > 0 else 7) if self.centered else (6 if self.momentum > 0 else 5)
        return rule, (lr, self.momentum, 0.0, 0.0, self.rho, 1.0 - self.rho, self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}
