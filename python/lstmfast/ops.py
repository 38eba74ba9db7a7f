"""The engine boundary: ``lstm_forward`` / ``lstm_backward`` on NumPy or CuPy arrays, and the few
helpers that place arrays on a device. The one module that knows about devices.

Layout and equations are those of ``cpp/lstm.h`` (stated once there and in ``reference.py``):
time-major ``x [T,B,X]``, Keras weights ``kernel [X,4H]``, ``recurrent_kernel [H,4H]``,
``bias [4H]``, gate order i, f, c, o; optional ``peephole [3,H]`` (rows i, f, o).

The dtype of ``x`` (float32 or float64) selects the engine precision; every other float array
must have the same dtype. Non-contiguous inputs are copied. NaN or Inf in the inputs are not
checked: they propagate through the arithmetic into the outputs they feed.

The training cache keeps references to ``x``, the weights and ``y``; on the CPU ``y`` is returned
read-only in training mode so it cannot be changed before ``lstm_backward`` (CuPy cannot make an
array read-only: do not modify it there). Do not modify ``x`` or the weights in place between the
two calls. ``lstm_backward`` consumes the cache (its gate buffer becomes the gate gradients): run
the forward pass again before another backward pass.

Which engine runs a call (``backend=None``):

1. CuPy arrays go to ``"cuda"`` (``lstmfast.cuda``, on the device of ``x``), NumPy arrays to
   ``"cpu"`` (the C++ engine, ``lstmfast._core``); mixing the two is a TypeError (no hidden copies
   between host and device).
2. Inputs that are neither (lists, scalars) go to ``get_backend()``, ``"cpu"`` unless
   ``set_backend("cuda")`` was called.

An explicit ``backend="cpu"`` or ``"cuda"`` must agree with the arrays' kind.

How a call runs: the arguments are checked here, by one validator written against the array
module (NumPy or CuPy); the outputs are allocated here with that module; then the engine fills
them: ``engine.forward(x, kernel, ..., y, h, c, gates, cells)`` and ``engine.backward(...)``, one
signature for both engines, by the same names (``_core.pyi`` documents it). NumPy arrays go to the
C++ engine first, unchecked: it checks every array itself before it computes (the checks here cost
a small model about 5 us per training step), and only when it refuses them does the validator run,
to convert what it can or to raise its message.
"""
from __future__ import annotations

import math
import sys
from types import ModuleType
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _core
from . import cuda as _cuda
from ._results import LSTMGradients, LSTMOutput
from ._typing import Array
from .cuda import activations as _cuda_activations
from .cuda import dropout as _cuda_dropout
from .cuda import graphs as _cuda_graphs
from .cuda import losses as _cuda_losses
from .cuda import ops as _cuda_ops
from .cuda import optim as _cuda_optim
from .cuda import staging as _cuda_staging

__all__ = ["lstm_forward", "lstm_backward", "LSTMOutput", "LSTMGradients", "LSTMCache", "RECURRENT_ACTIVATIONS",
           "BACKENDS", "set_backend", "get_backend", "array_module", "as_array", "to_numpy", "to_device_of",
           "to_backend", "batch_to_device", "to_floats", "mirrored_on_device", "scatter_add", "segment_sum",
           "optimizer_step_kernel", "clip_scales", "all_finite", "device_activation", "device_activation_grad",
           "device_dropout_mask", "device_dropout_counters", "device_loss", "GraphedCalls", "PRECISIONS"]

RECURRENT_ACTIVATIONS = {"sigmoid": 0, "hard_sigmoid": 1}
PRECISIONS = {None: 0, "bfloat16": 1}  # the engines' precision codes (lstm.h's Precision)
BACKENDS = ("cpu", "cuda")

_F32, _F64, _I32 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int32)
_FLOATS = (_F32, _F64)
_backend = "cpu"


class LSTMCache:
    """What a training-mode forward pass keeps for ``lstm_backward`` (opaque to users): ``inputs``,
    the forward call's first arguments as the engines' ``backward`` takes them (x, kernel,
    recurrent_kernel, h0, c0, peephole, lengths, recurrent_dropout_mask, activation code), then its
    outputs y, gates and cells."""

    __slots__ = ("inputs", "has_bias", "y", "gates", "cells", "consumed", "precision")

    def __init__(self, inputs: tuple, has_bias: bool, y: Array, gates: Array, cells: Array,
                 precision: int = 0) -> None:
        self.inputs, self.has_bias = inputs, has_bias
        self.y, self.gates, self.cells, self.consumed = y, gates, cells, False
        self.precision = precision  # the engines' code (PRECISIONS)

    def __repr__(self) -> str:
        T, B, H = self.y.shape
        x = self.inputs[0]
        state = "consumed" if self.consumed else "ready"
        return f"LSTMCache(T={T}, B={B}, X={x.shape[2]}, H={H}, dtype={x.dtype}, {state})"


# ---------------------------------------------------------------------------------------------
# Backend choice.
# ---------------------------------------------------------------------------------------------

def _check_name(backend, what: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(repr(b) for b in BACKENDS)}, got {backend!r}")
    return backend


def set_backend(backend: str) -> None:
    """Backend for ``lstmfast.ops`` calls whose inputs do not decide it (see the module docstring),
    and the device models train on. ``"cuda"`` fails here, not later, when CuPy or a GPU is missing."""
    global _backend
    _check_name(backend, "backend")
    if backend == "cuda":
        _cuda.require_gpu()
    _backend = backend


def get_backend() -> str:
    """The backend set by ``set_backend``: ``"cpu"`` (default) or ``"cuda"``."""
    return _backend


def _cupy():
    # Only a program that already imported CuPy can hold CuPy arrays: no import here.
    return sys.modules.get("cupy")


def _array_kind(value) -> Optional[str]:
    """``"cuda"`` for a CuPy array, ``"cpu"`` for a NumPy array, None for anything else."""
    if isinstance(value, np.ndarray):
        cupy = _cupy()
        # The tests' NumPy-backed CuPy stand-in subclasses numpy.ndarray: ask CuPy first.
        return "cuda" if cupy is not None and isinstance(value, cupy.ndarray) else "cpu"
    cupy = _cupy()
    return "cuda" if cupy is not None and isinstance(value, cupy.ndarray) else None


_MOVE_HINT = {"cuda": "move it to the GPU with cupy.asarray(...)", "cpu": "bring it to the host with .get()"}
_KIND_NAME = {"cuda": "a cupy.ndarray", "cpu": "a numpy.ndarray"}


