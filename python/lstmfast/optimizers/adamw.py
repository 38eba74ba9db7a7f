"""AdamW: Adam with decoupled weight decay."""
from __future__ import annotations

from typing import Optional

from .adam import Adam
from .base import LearningRate

__all__ = ["AdamW"]


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.004): ``var *= 1 - lr weight_decay`` before the
    Adam step (torch.optim.AdamW's rule)."""

    _default_name = "adamw"

    def __init__(self, learning_rate: LearningRate = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False, clipnorm: Optional[float] = None,
                 clipvalue: Optional[float] = None, global_clipnorm: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        if weight_decay is None:
            raise ValueError("AdamW needs a weight_decay (a float >= 0)")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, name)
