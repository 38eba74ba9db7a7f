"""Data-parallel training on MPI (mpi4py): ``mpiexec -n N python train.py`` trains one model on N
processes, on one machine or several.

    import lstmfast
    rank, size = lstmfast.distributed.init()   # (0, 1) without mpiexec
    model.fit(x, y, batch_size=256)             # 256 is the global batch: each rank takes its slice

After ``init()`` with more than one rank, ``fit`` works as Keras's data parallelism does: every
global batch is split into contiguous slices, one per rank (``np.array_split``'s sizes), each rank
computes the gradients of its slice, one allreduce per step sums all gradients (packed in one
buffer, with the batch's loss and metric updates), and every rank takes the same optimizer step,
so the weights stay identical everywhere. The gradients are weighted so that the sum is the
gradient of the global batch's loss: a slice's share is its rows (or its unmasked steps, for a
masked sequence output; with several outputs those counts take one small extra allreduce) over
the global batch's, so sample weights and an uneven last batch come out as in one process. When ``fit`` starts, the
ranks check that they hold the same model (architecture and weight shapes; not the batch size,
which a stateful model fixes to its rank's part of the global batch), rank 0's weights and
optimizer state are broadcast; each epoch's shuffle is drawn on rank 0 (from lstmfast's generator,
as one process draws it) and broadcast. ``evaluate`` and ``predict`` shard every batch and reduce
(loss, metrics) or gather (outputs) over the ranks. Metrics and logs are therefore the same on
every rank, so EarlyStopping and ReduceLROnPlateau decide the same everywhere; only rank 0 shows
the progress bar and runs the callbacks that write files (ModelCheckpoint, CSVLogger).

The allreduce has a fixed order: each rank sums one chunk of the buffer over the ranks in rank
order (an all-to-all), then all chunks are gathered. Every rank gets bitwise the same sums, and the
same rank count gives bitwise the same training run after run. It moves ``2 (N-1)/N`` of the
buffer per rank, as a ring allreduce does.

An exception that reaches the top of a program on one rank prints that rank's traceback and aborts
every rank (``MPI_Abort``), so no rank hangs in a collective. Ranks on one machine split its cores
between their engines unless the thread count was chosen. The first ``fit`` gives every rank but 0
a random generator of its own, so the ranks' dropout masks are independent.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple, TypeVar

import numpy as np

if TYPE_CHECKING:
    from .models import Model

__all__ = ["init", "rank", "size", "is_chief", "DataParallel", "data_parallel", "shard", "launcher_variable",
           "from_chief", "chief_first", "abort_job"]

# Environment variables a launcher (MPICH's Hydra, Open MPI, PMIx, Slurm's PMI) sets for its processes.
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                       "MPI_LOCALRANKID", "HYDI_CONTROL_FD")
_INSTALL = "pip install 'lstmfast[mpi]' (mpi4py and the MPICH runtime, both wheels)"


class DataParallel:
    """The ranks of one training job and the collectives ``fit``, ``evaluate`` and ``predict`` use."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._nccl = None  # the GPUs' communicator, made at the first reduction of device arrays
        self._buffers: dict = {}  # (dtype, size) -> the allreduce's buffers, reused step after step
        self._own_streams = False  # whether the ranks' random generators were made independent

    # -- collectives ------------------------------------------------------------------------------

    def allreduce(self, buffer: np.ndarray) -> np.ndarray:
        """The sum over ranks of the 1-D ``buffer``, the same bits on every rank (see the module
        docstring): each rank sums one chunk in rank order, then the chunks are gathered. The
        result is a view of a buffer the next allreduce of the same size reuses."""
        buffer = np.ascontiguousarray(buffer).reshape(-1)
        send = self._send_buffer(buffer.dtype, buffer.size)
        send[:buffer.size] = buffer
        return self._allreduce_staged(send, buffer.size)

    def _send_buffer(self, dtype, n: int) -> np.ndarray:
        """The flat, zero-padded send buffer of an allreduce of ``n`` values (reused: its padding
        stays zero)."""
        return self._staging(dtype, n)[0].reshape(-1)

    def _staging(self, dtype, n: int) -> tuple:
        """``(send, received, mine, gathered)`` for an allreduce of ``n`` values, kept per size (a
        training step allocates nothing)."""
        key = (np.dtype(dtype), int(n))
        buffers = self._buffers.get(key)
        if buffers is None:
            ranks, chunk = self.size, -(-int(n) // self.size)
            buffers = (np.zeros((ranks, chunk), dtype), np.empty((ranks, chunk), dtype), np.empty(chunk, dtype),
                       np.empty((ranks, chunk), dtype))
            if len(self._buffers) >= 8:  # a few sizes recur (gradients, counts, evaluation values)
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[key] = buffers
        return buffers

    def _allreduce_staged(self, send_flat: np.ndarray, n: int) -> np.ndarray:
        send, received, mine, gathered = self._staging(send_flat.dtype, n)
        self.comm.Alltoall(send, received)
        np.copyto(mine, received[0])
        for r in range(1, self.size):
            np.add(mine, received[r], out=mine)
        self.comm.Allgather(mine, gathered)
        return gathered.reshape(-1)[:n]

    def broadcast(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        """Rank 0's ``arrays`` on every rank (same shapes and dtypes required everywhere)."""
        out = []
        for a in arrays:
            a = np.ascontiguousarray(a)
            self.comm.Bcast(a, root=0)
            out.append(a)
        return out

    def gather_rows(self, local: np.ndarray) -> np.ndarray:
        """The ranks' row blocks of one array, concatenated in rank order, on every rank. A rank
        with no rows may not know the others' trailing dimensions (an unknown time axis): they are
        taken from the first rank that has rows."""
        local = np.ascontiguousarray(local)
        shape = np.array(local.shape, np.int64)
        shapes = np.empty((self.size, shape.size), np.int64)
        self.comm.Allgather(shape, shapes)
        counts = shapes[:, 0]
        if local.shape[0] == 0 and counts.any():
            local = np.empty((0,) + tuple(int(d) for d in shapes[int(np.flatnonzero(counts)[0])][1:]), local.dtype)
        row_size = int(np.prod(local.shape[1:], dtype=np.int64))
        out = np.empty((int(counts.sum()),) + local.shape[1:], local.dtype)
        sizes = [int(c) * row_size for c in counts]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        self.comm.Allgatherv(local.reshape(-1), [out.reshape(-1), sizes, offsets, _mpi_type(local.dtype)])
        return out

    def same_everywhere(self, text: str, what: str) -> None:
        """ValueError on every rank, naming the ranks that differ from rank 0, unless ``text`` is
        the same on all ranks."""
        digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8).copy()
        all_digests = np.empty((self.size, digest.size), np.uint8)
        self.comm.Allgather(digest, all_digests)
        differ = [r for r in range(self.size) if not np.array_equal(all_digests[r], all_digests[0])]
        if differ:
            raise ValueError(f"data-parallel fit: rank(s) {differ} hold a different {what} than rank 0 "
                             f"(every rank must build the same model)")

    # -- fit, evaluate, predict -------------------------------------------------------------------

    def shard(self, rows: int) -> slice:
        """This rank's contiguous slice of a global batch of ``rows`` rows."""
        return shard(rows, self.rank, self.size)

    def permutation(self, n: int) -> np.ndarray:
        """A shuffle's order, drawn on rank 0 from lstmfast's generator (as one process draws it)
        and broadcast."""
        from . import backend
        order = backend.get_rng().permutation(n) if self.rank == 0 else np.empty(n, np.int64)
        return self.broadcast([order.astype(np.int64)])[0]

    def start_fit(self, model: Model) -> None:
        """Check every rank holds the same model; broadcast rank 0's weights and optimizer state.
        The models' batch sizes may differ: a stateful model is built with its rank's part of the
        global batch."""
        config = json.dumps(_without_batch_sizes(model.get_config()), sort_keys=True, default=str)
        self.same_everywhere(config, "model architecture")
        shapes = [(w.shape, str(w.dtype)) for w in model.weights]
        self.same_everywhere(repr(shapes), "set of weight shapes")
        model.set_weights(self.broadcast([np.asarray(w) for w in model.get_weights()]))
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_weights)
        state = optimizer.get_state()
        self.same_everywhere(repr([np.shape(s) for s in state["slots"]]), "optimizer state")
        if not self._own_streams:
            self._own_streams = True
            if self.rank > 0:
                _own_random_stream(self.rank)
        iterations = self.broadcast([np.array([state["iterations"]], np.int64)])[0]
        slots = self.broadcast([np.asarray(s) for s in state["slots"]])
        optimizer.set_state({"iterations": int(iterations[0]), "slots": slots})

    def output_shares(self, counts: List[float]) -> List[float]:
        """Each output's share of the global loss that this rank's part carries: its count (rows,
        or unmasked steps) over the sum of the ranks' counts (0 where all are 0)."""
        totals = self.allreduce(np.asarray(counts, np.float64))
        return [c / t if t > 0 else 0.0 for c, t in zip(counts, totals)]

    def reduce_step(self, grads: list, values: List[float]) -> Tuple[list, np.ndarray]:
        """One allreduce of all ``grads`` (packed in one buffer of their dtype, where they are: on
        the host, or on the GPU for CuPy arrays) and the float ``values`` (the batch's loss and
        metric updates). Returns the summed grads (same arrays' kind) and values (NumPy float64)."""
        from . import ops
        xp = ops.array_module(grads[0]) if grads else np
        dtype = grads[0].dtype if grads else np.float64
        sizes = [int(g.size) for g in grads]
        total = sum(sizes) + len(values)
        buffer = self._send_buffer(dtype, total) if xp is np else xp.empty(total, dtype)
        at = 0
        for g, n in zip(grads, sizes):
            buffer[at:at + n] = g.reshape(-1)
            at += n
        buffer[at:total] = xp.asarray(np.asarray(values, dtype))
        summed = self._allreduce_staged(buffer, total) if xp is np else self._allreduce_on_device(buffer)
        out, at = [], 0
        for g, n in zip(grads, sizes):
            out.append(summed[at:at + n].reshape(g.shape))
            at += n
        return out, ops.to_numpy(summed[at:]).astype(np.float64)

    def _allreduce_on_device(self, buffer):
        """The sum over ranks of a CuPy ``buffer``: NCCL on the GPUs when CuPy has it (one NCCL
        communicator per job, its id broadcast over MPI), else through the host (copy, MPI, copy)."""
        if self._nccl is None:
            self._nccl = _nccl_communicator(self) or False
        if not self._nccl:
            from . import ops
            return ops.to_backend(self.allreduce(ops.to_numpy(buffer)), "cuda")
        import cupy
        from cupy.cuda import nccl
        kinds = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        out = cupy.empty_like(buffer)
        self._nccl.allReduce(buffer.data.ptr, out.data.ptr, buffer.size, kinds[np.dtype(buffer.dtype)],
                             nccl.NCCL_SUM, cupy.cuda.get_current_stream().ptr)
        return out

    def reduce_values(self, values: List[float]) -> np.ndarray:
        return self.allreduce(np.asarray(values, np.float64))


