"""Functional LSTM API on NumPy arrays, backed by the C++ engine.

Layout and equations are those of ``cpp/lstm.h`` (stated once there and in ``reference.py``):
time-major ``x [T,B,X]``, Keras weights ``kernel [X,4H]``, ``recurrent_kernel [H,4H]``,
``bias [4H]``, gate order i, f, c, o; optional ``peephole [3,H]`` (rows i, f, o).

The dtype of ``x`` (float32 or float64) selects the engine precision; every other float array
must have the same dtype. Non-contiguous inputs are copied. NaN or Inf in the inputs are not
checked: they propagate through the arithmetic into the outputs they feed.

The training cache keeps references to ``x``, the weights and ``y``; ``y`` is returned read-only
in training mode so it cannot be changed before ``lstm_backward``. Do not modify ``x`` or the
weights in place between the two calls. ``lstm_backward`` consumes the cache (its gate buffer
becomes the gate gradients): run the forward pass again before another backward pass.

``backend=None|"cpu"|"cuda"`` picks the engine: None follows the arrays (CuPy arrays run on the GPU
through ``lstmfast.cuda``, NumPy arrays here; mixing them is a TypeError), then
``lstmfast.get_backend()`` for inputs that are neither. See ``lstmfast.cuda``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _core
from .cuda import resolve_backend
from ._results import LSTMGradients, LSTMOutput

__all__ = ["lstm_forward", "lstm_backward", "LSTMOutput", "LSTMGradients", "LSTMCache", "RECURRENT_ACTIVATIONS"]

RECURRENT_ACTIVATIONS = {"sigmoid": 0, "hard_sigmoid": 1}

_ENGINE = {
    np.dtype(np.float32): (_core.forward_f32, _core.backward_f32),
    np.dtype(np.float64): (_core.forward_f64, _core.backward_f64),
}


class LSTMCache:
    """What a training-mode forward pass keeps for ``lstm_backward`` (opaque to users)."""

    __slots__ = ("x", "kernel", "recurrent_kernel", "has_bias", "h0", "c0", "peephole", "lengths",
                 "recurrent_dropout_mask", "activation", "y", "gates", "cells", "consumed")

    def __repr__(self) -> str:
        T, B, H = self.y.shape
        state = "consumed" if self.consumed else "ready"
        return f"LSTMCache(T={T}, B={B}, X={self.x.shape[2]}, H={H}, dtype={self.x.dtype}, {state})"


def _shape(a) -> str:
    return "(" + ", ".join(str(int(d)) for d in a) + ("," if len(a) == 1 else "") + ")"


def _float_array(value, name: str, dtype: np.dtype, shape: tuple, what: str) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype`` and ``shape``; clear errors otherwise."""
    arr = _native(value if isinstance(value, np.ndarray) else np.asarray(value))
    if arr.dtype != dtype:
        if arr.dtype.kind not in "f":
            raise TypeError(f"{name} must be a float array of dtype {dtype} (like x), got dtype {arr.dtype}")
        raise TypeError(f"{name} has dtype {arr.dtype} but x is {dtype}; mixing float dtypes is not allowed "
                        f"(convert with .astype(np.{dtype}))")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {what} = {_shape(shape)}, got {_shape(arr.shape)}")
    return np.ascontiguousarray(arr)


def _optional(value, name, dtype, shape, what):
    return None if value is None else _float_array(value, name, dtype, shape, what)


