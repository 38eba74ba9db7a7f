"""The fused optimizer step on the GPU: the rules of ``cpp/optim.h`` over every variable of one dtype
in one kernel launch (``optim_kernels.cu``, math in ``optim_rules.cuh``), and the gradient scales of
clipping by norm computed on the device in one more launch. Nothing is read back.

``FusedStep(dtype)`` is called like the C++ step (``_core.optim_step_f32``/``_f64``, see
``_core.pyi``): ``step(rule, variables, grads, slots, lr, momentum, one_minus_beta_1,
one_minus_beta_2, rho, one_minus_rho, epsilon, scales, clipvalue, decay_keep)``, on CuPy arrays of
one device; ``scales`` may also be the device array ``clip_scales`` returns. ``lstmfast.ops``
hands these to the optimizers (``optimizer_step_kernel``, ``clip_scales``); the optimizers do not
know which engine they got.

The kernels take a table of the variables' device pointers (one int64 row per variable). It is
built on the host and copied once, then reused while the same arrays come back (a model passes
the same weights and gradient buffers every step): a step costs the argument checks and one launch.
The step's scalars go to the device as ``StepValues`` (copied only when they change: every step
for Adam's bias corrections, once for SGD), which the kernel reads, so a CUDA graph of a training
step replays with each step's values; in a replay's host part (``graphs.running_host_part()``)
the step copies them and launches nothing.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .._typing import Array
from . import _kernels, graphs, require_gpu
from .staging import StepValues

__all__ = ["FusedStep", "clip_scales", "SLOTS_PER_RULE"]

SLOTS_PER_RULE = (0, 1, 1, 2, 3, 1, 2, 2, 3, 1)  # slots of each rule code of cpp/optim.h, in its order
CHUNK = 8 * _kernels.OPTIM_THREADS               # elements per block
HYPER = 10                                        # kOptimHyper in optim_rules.cuh: the step's scalars
_CLIP_MODES = {"clipnorm": 1, "global_clipnorm": 2}  # ClipMode in optim_rules.cuh


def _blocks(total: int) -> int:
    return (total + CHUNK - 1) // CHUNK


def _check_array(cp, name: str, value: Any, dtypes, shape, device_id: int) -> None:
    """TypeError or ValueError unless ``value`` is a C-contiguous CuPy array of one of ``dtypes``,
    of ``shape`` (None: any), on GPU ``device_id``."""
    if not isinstance(value, cp.ndarray):
        raise TypeError(f"{name} must be a cupy.ndarray, got {type(value).__name__}")
    if value.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(str(d) for d in dtypes)}, got {value.dtype}")
    if shape is not None and value.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (its variable's), got {value.shape}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous, got a strided array of shape {value.shape}")
    if value.device.id != device_id:
        raise ValueError(f"{name} is on GPU {value.device.id}, the step runs on GPU {device_id}")


def _overlaps(a, b) -> bool:
    lo_a, lo_b = a.data.ptr, b.data.ptr
    return bool(a.nbytes and b.nbytes and lo_a < lo_b + b.nbytes and lo_b < lo_a + a.nbytes)


class FusedStep:
    """One optimizer step over CuPy variables of ``dtype`` (float32 or float64) in one launch."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in _kernels.C_TYPES:
            raise TypeError(f"FusedStep: dtype must be float32 or float64, got {self.dtype}")
        self._key: Optional[tuple] = None   # the pointers of the last table, and the table
        self._table = None
        self._total = 0
        self._hyper: dict = {}  # device id -> StepValues: the step's scalars, which the kernel reads
        self._checked: Optional[tuple] = None  # (rule, device, arrays) of the last step that passed the checks

    def __call__(self, rule: int, variables: Sequence[Array], grads: Sequence[Array], slots: Sequence[Sequence[Array]],
                 lr: float, momentum: float, one_minus_beta_1: float, one_minus_beta_2: float, rho: float,
                 one_minus_rho: float, epsilon: float, scales: Any, clipvalue: Optional[float],
                 decay_keep: float) -> None:
        cp = require_gpu()
        if isinstance(rule, bool) or not isinstance(rule, (int, np.integer)) or not 0 <= rule < len(SLOTS_PER_RULE):
            raise ValueError(f"rule must be a rule code 0..{len(SLOTS_PER_RULE) - 1} (cpp/optim.h), got {rule!r}")
        n = len(variables)
        if len(grads) != n or len(slots) != n:
            raise ValueError(f"variables, grads and slots must have one entry per variable, got {n} variables, "
                             f"{len(grads)} gradients and {len(slots)} slot tuples")
        device_id = cp.cuda.Device().id
        given = (rule, device_id, *variables, *grads, *(a for s in slots for a in s))
        last = self._checked
        if last is None or len(last) != len(given) or any(a is not b for a, b in zip(given, last)):
            # A CuPy array's shape, dtype, layout, device and address are fixed: the same arrays as
            # at the last step (a model's, every step) need no check and keep their table.
            self._checked = None
            want = SLOTS_PER_RULE[rule]
            dtypes = (self.dtype,)
            key = []
            for j, (v, g, s) in enumerate(zip(variables, grads, slots)):
                _check_array(cp, f"variable {j}", v, dtypes, None, device_id)
                _check_array(cp, f"gradient {j}", g, dtypes, v.shape, device_id)
                if len(s) != want:
                    raise ValueError(f"rule {rule} needs {want} slots per variable, got {len(s)} for variable {j}")
                for k, slot in enumerate(s):
                    _check_array(cp, f"slot {k} of variable {j}", slot, dtypes, v.shape, device_id)
                key.append((v, g, *s))
            pointers = tuple(a.data.ptr for arrays in key for a in arrays) + tuple(v.size for v in variables)
            if pointers != self._key:
                self._build_table(cp, key, pointers)
            self._checked = given
        scales = self._scales(cp, scales, n, device_id)
        if self._total == 0:
            return
        clip = clipvalue is not None
        hyper = self._hyper.get(device_id)
        if hyper is None:
            hyper = self._hyper[device_id] = StepValues(cp, HYPER)
        hyper.write(cp, (lr, momentum, one_minus_beta_1, one_minus_beta_2, rho, one_minus_rho, epsilon, float(clip),
                         clipvalue if clip else 0.0, decay_keep))
        if graphs.running_host_part():
            return
        _kernels.get_optim(self.dtype).update(
            (_blocks(self._total),), (_kernels.OPTIM_THREADS,),
            (np.int64(n), self._table, np.int64(self._total), np.int64(CHUNK), np.int32(rule), hyper.device, scales))

    def _build_table(self, cp, arrays: list, pointers: tuple) -> None:
        """The [n,7] table (var, grad, slot pointers, first element, elements), after checking that
        no gradient or slot shares memory with a variable (the kernel would read updated values)."""
        for j, (v, *others) in enumerate(arrays):
            for k, (w, *_) in enumerate(arrays):
                for what, a in zip(["gradient"] + ["slot"] * 3, others):
                    if _overlaps(a, w):
                        raise ValueError(f"the {what} of variable {j} shares memory with variable {k}")
        table = np.zeros((len(arrays), 7), np.int64)
        first = 0
        for j, (v, g, *s) in enumerate(arrays):
            table[j, :2] = v.data.ptr, g.data.ptr
            table[j, 2:2 + len(s)] = [a.data.ptr for a in s]
            table[j, 5:] = first, v.size
            first += v.size
        graphs.refuse("building the optimizer's pointer table")
        self._table, self._total, self._key = cp.asarray(table), first, pointers

    def _scales(self, cp, scales, n: int, device_id: int):
        """``scales`` as the kernel takes them: None, or a float64 device array [n]."""
        if scales is None:
            return None
        if isinstance(scales, cp.ndarray):
            _check_array(cp, "scales", scales, (np.dtype(np.float64),), (n,), device_id)
            return scales
        scales = list(scales)
        if len(scales) != n:
            raise ValueError(f"scales must have one entry per variable ({n}), got {len(scales)}")
        if scales and all(isinstance(s, cp.ndarray) for s in scales):  # 0-d device scales: one gather
            return cp.stack([s.reshape(()) for s in scales]).astype(np.float64, copy=False)
        return cp.asarray(np.array(scales, np.float64))