def _nccl_communicator(world: DataParallel):
    """An NCCL communicator over the job's ranks (rank 0 makes the id, MPI broadcasts it), or None
    when CuPy has no NCCL. Each rank must already use its own GPU (``init`` picks
    ``local rank % GPUs``)."""
    try:
        from cupy.cuda import nccl
        nccl.get_version()
    except (ImportError, AttributeError, RuntimeError):
        return None
    uid = np.array(nccl.get_unique_id(), np.int8) if world.rank == 0 else np.empty(128, np.int8)  # 128 signed bytes
    uid = world.broadcast([uid])[0]
    return nccl.NcclCommunicator(world.size, tuple(int(b) for b in uid), world.rank)


def shard(rows: int, rank: int, size: int) -> slice:
    """Rank ``rank`` of ``size``'s contiguous slice of ``rows`` rows (``np.array_split``'s sizes:
    the first ``rows % size`` ranks take one row more)."""
    base, extra = divmod(int(rows), int(size))
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _own_random_stream(rank: int) -> None:
    """Give rank ``rank`` > 0 a generator of its own, derived from the one it has (seeded alike on
    every rank): dropout masks then differ between ranks as they do between the rows of one
    process's batch. Rank 0 keeps its generator, which draws the shuffles as one process would."""
    from . import backend
    derived = int(backend.get_rng().integers(1 << 62))
    backend.set_rng(np.random.default_rng([derived, rank]))


