"""ProgbarLogger: the progress bar of fit/evaluate/predict."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from .._typing import Logs
from .base import Callback, write
from .progbar import Progbar

__all__ = ["ProgbarLogger"]


class ProgbarLogger(Callback):
    """Prints the Keras progress bar during fit/evaluate/predict ("Epoch 3/10" first when
    epochs > 1). The logs it receives are running means, shown as given; it reads them only when
    it draws (``lazy_logs``)."""

    lazy_logs = True

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.progbar = None
        self.target = None
        self.verbose = 1
        self.epochs = 1
        self._called_in_fit = False

    def set_params(self, params: Optional[Dict[str, Any]]) -> None:
        params = params or {}
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def on_train_begin(self, logs: Logs = None) -> None:
        self._called_in_fit = True  # validation inside fit is silent

    def on_test_begin(self, logs: Logs = None) -> None:
        if not self._called_in_fit:
            self._reset()

    def on_predict_begin(self, logs: Logs = None) -> None:
        self._reset()

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self._reset()
        if self.verbose and self.epochs > 1:
            write(f"Epoch {epoch + 1}/{self.epochs}\n")

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        self._update(batch, logs)

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        if not self._called_in_fit:
            self._update(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        self._update(batch, None)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        self._finalize(logs)

    def on_test_end(self, logs: Logs = None) -> None:
        if not self._called_in_fit:
            self._finalize(logs)

    def on_predict_end(self, logs: Logs = None) -> None:
        self._finalize(logs)

    def _reset(self):
        self.seen = 0
        self.progbar = None
        self._started = time.time()  # the bar may be made only at the end (verbose=2): time from here

    def _bar(self):
        if self.progbar is None:
            self.progbar = Progbar(target=self.target, verbose=self.verbose, unit_name="step")
            self.progbar._all_stateful = True
            self.progbar._start = getattr(self, "_started", self.progbar._start)
        return self.progbar

    def _update(self, batch, logs):
        self.seen = batch + 1
        if self.verbose == 1:
            self._bar().update(self.seen, logs, finalize=False)

    def _finalize(self, logs):
        bar = self._bar()
        if self.target is None:
            self.target = self.seen
            bar.target = self.seen
        bar.update(bar.target if bar.target is not None else self.seen, logs, finalize=True)
