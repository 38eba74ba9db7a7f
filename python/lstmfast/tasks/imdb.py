"""IMDB movie-review sentiment: ``lstmfast imdb``, the two classic Keras examples.

``tutorial`` is Keras's ``examples/imdb_lstm.py``::

    load_data(num_words=20000); pad_sequences(maxlen=80)          # pre-padding, pre-truncating
    Embedding(20000, 128) -> LSTM(128, dropout=0.2, recurrent_dropout=0.2) -> Dense(1, sigmoid)
    adam, binary_crossentropy, batch 32, 15 epochs, validation on the test set every epoch

``bidirectional`` is keras.io's "Bidirectional LSTM on IMDB" (test accuracy 0.8778 after 2 epochs)::

    load_data(num_words=20000); pad_sequences(maxlen=200)
    Embedding(20000, 128) -> Bidirectional(LSTM(64, return_sequences=True))
        -> Bidirectional(LSTM(64)) -> Dense(1, sigmoid)
    adam, binary_crossentropy, batch 32, 2 epochs, validation on the test set every epoch

The data are ``lstmfast.datasets.imdb.load_data`` (Keras's encoding and Keras's shuffle with its
seed 113, whatever ``--seed`` is; ``--seed`` seeds the weights, dropout and batch order).
The test accuracy is that of the last epoch's validation pass (the same computation as
``model.evaluate`` on the test set). ``--save`` writes the model with ``metadata={"task": "imdb",
...}`` holding what is needed to encode new text (num_words, maxlen, start/oov chars, index_from).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .. import backend, distributed
from .._atomic import check_writable
from .._typing import PathLike
from ..callbacks import Callback
from ..datasets import imdb as imdb_data
from ..layers import LSTM, Bidirectional, Dense, Embedding, Input
from ..models import Sequential
from ..utils import pad_sequences

TASK = "imdb"
NUM_WORDS = 20000
CONFIGS = {
    "tutorial": dict(maxlen=80, epochs=15, batch_size=32),
    "bidirectional": dict(maxlen=200, epochs=2, batch_size=32),
}


def build_model(config: str = "tutorial", num_words: int = NUM_WORDS, maxlen: Optional[int] = None) -> Sequential:
    """The compiled model of ``config`` ("tutorial" or "bidirectional")."""
    if config == "tutorial":
        model = Sequential([Input(shape=(maxlen,), dtype="int32"),
                            Embedding(num_words, 128),
                            LSTM(128, dropout=0.2, recurrent_dropout=0.2),
                            Dense(1, activation="sigmoid")])
    elif config == "bidirectional":
        model = Sequential([Input(shape=(maxlen,), dtype="int32"),
                            Embedding(num_words, 128),
                            Bidirectional(LSTM(64, return_sequences=True)),
                            Bidirectional(LSTM(64)),
                            Dense(1, activation="sigmoid")])
    else:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {config!r}")
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


class EpochTimer(Callback):
    """Wall-clock seconds of each epoch, from its start to the end of its validation pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: List[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def load_padded(data: Optional[PathLike] = None, maxlen: int = 80, limit: Optional[int] = None,
                num_words: int = NUM_WORDS,
                verbose: bool = True) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)`` as the examples prepare them: int32 ``[N, maxlen]``
    (pre-padded, pre-truncated) and float32 labels; ``limit`` keeps the first N of each split."""
    (x_train, y_train), (x_test, y_test) = imdb_data.load_data(data, num_words=num_words, verbose=verbose)
    if limit is not None:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    x_train = pad_sequences(x_train, maxlen=maxlen)
    x_test = pad_sequences(x_test, maxlen=maxlen)
    return (x_train, y_train.astype(np.float32)), (x_test, y_test.astype(np.float32))


def run(data: Optional[PathLike] = None, config: str = "tutorial", epochs: Optional[int] = None,
        batch_size: Optional[int] = None, maxlen: Optional[int] = None, limit: Optional[int] = None,
        seed: Optional[int] = 1, verbose: int = 1, save: Optional[str] = None, metrics_json: Optional[str] = None,
        print_fn: Callable[[str], None] = print) -> dict:
    """Train ``config`` on IMDB and return the metrics (test accuracy, per-epoch history and seconds)."""
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {config!r}")
    settings = dict(CONFIGS[config])
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("maxlen", maxlen), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if value is not None and name != "limit":
            settings[name] = value
    if data is not None and not os.path.exists(data):
        raise FileNotFoundError(f"IMDB data {data} does not exist")
    check_writable(save or None, "model file")
    check_writable(metrics_json or None, "metrics file")
    if seed is not None:
        backend.set_random_seed(seed)

    start = time.perf_counter()
    with distributed.chief_first():  # data-parallel, the other ranks read what rank 0 downloaded and encoded
        (x_train, y_train), (x_test, y_test) = load_padded(data, settings["maxlen"], limit, verbose=bool(verbose))
    load_seconds = time.perf_counter() - start
    if verbose:
        print_fn(f"{len(x_train)} train sequences, {len(x_test)} test sequences, padded to {settings['maxlen']} "
                 f"({load_seconds:.1f} s to load)")
    model = build_model(config, NUM_WORDS, settings["maxlen"])
    if verbose:
        model.summary(print_fn=print_fn)
    timer = EpochTimer()
    history = model.fit(x_train, y_train, batch_size=settings["batch_size"], epochs=settings["epochs"],
                        validation_data=(x_test, y_test), callbacks=[timer], verbose=1 if verbose else 0)
    h = history.history
    result = {
        "task": TASK,
        "config": config,
        "test_accuracy": float(h["val_accuracy"][-1]),
        "test_loss": float(h["val_loss"][-1]),
        "val_accuracy": [float(v) for v in h["val_accuracy"]],
        "val_loss": [float(v) for v in h["val_loss"]],
        "accuracy": [float(v) for v in h["accuracy"]],
        "loss": [float(v) for v in h["loss"]],
        "epoch_seconds": timer.seconds,
        "epoch_seconds_mean": float(np.mean(timer.seconds)),
        "epochs": settings["epochs"],
        "batch_size": settings["batch_size"],
        "maxlen": settings["maxlen"],
        "num_words": NUM_WORDS,
        "train_samples": int(len(x_train)),
        "test_samples": int(len(x_test)),
        "params": int(model.count_params()),
        "load_seconds": load_seconds,
        "seed": seed,
    }
    if verbose:
        print_fn(f"Test accuracy after {settings['epochs']} epoch(s): {result['test_accuracy']:.4f} "
                 f"(loss {result['test_loss']:.4f}); {result['epoch_seconds_mean']:.1f} s per epoch")
    if save and distributed.is_chief():
        model.save(save, metadata={"task": TASK, "config": config, "num_words": NUM_WORDS,
                                   "maxlen": settings["maxlen"], "start_char": 1, "oov_char": 2, "index_from": 3,
                                   "padding": "pre", "truncating": "pre", "test_accuracy": result["test_accuracy"],
                                   "epochs": settings["epochs"]})
        if verbose:
            print_fn(f"Saved the model to {save}")
    return result


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``lstmfast imdb`` sub-command."""
    from ..cli import positive_int
    p = subparsers.add_parser(
        "imdb", parents=[common], help="IMDB review sentiment (Keras's imdb_lstm / bidirectional examples)",
        description="Train Keras's IMDB LSTM example (tutorial: Embedding(20000,128) -> LSTM(128, dropout 0.2) -> "
                    "Dense(1), maxlen 80, 15 epochs) or keras.io's bidirectional one (maxlen 200, 2 epochs), "
                    "validating on the test set each epoch.")
    p.add_argument("--data", metavar="PATH",
                   help="aclImdb_v1.tar.gz, an aclImdb directory, imdb_reviews.jsonl(.gz), Keras's imdb.npz, or a "
                        "folder holding one of these files (default: the cache directory, $LSTMFAST_DATA or "
                        "~/.lstmfast/datasets, downloading aclImdb_v1.tar.gz there if needed)")
    p.add_argument("--config", choices=sorted(CONFIGS), default="tutorial", help="which example (default tutorial)")
    p.add_argument("--epochs", type=positive_int, help="epochs (default: 15 tutorial, 2 bidirectional)")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default 32)")
    p.add_argument("--maxlen", type=positive_int, help="pad/truncate reviews to this many words "
                                                       "(default: 80 tutorial, 200 bidirectional)")
    p.add_argument("--limit", type=positive_int, help="use only the first N train and N test reviews (tiny runs)")
    p.add_argument("--seed", type=int, default=1, help="seed for weights, dropout and batch order (default 1)")
    p.add_argument("--quiet", action="store_true", help="print nothing (use with --metrics-json)")
    p.add_argument("--save", metavar="MODEL", help="save the trained model (with its settings) to MODEL")
    p.set_defaults(func=lambda args: run(data=args.data, config=args.config, epochs=args.epochs,
                                         batch_size=args.batch_size, maxlen=args.maxlen, limit=args.limit,
                                         seed=args.seed, verbose=0 if args.quiet else 1, save=args.save,
                                         metrics_json=args.metrics_json))
