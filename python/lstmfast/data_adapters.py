"""Data adapters: every kind of data ``fit``, ``evaluate`` and ``predict`` take becomes one iterator
of batches, so the training and test loops are written once.

An adapter has ``num_batches`` (batches per epoch; None while unknown: a generator run until it
is exhausted), ``on_epoch_begin()``, ``batches()`` (one epoch: ``(xs, ys, sample_weight)`` per
batch, ``xs``/``ys`` lists of arrays, ``ys`` None for ``predict``), ``on_epoch_end()``, and
``stop_after_epoch(more_epochs)`` (True when the data ran out and ``fit`` must stop).

- ``ArrayBatches``: NumPy arrays sliced into ``batch_size`` batches (shuffled per epoch by ``fit``).
- ``GeneratorBatches``: a Python generator or iterator; its batches are used in the order given,
  never shuffled. With ``steps`` it takes ``steps`` batches per epoch, continuing across epochs;
  without, the first epoch runs until it is exhausted. Running out early warns with Keras's message
  and ends training after that epoch (Keras 3 replays its first peeked batches instead).
- ``PyDatasetBatches``: a ``utils.PyDataset`` (``Sequence``); ``shuffle`` reorders its batches per
  pass, as Keras does; ``steps`` below ``len`` continues the pass in the next epoch, above it
  warns and ends the epoch at ``len`` (Keras 3).

Source batches are checked by the model (``Model._prepare_batch``), the same checks as arrays get.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from . import backend
from .utils import PyDataset

# One batch as the model takes it: the input arrays, the target arrays (None for predict), the sample weights.
Batch = Tuple[List[np.ndarray], Optional[List[np.ndarray]], Optional[np.ndarray]]
# The model's check of a source's batch: (the batch as yielded, its index) -> Batch.
Prepare = Callable[[Any, int], Batch]

__all__ = ["is_batch_source", "ArrayBatches", "GeneratorBatches", "PyDatasetBatches", "RAN_OUT"]

RAN_OUT = ("Your input ran out of data; interrupting training. Make sure that your dataset or generator can "
           "generate at least `steps_per_epoch * epochs` batches (for evaluate/predict: `steps`).")


def is_batch_source(x: Any) -> bool:
    """True for data that brings its own batches: a PyDataset/Sequence, a generator or an iterator."""
    if isinstance(x, np.ndarray):
        return False
    return isinstance(x, PyDataset) or hasattr(x, "__next__")


class ArrayBatches:
    """Arrays in batches of ``batch_size``. ``steps`` (fit's ``steps_per_epoch``) wraps around the
    data; ``shuffle`` (fit) draws a new sample order each epoch from lstmfast's generator."""

    def __init__(self, xs: List[np.ndarray], ys: Optional[List[np.ndarray]], sw: Optional[np.ndarray], batch_size: int,
                 steps: Optional[int] = None, shuffle: bool = False) -> None:
        self.xs, self.ys, self.sw = xs, ys, sw
        self.permutation = None  # the shuffle's draw; None: lstmfast's generator's (data-parallel fit shares rank 0's)
        self.batch_size = batch_size
        n = xs[0].shape[0] if xs else 0
        self.n = n
        self.num_batches = (steps or max(1, -(-n // batch_size))) if n else 0
        self.shuffle = bool(shuffle) and n > 1

    def on_epoch_begin(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        pass

    def stop_after_epoch(self, more_epochs: bool) -> bool:
        return False

    def batches(self) -> Iterator[Batch]:
        xs, ys, sw, n, bs = self.xs, self.ys, self.sw, self.n, self.batch_size
        order = (self.permutation or backend.get_rng().permutation)(n) if self.shuffle else None
        for step in range(self.num_batches):
            lo = (step * bs) % n
            hi = min(lo + bs, n)
            if order is None and hi - lo == n:  # all the data in order: the arrays themselves
                yield list(xs), None if ys is None else list(ys), sw
                continue
            idx = slice(lo, hi) if order is None else order[lo:hi]
            yield ([a[idx] for a in xs], None if ys is None else [a[idx] for a in ys],
                   None if sw is None else sw[idx])


class GeneratorBatches:
    """A generator's batches, each checked by ``prepare(batch, index)``. It must yield at least one."""

    def __init__(self, source: Iterable[Any], prepare: Prepare, steps: Optional[int] = None) -> None:
        it = iter(source)
        end = object()
        first = next(it, end)
        if first is end:
            raise ValueError("the generator yielded no batches: it must yield at least one batch "
                             "(x,), (x, y) or (x, y, sample_weight)")
        self._it = itertools.chain((first,), it)
        self._prepare = prepare
        self.steps = steps
        self.num_batches = steps
        self.exhausted = False
        self._index = 0

    def on_epoch_begin(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        pass

    def stop_after_epoch(self, more_epochs: bool) -> bool:
        if not self.exhausted:
            return False
        if self.steps is None and more_epochs:
            warnings.warn(RAN_OUT, stacklevel=3)
        return True

    def batches(self) -> Iterator[Batch]:
        step = 0
        while self.steps is None or step < self.steps:
            try:
                batch = next(self._it)
            except StopIteration:
                if self.steps is not None or self.exhausted:  # fewer batches than asked for, or none left
                    warnings.warn(RAN_OUT, stacklevel=3)
                self.exhausted = True
                return
            yield self._prepare(batch, self._index)
            self._index += 1
            step += 1


class PyDatasetBatches:
    """A PyDataset's batches, in index order or (``shuffle``) shuffled per pass; ``steps`` as in Keras."""

    def __init__(self, dataset: PyDataset, prepare: Prepare, steps: Optional[int] = None,
                 shuffle: bool = False) -> None:
        try:
            n = dataset.num_batches
        except NotImplementedError:
            n = None
        if n is None and steps is None:
            raise ValueError(f"{type(dataset).__name__} has no __len__ (an endless PyDataset): give "
                             "steps_per_epoch (fit), validation_steps or steps (evaluate/predict)")
        self.dataset, self._prepare = dataset, prepare
        self.n = n
        self.steps = steps
        self.num_batches = steps or n
        self.shuffle = bool(shuffle) and n is not None
        self.permutation = None  # as ArrayBatches's
        self._order = None  # the current pass: indices, or None before a new one
        self._pos = 0

    def on_epoch_begin(self) -> None:
        self.dataset.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.dataset.on_epoch_end()

    def stop_after_epoch(self, more_epochs: bool) -> bool:
        return False

    def batches(self) -> Iterator[Batch]:
        n, ds = self.n, self.dataset
        if n is None:  # endless: index on across epochs
            for _ in range(self.steps):
                yield self._prepare(ds[self._pos], self._pos)
                self._pos += 1
            return
        if self._order is None or self.steps is None:
            self._order = (self.permutation or backend.get_rng().permutation)(n) if self.shuffle else range(n)
            self._pos = 0
        for _ in range(self.num_batches):
            if self._pos >= n:
                if self.steps:
                    warnings.warn(RAN_OUT, stacklevel=3)
                break
            index = int(self._order[self._pos])
            self._pos += 1
            yield self._prepare(ds[index], index)
        if self._pos >= n:
            self._order = None