def _resolve(backend, named_arrays) -> str:
    """The backend a call runs on, given its ``backend=`` keyword and its (name, value) inputs."""
    if backend is not None:
        _check_name(backend, "backend")
    first = {}  # kind -> name of the first input of that kind
    for name, value in named_arrays:
        kind = _array_kind(value)
        if kind is not None and kind not in first:
            first[kind] = name
    if len(first) == 2:
        raise TypeError(f"{first['cuda']} is a cupy.ndarray but {first['cpu']} is a numpy.ndarray; pass all "
                        f"arrays on one side ({_MOVE_HINT['cuda']}, or {_MOVE_HINT['cpu']})")
    if backend is None:
        return next(iter(first)) if first else _backend
    for kind, name in first.items():
        if kind != backend:
            raise TypeError(f"backend={backend!r} needs {'CuPy' if backend == 'cuda' else 'NumPy'} arrays, but "
                            f"{name} is {_KIND_NAME[kind]} ({_MOVE_HINT[backend]}, or pass backend=None)")
    return backend


_NUMPY_OR_NONE = frozenset((np.ndarray, type(None)))


def _engine(backend, names, values):
    """(array module, engine module) for a call: (numpy, ``_core``) or (cupy, ``lstmfast.cuda.ops``).
    The common case, every value a plain NumPy array or None, is one set test."""
    if (backend is None or backend == "cpu") and values[0] is not None and _NUMPY_OR_NONE.issuperset(map(type, values)):
        return np, _core
    if _resolve(backend, zip(names, values)) == "cpu":
        return np, _core
    return _cuda.require_gpu(), _cuda_ops


def _check_one_device(xp, names, values, device_id: int) -> None:
    for name, value in zip(names, values):
        if isinstance(value, xp.ndarray) and value.device.id != device_id:
            raise ValueError(f"{name} is on GPU {value.device.id} but x is on GPU {device_id}; all arrays of a "
                             f"call must be on one device")


# ---------------------------------------------------------------------------------------------
# The validator: written once against the array module ``xp`` (numpy or cupy). Arrays that are
# already right (type, dtype, shape, contiguity) pass through without a copy.
# ---------------------------------------------------------------------------------------------

def _shape(a) -> str:
    return "(" + ", ".join(str(int(d)) for d in a) + ("," if len(a) == 1 else "") + ")"


def _as_array(xp, value):
    """``value`` as an ``xp`` array (lists are copied), byte-swapped floats in native order."""
    arr = value if isinstance(value, xp.ndarray) else xp.asarray(value)
    if arr.dtype.kind == "f" and not arr.dtype.isnative:  # e.g. read from a big-endian file
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _engine_ready(xp, arr) -> bool:
    """Whether the engines take ``arr`` as it is: C-contiguous and, on the host, aligned to its dtype
    (NumPy can view a byte buffer at an odd offset; the kernels read through typed pointers)."""
    return arr.flags.c_contiguous and (xp is not np or arr.flags.aligned)


def _contiguous(xp, arr):
    """``arr`` as the engines take it (see ``_engine_ready``): itself, or a C-contiguous aligned copy."""
    if _engine_ready(xp, arr):
        return arr
    return np.array(arr, order="C") if xp is np else xp.ascontiguousarray(arr)


def _float_array(xp, value, name: str, dtype, shape: tuple, what: str):
    """``value`` as a C-contiguous ``xp`` array of ``dtype`` and ``shape``; clear errors otherwise."""
    if type(value) is xp.ndarray and value.dtype is dtype and value.shape == shape and _engine_ready(xp, value):
        return value
    arr = _as_array(xp, value)
    if arr.dtype != dtype:
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array of dtype {dtype} (like x), got dtype {arr.dtype}")
        module = "np" if xp is np else xp.__name__
        raise TypeError(f"{name} has dtype {arr.dtype} but x is {dtype}; mixing float dtypes is not allowed "
                        f"(convert with .astype({module}.{dtype}))")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {what} = {_shape(shape)}, got {_shape(arr.shape)}")
    return _contiguous(xp, arr)


