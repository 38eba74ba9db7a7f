"""The sequence kernels of the GPU engine (``lstm_forward_sequence``/``lstm_backward_sequence`` in
lstm_kernels.cu: all time steps in one cooperative launch, weights in shared memory, a grid barrier
per step) run on the host and compared with the NumPy reference, so they are checked without a GPU.

g++ compiles lstm_kernels.cu as it is (the source the GPU loader builds) over ``cuda_threads.h``,
which gives every CUDA thread an OS thread, each block its own shared memory and a barrier for
__syncthreads, and runs all blocks at once as a cooperative launch does. The kernels are reached the
way a GPU reaches them: ``ops.lstm_forward``/``lstm_backward`` on the CuPy stand-in, with the plan
of ``cuda.ops._sequence_plan`` (units per block from the device's multiprocessors, shared-memory
sizes) and ``_launch_sequence`` (grid, block, shared bytes, barrier counter). What this cannot show:
memory-ordering bugs that x86's strong ordering hides, and speed."""
import ctypes
import os
import re
import subprocess
import types

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lstmfast import ops, reference
from lstmfast.cuda import _kernels
from lstmfast.cuda import ops as cuda_ops

from test_cuda import (
    _C_SCALARS,
    COMPILE_TIMEOUT_S,
    GXX,
    MODELS,
    Capture,
    Launches,
    c_arguments,
    fit_model,
    install_emulation,
    kernel_params,
)

TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
SHARED_LIMIT = 48 * 1024  # the default per-block limit: above it a launch must opt in (not emulated)
_POINTERS = {"const int*": np.dtype(np.int32), "unsigned long long*": np.dtype(np.uint64)}  # others: T*

_SHARED = "extern __shared__ __align__(16) unsigned char lf_shared_bytes[];"
_SPIN = re.compile(r"(while \(\*\(volatile unsigned long long\*\)counter < target\) \{)\s*\}")


def sequence_source() -> str:
    """lstm_kernels.cu (headers pasted, as the GPU loader builds it) for g++ over cuda_threads.h,
    with extern "C" launchers; two edits: shared memory comes from the thread's block, and the grid
    barrier's wait yields the core (there are more threads than cores)."""
    src = _kernels.source()
    assert src.count(_SHARED) == len(_kernels.SEQUENCE_NAMES), "the kernels' shared-memory declaration changed"
    src = src.replace(_SHARED, "unsigned char* lf_shared_bytes = lf_cuda_threads::shared;")
    src, spins = _SPIN.subn(r"\1 lf_cuda_threads::spin_pause(); }", src)
    assert spins == 1, "the grid barrier's wait loop changed"
    lines = ['#include "cuda_threads.h"', src]
    for kernel in _kernels.SEQUENCE_NAMES:
        params = kernel_params(kernel)
        for ctype in ("float", "double"):
            decl = ", ".join(f"{t.replace('T*', ctype + '*')} {n}" for t, n in params)
            lines += [f'extern "C" void {kernel}_{ctype}(unsigned blocks, unsigned threads, unsigned long long shared, '
                      f'{decl}) {{',
                      f"  lf_cuda_threads::launch({kernel}<{ctype}>, blocks, threads, shared, "
                      f"{', '.join(n for _, n in params)});", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="session")
