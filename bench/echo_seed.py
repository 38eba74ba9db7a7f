#!/usr/bin/env python3
"""The seed echo program (the classic tutorial), runnable on lstmfast or on Keras 3.

The model code below is the same for both; only the two import lines differ, which is the promise
lstmfast makes to Keras users. Prints one JSON line: seconds for the update loop, accuracy.

    python bench/echo_seed.py --library lstmfast
    KERAS_BACKEND=torch python bench/echo_seed.py --library keras
"""
import argparse
import json
import os
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--library", choices=["lstmfast", "keras"], required=True)
parser.add_argument("--updates", type=int, default=10_000)
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()

if args.library == "keras":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from keras.layers import LSTM, Dense
    from keras.models import Sequential
    keras.utils.set_random_seed(args.seed)
else:
    import lstmfast
    from lstmfast.layers import LSTM, Dense
    from lstmfast.models import Sequential
    lstmfast.utils.set_random_seed(args.seed)

rng = np.random.default_rng(args.seed)


def one_hot_encode(sequence, n_features):
    encoding = np.zeros((len(sequence), n_features), dtype="float32")
    encoding[np.arange(len(sequence)), sequence] = 1.0
    return encoding


def generate_example(length, n_features, out_index):
    sequence = rng.integers(0, n_features, size=length)
    X = one_hot_encode(sequence, n_features).reshape((1, length, n_features))
    y = one_hot_encode([sequence[out_index]], n_features).reshape(1, n_features)
    return X, y


length, n_features, out_index = 5, 10, 2
model = Sequential()
model.add(LSTM(25, input_shape=(length, n_features)))
model.add(Dense(n_features, activation="softmax"))
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["acc"])

start = time.perf_counter()
for i in range(args.updates):
    X, y = generate_example(length, n_features, out_index)
    model.fit(X, y, epochs=1, verbose=0)
seconds = time.perf_counter() - start

correct = 0
for i in range(100):
    X, y = generate_example(length, n_features, out_index)
    yhat = model.predict(X, verbose=0)
    correct += int(np.argmax(yhat) == np.argmax(y))
print(json.dumps({"library": args.library, "updates": args.updates, "seconds": seconds, "accuracy": correct / 100}))
