#!/usr/bin/env python3
"""lstmfast's own packed GEMM against NumPy's BLAS (OpenBLAS in the numpy wheel), on the shapes the
LSTM engine multiplies: the input projection, the weight gradients and dx, for the bench sizes.

    python bench/gemm_vs_blas.py [--threads 2] [--markdown PATH]

Both use the same thread count (OPENBLAS_NUM_THREADS is set before numpy is imported). Medians.
Each library is timed in its own block of repetitions, not interleaved: both keep worker threads
spinning after a call, and interleaving would mostly measure the two thread pools fighting; and
lstmfast runs every shape before NumPy runs any (see main).
The result decides whether the engine links a BLAS or keeps its own kernels (README, design notes).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the table to PATH")
    args = parser.parse_args()
    lines = []

    def out(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    import numpy as np

    import lstmfast
    from lstmfast import _core

    lstmfast.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out(f"lstmfast {lstmfast.build_info()}; numpy {np.__version__}; {args.threads} threads; medians of {args.reps}")
    out("")
    out("| shape (LSTM size X,H,B,T) | product | M x N x K | lstmfast ms | numpy ms "
        "| lstmfast GFLOP/s | numpy GFLOP/s |")
    out("|---|---|---|---:|---:|---:|---:|")
    cases = []
    for X, H, B, T in [(128, 128, 32, 80), (256, 256, 16, 150), (512, 512, 64, 100), (1024, 1024, 16, 100)]:
        TB, H4 = T * B, 4 * H
        x = rng.standard_normal((TB, X)).astype(np.float32)
        w = rng.standard_normal((X, H4)).astype(np.float32)
        dz = rng.standard_normal((TB, H4)).astype(np.float32)
        cases += [
            ((X, H, B, T), "x @ kernel", (False, False, x, w), lambda x=x, w=w: x @ w, (TB, H4, X)),
            ((X, H, B, T), "x.T @ dz", (True, False, x, dz), lambda x=x, dz=dz: x.T @ dz, (X, H4, TB)),
            ((X, H, B, T), "dz @ kernel.T", (False, True, dz, w), lambda dz=dz, w=w: dz @ w.T, (TB, X, H4)),
        ]

    def median_s(call) -> float:
        call()
        samples = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        return sorted(samples)[len(samples) // 2]

    # lstmfast first, every shape, before NumPy's BLAS has run at all: OpenBLAS's threads keep
    # polling for work for a while after each call, and on 2 cores they took one from the engine
    # (its 128-size products ran at half speed right after a NumPy product, and at full speed in a
    # process without one). The engine's threads sleep after 1000 spins, so NumPy goes second.
    results = []
    for size, name, (ta, tb, a, b), ref, (M, N, K) in cases:
        c = np.empty((M, N), np.float32)
        results.append((c, median_s(lambda: _core.gemm_f32(ta, tb, a, b, c))))
    for (size, name, _, ref, (M, N, K)), (c, mo) in zip(cases, results):
        mr = median_s(ref)
        np.testing.assert_allclose(c, ref(), rtol=1e-3, atol=1e-2 * np.sqrt(K))
        fl = 2.0 * M * N * K
        out(f"| {','.join(map(str, size))} | {name} | {M}x{N}x{K} | {mo*1e3:.2f} | {mr*1e3:.2f} "
            f"| {fl/mo/1e9:.0f} | {fl/mr/1e9:.0f} |")
    if args.markdown is not None:
        from lstmfast._atomic import write_text
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.markdown, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
