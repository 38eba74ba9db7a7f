"""LearningRateScheduler: set the learning rate from a function of the epoch."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .._typing import Logs
from .base import Callback, write

__all__ = ["LearningRateScheduler"]


class LearningRateScheduler(Callback):
    """At the start of each epoch set the learning rate to ``schedule(epoch, lr)`` (or
    ``schedule(epoch)``); adds ``logs["learning_rate"]`` at the end of each epoch."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        optimizer = self.model.optimizer
        lr = float(optimizer.current_learning_rate())
        try:
            lr = self.schedule(epoch, lr)
        except TypeError:  # the old one-argument form
            lr = self.schedule(epoch)
        if isinstance(lr, bool) or not isinstance(lr, (float, int, np.floating, np.integer)):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {lr!r}")
        optimizer.learning_rate = float(lr)
        if self.verbose > 0:
            write(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.\n")

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.current_learning_rate())
