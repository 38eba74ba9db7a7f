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

Values a step takes from the host that change from step to step (an optimizer's learning rate and
bias corrections) are not kernel arguments, which a graph would repeat, but device memory the
kernels read (``staging.StepValues``): the host copies each step's values there before launching
the step, outside the graph. A replay is then preceded by the step's host part alone, run with
``host_part()`` set: the code computes and copies those values but queues no device work.

Used by ``Model``'s inference step (``predict``, ``evaluate``, ``predict_on_batch``, ``__call__``)
and training step (``fit``, ``train_on_batch``), see ``GRAPHS``."""
from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence

__all__ = ["GRAPHS", "CaptureRefused", "Captured", "capture", "active", "host_part", "running_host_part",
           "stream_key"]

# "auto": a model's inference and training steps are captured per batch shape and verified once
# against the eager step; "never": every step runs eagerly.
GRAPHS = "auto"

_ACTIVE = [0]  # captures in progress (in this thread: capture runs on the calling thread)
_HOST_PART = [0]  # host parts of a step running before its replay
_ORIGIN: list = []  # the streams captures were started from


class CaptureRefused(RuntimeError):
    """The captured call did something a graph replay cannot repeat."""


def active() -> bool:
    """Whether a capture is in progress: host/device crossings must refuse."""
    return _ACTIVE[0] > 0


def running_host_part() -> bool:
    """Whether a replay's host part is running: compute and copy the step's values, queue no kernel."""
    return _HOST_PART[0] > 0


@contextlib.contextmanager
def host_part() -> Iterator[None]:
    """Run the host part of a step about to be replayed (see the module docstring)."""
    _HOST_PART[0] += 1
    try:
        yield
    finally:
        _HOST_PART[0] -= 1


def stream_key(cp: ModuleType) -> int:
    """The stream a step runs on, as scratch buffers are keyed: while capturing, the stream the capture
    was started from (its replays run there), not the capture's own."""
    return _ORIGIN[-1] if _ORIGIN else cp.cuda.get_current_stream().ptr


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

    def launch(self, cp: ModuleType, inputs: Sequence[object], before: Optional[Callable[[], None]] = None) -> object:
        """Copy ``inputs`` into the graph's input arrays and replay it on the current stream, after
        running ``before()``, the step's host part, under ``host_part()`` (see the module
        docstring); returns the graph's outputs (valid until the next launch). State arrays
        replaced since (``reset_states``) are copied into the graph's own first. None, with
        nothing run, when the state no longer fits the graph (another shape, a buffer gone)."""
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
        if before is not None:
            with host_part():
                before()
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
    _ORIGIN.append(cp.cuda.get_current_stream().ptr)
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
        _ORIGIN.pop()
    return Captured(graph, list(inputs), outputs, pool, list(buffers), before)
