"""One thread pool per training step: the character-level text generator's step (keras-io's
``lstm_character_level_text_generation.py`` network: LSTM(128) over 40 one-hot characters, Dense
softmax, RMSprop, batch 128) timed with each way of keeping NumPy's BLAS threads and the engine's
OpenMP threads from spinning against each other on the same cores.

Variants (each in its own process, rounds interleaved, the user's default environment unless the
variant says otherwise):
  engine          what lstmfast does: every GEMM of the step (LSTM and Dense) on the engine's GEMM
  numpy           the Dense layer's products through NumPy's BLAS (the old code): two pools
  numpy_limited   as numpy, with the BLAS limited to one thread during fit (threadpoolctl)
  numpy_passive   as numpy, with OMP_WAIT_POLICY=passive (the engine's threads sleep at once)
  numpy_blas1     as numpy, with OPENBLAS_NUM_THREADS=1 in the environment

    python bench/thread_pools.py [--rounds 3] [--batches 60]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
VARIANTS = ("engine", "numpy", "numpy_limited", "numpy_passive", "numpy_blas1")


def child(variant: str, batches: int) -> None:
    import numpy as np

    import lstmfast as keras
    from lstmfast import ops

    if variant.startswith("numpy"):
        ops._SMALL_GEMM = float("inf")  # every product takes ops.matmul's NumPy path: the old code
    text = CORPUS.read_text()[:200_000].lower()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    maxlen, step, batch = 40, 3, 128
    starts = range(0, len(text) - maxlen, step)[: batch * batches]
    x = np.zeros((len(starts), maxlen, len(chars)), dtype="bool")
    y = np.zeros((len(starts), len(chars)), dtype="bool")
    for i, s in enumerate(starts):
        for t, c in enumerate(text[s:s + maxlen]):
            x[i, t, index[c]] = 1
        y[i, index[text[s + maxlen]]] = 1
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input(shape=(maxlen, len(chars))), keras.layers.LSTM(128),
                              keras.layers.Dense(len(chars), activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(learning_rate=0.01))
    model.fit(x[:batch * 4], y[:batch * 4], batch_size=batch, epochs=1, verbose=0)  # warm-up
    limiter = None
    if variant == "numpy_limited":
        import threadpoolctl
        limiter = threadpoolctl.threadpool_limits(1, user_api="blas")
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    if limiter is not None:
        limiter.restore_original_limits()
    print(json.dumps({"variant": variant, "ms_per_batch": 1000 * seconds / batches}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batches)
        return
    variants = args.variants.split(",")
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            env = dict(os.environ)
            if variant == "numpy_passive":
                env["OMP_WAIT_POLICY"] = "passive"
            if variant == "numpy_blas1":
                env["OPENBLAS_NUM_THREADS"] = "1"
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--batches", str(args.batches)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            times[variant].append(json.loads(out.strip().splitlines()[-1])["ms_per_batch"])
    import lstmfast
    from lstmfast import _core
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS")
                    if k in os.environ)
    print(f"lstmfast {lstmfast.__version__}, simd {_core.simd_level()}, {os.cpu_count()} CPUs, "
          f"{args.rounds} rounds x {args.batches} batches of 128; environment: {env or 'defaults'}")
    print("| variant | ms per batch (median) | all rounds |")
    print("|---|---:|---|")
    for variant in variants:
        print(f"| {variant} | {statistics.median(times[variant]):.1f} | "
              + ", ".join(f"{t:.1f}" for t in times[variant]) + " |")


if __name__ == "__main__":
    main()