def _native(arr: np.ndarray) -> np.ndarray:
    """Byte-swapped float arrays (e.g. read from a big-endian file) in native order."""
    if arr.dtype.kind == "f" and not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _check_x(x) -> np.ndarray:
    arr = _native(x if isinstance(x, np.ndarray) else np.asarray(x))
    if arr.dtype not in _ENGINE:
        raise TypeError(f"x must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"x must have shape [T, B, X] (3 dims, time-major), got shape {_shape(arr.shape)}")
    return np.ascontiguousarray(arr)


def _check_weights(kernel, recurrent_kernel, bias, X: int, dtype):
    rk = recurrent_kernel if isinstance(recurrent_kernel, np.ndarray) else np.asarray(recurrent_kernel)
    if rk.ndim != 2 or rk.shape[1] != 4 * rk.shape[0]:
        raise ValueError(f"recurrent_kernel must have shape [H, 4H], got {_shape(rk.shape)}"
                         + (" (transposed? PyTorch's weight_hh is [4H, H]: pass weight_hh.T)"
                            if rk.ndim == 2 and rk.shape[0] == 4 * rk.shape[1] else ""))
    H = rk.shape[0]
    rk = _float_array(rk, "recurrent_kernel", dtype, (H, 4 * H), "[H, 4H]")
    k = kernel if isinstance(kernel, np.ndarray) else np.asarray(kernel)
    if k.shape != (X, 4 * H):
        hint = ""
        if k.shape == (4 * H, X):
            hint = " (transposed? PyTorch's weight_ih is [4H, X]: pass weight_ih.T)"
        raise ValueError(f"kernel must have shape [X, 4H] = {_shape((X, 4 * H))} for x with X={X} and "
                         f"recurrent_kernel with H={H}, got {_shape(k.shape)}{hint}")
    k = _float_array(k, "kernel", dtype, (X, 4 * H), "[X, 4H]")
    b = _optional(bias, "bias", dtype, (4 * H,), "[4H]")
    return k, rk, b, H


def _check_lengths(lengths, T: int, B: int) -> Optional[np.ndarray]:
    if lengths is None:
        return None
    arr = lengths if isinstance(lengths, np.ndarray) else np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape [B] = ({B},), got {_shape(arr.shape)}")
    if B and (arr.min() < 0 or arr.max() > T):
        bad = int(np.flatnonzero((arr < 0) | (arr > T))[0])
        raise ValueError(f"lengths must lie in [0, T={T}], got lengths[{bad}] = {int(arr[bad])}")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _activation_code(recurrent_activation) -> int:
    if not isinstance(recurrent_activation, str) or recurrent_activation not in RECURRENT_ACTIVATIONS:
        raise ValueError(f"recurrent_activation must be one of {sorted(RECURRENT_ACTIVATIONS)}, "
                         f"got {recurrent_activation!r}")
    return RECURRENT_ACTIVATIONS[recurrent_activation]


def lstm_forward(x, kernel, recurrent_kernel, bias, h0=None, c0=None, peephole=None, lengths=None,
                 recurrent_activation="sigmoid", training=True, recurrent_dropout_mask=None,
                 backend=None) -> LSTMOutput:
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
      backend: None (follow the arrays, then ``lstmfast.get_backend()``), ``"cpu"`` or ``"cuda"``.

    Returns:
      ``LSTMOutput(y [T,B,H], h [B,H], c [B,H], cache)``.
    """
    inputs = dict(x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias, h0=h0, c0=c0, peephole=peephole,
                  lengths=lengths, recurrent_dropout_mask=recurrent_dropout_mask)
    if resolve_backend(backend, inputs.items()) == "cuda":
        from .cuda import ops as cuda_ops
        return cuda_ops.lstm_forward(**inputs, recurrent_activation=recurrent_activation, training=training)
    x = _check_x(x)
    T, B, X = x.shape
    dtype = x.dtype
    kernel, recurrent_kernel, bias, H = _check_weights(kernel, recurrent_kernel, bias, X, dtype)
    h0 = _optional(h0, "h0", dtype, (B, H), "[B, H]")
    c0 = _optional(c0, "c0", dtype, (B, H), "[B, H]")
    peephole = _optional(peephole, "peephole", dtype, (3, H), "[3, H]")
    lengths = _check_lengths(lengths, T, B)
    mask = _optional(recurrent_dropout_mask, "recurrent_dropout_mask", dtype, (B, H), "[B, H]")
    act = _activation_code(recurrent_activation)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")

    return _forward(x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, act, bool(training), mask)


def _forward(x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, act, training, mask) -> LSTMOutput:
    """The engine call behind ``lstm_forward``, for callers that validated their arguments (the
    layers): C-contiguous arrays of x's dtype, ``lengths`` int32 or None, ``act`` a code. The
    binding checks dtypes, shapes and contiguity again, so a mistake raises instead of crashing."""
    T, B, _ = x.shape
    H = recurrent_kernel.shape[0]
    dtype = x.dtype
    y = np.empty((T, B, H), dtype)
    h = np.empty((B, H), dtype)
    c = np.empty((B, H), dtype)
    gates = np.empty((T, B, 4 * H), dtype) if training else None
    cells = np.empty((T, B, H), dtype) if training else None
    _ENGINE[dtype][0](x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, mask, act, y, h, c, gates, cells)
    if not training:
        return LSTMOutput(y, h, c, None)
    cache = LSTMCache()
    cache.x, cache.kernel, cache.recurrent_kernel, cache.has_bias = x, kernel, recurrent_kernel, bias is not None
    cache.h0, cache.c0, cache.peephole, cache.lengths = h0, c0, peephole, lengths
    cache.recurrent_dropout_mask, cache.activation = mask, act
    cache.y, cache.gates, cache.cells, cache.consumed = y, gates, cells, False
    y_out = y.view()
    y_out.flags.writeable = False
    return LSTMOutput(y_out, h, c, cache)


def lstm_backward(cache, dy, dh=None, dc=None, backend=None) -> LSTMGradients:
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
    if cache is None:
        raise ValueError("lstm_backward needs the cache of a training-mode forward pass; got None "
                         "(lstm_forward(..., training=False) keeps no cache)")
    if not isinstance(cache, LSTMCache):
        raise TypeError(f"cache must be the LSTMCache from lstmfast.ops.lstm_forward, got {type(cache).__name__}")
    if resolve_backend(backend, [("cache", cache.x), ("dy", dy), ("dh", dh), ("dc", dc)]) == "cuda":
        from .cuda import ops as cuda_ops
        return cuda_ops.lstm_backward(cache, dy, dh, dc)
    x = cache.x
    T, B, X = x.shape
    H = cache.recurrent_kernel.shape[0]
    dtype = x.dtype
    dy = _optional(dy, "dy", dtype, (T, B, H), "[T, B, H]")
    dh = _optional(dh, "dh", dtype, (B, H), "[B, H]")
    dc = _optional(dc, "dc", dtype, (B, H), "[B, H]")
    return _backward(cache, dy, dh, dc)


def _backward(cache: LSTMCache, dy, dh, dc) -> LSTMGradients:
    """The engine call behind ``lstm_backward`` for callers that validated dy, dh, dc (see _forward)."""
    if cache.consumed:
        raise ValueError("this cache was already used by lstm_backward (backward consumes it); "
                         "run lstm_forward again before another backward pass")
    x = cache.x
    T, B, X = x.shape
    H = cache.recurrent_kernel.shape[0]
    dtype = x.dtype
    dx = np.empty((T, B, X), dtype)
    dkernel = np.empty((X, 4 * H), dtype)
    drecurrent_kernel = np.empty((H, 4 * H), dtype)
    dbias = np.empty((4 * H,), dtype) if cache.has_bias else None
    dh0 = np.empty((B, H), dtype)
    dc0 = np.empty((B, H), dtype)
    dpeephole = np.empty((3, H), dtype) if cache.peephole is not None else None
    _ENGINE[dtype][1](x, cache.kernel, cache.recurrent_kernel, cache.h0, cache.c0, cache.peephole, cache.lengths,
                      cache.recurrent_dropout_mask, cache.activation, cache.y, cache.gates, cache.cells, dy, dh, dc,
                      dx, dkernel, drecurrent_kernel, dbias, dh0, dc0, dpeephole)
    cache.consumed = True
    return LSTMGradients(dx, dkernel, drecurrent_kernel, dbias,
                         dh0 if cache.h0 is not None else None,
                         dc0 if cache.c0 is not None else None,
                         dpeephole)
