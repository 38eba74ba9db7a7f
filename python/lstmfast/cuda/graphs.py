"""CUDA graphs: a fixed-shape device call captured once and replayed, one launch for the dozens of
kernels, copies and cuBLAS calls it queues (on a GPU a model's inference step is bound by those
launches, not by arithmetic).

``capture(cp, run, inputs, buffers)`` captures ``run(inputs)`` on a stream of its own, with a memory
pool of its own (the arrays the step allocates keep their addresses for every replay, and nothing
outside the graph is ever given that memory). What a replay cannot repeat is refused while
capturing (``CaptureRefused``): host data sent to the device (a mask made on the host from the
batch, a dropout mask from the host generator) would be the capture's data at every replay, and a
device value read back cannot be read inside a graph. ``lstmfast.ops`` raises it at its host/device
crossings while ``active()``.

State kept between calls (a stateful LSTM's ``h`` and ``c``): ``buffers`` are the dicts that hold
it; an array ``run`` replaces there is copied back into the array it replaced, as the last nodes of
the graph, and the dict entry restored, so each replay reads the state the previous one left. A
state array replaced between launches (``reset_states``) is copied into the graph's own first.

On a real GPU the capture uses CuPy's stream capture (relaxed mode: the private pool may call
cudaMalloc while capturing). An operation a capture does not allow raises its CUDA error;
``lstmfast.ops.GraphedCalls`` then keeps that shape eager and warns.

Used by ``Model``'s inference step (``predict``, ``evaluate``, ``predict_on_batch``, ``__call__``),
see ``GRAPHS``."""
from __future__ import annotations

from types import ModuleType
from typing import Callable, List, NamedTuple, Sequence

__all__ = ["GRAPHS", "CaptureRefused", "Captured", "capture", "active"]

# "auto": a model's inference step is captured at the second batch of a shape and verified once
# against the eager step; "never": every step runs eagerly.
GRAPHS = "auto"

_ACTIVE = [0]  # captures in progress (in this thread: capture runs on the calling thread)


class CaptureRefused(RuntimeError):
    """The captured call did something a graph replay cannot repeat."""


def active() -> bool:
    """Whether a capture is in progress: host/device crossings must refuse."""
    return _ACTIVE[0] > 0


def refuse(what: str) -> None:
    """Raise CaptureRefused for ``what`` when a capture is in progress (``lstmfast.ops`` calls this)."""
    if _ACTIVE[0]:
        raise CaptureRefused(f"{what} while capturing a CUDA graph: a replay would repeat the capture's data")


class Captured(NamedTuple):
    """A captured call: replay it with ``launch``."""

    graph: object          # cupy.cuda.Graph
    inputs: List[object]   # the arrays the graph reads its inputs from
    outputs: object        # what run returned: arrays the graph writes
    pool: object           # the graph's memory pool (kept alive with it)
    buffers: List[dict]    # the state dicts given to capture
    state: List[dict]      # their arrays the graph reads and writes back

    def launch(self, cp: ModuleType, inputs: Sequence[object]) -> object:
        """Copy ``inputs`` into the graph's input arrays and replay it on the current stream;
        returns the graph's outputs (valid until the next launch). State arrays replaced since
        (``reset_states``) are copied into the graph's own first. None, with nothing run, when the
        state no longer fits the graph (another shape, a buffer gone)."""
        for b, arrays in zip(self.buffers, self.state):
            if len(b) != len(arrays):
                return None
            for key, array in arrays.items():
                now = b.get(key)
                if now is not array:
                    if getattr(now, "shape", None) != array.shape or now.dtype != array.dtype:
                        return None
                    array[...] = now
                    b[key] = array
        for static, new in zip(self.inputs, inputs):
            if static is not new:
                static[...] = new
        self.graph.launch(stream=cp.cuda.get_current_stream())
        return self.outputs


def capture(cp: ModuleType, run: Callable[[List[object]], object], inputs: List[object],
            buffers: Sequence[dict]) -> Captured:
    """Capture ``run(inputs)`` (device arrays in, device arrays out) into a graph. Nothing runs:
    launch the result to compute. Raises CaptureRefused, or the CUDA error of an operation a
    capture does not allow, with the capture ended and discarded."""
    before = [dict(b) for b in buffers]
    pool = cp.cuda.MemoryPool()
    stream = cp.cuda.Stream(non_blocking=True)
    _ACTIVE[0] += 1
    try:
        with stream, cp.cuda.using_allocator(pool.malloc):
            stream.begin_capture()
            try:
                outputs = run(inputs)
                for old, now in zip(before, buffers):  # state written back in place
                    if set(now) != set(old):
                        raise CaptureRefused(f"the call added or removed state buffers {sorted(set(now) ^ set(old))}")
                    for key, array in old.items():
                        if now.get(key) is not array:
                            array[...] = now[key]
                            now[key] = array
            except BaseException:
                for old, now in zip(before, buffers):
                    now.clear()
                    now.update(old)
                try:
                    stream.end_capture()  # ends capture mode; the partial graph is dropped
                except Exception:  # an invalidated capture reports its error again here
                    pass
                raise
            graph = stream.end_capture()
    finally:
        _ACTIVE[0] -= 1
    return Captured(graph, list(inputs), outputs, pool, list(buffers), before)
