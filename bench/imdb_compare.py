#!/usr/bin/env python3
"""The Keras IMDB LSTM examples timed per epoch on lstmfast and on Keras 3 (torch backend), each in
a fresh process, on the same arrays, with a markdown table of the results.

    python bench/imdb_compare.py [--config tutorial|bidirectional] [--epochs N] [--keras-epochs 1]
                                 [--limit N] [--data PATH] [--threads N] [--markdown PATH]

``tutorial`` is Keras's examples/imdb_lstm.py (Embedding(20000,128) -> LSTM(128, dropout=0.2,
recurrent_dropout=0.2) -> Dense(1, sigmoid), maxlen 80, batch 32, Adam, 15 epochs); ``bidirectional``
is keras.io's "Bidirectional LSTM on IMDB" (two Bidirectional(LSTM(64)), maxlen 200, 2 epochs,
0.8778 reported). Both libraries train on lstmfast.datasets.imdb.load_data(--data) (Keras's
encoding and shuffle; Keras's own loader would download imdb.npz), validate on the test set every
epoch, and report per-epoch seconds (training + validation, as Keras's progress bar counts them)
and the final test accuracy. ``--limit N`` trains on the first N train/test reviews only; the table
then also gives the full-epoch time estimated from the measured seconds per batch (x 782 train
batches + 782 validation batches of 32). Keras is optional (pip install keras torch).
"""
import argparse
import contextlib
import datetime
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "imdb_reviews.jsonl.gz"
NUM_WORDS = 20000
FULL = 25000  # reviews per split
CONFIGS = {"tutorial": dict(maxlen=80, epochs=15), "bidirectional": dict(maxlen=200, epochs=2)}
BATCH = 32


# ---- one library in one process ---------------------------------------------------------------

