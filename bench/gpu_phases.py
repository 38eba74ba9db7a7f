#!/usr/bin/env python3
"""Phase times of one LSTM training step on the GPU (CUDA events, medians of 20 after 3 warm-up
calls): forward, forward + backward, the large GEMMs, each with the sequence kernels ("always")
and the step kernels ("never"), for a few (T, B, H) with X = H. Says where a step's time goes and
which recurrence path wins at a size (lstmfast.cuda.ops.SEQUENCE_KERNELS).

    python bench/gpu_phases.py [--sizes 25,64,512 80,32,128]

Needs a CUDA GPU and CuPy.
"""
import argparse
import sys

import numpy as np


def median_ms(cp, f, n=20):
    for _ in range(3):
        f()
    times = []
    for _ in range(n):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        f()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def phases(cp, T, B, H, rng):
    from lstmfast import ops
    from lstmfast.cuda import ops as cuda_ops
    X = H
    x = cp.asarray(rng.standard_normal((T, B, X)).astype(np.float32))
    weights = [cp.asarray(rng.uniform(-0.04, 0.04, s).astype(np.float32)) for s in ((X, 4 * H), (H, 4 * H), (4 * H,))]
    dy = cp.asarray(rng.standard_normal((T, B, H)).astype(np.float32))

    def step():
        out = ops.lstm_forward(x, *weights)
        ops.lstm_backward(out.cache, dy)

    gemm = cuda_ops._Gemm(cp, np.float32)
    z = cp.empty((T * B, 4 * H), np.float32)
    dkernel, dx = cp.empty((X, 4 * H), np.float32), cp.empty((T * B, X), np.float32)
    row = {"x projection GEMM": median_ms(cp, lambda: gemm(x.reshape(T * B, X), weights[0], z)),
           "dkernel GEMM": median_ms(cp, lambda: gemm(x.reshape(T * B, X), z, dkernel, trans_a=True)),
           "dx GEMM": median_ms(cp, lambda: gemm(z, weights[0], dx, trans_b=True))}
    saved = cuda_ops.SEQUENCE_KERNELS
    try:
        for policy in ("auto", "always", "never"):
            cuda_ops.SEQUENCE_KERNELS = policy
            row[f"forward {policy}"] = median_ms(cp, lambda: ops.lstm_forward(x, *weights))
            row[f"forward+backward {policy}"] = median_ms(cp, step)
    finally:
        cuda_ops.SEQUENCE_KERNELS = saved
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["25,64,512", "25,16,512", "25,64,1024", "80,32,128"],
                        metavar="T,B,H")
    args = parser.parse_args(argv)
    try:
        sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes]
        if any(len(s) != 3 or min(s) < 1 for s in sizes):
            raise ValueError
    except ValueError:
        parser.error("--sizes takes T,B,H triples of positive integers, e.g. 25,64,512")
    try:
        from lstmfast import cuda as lcuda
        cp = lcuda.require_gpu()
    except (ImportError, RuntimeError) as e:
        print(f"gpu_phases: needs a CUDA GPU and CuPy: {e}", file=sys.stderr)
        sys.exit(2)
    rng = np.random.default_rng(0)
    rows = [(size, phases(cp, *size, rng)) for size in sizes]
    names = list(rows[0][1])
    print("| T,B,H | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for size, row in rows:
        print(f"| {','.join(map(str, size))} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")


if __name__ == "__main__":
    main()