def _without_batch_sizes(config):
    """A model's config (nested dicts and lists) with the batch size of every batch shape None."""
    if isinstance(config, dict):
        return {key: [None] + list(value[1:]) if key in ("batch_shape", "batch_input_shape") and value
                else _without_batch_sizes(value) for key, value in config.items()}
    if isinstance(config, (list, tuple)):
        return [_without_batch_sizes(value) for value in config]
    return config


def _mpi_type(dtype):
    from mpi4py import MPI
    return MPI._typedict[np.dtype(dtype).char]


# ---- the job --------------------------------------------------------------------------------------

_WORLD: Optional[DataParallel] = None
_STARTED = False


def init() -> Tuple[int, int]:
    """Join the MPI job this process was launched in (``mpiexec -n N``) and return ``(rank, size)``.
    Without a launcher and without mpi4py it returns ``(0, 1)``; calling it again returns the same.
    Under a launcher, a missing or broken mpi4py/MPI raises ImportError/RuntimeError saying what is
    missing and how to install it."""
    global _WORLD, _STARTED
    if _STARTED:
        return rank(), size()
    launched = launcher_variable()
    try:
        from mpi4py import MPI
    except ImportError as e:
        if launched:
            raise ImportError(f"this process was started by an MPI launcher ({launched} is set) but mpi4py "
                              f"cannot be imported ({e}); {_INSTALL}") from None
        _STARTED = True
        return 0, 1
    except (RuntimeError, OSError) as e:  # mpi4py is there, the MPI library it needs is not
        raise RuntimeError(f"MPI could not start: {e}. mpi4py needs an MPI library: {_INSTALL}, or point "
                           f"mpi4py to a system MPI") from None
    comm = MPI.COMM_WORLD
    _STARTED = True
    if comm.Get_size() > 1:
        _WORLD = DataParallel(comm)
        _abort_all_ranks_on_uncaught_exceptions(comm)
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        _use_own_gpu(node.Get_rank())
        _share_cores(node.Get_size())
    return comm.Get_rank(), comm.Get_size()


