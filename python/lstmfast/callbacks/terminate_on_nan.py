"""TerminateOnNaN: stop training at the first batch whose loss is NaN or infinite."""
from __future__ import annotations

import math

from .._typing import Logs
from .base import Callback, write

__all__ = ["TerminateOnNaN"]


class TerminateOnNaN(Callback):
    """Stop training when the batch loss becomes NaN or infinite."""

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            write(f"Batch {batch}: Invalid loss, terminating training\n")
            self.model.stop_training = True
