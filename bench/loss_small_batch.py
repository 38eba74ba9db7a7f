#!/usr/bin/env python3
"""Per-call cost of the losses and metrics on the shapes of the tutorials, old code against new.

    python bench/loss_small_batch.py [--old-ref 76bc1e5] [--seconds 0.2]

"old" is ``python/lstmfast/losses.py`` and ``metrics.py`` as committed at ``--old-ref`` (read with
``git show``, imported by path; the default is the last commit that wrote each loss three times, with
a pure-Python path for tiny batches); "new" is the installed ``lstmfast``. Each row times
``loss.value_and_grad(y, p)`` or ``metric.update_state(y, p)`` on fixed arrays: the best of 7
repeats of about ``--seconds`` each, old and new alternating, in microseconds per call. Shapes:

- echo: the echo tutorial, batch 1, a 10-way softmax, categorical_crossentropy and "acc"
  (categorical accuracy); each of its 10,000 updates runs one of each.
- imdb: the IMDB tutorial, batch 32, one sigmoid output, binary_crossentropy and "accuracy"
  (binary accuracy).
- seq2seq: the addition task's decoder output, batch 128 x 4 steps x 13 classes, one-hot targets,
  categorical_crossentropy and "acc".
- text: a character model's sequence output, batch 64 x 100 steps x 65 classes, integer labels,
  sparse_categorical_crossentropy: the large case, where the per-call overhead is noise.
"""
import argparse
import importlib.util
import subprocess
import sys
import tempfile
import timeit
import types
from pathlib import Path

import numpy as np

import lstmfast.losses as new_losses
import lstmfast.metrics as new_metrics

ROOT = Path(__file__).resolve().parent.parent


def load_old(ref: str, folder: Path):
    """(losses, metrics) modules of ``ref``, as the package ``_old_lstmfast``."""
    package = types.ModuleType("_old_lstmfast")
    package.__path__ = []
    sys.modules["_old_lstmfast"] = package
    modules = []
    for name in ("losses", "metrics"):
        path = folder / f"old_{name}.py"
        path.write_text(subprocess.run(["git", "show", f"{ref}:python/lstmfast/{name}.py"], cwd=ROOT,
                                       check=True, capture_output=True, text=True).stdout)
        spec = importlib.util.spec_from_file_location(f"_old_lstmfast.{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(package, name, module)
        modules.append(module)
    return modules


def cases(rng):
    """(case, what, make(losses, metrics) -> call, y, p)."""
    p = rng.uniform(0.01, 1.0, size=(1, 10)).astype(np.float32)
    echo = (np.eye(10, dtype=np.float32)[[3]], p / p.sum())
    imdb = (rng.integers(0, 2, size=32).astype(np.float32),
            rng.uniform(0.01, 0.99, size=(32, 1)).astype(np.float32))
    p = rng.uniform(0.01, 1.0, size=(128, 4, 13)).astype(np.float32)
    seq2seq = (np.eye(13, dtype=np.float32)[rng.integers(0, 13, size=(128, 4))], p / p.sum(-1, keepdims=True))
    p = rng.uniform(0.01, 1.0, size=(64, 100, 65)).astype(np.float32)
    text = (rng.integers(0, 65, size=(64, 100)), p / p.sum(-1, keepdims=True))
    return [
        ("echo", "categorical_crossentropy value_and_grad",
         lambda L, M: L.CategoricalCrossentropy().value_and_grad, echo),
        ("echo", "categorical accuracy update_state", lambda L, M: M.CategoricalAccuracy().update_state, echo),
        ("imdb", "binary_crossentropy value_and_grad", lambda L, M: L.BinaryCrossentropy().value_and_grad, imdb),
        ("imdb", "binary accuracy update_state", lambda L, M: M.BinaryAccuracy().update_state, imdb),
        ("seq2seq", "categorical_crossentropy value_and_grad", lambda L, M: L.CategoricalCrossentropy().value_and_grad,
         seq2seq),
        ("seq2seq", "categorical accuracy update_state", lambda L, M: M.CategoricalAccuracy().update_state, seq2seq),
        ("text", "sparse_categorical_crossentropy value_and_grad",
         lambda L, M: L.SparseCategoricalCrossentropy().value_and_grad, text),
    ]


def per_call_us(fn, y, p, seconds: float) -> float:
    fn(y, p)
    number = max(1, int(seconds / timeit.timeit(lambda: fn(y, p), number=1)))
    return min(timeit.repeat(lambda: fn(y, p), number=number, repeat=1)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-ref", default="76bc1e5", help="git revision of the old losses.py/metrics.py")
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one timing repeat")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        old = load_old(args.old_ref, Path(folder))
    new = (new_losses, new_metrics)
    rows = []
    for case, what, make, (y, p) in cases(np.random.default_rng(0)):
        fns = {"old": make(*old), "new": make(*new)}
        best = {"old": float("inf"), "new": float("inf")}
        for _ in range(7):  # alternate, so that both see the same machine load
            for side, fn in fns.items():
                best[side] = min(best[side], per_call_us(fn, y, p, args.seconds))
        rows.append((case, what, best["old"], best["new"]))
    echo = [r for r in rows if r[0] == "echo"]
    rows.append(("echo", "one update: loss + metric", sum(r[2] for r in echo), sum(r[3] for r in echo)))
    print(f"old: {args.old_ref}; numpy {np.__version__}; us per call, best of 7")
    print("| case | call | old us | new us | new - old us |")
    print("|---|---|---:|---:|---:|")
    for case, what, o, n in rows:
        print(f"| {case} | {what} | {o:.2f} | {n:.2f} | {n - o:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
