"""The GPU engine: the contract of ``cpp/lstm.h`` (layout, equations, lengths, peepholes, dropout
mask) on a CUDA GPU, driven through CuPy. ``forward`` and ``backward`` take the arguments of the C++
binding (``lstmfast._core.forward`` / ``backward``, see ``_core.pyi``), by the same names, as CuPy
arrays on one device: the caller (``lstmfast.ops``, the engine boundary, which checks every
argument once) allocates every output and the engine fills them. Reached through
``lstmfast.ops.lstm_forward`` with CuPy arrays or ``backend="cuda"``.

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
from types import ModuleType
from typing import NamedTuple, Optional, Tuple

import numpy as np

from .._typing import Array
from . import _kernels, require_gpu

__all__ = ["forward", "backward", "matmul", "bfloat16_rounded", "SEQUENCE_KERNELS"]

# When the recurrence runs as one sequence-kernel launch instead of per-step launches:
#   "auto": when the block's weights fit in shared memory, B <= SEQUENCE_MAX_BATCH, forward, h of
#           every row fits beside them and, backward, B*H <= SEQUENCE_MAX_BACKWARD_ELEMENTS (every
#           block reads all of dz_{t+1}, B x 4H, each step: at B=64, H=1024 the per-step cuBLAS
#           GEMM was faster, 3.35 vs 4.17 ms for a training step on an H100; at B=64, H=512 the
#           sequence kernel, 0.78 vs 1.87 ms backward);
#   "always": whenever the weights fit, the forward kernel staging h in chunks of rows when all
#           rows do not fit (not yet timed on a GPU: "auto" does not choose it); for tests and
#           benchmarks; "never": the step kernels only.
SEQUENCE_KERNELS = "auto"
SEQUENCE_MAX_BATCH = 64
SEQUENCE_MAX_BACKWARD_ELEMENTS = 32768
SEQUENCE_THREADS = 256


# ---------------------------------------------------------------------------------------------
# Safety net, as in the C++ binding: a direct call with wrong arrays raises instead of letting a
# kernel read or write out of bounds. The messages users see come from lstmfast.ops.
# ---------------------------------------------------------------------------------------------

def _expect(cp, dtype, arrays) -> None:
    """Each (name, array, shape, optional) is a C-contiguous CuPy array of ``dtype`` (int32 for
    lengths) and ``shape`` on the current device, or None where optional."""
    device_id = cp.cuda.Device().id
    for name, value, shape, optional in arrays:
        if value is None:
            if optional:
                continue
            raise ValueError(f"{name} is required, got None")
        if not isinstance(value, cp.ndarray):
            raise TypeError(f"{name} must be a cupy.ndarray (the GPU engine; call lstmfast.ops), "
                            f"got {type(value).__name__}")
        want = np.dtype(np.int32) if name == "lengths" else dtype
        if value.dtype != want or value.shape != shape or not value.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous {want} array of shape {shape}, got "
                             f"{value.dtype} {value.shape}{'' if value.flags.c_contiguous else ' (strided)'}")
        if value.device.id != device_id:
            raise ValueError(f"{name} is on GPU {value.device.id}, the call runs on GPU {device_id}")


def _sizes(cp, x, recurrent_kernel):
    for name, value, ndim in (("x", x, 3), ("recurrent_kernel", recurrent_kernel, 2)):
        if not isinstance(value, cp.ndarray) or value.ndim != ndim:
            raise TypeError(f"{name} must be a {ndim}-D cupy.ndarray (the GPU engine; call lstmfast.ops)")
    return (*x.shape, recurrent_kernel.shape[0])


def _copy_or_zero(out, value) -> None:
    if value is None:
        out.fill(0)
    else:
        out[...] = value


def _check_activation(code) -> int:
    if code not in (0, 1) or isinstance(code, bool):
        raise ValueError(f"recurrent_activation code must be 0 (sigmoid) or 1 (hard_sigmoid), got {code!r}")
    return int(code)


# cuBLAS enums (cublas_api.h, library_types.h) for cublasGemmEx.
_CUDA_R_32F = 0
_CUBLAS_COMPUTE_32F_FAST_16BF = 75  # float32 in and out; operands may be rounded to bfloat16 (or TF32)
_CUBLAS_GEMM_DEFAULT = -1
PRECISION_BFLOAT16 = 1  # lstm.h's Precision::bfloat16 (0: native)


def bfloat16_rounded(xp: ModuleType, a: Array) -> Array:
    """``a`` (float32) with each element rounded to the nearest bfloat16 (ties to even; NaN stays
    NaN, overflow goes to infinity), as float32: what a bfloat16 product's operands become. The
    CuPy stand-ins' products use it in place of cuBLAS's conversion."""
    bits = xp.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000  # the upper 16 bits, rounded to even
    return xp.where(xp.isnan(a), a, rounded.view(np.float32))


class _Gemm:
    """Row-major GEMMs on C-contiguous 2-D arrays, straight through cuBLAS when CuPy is the real one,
    else (CuPy stand-ins in tests) through ``cp.matmul``. One instance per ops call: it binds the
    cuBLAS handle of the current device to the current stream once. Precision code 1 (bfloat16,
    float32 arrays): cublasGemmEx with ``CUBLAS_COMPUTE_32F_FAST_16BF``, tensor cores with float32
    accumulation (the stand-ins round the operands with ``bfloat16_rounded``)."""

    def __init__(self, cp, dtype, precision: int = 0):
        self.cp, self.dtype = cp, np.dtype(dtype)
        if precision not in (0, PRECISION_BFLOAT16) or isinstance(precision, bool) or (
                precision and self.dtype != np.float32):
            raise ValueError(f"precision code must be 0 (native) or 1 (bfloat16, float32 arrays), got {precision!r} "
                             f"with {self.dtype} arrays")
        self.bf16 = precision == PRECISION_BFLOAT16
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
            if self.bf16:
                a, b = bfloat16_rounded(self.cp, a), bfloat16_rounded(self.cp, b)
            product = self.cp.matmul(a.T if trans_a else a, b.T if trans_b else b)
            if accumulate:
                out += product
            else:
                out[...] = product
            return
        # Row-major C = op(a) op(b) is column-major C^T = op(b)^T op(a)^T: cuBLAS gets b first.
        lib = self.lib
        op_a = lib.CUBLAS_OP_T if trans_a else lib.CUBLAS_OP_N
        op_b = lib.CUBLAS_OP_T if trans_b else lib.CUBLAS_OP_N
        beta = (self.one if accumulate else self.zero).ctypes.data
        if self.bf16:
            lib.gemmEx(self.handle, op_b, op_a, n, m, k, self.one.ctypes.data, b.data.ptr, _CUDA_R_32F, b.shape[1],
                       a.data.ptr, _CUDA_R_32F, a.shape[1], beta, out.data.ptr, _CUDA_R_32F, n,
                       _CUBLAS_COMPUTE_32F_FAST_16BF, _CUBLAS_GEMM_DEFAULT)
        else:
            self.call(self.handle, op_b, op_a, n, m, k, self.one.ctypes.data, b.data.ptr, b.shape[1], a.data.ptr,
                      a.shape[1], beta, out.data.ptr, n)


def matmul(a: Array, b: Array, trans_a: bool, trans_b: bool, out: Optional[Array], accumulate: bool,
           precision: int) -> Array:
    """``lstmfast.ops.matmul`` for float32 CuPy arrays on the current device (2-D, or stacks of one
    length), through cuBLAS at ``precision`` (a code, as ``forward``'s): into ``out`` (C-contiguous,
    the product's shape, checked by the caller) or a new array."""
    cp = require_gpu()
    a, b = cp.ascontiguousarray(a), cp.ascontiguousarray(b)
    M = a.shape[-1] if trans_a else a.shape[-2]
    N = b.shape[-2] if trans_b else b.shape[-1]
    if out is None:
        out = cp.empty(a.shape[:-2] + (M, N), a.dtype)
        accumulate = False
    gemm = _Gemm(cp, a.dtype, precision)
    if a.ndim == 2:
        gemm(a, b, out, trans_a, trans_b, accumulate)
    else:
        for i in range(a.shape[0]):
            gemm(a[i], b[i], out[i], trans_a, trans_b, accumulate)
    return out


class _SequencePlan(NamedTuple):
    units: int         # hidden units per block (U)
    blocks: int        # ceil(H / U) <= number of SMs
    shared_bytes: int  # dynamic shared memory of the kernel
    rows: int          # forward: rows of h each block stages at a time (R, a multiple of 4)


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
    """How to run the recurrence as one sequence-kernel launch, or None for the step kernels. The
    forward kernel stages h in chunks of rows when all of them do not fit beside the weights
    ("always" only: "auto" keeps the one-chunk sizes it was measured on)."""
    if SEQUENCE_KERNELS == "never" or not hasattr(cp, "RawModule"):  # "never", or a CuPy stand-in
        return None
    if SEQUENCE_KERNELS == "auto" and (B > SEQUENCE_MAX_BATCH or
                                       (not forward and B * H > SEQUENCE_MAX_BACKWARD_ELEMENTS)):
        return None
    sms, shared_limit = _device_limits(device_id)
    units = -(-H // sms)
    blocks = -(-H // units)
    Bp, Hp = _round4(B), _round4(H)
    itemsize = np.dtype(dtype).itemsize
    if forward:  # the block's 4U columns, h of R rows, partial sums (see lstm_kernels.cu)
        def forward_elements(rows):
            return 4 * units * Hp + rows * Hp + _reduction_elements(rows, 4 * units, SEQUENCE_THREADS)
        rows = Bp
        while rows > 4 and forward_elements(rows) * itemsize > shared_limit:
            rows -= 4
        if rows < Bp and SEQUENCE_KERNELS == "auto":
            return None
        elements = forward_elements(rows)
    else:        # the block's rows (padded to 4), partial sums
        rows = Bp
        elements = _round4(units) * 4 * H + _reduction_elements(Bp, _round4(units), SEQUENCE_THREADS)
    shared = elements * itemsize
    if shared > shared_limit:
        return None
    return _SequencePlan(units, blocks, shared, rows)


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


def forward(x: Array, kernel: Array, recurrent_kernel: Array, bias: Optional[Array], h0: Optional[Array],
            c0: Optional[Array], peephole: Optional[Array], lengths: Optional[Array],
            recurrent_dropout_mask: Optional[Array], recurrent_activation: int, y: Array, h: Array, c: Array,
            gates: Optional[Array], cells: Optional[Array], precision: int = 0) -> None:
    """The forward pass: fills ``y``, ``h``, ``c`` and, in training, ``gates`` and ``cells``
    (``_core.forward``'s arguments; CuPy arrays on the current device). ``precision`` 1 (bfloat16):
    the cuBLAS products round their operands to bfloat16 (``_Gemm``); the sequence kernels'
    recurrent product stays float32."""
    cp = require_gpu()
    T, B, X, H = _sizes(cp, x, recurrent_kernel)
    dtype = x.dtype
    act = _check_activation(recurrent_activation)
    _expect(cp, dtype, [("x", x, (T, B, X), False), ("kernel", kernel, (X, 4 * H), False),
                        ("recurrent_kernel", recurrent_kernel, (H, 4 * H), False), ("bias", bias, (4 * H,), True),
                        ("h0", h0, (B, H), True), ("c0", c0, (B, H), True), ("peephole", peephole, (3, H), True),
                        ("lengths", lengths, (B,), True),
                        ("recurrent_dropout_mask", recurrent_dropout_mask, (B, H), True),
                        ("y", y, (T, B, H), False), ("h", h, (B, H), False), ("c", c, (B, H), False),
                        ("gates", gates, (T, B, 4 * H), True), ("cells", cells, (T, B, H), True)])
    if (gates is None) != (cells is None):
        raise ValueError("gates and cells must both be given (training) or both be None (inference)")
    training = gates is not None
    mask = recurrent_dropout_mask
    _copy_or_zero(h, h0)  # h, c [B,H]: the running state, then the final one
    _copy_or_zero(c, c0)
    if not (T and B and H):
        return
    gemm = _Gemm(cp, dtype, precision)
    z_in = gates if training else cp.empty((T, B, 4 * H), dtype)  # [T,B,4H] x kernel (no bias)
    gemm(x.reshape(T * B, X), kernel, z_in.reshape(T * B, 4 * H))
    z_rec = cp.empty((B, 4 * H), dtype)                         # [B,4H] recurrent product of a step
    plan = _sequence_plan(cp, x.device.id, B, H, dtype, forward=True)
    if plan is not None:
        hin = cp.empty((2, B, H), dtype)                        # [2,B,H] h_{t-1} * mask, ping-pong
        _launch_sequence(cp, _kernels.get_sequence(dtype).forward, plan,
                         [np.int64(T), np.int64(B), np.int64(H), np.int32(act), np.int64(plan.units),
                          np.int64(plan.rows), z_in,
                          recurrent_kernel, bias, peephole, lengths, mask, h, c, hin, z_rec, y, gates, cells])
        return
    kern = _kernels.get(dtype)
    hm = None if mask is None else h * mask                     # [B,H] h_{t-1} * mask
    h_in = h if mask is None else hm                            # what the recurrent GEMM reads
    grid, block = (_kernels.blocks(B * H),), (_kernels.THREADS_PER_BLOCK,)
    args = [None, np.int64(T), np.int64(B), np.int64(H), np.int32(act), z_in, z_rec, bias, peephole,
            lengths, mask, h, c, hm, y, gates, cells]
    for t in range(T):
        gemm(h_in, recurrent_kernel, z_rec)
        args[0] = np.int64(t)
        kern.forward_step(grid, block, tuple(args))


# ---------------------------------------------------------------------------------------------
# Backward.
# ---------------------------------------------------------------------------------------------

def backward(x: Array, kernel: Array, recurrent_kernel: Array, h0: Optional[Array], c0: Optional[Array],
             peephole: Optional[Array], lengths: Optional[Array], recurrent_dropout_mask: Optional[Array],
             recurrent_activation: int, y: Array, gates: Array, cells: Array, dy: Optional[Array], dh: Optional[Array],
             dc: Optional[Array], dx: Array, dkernel: Array, drecurrent_kernel: Array, dbias: Optional[Array],
             dh0: Array, dc0: Array, dpeephole: Optional[Array], precision: int = 0) -> None:
    """The backward pass: fills ``dx``, ``dkernel``, ``drecurrent_kernel``, ``dh0``, ``dc0`` and, when
    given, ``dbias`` and ``dpeephole``; ``gates`` becomes the gate gradients (``_core.backward``'s
    arguments; CuPy arrays on the current device; ``precision`` as in ``forward``)."""
    cp = require_gpu()
    T, B, X, H = _sizes(cp, x, recurrent_kernel)
    dtype = x.dtype
    act = _check_activation(recurrent_activation)
    mask = recurrent_dropout_mask
    _expect(cp, dtype, [("x", x, (T, B, X), False), ("kernel", kernel, (X, 4 * H), False),
                        ("recurrent_kernel", recurrent_kernel, (H, 4 * H), False), ("h0", h0, (B, H), True),
                        ("c0", c0, (B, H), True), ("peephole", peephole, (3, H), True),
                        ("lengths", lengths, (B,), True), ("recurrent_dropout_mask", mask, (B, H), True),
                        ("y", y, (T, B, H), False), ("gates", gates, (T, B, 4 * H), False),
                        ("cells", cells, (T, B, H), False), ("dy", dy, (T, B, H), True), ("dh", dh, (B, H), True),
                        ("dc", dc, (B, H), True), ("dx", dx, (T, B, X), False), ("dkernel", dkernel, (X, 4 * H), False),
                        ("drecurrent_kernel", drecurrent_kernel, (H, 4 * H), False), ("dbias", dbias, (4 * H,), True),
                        ("dh0", dh0, (B, H), False), ("dc0", dc0, (B, H), False),
                        ("dpeephole", dpeephole, (3, H), True)])
    if (peephole is None) != (dpeephole is None):
        raise ValueError("dpeephole must be given exactly when peephole is")
    TB, H4 = T * B, 4 * H
    _copy_or_zero(dh0, dh)  # dh0, dc0 [B,H]: carry dL/dh and dL/dc back in time
    _copy_or_zero(dc0, dc)
    gemm = _Gemm(cp, dtype, precision)
    if T and B and H:
        dh_rec = cp.empty((B, H), dtype)                              # [B,H] dz_{t+1} recurrent_kernel^T
        plan = _sequence_plan(cp, x.device.id, B, H, dtype, forward=False)
        if plan is not None:  # the kernel also adds dz_0 recurrent_kernel^T (masked) to dh0
            _launch_sequence(cp, _kernels.get_sequence(dtype).backward, plan,
                             [np.int64(T), np.int64(B), np.int64(H), np.int32(act), np.int64(plan.units),
                              recurrent_kernel, gates, cells, c0, peephole, lengths, mask, dy, dh_rec, dh0, dc0])
        else:
            kern = _kernels.get(dtype)
            grid, block = (_kernels.blocks(B * H),), (_kernels.THREADS_PER_BLOCK,)
            args = [None, np.int64(T), np.int64(B), np.int64(H), np.int32(act), gates, cells, c0,
                    peephole, lengths, mask, dy, None, dh0, dc0]
            for t in range(T - 1, -1, -1):
                args[0] = np.int64(t)
                args[12] = dh_rec if t < T - 1 else None
                kern.backward_step(grid, block, tuple(args))
                gemm(gates[t], recurrent_kernel, dh_rec, trans_b=True)
            dh0 += dh_rec if mask is None else dh_rec * mask  # what dz_0 sends back to h0 (0 where lengths = 0)

    dz = gates.reshape(TB, H4)                                   # [T*B,4H] gate gradients
    gemm(x.reshape(TB, X), dz, dkernel, trans_a=True)
    # drecurrent_kernel: the h_{t-1} each step multiplied (masked): h0 at t = 0, y_{t-1} after
    # (rows at padded steps have dz = 0, so what y holds there does not matter).
    drecurrent_kernel.fill(0)
    if h0 is not None and T and B:
        gemm(h0 if mask is None else h0 * mask, dz[:B], drecurrent_kernel, trans_a=True, accumulate=True)
    if T > 1 and B:
        h_prev = y[:-1] if mask is None else y[:-1] * mask
        gemm(h_prev.reshape((T - 1) * B, H), dz[B:], drecurrent_kernel, trans_a=True, accumulate=True)
    gemm(dz, kernel, dx.reshape(TB, X), trans_b=True)
    if dbias is not None:
        dz.sum(axis=0, out=dbias)
    if dpeephole is not None:
        dzi, dzf, dzo = gates[:, :, :H], gates[:, :, H:2 * H], gates[:, :, 3 * H:]
        dpeephole.fill(0)
        dpeephole[2] = (dzo * cells).sum(axis=(0, 1))
        if T > 1:  # c_{t-1} = cells[t-1] for t >= 1, c0 (or zeros) for t = 0
            dpeephole[0] = (dzi[1:] * cells[:-1]).sum(axis=(0, 1))
            dpeephole[1] = (dzf[1:] * cells[:-1]).sum(axis=(0, 1))
        if c0 is not None and T:
            dpeephole[0] += (dzi[0] * c0).sum(axis=0)
            dpeephole[1] += (dzf[0] * c0).sum(axis=0)

