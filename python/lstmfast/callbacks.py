"""Training callbacks with Keras 3 semantics, and the Keras progress bar.

``CallbackList`` is what ``Model.fit``/``evaluate``/``predict`` call. It dispatches each hook only to
the callbacks that override it (or its legacy ``on_batch_*`` alias), so per-batch dispatch costs
nothing when no callback listens; ``wants(hook)`` tells the model whether building per-batch logs is
needed at all.

``mode="auto"`` (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau) minimises a monitored quantity
whose name (without ``val_``) contains "loss" or "error" or is a known loss abbreviation, and maximises
one that contains "acc", "auc", "precision", "recall" or "f1"; otherwise a metric of the model with
the same name decides through its ``direction``; failing that EarlyStopping raises (as Keras 3) and
the others minimise (as Keras).
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings

import numpy as np

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "Progbar", "EarlyStopping", "ModelCheckpoint",
           "ReduceLROnPlateau", "CSVLogger", "LambdaCallback", "LearningRateScheduler", "TerminateOnNaN"]

_HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
          "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
          "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end")
_LEGACY = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


def _print(message: str) -> None:
    sys.stdout.write(message)
    sys.stdout.flush()


class Callback:
    """Base class: every hook does nothing. ``model`` and ``params`` are set by the CallbackList."""

    def __init__(self):
        self.params = None
        self.model = None

    def set_params(self, params) -> None:
        self.params = params

    def set_model(self, model) -> None:
        self.model = model

    def on_batch_begin(self, batch, logs=None):
        """Legacy alias, called by the default ``on_train_batch_begin``."""

    def on_batch_end(self, batch, logs=None):
        """Legacy alias, called by the default ``on_train_batch_end``."""

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_predict_batch_begin(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass


_CLASS_HOOKS: dict = {}
_HOOK_ATTRS = frozenset(_HOOKS) | frozenset(_LEGACY.values())   # names an instance may set a hook under


def _class_hooks(cls) -> frozenset:
    """The hooks a callback class overrides (its own or a legacy alias), computed once per class."""
    hooks = _CLASS_HOOKS.get(cls)
    if hooks is None:
        hooks = frozenset(h for h in _HOOKS
                          if any(getattr(cls, n, None) is not getattr(Callback, n, None)
                                 for n in ((h, _LEGACY[h]) if h in _LEGACY else (h,))))
        _CLASS_HOOKS[cls] = hooks
    return hooks


def _overrides(cb, hook: str) -> bool:
    """Whether ``cb`` does something on ``hook`` (own method, instance attribute, or legacy alias)."""
    if hook in _class_hooks(type(cb)):
        return True
    own = getattr(cb, "__dict__", None)
    if not own:
        return False
    return hook in own or (hook in _LEGACY and _LEGACY[hook] in own)


class CallbackList(Callback):
    """The callbacks of one ``fit``/``evaluate``/``predict`` call, plus History and ProgbarLogger
    when asked (appended last, so they see what the others add to the logs, as in Keras)."""

    def __init__(self, callbacks=None, model=None, add_history=False, add_progbar=False, verbose=1, epochs=1,
                 steps=None, **params):
        super().__init__()
        self.callbacks = list(callbacks) if callbacks else []
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
        self._history = next((cb for cb in self.callbacks if isinstance(cb, History)), None)
        self._progbar = next((cb for cb in self.callbacks if isinstance(cb, ProgbarLogger)), None)
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
        # One pass over the callbacks (this runs on every fit call, so it must stay cheap).
        listeners = {h: [] for h in _HOOKS}
        for cb in self.callbacks:
            hooks = _class_hooks(type(cb))
            own = getattr(cb, "__dict__", None)
            if own and not _HOOK_ATTRS.isdisjoint(own):   # hooks set on the instance itself
                hooks = hooks.union(h for h in _HOOKS if h in own or (h in _LEGACY and _LEGACY[h] in own))
            for h in hooks:
                listeners[h].append(getattr(cb, h))
        self._listeners = listeners

    def wants(self, hook: str) -> bool:
        """Whether any callback acts on ``hook`` (e.g. "on_train_batch_end")."""
        return bool(self._listeners[hook])

    def append(self, callback) -> None:
        self.callbacks.append(callback)
        if self.params is not None:
            callback.set_params(self.params)
        if self.model is not None:
            callback.set_model(self.model)
        self._index()

    def set_params(self, params) -> None:
        self.params = params
        for cb in self.callbacks:
            cb.set_params(params)

    def set_model(self, model) -> None:
        self.model = model
        if self._history is not None:
            model.history = self._history
        for cb in self.callbacks:
            cb.set_model(model)

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    # the per-batch hooks are the hot path: one loop over pre-filtered bound methods
    def on_train_batch_begin(self, batch, logs=None):
        for f in self._listeners["on_train_batch_begin"]:
            f(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        for f in self._listeners["on_train_batch_end"]:
            f(batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        for f in self._listeners["on_test_batch_begin"]:
            f(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        for f in self._listeners["on_test_batch_end"]:
            f(batch, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        for f in self._listeners["on_predict_batch_begin"]:
            f(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        for f in self._listeners["on_predict_batch_end"]:
            f(batch, logs)

    def on_batch_begin(self, batch, logs=None):
        self.on_train_batch_begin(batch, logs)

    def on_batch_end(self, batch, logs=None):
        self.on_train_batch_end(batch, logs)

    def on_epoch_begin(self, epoch, logs=None):
        for f in self._listeners["on_epoch_begin"]:
            f(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for f in self._listeners["on_epoch_end"]:
            f(epoch, logs)

    def on_train_begin(self, logs=None):
        self._index()  # callbacks may have been added or changed since construction
        for f in self._listeners["on_train_begin"]:
            f(logs)

    def on_train_end(self, logs=None):
        for f in self._listeners["on_train_end"]:
            f(logs)

    def on_test_begin(self, logs=None):
        self._index()
        for f in self._listeners["on_test_begin"]:
            f(logs)

    def on_test_end(self, logs=None):
        for f in self._listeners["on_test_end"]:
            f(logs)

    def on_predict_begin(self, logs=None):
        self._index()
        for f in self._listeners["on_predict_begin"]:
            f(logs)

    def on_predict_end(self, logs=None):
        for f in self._listeners["on_predict_end"]:
            f(logs)


class History(Callback):
    """Records the epoch logs: ``history[name]`` is a list with one value per epoch; ``epoch`` lists
    the epoch indices. Set as ``model.history``."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            self.model.history = self

    def plot(self, path, metrics=None) -> None:
        """Draw the recorded curves to a PNG file at ``path`` (written atomically): one panel per
        metric, its training values and, when recorded, its ``val_`` values against the epoch.
        ``metrics``: names without the ``val_`` prefix (default: every recorded one, loss first).
        Needs matplotlib (ModuleNotFoundError with an install hint otherwise)."""
        from ._atomic import atomic_file
        names = [k for k in self.history if not k.startswith("val_")]
        names += [k[4:] for k in self.history if k.startswith("val_") and k[4:] not in names]
        if metrics is None:
            metrics = sorted(names, key=lambda k: (k != "loss", names.index(k)))
        else:
            metrics = [metrics] if isinstance(metrics, str) else list(metrics)
            unknown = [m for m in metrics if m not in names]
            if unknown:
                raise ValueError(f"History.plot: no recorded metric {', '.join(map(repr, unknown))}; recorded: "
                                 f"{', '.join(map(repr, names)) or 'nothing'}")
        if not metrics:
            raise ValueError("History.plot: nothing recorded yet (fit the model first)")
        directory = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"History.plot: the directory {directory!r} does not exist")
        try:
            from matplotlib.figure import Figure  # not pyplot: no global backend or figure state touched
        except ImportError:
            raise ModuleNotFoundError("matplotlib is not installed: pip install matplotlib (or lstmfast[plot])",
                                      name="matplotlib") from None
        fig = Figure(figsize=(4.5 * len(metrics), 3.6))
        axes = fig.subplots(1, len(metrics), squeeze=False)
        for ax, name in zip(axes[0], metrics):
            for key, style in ((name, "-"), ("val_" + name, "--")):
                values = self.history.get(key)
                if values:
                    n = len(self.epoch) or len(values)
                    if len(values) == len(self.epoch):
                        x = [e + 1 for e in self.epoch]
                    else:  # validation every k epochs: values at the end of each stretch
                        x = [n * (i + 1) / len(values) for i in range(len(values))]
                    ax.plot(x, [float(v) for v in values], style, marker=".", label=key)
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)


