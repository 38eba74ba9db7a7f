"""Host-to-device copies that do not make the host wait: through pinned (page-locked) host memory,
queued on the current stream (a copy from pageable memory may wait for the stream).

``PinnedStaging`` copies a batch's arrays (``lstmfast.ops.batch_to_device``). ``StepValues`` holds
the values a device step takes from the host that change from step to step (an optimizer step's
learning rate and bias corrections) in device memory its kernels read, so that a CUDA graph of the
step reads each replay's values (``lstmfast.cuda.graphs``)."""
from __future__ import annotations

from types import ModuleType
from typing import List, Optional, Sequence

import numpy as np

from . import graphs

__all__ = ["PinnedStaging", "StepValues"]


class PinnedStaging:
    """Pinned buffers in two sets, used in turn: a set is refilled once the copies that last read
    it (two calls ago) are done, so the host runs at most two copies ahead of the device."""

    def __init__(self) -> None:
        self.buffers: list = [[], []]   # per set: [pinned memory, its size in bytes] per array
        self.copied: list = [None, None]  # per set: the event after its last copies
        self.turn = 0

    def copy(self, cupy: ModuleType, arrays: Sequence[np.ndarray],
             into: Optional[Sequence[object]] = None) -> List[object]:
        """``arrays`` (C-contiguous host arrays) copied to the current device: into new device
        arrays, or into ``into`` (device arrays of the same shapes and dtypes)."""
        turn, self.turn = self.turn, 1 - self.turn
        if self.copied[turn] is not None:
            self.copied[turn].synchronize()  # that set's copies finished (normally long ago)
        buffers = self.buffers[turn]
        stream = cupy.cuda.get_current_stream()
        out = []
        for k, a in enumerate(arrays):
            if k == len(buffers):
                buffers.append([None, -1])
            if buffers[k][1] < a.nbytes:
                buffers[k] = [cupy.cuda.alloc_pinned_memory(max(a.nbytes, 1)), a.nbytes]
            staged = np.frombuffer(buffers[k][0], a.dtype, a.size).reshape(a.shape)
            staged[...] = a
            device = cupy.empty(a.shape, a.dtype) if into is None else into[k]
            device.set(staged, stream=stream)
            out.append(device)
        event = cupy.cuda.Event(block=False, disable_timing=True)
        event.record(stream)
        self.copied[turn] = event
        return out


class StepValues:
    """``n`` float64 values of a step in device memory (``device``), which its kernels read.
    ``write(cupy, values)`` copies them there before the step's kernels, when they changed; while a
    graph is captured it only remembers them: a replay's host part writes that replay's values."""

    def __init__(self, cupy: ModuleType, n: int) -> None:
        self.device = cupy.zeros(n, np.float64)
        self._host = np.zeros(n, np.float64)     # what the device holds, or will once the copy ran
        self._staging = PinnedStaging()

    def write(self, cupy: ModuleType, values: Sequence[float]) -> None:
        values = np.asarray(values, np.float64)
        if values.shape != self._host.shape:
            raise ValueError(f"StepValues: expected {self._host.size} values, got shape {values.shape}")
        if graphs.active():
            return  # inside a capture: the replays' host parts write the values
        if values.tobytes() == self._host.tobytes():  # bit for bit: NaN too
            return
        self._host = values.copy()
        self._staging.copy(cupy, [self._host], into=[self.device])