def _check_x(xp, x):
    if type(x) is xp.ndarray and (x.dtype is _F32 or x.dtype is _F64) and x.ndim == 3 and _engine_ready(xp, x):
        return x
    arr = _as_array(xp, x)
    if arr.dtype not in _FLOATS:
        raise TypeError(f"x must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"x must have shape [T, B, X] (3 dims, time-major), got shape {_shape(arr.shape)}")
    return _contiguous(xp, arr)


def _check_weights(xp, kernel, recurrent_kernel, bias, X: int, dtype):
    rk = recurrent_kernel
    if (type(rk) is xp.ndarray and type(kernel) is xp.ndarray and rk.dtype is dtype and kernel.dtype is dtype
            and rk.ndim == 2 and _engine_ready(xp, rk) and _engine_ready(xp, kernel)):  # the usual case
        H = rk.shape[0]
        if (rk.shape[1] == 4 * H and kernel.shape == (X, 4 * H) and
                (bias is None or (type(bias) is xp.ndarray and bias.dtype is dtype and bias.shape == (4 * H,)
                                  and _engine_ready(xp, bias)))):
            return kernel, rk, bias, H
    rk = recurrent_kernel if isinstance(recurrent_kernel, xp.ndarray) else xp.asarray(recurrent_kernel)
    if rk.ndim != 2 or rk.shape[1] != 4 * rk.shape[0]:
        raise ValueError(f"recurrent_kernel must have shape [H, 4H], got {_shape(rk.shape)}"
                         + (" (transposed? PyTorch's weight_hh is [4H, H]: pass weight_hh.T)"
                            if rk.ndim == 2 and rk.shape[0] == 4 * rk.shape[1] else ""))
    H = rk.shape[0]
    rk = _float_array(xp, rk, "recurrent_kernel", dtype, (H, 4 * H), "[H, 4H]")
    k = kernel if isinstance(kernel, xp.ndarray) else xp.asarray(kernel)
    if k.shape != (X, 4 * H):
        hint = " (transposed? PyTorch's weight_ih is [4H, X]: pass weight_ih.T)" if k.shape == (4 * H, X) else ""
        raise ValueError(f"kernel must have shape [X, 4H] = {_shape((X, 4 * H))} for x with X={X} and "
                         f"recurrent_kernel with H={H}, got {_shape(k.shape)}{hint}")
    k = _float_array(xp, k, "kernel", dtype, (X, 4 * H), "[X, 4H]")
    b = None if bias is None else _float_array(xp, bias, "bias", dtype, (4 * H,), "[4H]")
    return k, rk, b, H


def _check_lengths(xp, lengths, T: int, B: int):
    """``lengths`` as a contiguous int32 ``xp`` array; the values are checked on the host (from the
    GPU, one small copy)."""
    arr = lengths if isinstance(lengths, xp.ndarray) else xp.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape [B] = ({B},), got {_shape(arr.shape)}")
    host = to_numpy(arr)
    if B and (host.min() < 0 or host.max() > T):
        bad = int(np.flatnonzero((host < 0) | (host > T))[0])
        raise ValueError(f"lengths must lie in [0, T={T}], got lengths[{bad}] = {int(host[bad])}")
    if type(arr) is xp.ndarray and arr.dtype is _I32 and _engine_ready(xp, arr):
        return arr
    return _contiguous(xp, arr.astype(np.int32, copy=False))


# ---------------------------------------------------------------------------------------------
# Forward and backward.
# ---------------------------------------------------------------------------------------------

_FORWARD_INPUTS = ("x", "kernel", "recurrent_kernel", "bias", "h0", "c0", "peephole", "lengths",
                   "recurrent_dropout_mask")
_BACKWARD_INPUTS = ("cache", "dy", "dh", "dc")


def lstm_forward(x: ArrayLike, kernel: ArrayLike, recurrent_kernel: ArrayLike, bias: Optional[ArrayLike],
                 h0: Optional[ArrayLike] = None, c0: Optional[ArrayLike] = None,
                 peephole: Optional[ArrayLike] = None, lengths: Optional[ArrayLike] = None,
                 recurrent_activation: str = "sigmoid", training: bool = True,
                 recurrent_dropout_mask: Optional[ArrayLike] = None, backend: Optional[str] = None,
                 precision: Optional[str] = None) -> LSTMOutput:
    """Run an LSTM layer over a time-major batch.

    Args:
      x: ``[T,B,X]`` float32 or float64.
      kernel, recurrent_kernel, bias: ``[X,4H]``, ``[H,4H]``, ``[4H]`` (bias may be None).
      h0, c0: initial state ``[B,H]`` (None = zeros).
      peephole: ``[3,H]`` peephole weights for the i, f, o gates, or None.
      lengths: ``[B]`` integers in ``[0,T]`` for right-padded batches, or None.
      recurrent_activation: ``"sigmoid"`` or ``"hard_sigmoid"`` (Keras 2).
      training: keep what ``lstm_backward`` needs (``out.cache``); False keeps nothing.
      recurrent_dropout_mask: ``[B,H]``, multiplies ``h_{t-1}`` in the recurrent product.
      backend: None (follow the arrays, then ``get_backend()``), ``"cpu"`` or ``"cuda"``.
      precision: None (products in the arrays' dtype) or ``"bfloat16"`` (float32 arrays): the
        products may round their operands to bfloat16, accumulating in float32 (see
        ``_checked_precision``); the backward pass of this call does the same.

    Returns:
      ``LSTMOutput(y [T,B,H], h [B,H], c [B,H], cache)``, arrays of the inputs' kind.
    """
    inputs = (x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, recurrent_dropout_mask)
    xp, engine = _engine(backend, _FORWARD_INPUTS, inputs)
    if engine is _core:
        return _forward(xp, engine, *inputs, recurrent_activation, training, precision)
    x = _as_array(xp, x)
    device = x.device
    _check_one_device(xp, _FORWARD_INPUTS, inputs, device.id)
    with device:
        return _forward(xp, engine, x, *inputs[1:], recurrent_activation, training, precision)


def _forward(xp, engine, x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, mask, recurrent_activation,
             training, precision) -> LSTMOutput:
    """``lstm_forward`` on the engine chosen: checked arguments, then ``_run_forward``."""
    act = RECURRENT_ACTIVATIONS.get(recurrent_activation) if isinstance(recurrent_activation, str) else None
    if (act is not None and (training is True or training is False) and type(x) is np.ndarray and x.ndim == 3
            and type(recurrent_kernel) is np.ndarray and recurrent_kernel.ndim == 2):
        # The C++ engine checks every array again (dtype, shape, contiguity) before it computes: NumPy
        # arrays it takes as they are need no checks here. When it refuses them, the checks below
        # convert what they can (lists, strided or byte-swapped arrays) or say what is wrong.
        try:
            return _run_forward(xp, engine, x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, mask, act,
                                training, precision)
        except (TypeError, ValueError):
            pass
    x = _check_x(xp, x)
    T, B, X = x.shape
    dtype = x.dtype
    kernel, recurrent_kernel, bias, H = _check_weights(xp, kernel, recurrent_kernel, bias, X, dtype)
    if h0 is not None:
        h0 = _float_array(xp, h0, "h0", dtype, (B, H), "[B, H]")
    if c0 is not None:
        c0 = _float_array(xp, c0, "c0", dtype, (B, H), "[B, H]")
    if peephole is not None:
        peephole = _float_array(xp, peephole, "peephole", dtype, (3, H), "[3, H]")
    if lengths is not None:
        lengths = _check_lengths(xp, lengths, T, B)
    if mask is not None:
        mask = _float_array(xp, mask, "recurrent_dropout_mask", dtype, (B, H), "[B, H]")
    if act is None:
        raise ValueError(f"recurrent_activation must be one of {sorted(RECURRENT_ACTIVATIONS)}, "
                         f"got {recurrent_activation!r}")
    if training is not True and training is not False and not isinstance(training, np.bool_):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    return _run_forward(xp, engine, x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, mask, act,
                        bool(training), precision)


def _checked_precision(precision, dtype) -> int:
    """The engines' code for the ``precision`` argument of ``lstm_forward``/``matmul``: None or
    ``"bfloat16"``, which needs float32 arrays. Only the CUDA engine has bfloat16 products (cuBLAS
    on tensor cores); the C++ engine computes such a call in float32 (``cpp/lstm.h``'s Precision)."""
    code = PRECISIONS.get(precision) if precision is None or isinstance(precision, str) else None
    if code is None:
        raise ValueError(f"precision must be None or 'bfloat16', got {precision!r}")
    if code and dtype != _F32:
        raise ValueError(f"precision='bfloat16' needs float32 arrays, got {dtype}")
    return code


def _run_forward(xp, engine, x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, recurrent_dropout_mask,
                 recurrent_activation, training, precision) -> LSTMOutput:
    """Allocate the outputs with ``xp`` and let the engine fill them (arguments the engine takes)."""
    precision = 0 if precision is None else _checked_precision(precision, x.dtype)
    T, B, _ = x.shape
    H = recurrent_kernel.shape[0]
    dtype = x.dtype
    y = xp.empty((T, B, H), dtype)
    h = xp.empty((B, H), dtype)
    c = xp.empty((B, H), dtype)
    gates = xp.empty((T, B, 4 * H), dtype) if training else None
    cells = xp.empty((T, B, H), dtype) if training else None
    # The engine's arguments by position, each variable named as its parameter (pybind11 spends ~4 us
    # matching 15 keywords: as much as all the checks of _forward).
    engine.forward(x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, recurrent_dropout_mask,
                   recurrent_activation, y, h, c, gates, cells, precision)
    if not training:
        return LSTMOutput(y, h, c, None)
    cache = LSTMCache((x, kernel, recurrent_kernel, h0, c0, peephole, lengths, recurrent_dropout_mask,
                       recurrent_activation), bias is not None, y, gates, cells, precision)
    if xp is np:
        y = y.view()
        y.flags.writeable = False
    return LSTMOutput(y, h, c, cache)


def lstm_backward(cache: LSTMCache, dy: Optional[ArrayLike], dh: Optional[ArrayLike] = None,
                  dc: Optional[ArrayLike] = None, backend: Optional[str] = None) -> LSTMGradients:
    """Gradients of a training-mode ``lstm_forward`` call.

    Args:
      cache: ``out.cache`` of the forward call (consumed: one backward per forward).
      dy: ``[T,B,H]`` gradient of ``y`` (None = zeros; ignored at padded steps).
      dh, dc: ``[B,H]`` gradients of the final ``h`` and ``c`` (None = zeros).
      backend: None (where the forward pass ran), ``"cpu"`` or ``"cuda"`` (must agree with it).

    Returns:
      ``LSTMGradients(dx, dkernel, drecurrent_kernel, dbias, dh0, dc0, dpeephole)``; ``dbias``,
      ``dh0``, ``dc0`` and ``dpeephole`` are None when the forward call had no bias, h0, c0, peephole.
    """
    if type(cache) is not LSTMCache:
        if cache is None:
            raise ValueError("lstm_backward needs the cache of a training-mode forward pass; got None "
                             "(lstm_forward(..., training=False) keeps no cache)")
        if not isinstance(cache, LSTMCache):
            raise TypeError(f"cache must be the LSTMCache from lstmfast.ops.lstm_forward, "
                            f"got {type(cache).__name__}")
    x = cache.inputs[0]
    xp, engine = _engine(backend, _BACKWARD_INPUTS, (x, dy, dh, dc))
    if engine is _core:
        return _backward(xp, engine, cache, dy, dh, dc)
    _check_one_device(xp, _BACKWARD_INPUTS[1:], (dy, dh, dc), x.device.id)
    with x.device:
        return _backward(xp, engine, cache, dy, dh, dc)


def _backward(xp, engine, cache: LSTMCache, dy, dh, dc) -> LSTMGradients:
    """``lstm_backward`` on the engine chosen: checked ``dy``, ``dh``, ``dc``, then ``_run_backward``."""
    if cache.consumed:
        raise ValueError("this cache was already used by lstm_backward (backward consumes it); "
                         "run lstm_forward again before another backward pass")
    if xp is np and _NUMPY_OR_NONE.issuperset((type(dy), type(dh), type(dc))):
        try:  # as in _forward: the engine checks them again; the checks below run when it refuses
            return _run_backward(xp, engine, cache, dy, dh, dc)
        except (TypeError, ValueError):
            cache.consumed = False  # the C++ engine refused before it touched the gates
    x, _, recurrent_kernel = cache.inputs[:3]
    T, B, _ = x.shape
    H = recurrent_kernel.shape[0]
    dtype = x.dtype
    if dy is not None:
        dy = _float_array(xp, dy, "dy", dtype, (T, B, H), "[T, B, H]")
    if dh is not None:
        dh = _float_array(xp, dh, "dh", dtype, (B, H), "[B, H]")
    if dc is not None:
        dc = _float_array(xp, dc, "dc", dtype, (B, H), "[B, H]")
    return _run_backward(xp, engine, cache, dy, dh, dc)


def _run_backward(xp, engine, cache: LSTMCache, dy, dh, dc) -> LSTMGradients:
    """Allocate the gradients with ``xp`` and let the engine fill them (``dy``, ``dh``, ``dc`` it takes)."""
    inputs = cache.inputs
    x, _, recurrent_kernel, h0, c0, peephole = inputs[:6]
    T, B, X = x.shape
    H = recurrent_kernel.shape[0]
    dtype = x.dtype
    dx = xp.empty((T, B, X), dtype)
    dkernel = xp.empty((X, 4 * H), dtype)
    drecurrent_kernel = xp.empty((H, 4 * H), dtype)
    dbias = xp.empty((4 * H,), dtype) if cache.has_bias else None
    dh0 = xp.empty((B, H), dtype)
    dc0 = xp.empty((B, H), dtype)
    dpeephole = xp.empty((3, H), dtype) if peephole is not None else None
    cache.consumed = True  # the engine turns the gates into gate gradients
    # By position, in the order of the engines' signature (see _run_forward).
    engine.backward(*inputs, cache.y, cache.gates, cache.cells, dy, dh, dc, dx, dkernel, drecurrent_kernel, dbias,
                    dh0, dc0, dpeephole, cache.precision)
    return LSTMGradients(dx, dkernel, drecurrent_kernel, dbias, dh0 if h0 is not None else None,
                         dc0 if c0 is not None else None, dpeephole)


# ---------------------------------------------------------------------------------------------
# Placement: the only device-aware helpers layers, models and optimizers use.
# ---------------------------------------------------------------------------------------------

def array_module(a: Any) -> ModuleType:
    """The array module of ``a``: ``cupy`` for a CuPy array, else ``numpy``."""
    if type(a) is np.ndarray:
        return np
    cupy = _cupy()
    return cupy if cupy is not None and isinstance(a, cupy.ndarray) else np


def as_array(a: ArrayLike, like: Optional[Array] = None) -> Array:
    """``a`` as an array of ``like``'s array module (``a``'s own when ``like`` is None): a NumPy
    array, with ``like`` one or None, comes back as it is (the common case, checked first)."""
    if type(a) is np.ndarray and (like is None or type(like) is np.ndarray):
        return a
    return array_module(a if like is None else like).asarray(a)


def to_numpy(a: ArrayLike) -> np.ndarray:
    """``a`` as a NumPy array: a CuPy array is copied to the host, anything else goes through
    ``np.asarray`` (a NumPy array comes back as it is)."""
    if type(a) is np.ndarray:
        return a
    cupy = _cupy()
    if cupy is not None and isinstance(a, cupy.ndarray):
        kept = _MIRRORS.get(id(a))
        if kept is not None and kept[0] is a:
            return kept[1]  # made from these host values (mirrored_on_device): no read
        _cuda_graphs.refuse("reading a device array back")
        return cupy.asnumpy(a)
    return np.asarray(a)


def to_floats(values: Iterable[Any]) -> list:
    """``values`` (Python numbers and 0-d arrays, on the host or on a device) as Python floats: the
    device ones are read back together, in one copy (the running sums of a training loop)."""
    values = list(values)
    cupy = _cupy()
    on_device = [i for i, v in enumerate(values) if cupy is not None and isinstance(v, cupy.ndarray)]
    out = [None if i in on_device else float(v) for i, v in enumerate(values)] if on_device else \
        [float(v) for v in values]
    if on_device:
        _cuda_graphs.refuse("reading device values back")
        host = cupy.asnumpy(cupy.stack([values[i].reshape(()).astype(np.float64) for i in on_device]))
        for j, i in enumerate(on_device):
            out[i] = float(host[j])
    return out


def to_device_of(like: Array, a: ArrayLike) -> Array:
    """``a`` (host data: a mask from the host generator, index arrays) on the device of ``like``;
    unchanged when ``like`` is not a CuPy array."""
    cupy = array_module(like)
    if cupy is np:
        return a
    _cuda_graphs.refuse("sending host data to the device")
    with like.device:
        return cupy.asarray(a)


def mirrored_on_device(like: Array, a: np.ndarray) -> Array:
    """``a`` on the device of ``like`` (as ``to_device_of``), with ``a`` remembered as its host
    values: ``to_numpy`` of the result gives them back, read-only, without reading the device. For
    host data the host needs again, like the masks and lengths a training step derives from its
    batch. Neither array may change afterwards. The last ``_MIRRORS_KEPT`` are remembered."""
    device = to_device_of(like, a)
    if device is not a:
        host = a.view()
        host.flags.writeable = False
        _MIRRORS[id(device)] = (device, host)
        if len(_MIRRORS) > _MIRRORS_KEPT:
            del _MIRRORS[next(iter(_MIRRORS))]  # the oldest
    return device


_MIRRORS: dict = {}  # id(device array) -> (that array, its host values, read-only)
_MIRRORS_KEPT = 64


def to_backend(a: Optional[ArrayLike], backend: str) -> Optional[Array]:
    """``a`` on ``"cpu"`` (a NumPy array) or ``"cuda"`` (a CuPy array on the current device); an
    array already there comes back as it is; None stays None."""
    _check_name(backend, "backend")
    if a is None:
        return None
    if backend == "cpu":
        return to_numpy(a)
    cupy = _cuda.require_gpu()
    if not isinstance(a, cupy.ndarray):
        _cuda_graphs.refuse("sending host data to the device")
    return cupy.asarray(a)


def all_finite(arrays: Sequence[Array]) -> bool:
    """Whether every element of every array is finite. Device arrays are reduced where they are
    and one value is read back (one wait for the device)."""
    arrays = list(arrays)
    if all(type(a) is np.ndarray for a in arrays):
        return all(bool(np.isfinite(a).all()) for a in arrays)
    xp = array_module(arrays[0])
    return bool(xp.stack([xp.isfinite(a).all() for a in arrays]).all())


def batch_to_device(arrays: Iterable[np.ndarray], into: Optional[Sequence[Array]] = None) -> list:
    """A batch's host arrays on the current device, copied without making the host wait: each goes
    through a pinned (page-locked) host buffer, and the copy is queued on the current stream
    (ordered before the kernels that use it; a copy from pageable memory may wait for the stream).
    Pinned buffers alternate between two sets (``lstmfast.cuda.staging.PinnedStaging``). ``into``:
    device arrays to copy into (a CUDA graph's inputs), used when their shapes and dtypes match."""
    cupy = _cuda.require_gpu()
    _cuda_graphs.refuse("sending a batch to the device")
    device_id = cupy.cuda.Device().id
    staging = _STAGING.get(device_id)
    if staging is None:
        staging = _STAGING[device_id] = _cuda_staging.PinnedStaging()
    arrays = [np.ascontiguousarray(a) for a in arrays]
    if into is not None and not (len(into) == len(arrays) and all(
            isinstance(d, cupy.ndarray) and d.shape == a.shape and d.dtype == a.dtype and d.flags.c_contiguous
            and d.device.id == device_id for d, a in zip(into, arrays))):
        into = None
    return staging.copy(cupy, arrays, into)


_STAGING: dict = {}  # device id -> PinnedStaging
_SCATTER_ROWS = {_F32: _core.scatter_add_rows_f32, _F64: _core.scatter_add_rows_f64}
_OPTIMIZER_STEPS = {_F32: _core.optim_step_f32, _F64: _core.optim_step_f64}


def optimizer_step_kernel(variables: Iterable[Array], dtype: DTypeLike) -> Optional[Callable[..., None]]:
    """The fused optimizer step for ``variables`` of ``dtype``: the C++ one (``_core.optim_step_f32``/
    ``_f64``, ``cpp/optim.h``) for C-contiguous NumPy arrays, the CUDA one (``lstmfast.cuda.optim``:
    the same rules, signature and rounding, one launch for all the variables) for C-contiguous CuPy
    arrays on one device; None when neither takes them (another dtype, strided or mixed arrays):
    the optimizer then runs its array-module rules."""
    dtype = np.dtype(dtype)
    kernel = _OPTIMIZER_STEPS.get(dtype)
    variables = list(variables)
    if kernel is None:
        return None
    if all(type(v) is np.ndarray and v.dtype == dtype and _engine_ready(np, v) for v in variables):
        return kernel
    cupy = _cupy()
    if variables and cupy is not None and all(isinstance(v, cupy.ndarray) and v.dtype == dtype and
                                              v.flags.c_contiguous and v.device.id == variables[0].device.id
                                              for v in variables):
        return _cuda_optim.FusedStep(dtype)
    return None


def clip_scales(grads: Sequence[Array], clipnorm: Optional[float],
                global_clipnorm: Optional[float]) -> Optional[Union[List[float], Array]]:
    """The factors that clip ``grads`` by norm (one of ``clipnorm``, ``global_clipnorm``), one per
    gradient, or None for "leave them as they are": ``clipnorm`` scales a gradient of L2 norm
    ``n > clipnorm`` by ``clipnorm / n``; ``global_clipnorm`` scales all by ``global_clipnorm / n``
    when their global norm ``n`` exceeds it, by NaN when ``n`` is not finite (Keras). NumPy
    gradients (C-contiguous, float32/float64): Python floats from norms summed on the host. CuPy
    gradients: a float64 device array computed on the device in one launch (nothing is read back),
    which the fused step (``optimizer_step_kernel``) takes as it is."""
    if grads and type(grads[0]) is not np.ndarray and array_module(grads[0]) is not np:
        return _cuda_optim.clip_scales(grads, clipnorm, global_clipnorm)
    sq = [float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads]
    if clipnorm is not None:
        c = clipnorm
        return [c / math.sqrt(s) if math.sqrt(s) > c else 1.0 for s in sq]
    c, norm = global_clipnorm, math.sqrt(sum(sq))
    if norm > c or not math.isfinite(norm):
        return [c / norm if math.isfinite(norm) else math.nan] * len(grads)
    return None


_GEMMS = {_F32: _core.gemm_f32, _F64: _core.gemm_f64}
# M*N*K at or below which OpenBLAS stays on the calling thread (its threshold is 4 * 65536) and
# NumPy's product is the faster one; above it the engine's GEMM keeps the step on one thread pool.
_SMALL_GEMM = 65536


def matmul(a: Array, b: Array, trans_a: bool = False, trans_b: bool = False, out: Optional[Array] = None,
           accumulate: bool = False, precision: Optional[str] = None) -> Array:
    """``op(a) @ op(b)`` for 2-D ``a [M,K]``, ``b [K,N]``, or stacks of them ``[S,M,K]``, ``[S,K,N]``
    (``op`` swaps the last two axes when ``trans_a``/``trans_b``): the engine's GEMM (``cpp/gemm.h``,
    on the engine's thread pool) for NumPy float32/float64 arrays of one dtype, ``xp.matmul``
    otherwise (CuPy, other dtypes). ``out`` receives the product, or the sum of it and ``out``'s
    values when ``accumulate``; without ``out`` a new array is returned. The one product layers use,
    so a training step's GEMMs run on one thread pool and NumPy's BLAS threads never wake in it.
    Products under ``_SMALL_GEMM`` multiply-adds go to NumPy: OpenBLAS runs those on the calling
    thread, and faster (about 1 us against 2.7 us for ``[1,25] @ [25,100]``). ``out`` must have the
    product's shape and a dtype the product casts to (np.matmul's "same_kind"); it may overlap ``a``
    or ``b`` (NumPy then computes the product, into a buffer of its own). ``precision="bfloat16"``
    (float32 arrays, as ``lstm_forward``'s): on the GPU one cuBLAS product with bfloat16 operands and
    float32 accumulation; on the host float32."""
    try:
        size = a.shape[-1] * a.shape[-2] * (b.shape[-2] if trans_b else b.shape[-1])
        if b.ndim < 2:
            raise IndexError
    except (AttributeError, IndexError):
        raise _matmul_operand_error(a, b) from None
    if (precision is not None and _checked_precision(precision, a.dtype) and type(a) is not np.ndarray
            and _bfloat16_operands(a, b, trans_a, trans_b, out)):
        with a.device:
            return _cuda_ops.matmul(a, b, trans_a, trans_b, out, accumulate, PRECISIONS[precision])
    gemm = None
    stacked = False
    if size > _SMALL_GEMM:  # small: NumPy's
        if type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype and (
                out is None or (type(out) is np.ndarray and out.dtype == a.dtype and _engine_ready(np, out)
                                and out.flags.writeable and not np.may_share_memory(out, a)
                                and not np.may_share_memory(out, b))):  # the GEMM reads A and B as it writes C
            gemm = _GEMMS.get(a.dtype)
        stacked = a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0]
    M = a.shape[-1] if trans_a else a.shape[-2]
    N = b.shape[-2] if trans_b else b.shape[-1]
    if gemm is None or not (stacked or (a.ndim == 2 and b.ndim == 2)) or (
            out is not None and out.shape != a.shape[:-2] + (M, N)):
        product = (a.swapaxes(-1, -2) if trans_a else a) @ (b.swapaxes(-1, -2) if trans_b else b)
        if out is None:
            return product
        _check_matmul_out(out, product)
        if accumulate:
            out += product
        else:
            out[...] = product
        return out
    a, b = _contiguous(np, a), _contiguous(np, b)
    if out is None:
        out = np.empty(a.shape[:-2] + (M, N), a.dtype)
        accumulate = False
    if not stacked:
        gemm(trans_a, trans_b, a, b, out, accumulate)
    else:
        for i in range(a.shape[0]):
            gemm(trans_a, trans_b, a[i], b[i], out[i], accumulate)
    return out


