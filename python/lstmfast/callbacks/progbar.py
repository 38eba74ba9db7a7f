"""Keras's progress bar (``Progbar``), used by ProgbarLogger and by the sample tasks."""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Iterable, Mapping, Optional, Tuple, Union

from .base import write

__all__ = ["Progbar"]


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


# ``Progbar.update``'s values: (name, value) pairs or a dict.
ProgbarValues = Union[None, Iterable[Tuple[str, Any]], Mapping[str, Any]]


class Progbar:
    """Keras's progress bar. verbose=1: ``12/100 ━━━━━━━━━━━━━━━━━━━━ 3s 12ms/step - loss: 0.1234``,
    redrawn in place at most every ``interval`` seconds with the remaining time (ETA), and finished
    with the elapsed time; when stdout is not interactive only the finished line is printed (and no
    colours). verbose=2: only the finished line, ``100/100 - 1s - 10ms/step - loss: 0.1234``.

    ``update(current, values)``: ``values`` are ``(name, value)`` pairs or a dict. Names in
    ``stateful_metrics`` are shown as given; the others are averaged over the steps seen (weighted by
    the steps each update covers), as ``Progbar.add`` users expect."""

    def __init__(self, target: Optional[int], width: int = 20, verbose: int = 1, interval: float = 0.05,
                 stateful_metrics: Optional[Iterable[str]] = None, unit_name: str = "step") -> None:
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

    def update(self, current: int, values: ProgbarValues = None, finalize: Optional[bool] = None) -> None:
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
            write(info + self._metrics_text(signed=False) + "\n")

    def add(self, n: int, values: ProgbarValues = None) -> None:
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
            write("\r" + message + pad + ("\n" if finalize else ""))
        else:
            write(message + "\n")
        self._prev_total_width = width