def sequence_library(tmp_path_factory):
    if GXX is None:
        pytest.skip("g++ is not on PATH")
    root = tmp_path_factory.mktemp("lstm_sequence_host")
    src = root / "lstm_sequence_host.cpp"
    src.write_text(sequence_source())
    lib = root / "liblstm_sequence_host.so"
    tests_dir = os.path.dirname(os.path.abspath(__file__))  # cuda_threads.h
    cmd = [GXX, "-std=c++20", "-O2", "-pthread", "-shared", "-fPIC", "-Wall", "-Wno-unknown-pragmas",
           "-I", _kernels.KERNEL_DIR, "-I", tests_dir, "-o", str(lib), str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return ctypes.CDLL(str(lib))


class HostSequenceKernel:
    """One sequence kernel called as ``_launch_sequence`` calls a ``cupy.cuda.Function``:
    ``kernel(grid, block, args, shared_mem=..., enable_cooperative_groups=True)``, run on host
    threads. Checks the launch as a GPU would need it: cooperative, 1-D, a whole number of warps,
    the scalar types and the arrays' dtypes, and shared memory within the default limit."""

    def __init__(self, library, kernel, dtype):
        self.name, self.dtype = kernel, np.dtype(dtype)  # not .kernel: _launch_sequence reads that
        self.params = kernel_params(kernel)
        self.function = getattr(library, f"{kernel}_{_kernels.C_TYPES[self.dtype]}")
        self.function.restype = None
        self.function.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_ulonglong] + [
            _C_SCALARS[t][1] if t in _C_SCALARS else ctypes.c_void_p for t, _ in self.params]

    def __call__(self, grid, block, args, shared_mem=0, enable_cooperative_groups=False):
        assert enable_cooperative_groups, f"{self.name}: the grid barrier needs a cooperative launch"
        assert len(grid) == 1 and len(block) == 1 and block[0] % 32 == 0 and 0 < block[0] <= 1024, (grid, block)
        assert 0 < shared_mem <= SHARED_LIMIT, f"{self.name}: {shared_mem} bytes of shared memory"
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments for {len(self.params)}"
        c_args = c_arguments(self.name, self.params, args, lambda ctype: _POINTERS.get(ctype, self.dtype))

        def call(args=args):  # args: kept alive while a captured graph holds the call
            self.function(grid[0], block[0], shared_mem, *c_args)

        if Capture.ops is not None:
            Capture.add(call)
        else:
            call()
        Launches.record(self.name)


@pytest.fixture
def sequence_side(monkeypatch, host_library, sequence_library):
    """The CuPy stand-in with the recurrence on the sequence kernels (on host threads): a device of
    3 multiprocessors, so the hidden units split over up to 3 blocks."""
    cp = install_emulation(monkeypatch, host_library)
    monkeypatch.setattr(cp, "RawModule", object, raising=False)  # what _sequence_plan asks of a real CuPy
    monkeypatch.setattr(cuda_ops, "_device_limits", lambda device_id: (3, SHARED_LIMIT))
    monkeypatch.setattr(cuda_ops, "SEQUENCE_KERNELS", "always")
    kernels = {dtype: _kernels.SequenceKernels(*(HostSequenceKernel(sequence_library, k, dtype)
                                                 for k in _kernels.SEQUENCE_NAMES)) for dtype in _kernels.C_TYPES}
    monkeypatch.setattr(_kernels, "get_sequence", lambda dtype: kernels[np.dtype(dtype)])
    return types.SimpleNamespace(xp=cp, to_device=lambda a: a if a is None else cp.asarray(a))


def case(rng, T, B, X, H, dtype, lengths=False, state=False, peephole=False, mask=False):
    def draw(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)
    args = dict(x=draw(T, B, X), kernel=draw(X, 4 * H, scale=0.4), recurrent_kernel=draw(H, 4 * H, scale=0.4),
                bias=draw(4 * H, scale=0.1))
    if state:
        args.update(h0=draw(B, H, scale=0.5), c0=draw(B, H, scale=0.5))
    if peephole:
        args["peephole"] = draw(3, H, scale=0.3)
    if lengths:
        args["lengths"] = rng.integers(0, T + 1, B).astype(np.int32)
        args["lengths"][0] = T
    if mask:
        args["recurrent_dropout_mask"] = ((rng.random((B, H)) > 0.25) / 0.75).astype(dtype)
    return args, draw(T, B, H), draw(B, H), draw(B, H)