def _bfloat16_operands(a, b, trans_a, trans_b, out) -> bool:
    """Whether the CUDA engine's bfloat16 product takes ``a``, ``b``, ``out``: CuPy arrays of one
    device, 2-D or stacks of one length, shapes that multiply, ``out`` None or C-contiguous of the
    product's shape and dtype. Others get the float32 product (and its errors)."""
    cupy = _cupy()
    if cupy is None or not (isinstance(a, cupy.ndarray) and isinstance(b, cupy.ndarray) and b.dtype == a.dtype
                            and b.device.id == a.device.id):
        return False
    if not (a.ndim == b.ndim == 2 or (a.ndim == b.ndim == 3 and a.shape[0] == b.shape[0])):
        return False
    if (a.shape[-2] if trans_a else a.shape[-1]) != (b.shape[-1] if trans_b else b.shape[-2]):
        return False
    shape = a.shape[:-2] + ((a.shape[-1] if trans_a else a.shape[-2]), (b.shape[-2] if trans_b else b.shape[-1]))
    return out is None or (isinstance(out, cupy.ndarray) and out.shape == shape and out.dtype == a.dtype
                           and out.flags.c_contiguous and out.device.id == a.device.id)


def _matmul_operand_error(a, b) -> Exception:
    """The error for matmul operands that are not arrays of 2 or more dims."""
    for name, value in (("a", a), ("b", b)):
        shape = getattr(value, "shape", None)
        if shape is None:
            return TypeError(f"matmul: {name} must be an array, got {type(value).__name__}")
        if len(shape) < 2:
            return ValueError(f"matmul: {name} must have 2 dims [rows, columns] or 3 [stack, rows, columns], "
                              f"got shape {_shape(shape)}")
    return ValueError("matmul: a and b must have 2 or 3 dims")  # not reached


