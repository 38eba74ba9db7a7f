"""The echo sequence problem (the classic first LSTM tutorial).

Each example is a random sequence of integers in [0, features), one-hot encoded; the target is
the integer at position ``index`` of the sequence, one-hot. A many-to-one model, LSTM(units) ->
Dense(features, softmax), trained with Adam and categorical cross-entropy on single examples,
one update each, learns to echo the value it saw ``length - index`` steps ago.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Optional, Tuple

import numpy as np

from .. import backend
from ..callbacks import Progbar
from ..layers import LSTM, Dense
from ..models import Sequential


def one_hot(values: np.ndarray, features: int) -> np.ndarray:
    out = np.zeros(values.shape + (features,), np.float32)
    np.put_along_axis(out, values[..., None], 1.0, axis=-1)
    return out


def generate_examples(n: int, length: int, features: int, index: int,
                      rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` examples: x [n, length, features] one-hot, y [n, features] one-hot of x's step ``index``."""
    rng = rng or backend.get_rng()
    seq = rng.integers(0, features, size=(n, length))
    return one_hot(seq, features), one_hot(seq[:, index], features)


def build_model(length: int = 5, features: int = 10, units: int = 25, peephole: bool = False) -> Sequential:
    model = Sequential([
        LSTM(units, input_shape=(length, features), peephole=peephole),
        Dense(features, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["acc"])
    return model


def run(length: int = 5, features: int = 10, index: int = 2, units: int = 25, steps: int = 10_000,
        peephole: bool = False, seed: Optional[int] = 1, verbose: int = 1, test_size: int = 100,
        print_fn: Callable[[str], None] = print) -> dict:
    """Train with ``steps`` single-example updates, then measure accuracy on ``test_size`` new
    sequences. Returns the metrics (accuracy, seconds, updates per second, an example)."""
    if not 0 <= index < length:
        raise ValueError(f"index must lie in [0, length={length}), got {index}")
    for name, value in (("length", length), ("features", features), ("units", units), ("steps", steps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if seed is not None:
        backend.set_random_seed(seed)
    rng = backend.get_rng()
    model = build_model(length, features, units, peephole)
    if verbose:
        model.summary(print_fn=print_fn)
    x_train, y_train = generate_examples(steps, length, features, index, rng)
    bar = Progbar(steps, verbose=1 if verbose else 0, unit_name="update")
    loss_avg, acc_avg, every = 0.0, 0.0, max(1, steps // 200)
    start = time.perf_counter()
    for i in range(steps):
        # One example, one update: the tutorial's model.fit(X, y, epochs=1) loop.
        history = model.fit(x_train[i:i + 1], y_train[i:i + 1], epochs=1, batch_size=1, verbose=0, shuffle=False)
        loss_avg = 0.99 * loss_avg + 0.01 * history.history["loss"][-1]
        acc_avg = 0.99 * acc_avg + 0.01 * history.history["acc"][-1]
        if verbose and ((i + 1) % every == 0 or i + 1 == steps):
            bar.update(i + 1, values=[("loss", loss_avg), ("acc", acc_avg)])
    seconds = time.perf_counter() - start
    x_test, y_test = generate_examples(test_size, length, features, index, rng)
    predicted = model.predict(x_test, verbose=0).argmax(-1)
    expected = y_test.argmax(-1)
    accuracy = float((predicted == expected).mean())
    example_seq = x_test[0].argmax(-1).tolist()
    result = {
        "accuracy": accuracy,
        "train_seconds": seconds,
        "updates_per_second": steps / seconds if seconds > 0 else float("inf"),
        "steps": steps,
        "example": {"sequence": example_seq, "expected": int(expected[0]), "predicted": int(predicted[0])},
    }
    if verbose:
        print_fn(f"Trained {steps:,} single-example updates in {seconds:.2f} s "
                 f"({result['updates_per_second']:,.0f} updates/s)")
        print_fn(f"Accuracy on {test_size} new sequences: {accuracy * 100:.1f}%")
        print_fn(f"Sequence: {example_seq}  Expected: {int(expected[0])}  Predicted: {int(predicted[0])}")
    return result


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``lstmfast echo`` sub-command."""
    from ..cli import positive_int
    p = subparsers.add_parser("echo", parents=[common],
                              help="the echo sequence problem (LSTM + Dense, single-example updates)",
                              description="Random integer sequences, one-hot; predict the value at position "
                                          "INDEX. Trains with STEPS single-example updates, then reports the "
                                          "accuracy on 100 new sequences and one example.")
    p.add_argument("--length", type=positive_int, default=5, help="sequence length (default 5)")
    p.add_argument("--features", type=positive_int, default=10, help="distinct values / one-hot size (default 10)")
    p.add_argument("--index", type=int, default=2, help="position to echo, 0-based (default 2)")
    p.add_argument("--units", type=positive_int, default=25, help="LSTM units (default 25)")
    p.add_argument("--steps", type=positive_int, default=10_000, help="single-example updates (default 10000)")
    p.add_argument("--peephole", action="store_true", help="use peephole connections")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--quiet", action="store_true", help="print nothing (use with --metrics-json)")
    p.set_defaults(func=lambda args: run(length=args.length, features=args.features, index=args.index,
                                         units=args.units, steps=args.steps, peephole=args.peephole,
                                         seed=args.seed, verbose=0 if args.quiet else 1))