def worker(args) -> dict:
    import numpy as np
    if args.worker == "keras":
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras
        from keras import Input, Sequential
        from keras.callbacks import Callback
        from keras.layers import LSTM, Bidirectional, Dense, Embedding
        keras.utils.set_random_seed(args.seed)
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        backend = keras.backend.backend()
    else:
        import lstmfast
        from lstmfast import Sequential
        from lstmfast.callbacks import Callback
        from lstmfast.layers import LSTM, Bidirectional, Dense, Embedding, Input
        lstmfast.utils.set_random_seed(args.seed)
        if args.threads:
            lstmfast.set_num_threads(args.threads)
        backend = "lstmfast " + lstmfast.__version__ + " " + lstmfast.build_info()["simd"]
    from lstmfast.datasets import imdb
    from lstmfast.utils import pad_sequences

    maxlen = CONFIGS[args.config]["maxlen"]
    (x_train, y_train), (x_test, y_test) = imdb.load_data(args.data, num_words=NUM_WORDS)
    if args.limit:
        x_train, y_train, x_test, y_test = x_train[:args.limit], y_train[:args.limit], x_test[:args.limit], \
            y_test[:args.limit]
    x_train, x_test = pad_sequences(x_train, maxlen=maxlen), pad_sequences(x_test, maxlen=maxlen)
    y_train, y_test = y_train.astype("float32"), y_test.astype("float32")

    # The example's model code: identical for both libraries.
    if args.config == "tutorial":
        model = Sequential([Input(shape=(maxlen,), dtype="int32"), Embedding(NUM_WORDS, 128),
                            LSTM(128, dropout=0.2, recurrent_dropout=0.2), Dense(1, activation="sigmoid")])
    else:
        model = Sequential([Input(shape=(maxlen,), dtype="int32"), Embedding(NUM_WORDS, 128),
                            Bidirectional(LSTM(64, return_sequences=True)), Bidirectional(LSTM(64)),
                            Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])

    class Timer(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = self.last_batch = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.last_batch = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = time.perf_counter()
            times["epoch"].append(end - self.start)
            times["train"].append(self.last_batch - self.start)
            times["val"].append(end - self.last_batch)

    times = {"epoch": [], "train": [], "val": []}
    with contextlib.redirect_stdout(sys.stderr):  # progress lines to stderr; the JSON result to stdout
        history = model.fit(x_train, y_train, batch_size=BATCH, epochs=args.epochs, verbose=2,
                            validation_data=(x_test, y_test), callbacks=[Timer()])
    h = history.history
    train_batches, val_batches = math.ceil(len(x_train) / BATCH), math.ceil(len(x_test) / BATCH)
    full_batches = math.ceil(FULL / BATCH)
    # Estimate from the fastest epoch after the first (the first pays one-time costs) when there is one.
    k = int(np.argmin(times["epoch"][1:])) + 1 if len(times["epoch"]) > 1 else 0
    estimate = times["train"][k] / train_batches * full_batches + times["val"][k] / val_batches * full_batches
    return {"library": args.worker, "backend": backend, "config": args.config, "epochs": args.epochs,
            "train_samples": len(x_train), "test_samples": len(x_test),
            "epoch_seconds": times["epoch"], "train_seconds": times["train"], "val_seconds": times["val"],
            "train_seconds_per_batch": times["train"][k] / train_batches,
            "val_seconds_per_batch": times["val"][k] / val_batches,
            "full_epoch_seconds_estimate": estimate,
            "val_accuracy": [float(v) for v in h["val_accuracy"]], "test_accuracy": float(h["val_accuracy"][-1]),
            "params": int(model.count_params())}


def run(library: str, args, epochs: int) -> dict:
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", "torch")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", library, "--config", args.config,
           "--epochs", str(epochs), "--data", str(args.data), "--seed", str(args.seed)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, text=True)  # stderr: shown live
    if proc.returncode != 0:
        raise SystemExit(f"{library} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tutorial")
    parser.add_argument("--epochs", type=int, help="lstmfast epochs (default: the example's, 15 or 2)")
    parser.add_argument("--keras-epochs", type=int, default=1, help="Keras epochs (default 1: ~2 min each)")
    parser.add_argument("--limit", type=int, help="first N train and N test reviews only")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"IMDB source (default {DEFAULT_DATA})")
    parser.add_argument("--threads", type=int, help="threads for both libraries (default: all cores)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--worker", choices=["lstmfast", "keras"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown:
        from lstmfast._atomic import check_writable, write_text
        check_writable(args.markdown, "--markdown")  # now, not after the runs
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    args.data = args.data.resolve()
    epochs = args.epochs or CONFIGS[args.config]["epochs"]
    have_keras = importlib.util.find_spec("keras") is not None
    results = [run("lstmfast", args, epochs)]
    if have_keras and args.keras_epochs > 0:
        results.append(run("keras", args, args.keras_epochs))

    r0 = results[0]
    partial = bool(args.limit) and args.limit < FULL
    lines = [f"IMDB `{args.config}` example ({r0['params']:,} parameters), {r0['train_samples']:,} train / "
             f"{r0['test_samples']:,} test reviews, batch {BATCH}, {datetime.date.today().isoformat()}, "
             f"{os.cpu_count()} CPUs", "",
             "| library | epochs | s/epoch (each) | train ms/batch | val ms/batch | est. full epoch (s) | "
             "test accuracy |", "|---|---|---|---|---|---|---|"]
    for r in results:
        each = ", ".join(f"{s:.1f}" for s in r["epoch_seconds"])
        lines.append(f"| {r['library']} ({r['backend']}) | {r['epochs']} | {each} | "
                     f"{1000 * r['train_seconds_per_batch']:.1f} | {1000 * r['val_seconds_per_batch']:.1f} | "
                     f"{r['full_epoch_seconds_estimate']:.1f} | {r['test_accuracy']:.4f} |")
    lines.append("")
    if len(results) == 2:
        ratio = results[1]["full_epoch_seconds_estimate"] / r0["full_epoch_seconds_estimate"]
        lines.append(f"Speed: Keras takes {ratio:.2f}x as long per (full) epoch as lstmfast.")
        if results[1]["epochs"] != r0["epochs"]:
            lines.append(f"Accuracies are after different epoch counts ({r0['epochs']} vs {results[1]['epochs']}).")
    else:
        lines.append("keras is not installed (or --keras-epochs 0): lstmfast ran alone.")
    if partial:
        lines.append(f"Partial run (--limit {args.limit}): the full-epoch column scales the measured seconds per "
                     f"batch to {math.ceil(FULL / BATCH)} train + {math.ceil(FULL / BATCH)} validation batches; "
                     f"accuracies are not comparable with full-data runs.")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        write_text(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