def _check_matmul_out(out, product) -> None:
    if out.shape != product.shape:
        raise ValueError(f"matmul: out must have the product's shape {_shape(product.shape)}, got "
                         f"{_shape(out.shape)}")
    if not np.can_cast(product.dtype, out.dtype, "same_kind"):
        raise TypeError(f"matmul: out has dtype {out.dtype}, which the product's dtype {product.dtype} does "
                        f"not cast to")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("matmul: out is read-only")

def scatter_add(out: Array, index: Array, rows: Array) -> None:
    """``out[index[i]] += rows[i]``, repeated indices accumulating (``np.add.at``'s meaning): the C++
    kernel for a contiguous float32/float64 ``out [N,D]`` with native int32/int64 ``index`` and
    ``rows [len(index), D]`` of ``out``'s dtype (indices in ``[0, N)``: a negative one is a ValueError
    there), ``cupy.add.at`` on the GPU, ``np.add.at`` otherwise."""
    if type(out) is np.ndarray:
        add = _SCATTER_ROWS.get(out.dtype)
        if (add is not None and out.ndim == 2 and _engine_ready(np, out) and type(index) is np.ndarray
                and index.ndim == 1 and index.dtype.kind == "i" and index.dtype.itemsize in (4, 8)
                and index.dtype.isnative and type(rows) is np.ndarray and rows.dtype == out.dtype
                and rows.shape == (len(index), out.shape[1])):  # other shapes: np.add.at broadcasts or refuses
            if np.may_share_memory(out, rows) or np.may_share_memory(out, index):
                # np.add.at reads them as they were; the kernel would read what it already changed
                rows, index = rows.copy(), index.copy()
            # one pass in C++, in np.add.at's order
            add(out, _contiguous(np, index), _contiguous(np, rows))
        else:
            if not out.flags.writeable:
                raise ValueError(f"scatter_add: out (shape {_shape(out.shape)}) is read-only")
            np.add.at(out, index, rows)
        return
    array_module(out).add.at(out, index, rows)


