"""ModelCheckpoint: save the model or its weights during training."""
from __future__ import annotations

import os
import warnings
from typing import Optional, Union

from .._typing import Logs, PathLike
from ._monitor import auto_direction, check_mode
from .base import Callback, write

__all__ = ["ModelCheckpoint"]


class ModelCheckpoint(Callback):
    """Save the model (``model.save(path, overwrite=True)``) or its weights (``save_weights``) every
    epoch or every ``save_freq`` batches. ``filepath`` may hold ``str.format`` fields: ``{epoch}``
    (1-based), ``{batch}`` and any log key, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.keras"``. With
    ``save_best_only`` it saves only when ``monitor`` improves on the best so far (or on
    ``initial_value_threshold``)."""

    chief_only = True  # data-parallel training: only rank 0 runs it (lstmfast.distributed)

    def __init__(self, filepath: PathLike, monitor: str = "val_loss", verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto", save_freq: Union[str, int] = "epoch",
                 initial_value_threshold: Optional[float] = None) -> None:
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = check_mode(mode, "ModelCheckpoint")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(f"save_freq must be 'epoch' or a positive int (batches), got {save_freq!r}")
        self.save_freq = save_freq
        self.best = initial_value_threshold
        self._direction = None
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = -1
        self._current_epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self._current_epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        if self.save_freq == "epoch":
            return
        add = batch + 1 if batch <= self._last_batch_seen else batch - self._last_batch_seen  # new epoch
        self._last_batch_seen = batch
        self._batches_seen_since_last_saving += add
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _path(self, epoch, batch, logs) -> str:
        logs = logs or {}
        try:
            if batch is None or "batch" in logs:
                return self.filepath.format(epoch=epoch + 1, **logs)
            return self.filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)
        except KeyError as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". Reason: {e}') from None

    def _write(self, path) -> None:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path, overwrite=True)
        else:
            self.model.save(path, overwrite=True)

    def _save(self, epoch, batch, logs) -> None:
        logs = logs or {}
        path = self._path(epoch, batch, logs)
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                # Keras 3 saves anyway
                warnings.warn(f"Can save best model only with {self.monitor} available.", stacklevel=2)
            else:
                if self._direction is None:
                    self._direction = self.mode if self.mode != "auto" else \
                        (auto_direction(self.monitor, self.model) or "min")
                best = "None" if self.best is None else f"{self.best:.5f}"
                if self.best is not None and not (current < self.best if self._direction == "min"
                                                  else current > self.best):
                    if self.verbose > 0:
                        write(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}\n")
                    return
                if self.verbose > 0:
                    write(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to {current:.5f}, "
                           f"saving model to {path}\n")
                self.best = current
        elif self.verbose > 0:
            write(f"\nEpoch {epoch + 1}: saving model to {path}\n")
        self._write(path)