# ------------------------------------------------------------------------------------------------
# Progress bar.
# ------------------------------------------------------------------------------------------------

def _interactive() -> bool:
    """Whether stdout redraws lines in place (a terminal or a notebook)."""
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        tty = bool(isatty()) if isatty is not None else False
    except ValueError:  # closed stream
        tty = False
    return tty or "ipykernel" in sys.modules


def _format_value(v, signed=True) -> str:
    """Keras: 4 decimals, or scientific below 1e-3 (verbose=2 tests the value, not its magnitude)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return f" {v}"
    return f" {v:.4f}" if (abs(v) if signed else v) > 1e-3 else f" {v:.4e}"


class Progbar:
    """Keras's progress bar. verbose=1: ``12/100 ━━━━━━━━━━━━━━━━━━━━ 3s 12ms/step - loss: 0.1234``,
    redrawn in place at most every ``interval`` seconds with the remaining time (ETA), and finished
    with the elapsed time; when stdout is not interactive only the finished line is printed (and no
    colours). verbose=2: only the finished line, ``100/100 - 1s - 10ms/step - loss: 0.1234``.

    ``update(current, values)``: ``values`` are ``(name, value)`` pairs or a dict. Names in
    ``stateful_metrics`` are shown as given; the others are averaged over the steps seen (weighted by
    the steps each update covers), as ``Progbar.add`` users expect."""

    def __init__(self, target, width=20, verbose=1, interval=0.05, stateful_metrics=None, unit_name="step"):
        self.target = target
        self.width = int(width)
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.stateful_metrics = set(stateful_metrics) if stateful_metrics else set()
        self._all_stateful = False  # ProgbarLogger: the logs are already running means
        self._latest = None
        self._dynamic = _interactive()
        self._values = {}
        self._values_order = []
        self._seen_so_far = 0
        self._start = time.time()
        self._last_update = 0.0
        self._time_after_first_step = None
        self._prev_total_width = 0

    def update(self, current, values=None, finalize=None) -> None:
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if values:
            if self._all_stateful:
                self._latest = values  # read only if this call draws
            else:
                self._accumulate(current, values, finalize)
        self._seen_so_far = current
        now = time.time()
        if current == 1:
            self._time_after_first_step = now
        if self.verbose == 1:
            if not finalize and (not self._dynamic or now - self._last_update < self.interval):
                return
            self._last_update = now
            self._draw(current, now, finalize)
        elif self.verbose == 2 and finalize and self.target:
            self._last_update = now
            digits = int(math.log10(self.target)) + 1
            info = f"{current:{digits}d}/{self.target} - {now - self._start:.0f}s -"
            info += self._format_time(self._time_per_unit(current, now))
            _print(info + self._metrics_text(signed=False) + "\n")

    def add(self, n, values=None) -> None:
        self.update(self._seen_so_far + n, values)

    def _accumulate(self, current, values, finalize) -> None:
        items = values.items() if isinstance(values, dict) else values
        for k, v in items:
            if k not in self._values:
                self._values_order.append(k)
            if k in self.stateful_metrics:
                self._values[k] = [v, 1]
                continue
            if finalize:  # Keras 3: the finishing value is shown as given
                self._values[k] = [v, 1]
                continue
            base = max(current - self._seen_so_far, 1)  # an update covering several steps counts for all
            acc = self._values.get(k)
            if acc is None:
                self._values[k] = [v * base, base]
            else:
                acc[0] += v * base
                acc[1] += base

    def _time_per_unit(self, current, now) -> float:
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            return (now - self._time_after_first_step) / (current - 1)
        return (now - self._start) / current

    def _format_time(self, time_per_unit) -> str:
        if time_per_unit >= 1 or time_per_unit == 0:
            return f" {time_per_unit:.0f}s/{self.unit_name}"
        if time_per_unit >= 1e-3:
            return f" {time_per_unit * 1e3:.0f}ms/{self.unit_name}"
        return f" {time_per_unit * 1e6:.0f}us/{self.unit_name}"

    def _metrics_text(self, signed=True) -> str:
        if self._all_stateful:
            latest = self._latest
            items = latest.items() if isinstance(latest, dict) else (latest or ())
            return "".join(f" - {k}:" + _format_value(v, signed) for k, v in items)
        out = []
        for k in self._values_order:
            total, count = self._values[k]
            out.append(f" - {k}:" + _format_value(total if count == 1 else total / max(1, count), signed))
        return "".join(out)

    def _draw(self, current, now, finalize) -> None:
        color = self._dynamic  # ANSI colours only where the line is redrawn in place
        if self.target:
            digits = int(math.log10(self.target)) + 1
            count = f"{current:{digits}d}/{self.target}"
            filled = min(self.width, int(self.width * current / self.target))
            if color:
                bar = (f"\x1b[32m{'━' * filled}\x1b[0m" if filled else "") \
                    + f"\x1b[37m{'━' * (self.width - filled)}\x1b[0m"
                head = f"\x1b[1m{count}\x1b[0m {bar}"
            else:
                head = f"{count} {'━' * self.width}"
            visible = len(count) + 1 + self.width
        else:
            head = f"{current:7d}/Unknown"
            visible = len(head)
        time_per_unit = self._time_per_unit(current, now)
        if self.target and not finalize:
            eta = time_per_unit * (self.target - current)
            if eta > 3600:
                when = f"{int(eta // 3600)}:{int(eta % 3600) // 60:02d}:{int(eta % 60):02d}"
            elif eta > 60:
                when = f"{int(eta // 60)}:{int(eta % 60):02d}"
            else:
                when = f"{int(eta)}s"
        else:
            when = f"{now - self._start:.0f}s"
        tail = self._format_time(time_per_unit) + self._metrics_text()
        message = head + (f" \x1b[1m{when}\x1b[0m" if color else f" {when}") + tail
        width = visible + 1 + len(when) + len(tail)
        if self._dynamic:
            pad = " " * max(0, self._prev_total_width - width)
            _print("\r" + message + pad + ("\n" if finalize else ""))
        else:
            _print(message + "\n")
        self._prev_total_width = width


class ProgbarLogger(Callback):
    """Prints the Keras progress bar during fit/evaluate/predict ("Epoch 3/10" first when
    epochs > 1). The logs it receives are running means, shown as given."""

    def __init__(self):
        super().__init__()
        self.seen = 0
        self.progbar = None
        self.target = None
        self.verbose = 1
        self.epochs = 1
        self._called_in_fit = False

    def set_params(self, params) -> None:
        params = params or {}
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def on_train_begin(self, logs=None):
        self._called_in_fit = True  # validation inside fit is silent

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._reset()

    def on_predict_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()
        if self.verbose and self.epochs > 1:
            _print(f"Epoch {epoch + 1}/{self.epochs}\n")

    def on_train_batch_end(self, batch, logs=None):
        self._update(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._update(batch, None)

    def on_epoch_end(self, epoch, logs=None):
        self._finalize(logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize(logs)

    def on_predict_end(self, logs=None):
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


# ------------------------------------------------------------------------------------------------
# Monitoring callbacks.
# ------------------------------------------------------------------------------------------------

_MIN_WORDS = ("loss", "error", "mse", "mae", "mape", "msle", "crossentropy", "hinge", "kld", "divergence")
_MAX_WORDS = ("acc", "auc", "precision", "recall", "f1", "iou")


def _auto_direction(monitor: str, model):
    """'min', 'max' or None for a monitored name under mode='auto'."""
    name = monitor[4:] if monitor.startswith("val_") else monitor
    low = name.lower()
    if low == "ce" or any(w in low for w in _MIN_WORDS):
        return "min"
    if any(w in low for w in _MAX_WORDS):
        return "max"
    for m in getattr(model, "metrics", None) or ():
        if getattr(m, "name", None) == name and getattr(m, "direction", None) in ("up", "down"):
            return "max" if m.direction == "up" else "min"
    return None


def _check_mode(mode, who):
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"{who} mode {mode!r} is unknown, fallback to auto mode.", stacklevel=3)
        return "auto"
    return mode


def _copy_weights(model):
    return [np.array(w, copy=True) for w in model.get_weights()]


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs (Keras 3: epochs before ``start_from_epoch`` are ignored; an improvement only resets the
    wait if it also beats ``baseline``; with ``restore_best_weights`` the best epoch's weights are put
    back at the end of training, whether or not it stopped early)."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _check_mode(mode, "EarlyStopping")
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0
        self._direction = None

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _better(self, value, reference) -> bool:
        if reference is None:
            return True
        if self._direction == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {','.join(logs or {})}", stacklevel=2)
            return
        if self._direction is None:
            self._direction = self.mode if self.mode != "auto" else _auto_direction(self.monitor, self.model)
            if self._direction is None:
                raise ValueError(f"EarlyStopping callback received monitor={self.monitor!r} but cannot tell "
                                 f"whether it should be maximized or minimized: pass mode='max' or mode='min'")
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _copy_weights(self.model)
            self.best_epoch = epoch
        self.wait += 1
        if self._better(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _copy_weights(self.model)
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _print(f"Epoch {self.stopped_epoch + 1}: early stopping\n")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.\n")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (``model.save(path, overwrite=True)``) or its weights (``save_weights``) every
    epoch or every ``save_freq`` batches. ``filepath`` may hold ``str.format`` fields: ``{epoch}``
    (1-based), ``{batch}`` and any log key, e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.keras"``. With
    ``save_best_only`` it saves only when ``monitor`` improves on the best so far (or on
    ``initial_value_threshold``)."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _check_mode(mode, "ModelCheckpoint")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(f"save_freq must be 'epoch' or a positive int (batches), got {save_freq!r}")
        self.save_freq = save_freq
        self.best = initial_value_threshold
        self._direction = None
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = -1
        self._current_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        add = batch + 1 if batch <= self._last_batch_seen else batch - self._last_batch_seen  # new epoch
        self._last_batch_seen = batch
        self._batches_seen_since_last_saving += add
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
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
                        (_auto_direction(self.monitor, self.model) or "min")
                best = "None" if self.best is None else f"{self.best:.5f}"
                if self.best is not None and not (current < self.best if self._direction == "min"
                                                  else current > self.best):
                    if self.verbose > 0:
                        _print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}\n")
                    return
                if self.verbose > 0:
                    _print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to {current:.5f}, "
                           f"saving model to {path}\n")
                self.best = current
        elif self.verbose > 0:
            _print(f"\nEpoch {epoch + 1}: saving model to {path}\n")
        self._write(path)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` (not below ``min_lr``) when ``monitor`` has not
    improved by more than ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs before
    counting again. Adds ``logs["learning_rate"]`` every epoch."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if "epsilon" in kwargs:  # Keras 2 name of min_delta
            min_delta = kwargs.pop("epsilon")
        if kwargs:
            raise TypeError(f"ReduceLROnPlateau got unexpected arguments: {sorted(kwargs)}")
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0, got factor={factor}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _check_mode(mode, "Learning rate reduction")
        self.min_delta = float(min_delta)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self._reset()

    def _reset(self):
        self._direction = None
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def on_train_begin(self, logs=None):
        self._reset()

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(optimizer.current_learning_rate())
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}.", stacklevel=2)
            return
        if self._direction is None:
            self._direction = self.mode if self.mode != "auto" else (_auto_direction(self.monitor, self.model) or "min")
            self.best = math.inf if self._direction == "min" else -math.inf
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        improved = (current < self.best - self.min_delta) if self._direction == "min" \
            else (current > self.best + self.min_delta)
        if improved:
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = float(optimizer.current_learning_rate())
                if old_lr > float(np.float32(self.min_lr)):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    optimizer.learning_rate = new_lr
                    if self.verbose > 0:
                        _print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.\n")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class LearningRateScheduler(Callback):
    """At the start of each epoch set the learning rate to ``schedule(epoch, lr)`` (or
    ``schedule(epoch)``); adds ``logs["learning_rate"]`` at the end of each epoch."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
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
            _print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.\n")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.current_learning_rate())