def segment_sum(a: Array, starts: ArrayLike) -> Array:
    """``np.add.reduceat(a, starts, axis=0)`` for ``a`` on its own device, with ``starts`` on the
    host: increasing segment starts, the first 0. CuPy has no reduceat: there each row is added to
    its segment's sum (``scatter_add``, segment ids made on the host), and nothing is read back."""
    if type(a) is np.ndarray:
        return np.add.reduceat(a, starts, axis=0)
    starts = np.asarray(starts)
    if len(a) == 0:
        return array_module(a).zeros((len(starts),) + a.shape[1:], a.dtype)
    if len(starts) == 0 or starts[0] != 0 or (np.diff(starts) <= 0).any() or starts[-1] >= len(a):
        raise ValueError(f"segment_sum on a device needs increasing segment starts from 0 below {len(a)}, got "
                         f"{starts.tolist()}")
    segment = np.repeat(np.arange(len(starts)), np.diff(starts, append=len(a)))  # [rows] segment of each row
    out = array_module(a).zeros((len(starts),) + a.shape[1:], a.dtype)
    scatter_add(out, to_device_of(a, segment), a)
    return out



def _activation_operands(cupy, arrays) -> bool:
    """Whether ``arrays`` suit the activation kernels: C-contiguous float32/float64 CuPy arrays of
    one shape, dtype and device, not empty."""
    first = arrays[0]
    device_id = getattr(first.device, "id", None)  # None: an array module that is not CUDA's
    if first.dtype not in _FLOATS or first.size == 0 or device_id is None:
        return False
    return all(isinstance(a, cupy.ndarray) and a.dtype == first.dtype and a.shape == first.shape
               and a.flags.c_contiguous and getattr(a.device, "id", None) == device_id for a in arrays)


