"""``lstm_forward`` / ``lstm_backward`` on CuPy arrays: the contract of ``lstmfast.ops`` (and of
``cpp/lstm.h``: layout, equations, lengths, peepholes, dropout mask) on a CUDA GPU.

Usually reached through ``lstmfast.ops.lstm_forward(..., backend="cuda")`` or by passing CuPy
arrays. Same arguments, results and errors as the CPU engine, with these differences:

* Arrays are ``cupy.ndarray`` on one device (the device of ``x``, where the call runs). Lists are
  copied there; NumPy arrays are refused (no hidden host-device copies). Non-contiguous arrays are
  copied, as on the CPU.
* ``y`` cannot be made read-only: do not modify it (nor ``x`` or the weights) in place between the
  forward and the backward call, whose weight gradients read it.
* ``lengths`` are checked on the host (one small device-to-host copy per call).

Structure (the one of ``cpp/lstm_cpu.cpp`` and haste): forward = one cuBLAS GEMM for the input
projection of all steps, then the recurrence; backward = the recurrence in reverse, then the weight
and input gradients as large GEMMs over all ``T*B`` rows. The recurrence runs one of two ways:

* step kernels: per step one cuBLAS GEMM (``h_{t-1} recurrent_kernel``, or ``dz_t
  recurrent_kernel^T`` backward) and one fused pointwise kernel. Any size.
* sequence kernels: all steps in one cooperative launch; each block keeps its slice of
  ``recurrent_kernel`` in shared memory and the blocks meet at a grid barrier after each step.
  Used for small batches whose weights fit on chip (``SEQUENCE_KERNELS``), where the step path
  is bound by two launches per step.

The kernels are in ``lstm_kernels.cu`` / ``lstm_pointwise.cuh``. GEMMs call cuBLAS directly
(``cupy.matmul`` costs ~35 us of host time per call, measured with CuPy 14.2, which is more than
a step's GEMM at these sizes). float32 GEMMs run in float32 (CuPy does not enable TF32 unless
CUPY_TF32=1 is set).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import numpy as np

from . import _kernels, require_gpu, resolve_backend
from .._results import LSTMGradients, LSTMOutput
from ..ops import LSTMCache, _activation_code, _shape
from ..ops import _check_lengths as _check_host_lengths

__all__ = ["lstm_forward", "lstm_backward", "SEQUENCE_KERNELS"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# When the recurrence runs as one sequence-kernel launch instead of per-step launches:
#   "auto": when the block's weights fit in shared memory, B <= SEQUENCE_MAX_BATCH and, backward,
#           B*H <= SEQUENCE_MAX_BACKWARD_ELEMENTS (every block reads all of dz_{t+1}, B x 4H, each
#           step: at B=64, H=1024 the per-step cuBLAS GEMM was faster, 3.35 vs 4.17 ms for a
#           training step on an H100; at B=64, H=512 the sequence kernel, 0.78 vs 1.87 ms backward);
#   "always": whenever they fit (tests, benchmarks); "never": the step kernels only.
SEQUENCE_KERNELS = "auto"
SEQUENCE_MAX_BATCH = 64
SEQUENCE_MAX_BACKWARD_ELEMENTS = 32768
SEQUENCE_THREADS = 256


# ---------------------------------------------------------------------------------------------
# Argument checks: CuPy checks nothing a raw kernel receives, so everything is checked here.
# ---------------------------------------------------------------------------------------------

def _device_array(cp, value, name: str):
    """``value`` as a CuPy array (lists are copied to the current device)."""
    if isinstance(value, cp.ndarray):
        return value
    if isinstance(value, np.ndarray):
        raise TypeError(f"{name} is a numpy.ndarray; the CUDA backend takes CuPy arrays "
                        f"(move it to the GPU with cupy.asarray(...))")
    return cp.asarray(value)


def _check_device(arr, name: str, device_id: int) -> None:
    if arr.device.id != device_id:
        raise ValueError(f"{name} is on GPU {arr.device.id} but x is on GPU {device_id}; all arrays of a call "
                         f"must be on one device")


def _float_array(cp, value, name: str, dtype, shape: tuple, what: str, device_id: int):
    """``value`` as a C-contiguous CuPy array of ``dtype`` and ``shape`` on ``device_id``."""
    arr = _device_array(cp, value, name)
    if arr.dtype != dtype:
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array of dtype {dtype} (like x), got dtype {arr.dtype}")
        raise TypeError(f"{name} has dtype {arr.dtype} but x is {dtype}; mixing float dtypes is not allowed "
                        f"(convert with .astype(cupy.{dtype}))")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {what} = {_shape(shape)}, got {_shape(arr.shape)}")
    _check_device(arr, name, device_id)
    return cp.ascontiguousarray(arr)


def _optional(cp, value, name, dtype, shape, what, device_id):
    return None if value is None else _float_array(cp, value, name, dtype, shape, what, device_id)


def _check_x(cp, x):
    arr = _device_array(cp, x, "x")
    if arr.dtype not in _FLOATS:
        raise TypeError(f"x must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"x must have shape [T, B, X] (3 dims, time-major), got shape {_shape(arr.shape)}")
    return arr


def _check_weights(cp, kernel, recurrent_kernel, bias, X: int, dtype, device_id: int):
    rk = _device_array(cp, recurrent_kernel, "recurrent_kernel")
    if rk.ndim != 2 or rk.shape[1] != 4 * rk.shape[0]:
        raise ValueError(f"recurrent_kernel must have shape [H, 4H], got {_shape(rk.shape)}"
                         + (" (transposed? PyTorch's weight_hh is [4H, H]: pass weight_hh.T)"
                            if rk.ndim == 2 and rk.shape[0] == 4 * rk.shape[1] else ""))
    H = rk.shape[0]
    rk = _float_array(cp, rk, "recurrent_kernel", dtype, (H, 4 * H), "[H, 4H]", device_id)
    k = _device_array(cp, kernel, "kernel")
    if k.shape != (X, 4 * H):
        hint = " (transposed? PyTorch's weight_ih is [4H, X]: pass weight_ih.T)" if k.shape == (4 * H, X) else ""
        raise ValueError(f"kernel must have shape [X, 4H] = {_shape((X, 4 * H))} for x with X={X} and "
                         f"recurrent_kernel with H={H}, got {_shape(k.shape)}{hint}")
    k = _float_array(cp, k, "kernel", dtype, (X, 4 * H), "[X, 4H]", device_id)
    b = _optional(cp, bias, "bias", dtype, (4 * H,), "[4H]", device_id)
    return k, rk, b, H


def _check_lengths(cp, lengths, T: int, B: int, device_id: int):
    """``lengths`` as a contiguous int32 CuPy array, checked on the host."""
    if lengths is None:
        return None
    if isinstance(lengths, cp.ndarray):
        _check_device(lengths, "lengths", device_id)
        host = cp.asnumpy(lengths)
    elif isinstance(lengths, np.ndarray):
        raise TypeError("lengths is a numpy.ndarray; the CUDA backend takes CuPy arrays "
                        "(move it to the GPU with cupy.asarray(...))")
    else:
        host = np.asarray(lengths)
    return cp.asarray(_check_host_lengths(host, T, B))  # the CPU path's checks and messages


# ---------------------------------------------------------------------------------------------
# Forward.
# ---------------------------------------------------------------------------------------------

def lstm_forward(x, kernel, recurrent_kernel, bias, h0=None, c0=None, peephole=None, lengths=None,
                 recurrent_activation="sigmoid", training=True, recurrent_dropout_mask=None) -> LSTMOutput:
    """``lstmfast.ops.lstm_forward`` on the GPU (see there for the arguments)."""
    resolve_backend("cuda", [("x", x), ("kernel", kernel), ("recurrent_kernel", recurrent_kernel),
                             ("bias", bias), ("h0", h0), ("c0", c0), ("peephole", peephole),
                             ("lengths", lengths), ("recurrent_dropout_mask", recurrent_dropout_mask)])
    cp = require_gpu()
    x = _check_x(cp, x)
    device = x.device
    with device:
        x = cp.ascontiguousarray(x)
        T, B, X = x.shape
        dtype = x.dtype
        kernel, recurrent_kernel, bias, H = _check_weights(cp, kernel, recurrent_kernel, bias, X, dtype, device.id)
        h0 = _optional(cp, h0, "h0", dtype, (B, H), "[B, H]", device.id)
        c0 = _optional(cp, c0, "c0", dtype, (B, H), "[B, H]", device.id)
        peephole = _optional(cp, peephole, "peephole", dtype, (3, H), "[3, H]", device.id)
        lengths = _check_lengths(cp, lengths, T, B, device.id)
        mask = _optional(cp, recurrent_dropout_mask, "recurrent_dropout_mask", dtype, (B, H), "[B, H]", device.id)
        act = _activation_code(recurrent_activation)
        if not isinstance(training, (bool, np.bool_)):
            raise TypeError(f"training must be a bool, got {type(training).__name__}")
        return _forward(cp, x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, act, bool(training), mask)


class _Gemm:
    """Row-major GEMMs on C-contiguous 2-D arrays, straight through cuBLAS when CuPy is the real one,
    else (CuPy stand-ins in tests) through ``cp.matmul``. One instance per ops call: it binds the
    cuBLAS handle of the current device to the current stream once."""

    def __init__(self, cp, dtype):
        self.cp, self.dtype = cp, np.dtype(dtype)
        self.lib = None
        device_module = getattr(cp.cuda, "device", None)
        if hasattr(device_module, "get_cublas_handle"):
            from cupy_backends.cuda.libs import cublas
            self.lib = cublas
            self.handle = device_module.get_cublas_handle()
            cublas.setStream(self.handle, cp.cuda.get_current_stream().ptr)
            cublas.setPointerMode(self.handle, cublas.CUBLAS_POINTER_MODE_HOST)
            self.call = cublas.sgemm if self.dtype == np.float32 else cublas.dgemm
            self.one = np.ones(1, self.dtype)    # host scalars: read by cuBLAS during the call
            self.zero = np.zeros(1, self.dtype)

    def __call__(self, a, b, out, trans_a=False, trans_b=False, accumulate=False) -> None:
        """out (+)= op(a) @ op(b); op transposes when asked. out is C-contiguous [m, n]."""
        m, n = out.shape
        k = a.shape[0] if trans_a else a.shape[1]
        if (a.shape[1] if trans_a else a.shape[0]) != m or (b.shape[1] if trans_b else b.shape[0]) != k or \
                (b.shape[0] if trans_b else b.shape[1]) != n:  # internal: cuBLAS would read out of bounds
            raise RuntimeError(f"lstmfast internal error: GEMM shapes {a.shape}{'^T' if trans_a else ''} x "
                               f"{b.shape}{'^T' if trans_b else ''} -> {out.shape}")
        if m == 0 or n == 0:
            return
        if k == 0:
            if not accumulate:
                out.fill(0)
            return
        if self.lib is None:
            product = self.cp.matmul(a.T if trans_a else a, b.T if trans_b else b)
            if accumulate:
                out += product
            else:
                out[...] = product
            return
        # Row-major C = op(a) op(b) is column-major C^T = op(b)^T op(a)^T: cuBLAS gets b first.
        lib = self.lib
        self.call(self.handle, lib.CUBLAS_OP_T if trans_b else lib.CUBLAS_OP_N,
                  lib.CUBLAS_OP_T if trans_a else lib.CUBLAS_OP_N, n, m, k, self.one.ctypes.data,
                  b.data.ptr, b.shape[1], a.data.ptr, a.shape[1],
                  (self.one if accumulate else self.zero).ctypes.data, out.data.ptr, n)


class _SequencePlan(NamedTuple):
    units: int         # hidden units per block (U)
    blocks: int        # ceil(H / U) <= number of SMs
    shared_bytes: int  # dynamic shared memory of the kernel


@functools.lru_cache(maxsize=None)
def _device_limits(device_id: int) -> Tuple[int, int]:
    """(multiprocessors, opt-in shared memory bytes per block) of a device."""
    import cupy
    attributes = cupy.cuda.Device(device_id).attributes
    return int(attributes["MultiProcessorCount"]), int(attributes["MaxSharedMemoryPerBlockOptin"])


def _round4(v: int) -> int:
    return (v + 3) & ~3


def _reduction_elements(rows: int, cols: int, threads: int) -> int:
    """Partial sums of a block's product in the sequence kernels (reduction_elements in the .cu)."""
    tiles = (rows // 4) * (cols // 4)
    return tiles * 16 if tiles >= threads else (threads // tiles) * tiles * 16


def _sequence_plan(cp, device_id: int, B: int, H: int, dtype, forward: bool) -> Optional[_SequencePlan]:
    """How to run the recurrence as one sequence-kernel launch, or None for the step kernels."""
    if SEQUENCE_KERNELS == "never" or not hasattr(cp, "RawModule"):  # "never", or a CuPy stand-in
        return None
    if SEQUENCE_KERNELS == "auto" and (B > SEQUENCE_MAX_BATCH or
                                       (not forward and B * H > SEQUENCE_MAX_BACKWARD_ELEMENTS)):
        return None
    sms, shared_limit = _device_limits(device_id)
    units = -(-H // sms)
    blocks = -(-H // units)
    Bp, Hp = _round4(B), _round4(H)
    if forward:  # the block's 4U columns, h of every row, partial sums (see lstm_kernels.cu)
        elements = 4 * units * Hp + Bp * Hp + _reduction_elements(Bp, 4 * units, SEQUENCE_THREADS)
    else:        # the block's rows (padded to 4), partial sums
        elements = _round4(units) * 4 * H + _reduction_elements(Bp, _round4(units), SEQUENCE_THREADS)
    shared = elements * np.dtype(dtype).itemsize
    if shared > shared_limit:
        return None
    return _SequencePlan(units, blocks, shared)


def _launch_sequence(cp, kernel, plan: _SequencePlan, args) -> None:
    """One cooperative launch: all blocks resident at once, as the grid barrier needs (the driver
    refuses the launch rather than deadlock when they do not fit)."""
    # RawModule.get_function gives a RawKernel; its .kernel is the cupy.cuda.Function, whose call
    # takes enable_cooperative_groups.
    function = getattr(kernel, "kernel", kernel)
    if plan.shared_bytes > 48 * 1024:  # above the default limit a kernel must opt in
        driver = cp.cuda.driver
        # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES is 8 in cuda.h
        driver.funcSetAttribute(function.ptr, getattr(driver, "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", 8),
                                plan.shared_bytes)
    barrier = cp.zeros(1, np.uint64)
    function((plan.blocks,), (SEQUENCE_THREADS,), tuple(args) + (barrier,), shared_mem=plan.shared_bytes,
             enable_cooperative_groups=True)


def _forward(cp, x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths, act, training, mask) -> LSTMOutput:
    """The GPU forward pass on checked arrays (contiguous, one dtype and device; lengths int32)."""
    T, B, X = x.shape
    H = recurrent_kernel.shape[0]
    dtype = x.dtype
    y = cp.empty((T, B, H), dtype)                                  # [T,B,H]
    h = cp.zeros((B, H), dtype) if h0 is None else h0.copy()        # [B,H] running state, then final h
    c = cp.zeros((B, H), dtype) if c0 is None else c0.copy()        # [B,H]
    gates = cp.empty((T, B, 4 * H), dtype) if training else None    # [T,B,4H] activated i, f, g, o
    cells = cp.empty((T, B, H), dtype) if training else None        # [T,B,H]  c_t
    if T and B and H:
        gemm = _Gemm(cp, dtype)
        z_in = gates if training else cp.empty((T, B, 4 * H), dtype)  # [T,B,4H] x kernel (no bias)
        gemm(x.reshape(T * B, X), kernel, z_in.reshape(T * B, 4 * H))
        z_rec = cp.empty((B, 4 * H), dtype)                         # [B,4H] recurrent product of a step
        plan = _sequence_plan(cp, x.device.id, B, H, dtype, forward=True)
        if plan is not None:
            hin = cp.empty((2, B, H), dtype)                        # [2,B,H] h_{t-1} * mask, ping-pong
            _launch_sequence(cp, _kernels.get_sequence(dtype).forward, plan,
                             [np.int64(T), np.int64(B), np.int64(H), np.int32(act), np.int64(plan.units), z_in,
                              recurrent_kernel, bias, peephole, lengths, mask, h, c, hin, z_rec, y, gates, cells])
        else:
            kern = _kernels.get(dtype)
            hm = None if mask is None else h * mask                 # [B,H] h_{t-1} * mask
            h_in = h if mask is None else hm                        # what the recurrent GEMM reads
            grid, block = (_kernels.blocks(B * H),), (_kernels.THREADS_PER_BLOCK,)
            args = [None, np.int64(T), np.int64(B), np.int64(H), np.int32(act), z_in, z_rec, bias, peephole,
                    lengths, mask, h, c, hm, y, gates, cells]
            for t in range(T):
                gemm(h_in, recurrent_kernel, z_rec)
                args[0] = np.int64(t)
                kern.forward_step(grid, block, tuple(args))
    if not training:
        return LSTMOutput(y, h, c, None)
    cache = LSTMCache()
    cache.x, cache.kernel, cache.recurrent_kernel, cache.has_bias = x, kernel, recurrent_kernel, bias is not None
    cache.h0, cache.c0, cache.peephole, cache.lengths = h0, c0, peephole, lengths
    cache.recurrent_dropout_mask, cache.activation = mask, act
    cache.y, cache.gates, cache.cells, cache.consumed = y, gates, cells, False
    return LSTMOutput(y, h, c, cache)


# ---------------------------------------------------------------------------------------------
# Backward.
# ---------------------------------------------------------------------------------------------

def lstm_backward(cache, dy, dh=None, dc=None) -> LSTMGradients:
    """``lstmfast.ops.lstm_backward`` on the GPU, for the cache of a CUDA forward pass."""
    if cache is None:
        raise ValueError("lstm_backward needs the cache of a training-mode forward pass; got None "
                         "(lstm_forward(..., training=False) keeps no cache)")
    if not isinstance(cache, LSTMCache):
        raise TypeError(f"cache must be the LSTMCache from lstmfast.ops.lstm_forward, got {type(cache).__name__}")
    resolve_backend("cuda", [("cache", cache.x), ("dy", dy), ("dh", dh), ("dc", dc)])
    cp = require_gpu()
    x = cache.x
    T, B, X = x.shape
    H = cache.recurrent_kernel.shape[0]
    dtype = x.dtype
    device = x.device
    with device:
        dy = _optional(cp, dy, "dy", dtype, (T, B, H), "[T, B, H]", device.id)
        dh = _optional(cp, dh, "dh", dtype, (B, H), "[B, H]", device.id)
        dc = _optional(cp, dc, "dc", dtype, (B, H), "[B, H]", device.id)
        return _backward(cp, cache, dy, dh, dc)


def _backward(cp, cache: LSTMCache, dy, dh, dc) -> LSTMGradients:
    """The GPU backward pass for checked dy, dh, dc (contiguous, x's dtype and device, or None)."""
    if cache.consumed:
        raise ValueError("this cache was already used by lstm_backward (backward consumes it); "
                         "run lstm_forward again before another backward pass")
    x, kernel, recurrent_kernel = cache.x, cache.kernel, cache.recurrent_kernel
    h0, c0, peephole, mask = cache.h0, cache.c0, cache.peephole, cache.recurrent_dropout_mask
    T, B, X = x.shape
    H = recurrent_kernel.shape[0]
    TB, H4 = T * B, 4 * H
    dtype = x.dtype
    gates, cells = cache.gates, cache.cells                      # [T,B,4H] becomes dz; [T,B,H]
    dh0 = cp.zeros((B, H), dtype) if dh is None else dh.copy()    # [B,H] carries dL/dh back in time
    dc0 = cp.zeros((B, H), dtype) if dc is None else dc.copy()    # [B,H] carries dL/dc back in time
    cache.consumed = True
    gemm = _Gemm(cp, dtype)
    if T and B and H:
        dh_rec = cp.empty((B, H), dtype)                              # [B,H] dz_{t+1} recurrent_kernel^T
        plan = _sequence_plan(cp, x.device.id, B, H, dtype, forward=False)
        if plan is not None:  # the kernel also adds dz_0 recurrent_kernel^T (masked) to dh0
            _launch_sequence(cp, _kernels.get_sequence(dtype).backward, plan,
                             [np.int64(T), np.int64(B), np.int64(H), np.int32(cache.activation),
                              np.int64(plan.units), recurrent_kernel, gates, cells, c0, peephole, cache.lengths,
                              mask, dy, dh_rec, dh0, dc0])
        else:
            kern = _kernels.get(dtype)
            grid, block = (_kernels.blocks(B * H),), (_kernels.THREADS_PER_BLOCK,)
            args = [None, np.int64(T), np.int64(B), np.int64(H), np.int32(cache.activation), gates, cells, c0,
                    peephole, cache.lengths, mask, dy, None, dh0, dc0]
            for t in range(T - 1, -1, -1):
                args[0] = np.int64(t)
                args[12] = dh_rec if t < T - 1 else None
                kern.backward_step(grid, block, tuple(args))
                gemm(gates[t], recurrent_kernel, dh_rec, trans_b=True)
            dh0 += dh_rec if mask is None else dh_rec * mask  # what dz_0 sends back to h0 (0 where lengths = 0)

    dz = gates.reshape(TB, H4)                                   # [T*B,4H] gate gradients
    dkernel = cp.empty((X, H4), dtype)                           # [X,4H]
    gemm(x.reshape(TB, X), dz, dkernel, trans_a=True)
    # drecurrent_kernel: the h_{t-1} each step multiplied (masked): h0 at t = 0, y_{t-1} after
    # (rows at padded steps have dz = 0, so what y holds there does not matter).
    drecurrent_kernel = cp.zeros((H, H4), dtype)                 # [H,4H]
    if h0 is not None and T and B:
        gemm(h0 if mask is None else h0 * mask, dz[:B], drecurrent_kernel, trans_a=True, accumulate=True)
    if T > 1 and B:
        h_prev = cache.y[:-1] if mask is None else cache.y[:-1] * mask
        gemm(h_prev.reshape((T - 1) * B, H), dz[B:], drecurrent_kernel, trans_a=True, accumulate=True)
    dx = cp.empty((T, B, X), dtype)                              # [T,B,X]
    gemm(dz, kernel, dx.reshape(TB, X), trans_b=True)
    dbias = dz.sum(axis=0) if cache.has_bias else None           # [4H]
    dpeephole = None
    if peephole is not None:                                     # [3,H]
        dzi, dzf, dzo = gates[:, :, :H], gates[:, :, H:2 * H], gates[:, :, 3 * H:]
        dpeephole = cp.zeros((3, H), dtype)
        dpeephole[2] = (dzo * cells).sum(axis=(0, 1))
        if T > 1:  # c_{t-1} = cells[t-1] for t >= 1, c0 (or zeros) for t = 0
            dpeephole[0] = (dzi[1:] * cells[:-1]).sum(axis=(0, 1))
            dpeephole[1] = (dzf[1:] * cells[:-1]).sum(axis=(0, 1))
        if c0 is not None and T:
            dpeephole[0] += (dzi[0] * c0).sum(axis=0)
            dpeephole[1] += (dzf[0] * c0).sum(axis=0)
    return LSTMGradients(dx, dkernel, drecurrent_kernel, dbias,
                         dh0 if h0 is not None else None,
                         dc0 if c0 is not None else None,
                         dpeephole)