class _ClipScratch:
    """What ``clip_scales`` keeps per device, stream and variable count: the table of the last
    gradients, the kernel's running sums and block counter (zero between launches), the scales."""

    def __init__(self, cp, n: int) -> None:
        self.key: Optional[tuple] = None
        self.table = None
        self.total = 0
        self.sq = cp.zeros(n, np.float64)
        self.done = cp.zeros(1, np.uint32)
        self.scales = cp.empty(n, np.float64)


_SCRATCH: dict = {}  # (device id, stream pointer, variables) -> _ClipScratch


def clip_scales(grads: Sequence[Array], clipnorm: Optional[float], global_clipnorm: Optional[float]) -> Optional[Array]:
    """The factor each gradient is multiplied by when clipping by norm (optimizers/base.py's rule:
    ``clipnorm`` per gradient, or ``global_clipnorm`` over all), as a float64 device array [n]
    computed in one launch, or None when there is nothing to scale (no elements). ``grads``:
    C-contiguous float32/float64 CuPy arrays on the current device."""
    cp = require_gpu()
    if (clipnorm is None) == (global_clipnorm is None):
        raise ValueError(f"clip_scales needs exactly one of clipnorm and global_clipnorm, got clipnorm={clipnorm}, "
                         f"global_clipnorm={global_clipnorm}")
    mode, clip = (_CLIP_MODES["clipnorm"], clipnorm) if clipnorm is not None else \
        (_CLIP_MODES["global_clipnorm"], global_clipnorm)
    device_id = cp.cuda.Device().id
    n = len(grads)
    for j, g in enumerate(grads):
        _check_array(cp, f"gradient {j}", g, tuple(_kernels.C_TYPES), None, device_id)
    where = (device_id, graphs.stream_key(cp), n)
    scratch = _SCRATCH.get(where)
    if scratch is None:
        scratch = _SCRATCH[where] = _ClipScratch(cp, n)
    key = tuple((g.data.ptr, g.size, g.dtype.itemsize) for g in grads)
    if key != scratch.key:
        table = np.zeros((n, 4), np.int64)
        first = 0
        for j, g in enumerate(grads):
            table[j] = g.data.ptr, int(g.dtype == np.float64), first, g.size
            first += g.size
        graphs.refuse("building the clipping's pointer table")
        scratch.table, scratch.total, scratch.key = cp.asarray(table), first, key
    if scratch.total == 0:
        return None
    if graphs.running_host_part():
        return scratch.scales
    _kernels.get_optim(grads[0].dtype).clip_scales(
        (_blocks(scratch.total),), (_kernels.OPTIM_THREADS,),
        (np.int64(n), scratch.table, np.int64(scratch.total), np.int64(CHUNK), np.int32(mode), np.float64(clip),
         scratch.sq, scratch.done, scratch.scales))
    return scratch.scales
