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