class TerminateOnNaN(Callback):
    """Stop training when the batch loss becomes NaN or infinite."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            _print(f"Batch {batch}: Invalid loss, terminating training\n")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Write one CSV row per epoch: ``epoch`` then the log keys sorted by name (Keras: when the first
    epoch has no ``val_`` keys, ``val_`` columns are added for every key and filled with "NA" until
    validation runs). ``append=True`` continues an existing file without repeating the header."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.writer = None
        self.keys = None
        self.append_header = True
        self.csv_file = None

    def on_train_begin(self, logs=None):
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, "r", newline="") as f:
                    self.append_header = not bool(len(f.readline()))
            mode = "a"
        else:
            mode = "w"
        self.csv_file = open(self.filename, mode, newline="")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}

        def handle_value(k):
            is_zero_dim_ndarray = isinstance(k, np.ndarray) and k.ndim == 0
            if isinstance(k, str):
                return k
            if hasattr(k, "__iter__") and not is_zero_dim_ndarray:
                return f"\"[{', '.join(map(str, k))}]\""
            return k

        if self.keys is None:
            self.keys = sorted(logs.keys())
            if not any(k.startswith("val_") for k in self.keys):
                self.keys.extend(["val_" + k for k in self.keys])
        if self.writer is None:
            class Dialect(csv.excel):
                delimiter = self.sep

            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys, dialect=Dialect)
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((k, handle_value(logs.get(k, "NA"))) for k in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file is not None:
            self.csv_file.close()
            self.csv_file = None
        self.writer = None


class LambdaCallback(Callback):
    """A callback from plain functions: ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_train_begin(logs)``, ``on_train_end(logs)``, ``on_train_batch_begin(batch, logs)``,
    ``on_train_batch_end(batch, logs)``; other hooks may be passed by keyword as well."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        hooks = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end, "on_train_begin": on_train_begin,
                 "on_train_end": on_train_end, "on_train_batch_begin": on_train_batch_begin,
                 "on_train_batch_end": on_train_batch_end}
        for name, fn in kwargs.items():
            if name not in _HOOKS and name not in ("on_batch_begin", "on_batch_end"):
                raise TypeError(f"LambdaCallback got an unknown hook {name!r}; hooks: {', '.join(_HOOKS)}")
            hooks[name] = fn
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)
