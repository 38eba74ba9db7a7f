"""CallbackList: what ``Model.fit``/``evaluate``/``predict`` call.

It dispatches each hook only to the callbacks that act on it (see ``base.hooks_of``), so per-batch
dispatch costs nothing when no callback listens; ``wants(hook)`` tells the model whether building
per-batch logs is needed at all.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, Optional

from .._typing import Logs
from .base import Callback, hooks_of
from .history import History
from .progbar_logger import ProgbarLogger

if TYPE_CHECKING:
    from ..models import Model

__all__ = ["CallbackList"]


class CallbackList(Callback):
    """The callbacks of one ``fit``/``evaluate``/``predict`` call, plus History and ProgbarLogger
    when asked (appended last, so they see what the others add to the logs, as in Keras)."""

    def __init__(self, callbacks: Optional[Iterable[Callback]] = None, model: Optional[Model] = None,
                 add_history: bool = False, add_progbar: bool = False, verbose: int = 1, epochs: int = 1,
                 steps: Optional[int] = None, **params: Any) -> None:
        super().__init__()
        self.callbacks = list(callbacks) if callbacks else []
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
        self._history = self._progbar = None
        for cb in self.callbacks:  # the first of each kind the caller gave
            if self._history is None and isinstance(cb, History):
                self._history = cb
            if self._progbar is None and isinstance(cb, ProgbarLogger):
                self._progbar = cb
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        self.set_params({"verbose": verbose, "epochs": epochs, "steps": steps, **params})
        if model is not None:
            self.set_model(model)
        self._index()

    def _index(self) -> None:
        # One pass over the callbacks (this runs on every fit call, so it must stay cheap): the
        # listeners of each hook that has some; the hooks below look up the others as ().
        listeners: dict = {}
        for cb in self.callbacks:
            for h in hooks_of(cb):
                if h in listeners:
                    listeners[h].append(getattr(cb, h))
                else:
                    listeners[h] = [getattr(cb, h)]
        self._listeners = listeners

    def wants(self, hook: str) -> bool:
        """Whether any callback acts on ``hook`` (e.g. "on_train_batch_end")."""
        return hook in self._listeners

    def reads_logs_eagerly(self, hook: str) -> bool:
        """Whether some listener of ``hook`` is not ``lazy_logs`` (it may read the logs at any time)."""
        return any(not getattr(getattr(f, "__self__", None), "lazy_logs", False)
                   for f in self._listeners.get(hook, ()))

    def append(self, callback: Callback) -> None:
        self.callbacks.append(callback)
        if self.params is not None:
            callback.set_params(self.params)
        if self.model is not None:
            callback.set_model(self.model)
        self._index()

    def set_params(self, params: Optional[Dict[str, Any]]) -> None:
        self.params = params
        for cb in self.callbacks:
            cb.set_params(params)

    def set_model(self, model: Model) -> None:
        self.model = model
        if self._history is not None:
            model.history = self._history
        for cb in self.callbacks:
            cb.set_model(model)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    # the per-batch hooks are the hot path: one loop over pre-filtered bound methods
    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        for f in self._listeners.get("on_train_batch_begin", ()):
            f(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        for f in self._listeners.get("on_train_batch_end", ()):
            f(batch, logs)

    def on_test_batch_begin(self, batch: int, logs: Logs = None) -> None:
        for f in self._listeners.get("on_test_batch_begin", ()):
            f(batch, logs)

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        for f in self._listeners.get("on_test_batch_end", ()):
            f(batch, logs)

    def on_predict_batch_begin(self, batch: int, logs: Logs = None) -> None:
        for f in self._listeners.get("on_predict_batch_begin", ()):
            f(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        for f in self._listeners.get("on_predict_batch_end", ()):
            f(batch, logs)

    def on_batch_begin(self, batch: int, logs: Logs = None) -> None:
        self.on_train_batch_begin(batch, logs)

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        self.on_train_batch_end(batch, logs)

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        for f in self._listeners.get("on_epoch_begin", ()):
            f(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        for f in self._listeners.get("on_epoch_end", ()):
            f(epoch, logs)

    def on_train_begin(self, logs: Logs = None) -> None:
        self._index()  # callbacks may have been added or changed since construction
        for f in self._listeners.get("on_train_begin", ()):
            f(logs)

    def on_train_end(self, logs: Logs = None) -> None:
        for f in self._listeners.get("on_train_end", ()):
            f(logs)

    def on_test_begin(self, logs: Logs = None) -> None:
        self._index()
        for f in self._listeners.get("on_test_begin", ()):
            f(logs)

    def on_test_end(self, logs: Logs = None) -> None:
        for f in self._listeners.get("on_test_end", ()):
            f(logs)

    def on_predict_begin(self, logs: Logs = None) -> None:
        self._index()
        for f in self._listeners.get("on_predict_begin", ()):
            f(logs)

    def on_predict_end(self, logs: Logs = None) -> None:
        for f in self._listeners.get("on_predict_end", ()):
            f(logs)
