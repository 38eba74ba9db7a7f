"""The callback base class, the names of its hooks, and which hooks a callback listens to."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Dict, Optional

from .._typing import Logs

if TYPE_CHECKING:
    from ..models import Model

__all__ = ["Callback", "HOOKS", "LEGACY_ALIASES", "hooks_of", "write"]

HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
         "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
         "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end")
LEGACY_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


def write(message: str) -> None:
    """Print ``message`` as is (no newline added) and flush: the callbacks' one way to talk. In
    data-parallel training only rank 0 talks."""
    from .. import distributed
    if not distributed.is_chief():
        return
    sys.stdout.write(message)
    sys.stdout.flush()


class Callback:
    """Base class: every hook does nothing. ``model`` and ``params`` are set by the CallbackList.
    ``chief_only``: in data-parallel training, only rank 0 runs it (the callbacks that write files)."""

    chief_only = False
    # True: it reads the logs of batch hooks only when it needs them and before the next batch
    # (ProgbarLogger, when it draws); a model on a GPU then gives it logs that read the device on
    # first access instead of reading them back after every batch.
    lazy_logs = False

    def __init__(self) -> None:
        self.params: Optional[Dict[str, Any]] = None
        self.model: Optional[Model] = None

    def set_params(self, params: Optional[Dict[str, Any]]) -> None:
        self.params = params

    def set_model(self, model: Model) -> None:
        self.model = model

    def on_batch_begin(self, batch: int, logs: Logs = None) -> None:
        """Legacy alias, called by the default ``on_train_batch_begin``."""

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        """Legacy alias, called by the default ``on_train_batch_end``."""

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        pass

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_predict_batch_begin(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_train_begin(self, logs: Logs = None) -> None:
        pass

    def on_train_end(self, logs: Logs = None) -> None:
        pass

    def on_test_begin(self, logs: Logs = None) -> None:
        pass

    def on_test_end(self, logs: Logs = None) -> None:
        pass

    def on_predict_begin(self, logs: Logs = None) -> None:
        pass

    def on_predict_end(self, logs: Logs = None) -> None:
        pass


_CLASS_HOOKS: dict = {}
_HOOK_ATTRS = frozenset(HOOKS) | frozenset(LEGACY_ALIASES.values())  # names an instance may set a hook under


def _class_hooks(cls) -> frozenset:
    """The hooks a callback class overrides (its own or a legacy alias), computed once per class."""
    hooks = _CLASS_HOOKS.get(cls)
    if hooks is None:
        hooks = frozenset(h for h in HOOKS
                          if any(getattr(cls, n, None) is not getattr(Callback, n, None)
                                 for n in ((h, LEGACY_ALIASES[h]) if h in LEGACY_ALIASES else (h,))))
        _CLASS_HOOKS[cls] = hooks
    return hooks


def hooks_of(callback: Callback) -> frozenset:
    """The hooks ``callback`` acts on: methods its class overrides (or their legacy ``on_batch_*``
    aliases) and hooks set on the instance itself (LambdaCallback)."""
    hooks = _CLASS_HOOKS.get(type(callback))
    if hooks is None:
        hooks = _class_hooks(type(callback))
    own = getattr(callback, "__dict__", None)
    if own and not _HOOK_ATTRS.isdisjoint(own):
        hooks = hooks.union(h for h in HOOKS
                            if h in own or (h in LEGACY_ALIASES and LEGACY_ALIASES[h] in own))
    return hooks
