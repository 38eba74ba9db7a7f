"""The engine's own GEMM (``_core.gemm_*``) against NumPy in float64, at every SIMD level.

Shapes cover the blocking edges: M not a multiple of the row tile, N below and above the size
where the row-major A is read in place instead of packed, K across several KC blocks, 1s, and
each transpose combination with and without accumulation.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

import lstmfast
from lstmfast import _core

SHAPES = [(1, 1, 1), (7, 5, 3), (13, 17, 300), (61, 256, 129), (37, 257, 520), (130, 600, 70), (6, 16, 256)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_numpy(trans_a, trans_b, accumulate, dtype, simd):
    rng = np.random.default_rng(7)
    f = _core.gemm_f32 if dtype == np.float32 else _core.gemm_f64
    threads = lstmfast.get_num_threads()
    try:
        for M, N, K in SHAPES:
            a = rng.normal(size=(K, M) if trans_a else (M, K)).astype(dtype)
            b = rng.normal(size=(N, K) if trans_b else (K, N)).astype(dtype)
            c0 = rng.normal(size=(M, N)).astype(dtype)
            want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
            if accumulate:
                want += c0
            results = []
            for nt in (1, 2):
                lstmfast.set_num_threads(nt)
                c = c0.copy()
                f(trans_a, trans_b, a, b, c, accumulate)
                tol = 1e-4 * np.sqrt(K) if dtype == np.float32 else 1e-12 * np.sqrt(K)
                assert_allclose(c, want, rtol=tol, atol=tol, err_msg=f"M,N,K={M},{N},{K} threads={nt}")
                results.append(c)
            assert np.array_equal(results[0], results[1])   # the same bits for any thread count
    finally:
        lstmfast.set_num_threads(threads)


@pytest.mark.parametrize("size", [(9, 14, 33), (70, 90, 40)], ids=["numpy_size", "engine_size"])
@pytest.mark.parametrize("stack", [None, 3])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_ops_matmul_matches_numpy(trans_a, trans_b, dtype, stack, size):
    """``ops.matmul``, the product layers use: the engine's GEMM for float32/float64 NumPy arrays (2-D
    or stacks), NumPy's otherwise; ``out`` with and without ``accumulate``; non-contiguous inputs."""
    from lstmfast import ops
    rng = np.random.default_rng(3)
    M, N, K = size
    lead = () if stack is None else (stack,)
    a = rng.normal(size=lead + ((K, M) if trans_a else (M, K))).astype(dtype)
    b = rng.normal(size=lead + ((N, K) if trans_b else (K, N))).astype(dtype)[..., ::1]
    b_view = np.repeat(b, 2, axis=-1)[..., ::2]  # a strided view with b's values
    want = (a.swapaxes(-1, -2) if trans_a else a).astype(np.float64) @ \
        (b.swapaxes(-1, -2) if trans_b else b).astype(np.float64)
    tol = {np.float16: 2e-2, np.float32: 1e-4, np.float64: 1e-12}[dtype] * np.sqrt(K)
    got = ops.matmul(a, b_view, trans_a=trans_a, trans_b=trans_b)
    assert got.dtype == dtype and got.shape == want.shape
    assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)
    out = rng.normal(size=want.shape).astype(dtype)
    start = out.astype(np.float64)
    assert ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, out=out, accumulate=True) is out
    assert_allclose(out.astype(np.float64), start + want, rtol=tol, atol=tol)
    assert ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b, out=out) is out
    assert_allclose(out.astype(np.float64), want, rtol=tol, atol=tol)


def test_ops_matmul_runs_on_the_engine_not_numpy(monkeypatch):
    """The point of ``ops.matmul``: float32 products go to ``_core.gemm_f32`` (the engine's pool)."""
    from lstmfast import ops
    calls = []
    monkeypatch.setitem(ops._GEMMS, np.dtype(np.float32),
                        lambda *args: calls.append(args) or _core.gemm_f32(*args))
    a = np.ones((40, 50), np.float32)
    ops.matmul(a, a, trans_b=True)
    ops.matmul(np.ones((2, 40, 50), np.float32), np.ones((2, 50, 60), np.float32))
    assert len(calls) == 3
    ops.matmul(np.ones((4, 3), np.float32), np.ones((3, 5), np.float32))  # small: NumPy, on this thread
    assert len(calls) == 3


def test_a_training_step_runs_every_product_on_the_engine(monkeypatch):
    """One thread pool per step: an LSTM + TimeDistributed(Dense) + Dense model's fit sends every Dense
    product (forward, kernel gradient, input gradient) through ops.matmul, never to NumPy directly."""
    from lstmfast import ops
    calls = []
    real = ops.matmul

    def counting(a, b, *args, **kwargs):
        calls.append(_runs_on_the_engine(a, b))
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(ops, "matmul", counting)
    lstmfast.utils.set_random_seed(0)
    model = lstmfast.Sequential([lstmfast.Input((5, 3)), lstmfast.layers.LSTM(4, return_sequences=True),
                                 lstmfast.layers.TimeDistributed(lstmfast.layers.Dense(6)),
                                 lstmfast.layers.LSTM(4), lstmfast.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(8) % 2]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert len(calls) == 2 * 2 * 3  # 2 batches x 2 Dense layers x (forward, kernel grad, input grad)
    assert all(calls)


def _runs_on_the_engine(a, b):
    from lstmfast import ops
    return type(a) is np.ndarray and a.dtype == b.dtype and a.dtype in ops._GEMMS
