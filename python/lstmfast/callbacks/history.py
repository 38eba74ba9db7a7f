"""History: the epoch logs of ``fit``, kept as ``model.history``."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from .._typing import Logs, PathLike
from .base import Callback

__all__ = ["History"]


class History(Callback):
    """Records the epoch logs: ``history[name]`` is a list with one value per epoch; ``epoch`` lists
    the epoch indices. Set as ``model.history``."""

    def __init__(self) -> None:
        super().__init__()
        self.history: Dict[str, List[Any]] = {}
        self.epoch: List[int] = []

    def on_train_begin(self, logs: Logs = None) -> None:
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
        if self.model is not None:
            self.model.history = self

    def plot(self, path: PathLike, metrics: Optional[Sequence[str]] = None) -> None:
        """Draw the recorded curves to a PNG file at ``path`` (written atomically): one panel per
        metric, its training values and, when recorded, its ``val_`` values against the epoch.
        ``metrics``: names without the ``val_`` prefix (default: every recorded one, loss first).
        Needs matplotlib (ModuleNotFoundError with an install hint otherwise)."""
        from .._atomic import atomic_file
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
