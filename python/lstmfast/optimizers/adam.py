"""Adam, with optional AMSGrad."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from ._checks import real
from .base import LearningRate, Optimizer

__all__ = ["Adam"]


class Adam(Optimizer):
    """``m += (g - m)(1 - beta_1)``; ``v += (g^2 - v)(1 - beta_2)``;
    ``alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``; ``var -= alpha m / (sqrt(v) + epsilon)``
    (amsgrad: ``v_hat = max(v_hat, v)`` replaces v in the last step). epsilon is added to the
    uncorrected ``sqrt(v)``: torch.optim.Adam matches with ``eps = epsilon / sqrt(1 - beta_2^t)``."""

    _default_name = "adam"

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, weight_decay: Optional[float] = None,
                 clipnorm: Optional[float] = None, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, name: Optional[str] = None) -> None:
        self.beta_1 = real(beta_1, "beta_1", 0.0, 1.0)
        self.beta_2 = real(beta_2, "beta_2", 0.0, 1.0)
        self.epsilon = real(epsilon, "epsilon", 0.0)
        self.amsgrad = bool(amsgrad)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)

    @property
    def slot_names(self) -> Tuple[str, ...]:
        return ("momentum", "velocity", "velocity_hat") if self.amsgrad else ("momentum", "velocity")

    def _update(self, b, c, lr, t):
        g, s, m, v = b["grad"], b["scratch"], b["momentum"], b["velocity"]
        alpha = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        np.subtract(g, m, s)
        np.multiply(s, c(1.0 - self.beta_1), s)
        np.add(m, s, m)                                         # m += (g - m)(1 - beta_1)
        np.multiply(g, g, g)
        np.subtract(g, v, g)
        np.multiply(g, c(1.0 - self.beta_2), g)
        np.add(v, g, v)                                         # v += (g^2 - v)(1 - beta_2)
        if self.amsgrad:
            vh = b["velocity_hat"]
            np.maximum(vh, v, out=vh)
            v = vh
        np.sqrt(v, s)
        np.add(s, c(self.epsilon), s)
        np.multiply(m, alpha, g)
        np.divide(g, s, g)
        return "grad", -1

    def _fused_rule(self, lr, t):
        alpha = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        return (4 if self.amsgrad else 3), (alpha, 0.0, 1.0 - self.beta_1, 1.0 - self.beta_2, 0.0, 0.0,
                                            self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}