_DEVICE_LOSSES = {"binary_crossentropy": (_cuda_losses.binary_crossentropy, None),
                  "sparse_categorical_crossentropy": (_cuda_losses.sparse_crossentropy, np.dtype(np.int64))}


def device_loss(name: str, from_logits: bool, t: Array, p: Array, eps: float,
                one_minus_eps: float) -> Optional[Tuple[Array, Array]]:
    """``(values, grad)`` of the loss ``name`` ("binary_crossentropy": targets ``t`` of ``p``'s
    shape and dtype; "sparse_categorical_crossentropy": int64 labels ``t`` of shape
    ``p.shape[:-1]``, already checked) by one GPU kernel, for C-contiguous float32/float64 CuPy
    arrays with at least one element; ``eps``, ``one_minus_eps``: the probabilities' clip bounds
    in ``p``'s dtype. None where no kernel applies (host arrays, other dtypes or layouts): the
    caller's formula runs then."""
    entry = _DEVICE_LOSSES.get(name)
    cupy = _cupy()
    if entry is None or cupy is None or not isinstance(p, cupy.ndarray) or not isinstance(t, cupy.ndarray):
        return None
    function, label_dtype = entry
    if label_dtype is None:
        if not _activation_operands(cupy, (p, t)) or p.ndim == 0:
            return None
    elif not (_activation_operands(cupy, (p,)) and p.ndim and t.dtype == label_dtype and t.shape == p.shape[:-1]
              and t.flags.c_contiguous and getattr(t.device, "id", None) == p.device.id):
        return None
    with p.device:
        return function(cupy, t, p, bool(from_logits), float(eps), float(one_minus_eps))


def device_dropout_mask(like: Array, shape: Sequence[int], rate: float, dtype: DTypeLike,
                        key: Callable[[], Tuple[int, int]]) -> Optional[Array]:
    """An inverted-dropout mask (``1 / (1 - rate)`` with probability ``1 - rate``, else 0) of
    ``shape`` and ``dtype`` on the device of ``like``, drawn there in one launch by the device's
    generator (``lstmfast.cuda.dropout``) with the key ``key()`` gives (two integers in
    [0, 2**32), a layer's; asked for only when drawing); None for a host ``like`` or a dtype the
    kernel does not take: the caller draws on the host."""
    if type(like) is np.ndarray or np.dtype(dtype) not in _FLOATS:
        return None
    cupy = _cupy()
    if cupy is None or not isinstance(like, cupy.ndarray):
        return None
    device_id = getattr(getattr(like, "device", None), "id", None)
    if device_id is None:  # an array module that is not CUDA's
        return None
    with cupy.cuda.Device(device_id):
        return _cuda_dropout.keep_mask(cupy, tuple(shape), float(rate), dtype, key())


def device_dropout_counters() -> list:
    """The draw counters of the GPUs' dropout generators (device arrays a training step advances)."""
    return _cuda_dropout.counters()


def device_activation(name: str, x: Array) -> Optional[Array]:
    """``name(x)`` (an activation of ``lstmfast.activations``) by one GPU kernel, as a new array, for
    a C-contiguous float32/float64 CuPy array ``x``; None where no kernel applies (host arrays,
    other dtypes, strided or empty arrays, activations without a kernel): the caller's formula runs
    then."""
    cupy = _cupy()
    if cupy is None or not isinstance(x, cupy.ndarray) or not (
            name in _cuda_activations.CODES or (name == _cuda_activations.SOFTMAX and x.ndim)):
        return None
    if not _activation_operands(cupy, (x,)):
        return None
    with x.device:
        return _cuda_activations.forward(cupy, name, x)