def _share_cores(ranks_here: int) -> None:
    """Ranks on one machine split its cores between their engines (cores // ranks each), unless
    the thread count was chosen (OMP_NUM_THREADS, or ``set_num_threads`` to another value)."""
    import lstmfast
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if "OMP_NUM_THREADS" in os.environ or lstmfast.build_info()["threads"] != cores:
        return
    lstmfast.set_num_threads(max(1, cores // ranks_here))


def _use_own_gpu(local_rank: int) -> None:
    """Ranks on one machine with several GPUs take one each (``local_rank % GPUs``)."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, no driver, no GPU: the ranks run on the CPU
        return
    if count > 1:
        cupy.cuda.Device(local_rank % count).use()


def launcher_variable() -> Optional[str]:
    """The environment variable by which an MPI launcher marks the processes it starts (PMI_RANK,
    OMPI_COMM_WORLD_RANK, ...) when one started this process, else None."""
    return next((k for k in _LAUNCHER_VARIABLES if k in os.environ), None)


def rank() -> int:
    """This process's rank (0 before ``init`` and in a single process)."""
    return _WORLD.rank if _WORLD is not None else 0


def size() -> int:
    """The number of ranks (1 before ``init`` and in a single process)."""
    return _WORLD.size if _WORLD is not None else 1


def is_chief() -> bool:
    """True on rank 0, the rank that prints and writes files."""
    return rank() == 0


def data_parallel() -> Optional[DataParallel]:
    """The job when ``init`` found more than one rank, else None (fit runs as one process)."""
    return _WORLD


_N = TypeVar("_N", bool, int, float)


def from_chief(value: _N) -> _N:
    """Rank 0's ``value`` (a bool, int or float) on every rank; ``value`` itself in one process. For
    what each rank measures for itself but all must decide alike, such as a time budget: every rank
    must call it at the same point."""
    if _WORLD is None:
        return value
    return type(value)(_WORLD.broadcast([np.array([value], np.float64)])[0][0])


@contextlib.contextmanager
def chief_first() -> Iterator[None]:
    """``with distributed.chief_first(): ...`` runs the block on rank 0 first and on the other ranks
    after it: for work that fills a cache the others then read (a download, an encoded data set)."""
    if not is_chief():
        from_chief(True)  # rank 0 sends it when its block is done
    yield
    if is_chief():
        from_chief(True)


def abort_job(status: int) -> None:
    """End every rank of a job of several ranks with exit status ``status`` (``MPI_Abort``), for an
    error one rank may meet alone: returning would leave the others waiting in a collective.
    Nothing happens in one process."""
    if _WORLD is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        # MPI_Abort kills the job at once: give the launcher time to pass on this rank's last words
        # (without it MPICH lost a rank's message in about one abort in ten).
        time.sleep(0.2)
        _WORLD.comm.Abort(status)


def _abort_all_ranks_on_uncaught_exceptions(comm) -> None:
    previous = sys.excepthook

    def abort(kind, value, tb):
        message = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"[lstmfast rank {comm.Get_rank()} of {comm.Get_size()}] {message}")
        sys.stderr.flush()
        if kind is KeyboardInterrupt:
            previous(kind, value, tb)
        abort_job(1)

    sys.excepthook = abort
