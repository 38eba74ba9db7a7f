"""Adagrad."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ._checks import real
from .base import LearningRate, Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """``acc += g^2`` (acc starts at ``initial_accumulator_value``);
    ``var -= lr g / sqrt(acc + epsilon)``."""

    _default_name = "adagrad"

    def __init__(self, learning_rate: LearningRate = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, weight_decay: Optional[float] = None, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        self.initial_accumulator_value = real(initial_accumulator_value, "initial_accumulator_value", 0.0)
        self.epsilon = real(epsilon, "epsilon", 0.0)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)

    @property
    def slot_names(self) -> Tuple[str, ...]:
        return ("accumulator",)

    def _slot_initial_value(self, name):
        return self.initial_accumulator_value

    def _update(self, b, c, lr, t):
        g, s, acc = b["grad"], b["scratch"], b["accumulator"]
        np.multiply(g, g, s)
        np.add(acc, s, acc)
        np.add(acc, c(self.epsilon), s)
        np.sqrt(s, s)
        np.multiply(g, lr, g)
        np.divide(g, s, g)
        return "grad", -1

    def _fused_rule(self, lr, t):
        return 9, (lr, 0.0, 0.0, 0.0, 0.0, 0.0, self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}
