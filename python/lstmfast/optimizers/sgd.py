"""SGD, with optional (Nesterov) momentum."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ._checks import real
from .base import LearningRate, Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """Without momentum: ``var -= lr g``. With momentum mu: ``m = mu m - lr g``, then
    ``var += m`` or, with ``nesterov``, ``var += mu m - lr g``."""

    _default_name = "SGD"

    def __init__(self, learning_rate: LearningRate = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: Optional[float] = None, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        self.momentum = real(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)

    @property
    def slot_names(self) -> Tuple[str, ...]:
        return ("momentum",) if self.momentum else ()

    def _update(self, b, c, lr, t):
        g = b["grad"]
        np.multiply(g, lr, g)                                   # lr g
        if not self.momentum:
            return "grad", -1
        m = b["momentum"]
        np.multiply(m, c(self.momentum), m)
        np.subtract(m, g, m)                                    # m = mu m - lr g
        if not self.nesterov:
            return "momentum", +1
        s = b["scratch"]
        np.multiply(m, c(self.momentum), s)
        np.subtract(s, g, s)
        return "scratch", +1

    def _fused_rule(self, lr, t):
        rule = 0 if not self.momentum else (2 if self.nesterov else 1)
        return rule, (lr, self.momentum, 0.0, 0.0, 0.0, 0.0, 0.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