def device_activation_grad(name: str, x: Array, y: Array, dy: Array) -> Optional[Array]:
    """``dL/dx`` of ``name`` by one GPU kernel, from its input ``x``, output ``y`` and ``dy = dL/dy``
    (``device_activation``'s conditions, for all three alike); None where no kernel applies."""
    cupy = _cupy()
    if cupy is None or not isinstance(dy, cupy.ndarray) or not (
            name in _cuda_activations.CODES or (name == _cuda_activations.SOFTMAX and dy.ndim)):
        return None
    if not _activation_operands(cupy, (dy, x, y)):
        return None
    with dy.device:
        return _cuda_activations.backward(cupy, name, x, y, dy)


class GraphedCalls:
    """One fixed-shape device call (a model's inference or training step) per input shape, run as
    a CUDA graph (``lstmfast.cuda.graphs``): eagerly at a shape's first call (which also compiles
    the kernels and sizes the memory pool), captured at its second (which runs eagerly too), and at
    the third checked once against the eager call on that batch (outputs, state and the arrays it
    writes); replayed from then on. A call that a graph cannot replay (host data sent to the
    device, device values read) is refused while capturing and stays eager for that shape; a check
    that fails turns graphs off for this owner, with a warning. Host arrays and
    ``cuda.graphs.GRAPHS = "never"`` run eagerly.

    ``keep`` (the arrays the call reads, the weights) must be the same objects at every call: when
    one was replaced (weights loaded, the model moved) the graphs are dropped and captured again.
    A training step also gives ``written`` (the arrays it updates in place: weights, optimizer
    slots), ``before`` (its host part, run before each replay under ``graphs.host_part()``: the
    optimizer's step count and step values) and ``host_state`` (a pair ``(save, restore)`` of the
    host state the call changes, which a capture must leave as it was)."""

    MAX_SHAPES = 8  # graphs kept per owner by default; further shapes run eagerly

    def __init__(self, what: str = "inference step", max_shapes: int = MAX_SHAPES) -> None:
        self.what = what
        self.max_shapes = max_shapes  # each graph keeps the memory of its call (its own pool)
        self._entries: dict = {}  # key -> None (seen once), Captured, or False (eager for good)
        self._pending: dict = {}  # key -> Captured waiting for its check
        self._keep: tuple = ()
        self.disabled = False

    def inputs_of(self, key: tuple) -> Optional[list]:
        """The input arrays of the graph replayed for ``key``, or None: a batch copied straight
        into them saves the copy ``Captured.launch`` makes."""
        entry = self._entries.get(key)
        return entry.inputs if entry and not self.disabled else None

    def clear(self) -> None:
        """Drop the graphs (and the arrays they hold); whether graphs are off for this owner stays."""
        self._entries, self._pending, self._keep = {}, {}, ()

    def __call__(self, key: tuple, run: Callable[[list], Any], inputs: list, buffers: Sequence[dict],
                 keep: Sequence[Any], written: Sequence[Any] = (), before: Optional[Callable[[], None]] = None,
                 host_state: Optional[tuple] = None) -> Any:
        cupy = _cupy()
        if (self.disabled or _cuda_graphs.GRAPHS == "never" or _cuda_graphs.active() or not inputs
                or cupy is None or not all(isinstance(x, cupy.ndarray) for x in inputs)):
            return run(inputs)
        if len(keep) != len(self._keep) or any(a is not b for a, b in zip(keep, self._keep)):
            self._entries, self._pending, self._keep = {}, {}, tuple(keep)
        entries = self._entries
        if key not in entries:
            if len(entries) >= self.max_shapes:
                return run(inputs)
            entries[key] = None
            return run(inputs)
        entry = entries[key]
        if entry is False:
            return run(inputs)
        if entry is not None:
            out = entry.launch(cupy, inputs, before)
            if out is not None:
                return out
            del entries[key]  # the state changed shape: eager, and captured again
            return run(inputs)
        pending = self._pending.pop(key, None)
        if pending is None:  # second call: eagerly, then capture it for the next one
            out = run(inputs)
            saved = host_state[0]() if host_state is not None else None
            try:
                self._pending[key] = _cuda_graphs.capture(cupy, run, list(inputs), buffers)
            except _cuda_graphs.CaptureRefused:
                entries[key] = False
            except Exception as e:  # a CUDA error: an operation capture does not allow
                entries[key] = False
                _warn_graphs_off(self.what, f"capturing it failed ({type(e).__name__}: {e})")
            finally:
                if host_state is not None:
                    host_state[1](saved)
            return out
        return self._check(cupy, key, pending, run, inputs, buffers, written, before, host_state)

    def _check(self, cupy, key, captured, run, inputs, buffers, written, before, host_state):
        """The third call: eagerly for reference, then the graph on the same batch and state."""
        state = [dict(b) for b in buffers]                       # the arrays the graph reads and writes
        saved = [{k: v.copy() for k, v in b.items()} for b in buffers]
        saved_written = [a.copy() for a in written]
        saved_host = host_state[0]() if host_state is not None else None
        want = run(inputs)
        want_state = [dict(b) for b in buffers]
        want_written = [a.copy() for a in written]
        for b, arrays, values in zip(buffers, state, saved):     # the state as it was before
            b.clear()
            b.update(arrays)
            for k, v in values.items():
                arrays[k][...] = v
        for a, v in zip(written, saved_written):
            a[...] = v
        if host_state is not None:
            host_state[1](saved_host)
        got = captured.launch(cupy, inputs, before)
        if got is None:
            del self._entries[key]
            return run(inputs)
        pairs = list(zip(_device_arrays(got), _device_arrays(want)))
        pairs += [(b[k], s[k]) for b, s in zip(buffers, want_state) for k in s]
        pairs += list(zip(written, want_written))
        same = len(_device_arrays(got)) == len(_device_arrays(want)) and all(
            a.shape == b.shape and bool(cupy.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)) for a, b in pairs)
        if same:
            self._entries[key] = captured
            return got
        self.disabled = True
        for b, s in zip(buffers, want_state):  # keep the eager call's result and state
            b.clear()
            b.update(s)
        for a, v in zip(written, want_written):
            a[...] = v
        _warn_graphs_off(self.what, "its replay did not reproduce the eager step")
        return want


def _device_arrays(out) -> list:
    """The arrays in a call's result (nested lists and tuples; None and host numbers skipped), in order."""
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _device_arrays(o)]
    return [] if out is None or not hasattr(out, "shape") else [out]


def _warn_graphs_off(what: str, why: str) -> None:
    import warnings
    warnings.warn(f"lstmfast: CUDA graphs are off for this model's {what}: {why}; it runs "
                  f"eagerly (set lstmfast.cuda.graphs.GRAPHS = 'never' to skip the attempt)", RuntimeWarning,
                  stacklevel=3)