CASES = {  # (T, B, X, H) and options
    "one unit per block": ((3, 1, 2, 3), {}),
    "odd sizes, padded rows and columns": ((5, 3, 7, 10), {}),
    "everything": ((4, 6, 5, 9), dict(lengths=True, state=True, peephole=True, mask=True)),
    "hard sigmoid, lengths": ((6, 5, 4, 8), dict(lengths=True, hard=True)),
    "one step": ((1, 4, 3, 7), dict(state=True)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_sequence_kernels_match_the_reference(name, dtype, sequence_side):
    (T, B, X, H), options = CASES[name]
    options = dict(options)
    activation = "hard_sigmoid" if options.pop("hard", False) else "sigmoid"
    rng = np.random.default_rng(len(name))
    args, dy, dh, dc = case(rng, T, B, X, H, dtype, **options)
    Launches.reset()
    out = ops.lstm_forward(**{k: sequence_side.to_device(v) for k, v in args.items()},
                           recurrent_activation=activation)
    grads = ops.lstm_backward(out.cache, sequence_side.to_device(dy), sequence_side.to_device(dh),
                              sequence_side.to_device(dc))
    assert Launches.kernels == list(_kernels.SEQUENCE_NAMES), Launches.kernels  # not the step path
    want = reference.lstm_forward(**args, recurrent_activation=activation)
    want_grads = reference.lstm_backward(want.cache, dy, dh, dc)
    tol = TOLERANCE[dtype]
    for what, got, expected in [("y", out.y, want.y), ("h", out.h, want.h), ("c", out.c, want.c)] + [
            (field, g, w) for field, g, w in zip(grads._fields, grads, want_grads) if w is not None]:
        assert_allclose(ops.to_numpy(got), expected, err_msg=what, **tol)


def test_several_blocks_meet_at_the_grid_barrier(sequence_side):
    """H = 12 over 3 multiprocessors: 3 blocks of 4 units, each step's h exchanged between them."""
    plan = cuda_ops._sequence_plan(sequence_side.xp, 0, 4, 12, np.float32, forward=True)
    assert (plan.units, plan.blocks) == (4, 3)
    rng = np.random.default_rng(1)
    args, dy, _, _ = case(rng, 6, 4, 5, 12, np.float64, state=True)
    out = ops.lstm_forward(**{k: sequence_side.to_device(v) for k, v in args.items()})
    grads = ops.lstm_backward(out.cache, sequence_side.to_device(dy))
    want = reference.lstm_forward(**args)
    assert_allclose(ops.to_numpy(out.y), want.y, **TOLERANCE[np.float64])
    assert_allclose(ops.to_numpy(grads.dx), reference.lstm_backward(want.cache, dy).dx, **TOLERANCE[np.float64])


def test_a_broken_barrier_is_caught(sequence_side, monkeypatch):
    """The check can fail: with the barrier counter already past its first rounds, the blocks stop
    waiting for each other and read h before its owners wrote it (or the results differ)."""
    rng = np.random.default_rng(2)
    args, _, _, _ = case(rng, 8, 4, 5, 12, np.float64)
    real_zeros = sequence_side.xp.zeros

    def counter_ahead(shape, dtype=float):
        a = real_zeros(shape, dtype)
        if np.dtype(dtype) == np.uint64 and shape == 1:
            a[...] = 10 ** 6  # every round already "complete"
        return a

    monkeypatch.setattr(sequence_side.xp, "zeros", counter_ahead)
    out = ops.lstm_forward(**{k: sequence_side.to_device(v) for k, v in args.items()})
    want = reference.lstm_forward(**args)
    assert not np.allclose(ops.to_numpy(out.y), want.y, **TOLERANCE[np.float64])


@pytest.mark.parametrize("name", ["tutorial", "bidirectional", "masked-sequence"])
def test_models_train_on_the_sequence_kernels_like_on_the_cpu(name, sequence_side):
    """``fit`` and ``predict`` on the device with every recurrence on the sequence kernels (captured
    into the training and inference graphs too) against the same models on the CPU."""
    build = MODELS[name]
    _, cpu_history, cpu_prediction = fit_model(build, "cpu")
    Launches.reset()
    _, history, prediction = fit_model(build, "cuda")
    assert set(_kernels.SEQUENCE_NAMES) <= set(Launches.kernels), sorted(set(Launches.kernels))
    assert not {"lstm_forward_step", "lstm_backward_step"} & set(Launches.kernels)
    for key, values in cpu_history.items():
        assert_allclose(history[key], values, rtol=2e-4, atol=1e-6, err_msg=key)
    assert_allclose(prediction, cpu_prediction, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("dtype, H", [(np.float32, 64), (np.float64, 40)])
@pytest.mark.parametrize("B", [70, 45])
def test_large_batches_pass_through_shared_memory_in_chunks_of_rows(B, dtype, H, sequence_side):
    """With "always", a batch whose h does not fit beside the weights is staged R rows at a time
    (the last chunk partial); under "auto" such sizes keep the step kernels."""
    plan = cuda_ops._sequence_plan(sequence_side.xp, 0, B, H, dtype, forward=True)
    assert plan is not None and plan.rows % 4 == 0 and plan.rows < B, plan
    assert plan.shared_bytes <= SHARED_LIMIT
    args, dy, dh, dc = case(np.random.default_rng(B), 3, B, 6, H, dtype, lengths=True, state=True, mask=True)
    Launches.reset()
    out = ops.lstm_forward(**{k: sequence_side.to_device(v) for k, v in args.items()})
    assert Launches.kernels == ["lstm_forward_sequence"]
    want = reference.lstm_forward(**args)
    for what, got, expected in (("y", out.y, want.y), ("h", out.h, want.h), ("c", out.c, want.c)):
        assert_allclose(ops.to_numpy(got), expected, err_msg=what, **TOLERANCE[dtype])
    cuda_ops.SEQUENCE_KERNELS = "auto"  # monkeypatched by the fixture: restored after the test
    assert cuda_ops._sequence_plan(sequence_side.xp, 0, B, H, dtype, forward=True) is None


@pytest.mark.parametrize("seed", range(10))
def test_random_shapes_and_block_splits(seed, sequence_side, monkeypatch):
    """Seeded random (T, B, X, H), 1-5 multiprocessors (H below, at and above them; a last block
    with fewer units; H and B off multiples of 4), all options drawn, forward and backward."""
    rng = np.random.default_rng(100 + seed)
    sms = int(rng.integers(1, 6))
    monkeypatch.setattr(cuda_ops, "_device_limits", lambda device_id: (sms, SHARED_LIMIT))
    T, B, X, H = (int(v) for v in (rng.integers(1, 6), rng.integers(1, 12), rng.integers(1, 9), rng.integers(1, 23)))
    dtype = (np.float32, np.float64)[seed % 2]
    options = {k: bool(rng.integers(0, 2)) for k in ("lengths", "state", "peephole", "mask")}
    args, dy, dh, dc = case(rng, T, B, X, H, dtype, **options)
    Launches.reset()
    out = ops.lstm_forward(**{k: sequence_side.to_device(v) for k, v in args.items()})
    grads = ops.lstm_backward(out.cache, sequence_side.to_device(dy), sequence_side.to_device(dh),
                              sequence_side.to_device(dc))
    assert Launches.kernels == list(_kernels.SEQUENCE_NAMES), (T, B, X, H, sms)
    want = reference.lstm_forward(**args)
    want_grads = reference.lstm_backward(want.cache, dy, dh, dc)
    for what, got, expected in [("y", out.y, want.y), ("h", out.h, want.h), ("c", out.c, want.c)] + [
            (field, g, w) for field, g, w in zip(grads._fields, grads, want_grads) if w is not None]:
        assert_allclose(ops.to_numpy(got), expected, err_msg=f"{what} at T,B,X,H={T, B, X, H}, {sms} SMs",
                        **TOLERANCE[dtype])
