"""Writes the model files that tests/test_models.py loads to check that the file format stays
readable: ``python tests/data/make_saved_models.py`` (run once, with the lstmfast of the commit
named in each file's ``lstmfast_version``; files from older versions must keep loading).

Each ``*.lstmfast`` file comes with ``*.expected.npz``: the inputs, the targets, the saved model's
predictions and its weights after one more ``train_on_batch`` (which needs the optimizer state).
"""
import os

import numpy as np

import lstmfast
from lstmfast import backend, saving
from lstmfast.layers import LSTM, Bidirectional, Dense, Embedding, Input
from lstmfast.models import Model, Sequential

HERE = os.path.dirname(os.path.abspath(__file__))


def sequential():
    backend.set_random_seed(3)
    model = Sequential([Input(shape=(6,), dtype="int32"), Embedding(7, 3, mask_zero=True),
                        LSTM(4, return_sequences=True), LSTM(4), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(3)
    x = rng.integers(0, 7, (10, 6)).astype(np.int32)
    x[:3, :2] = 0
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 10)]
    return model, [x], y


def functional():
    backend.set_random_seed(4)
    enc_in = Input(shape=(5, 3), name="enc")
    _, h, c = LSTM(4, return_state=True)(enc_in)
    dec_in = Input(shape=(4, 2), name="dec")
    dec = Bidirectional(LSTM(4, return_sequences=True), merge_mode="sum")(dec_in, initial_state=[h, c, h, c])
    model = Model([enc_in, dec_in], Dense(2)(dec), name="seq2seq")
    model.compile(optimizer=lstmfast.optimizers.RMSprop(0.01, momentum=0.5), loss="mse", metrics=["mae"])
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((6, 5, 3)).astype(np.float32), rng.standard_normal((6, 4, 2)).astype(np.float32)]
    y = rng.standard_normal((6, 4, 2)).astype(np.float32)
    return model, xs, y


def write(name, build):
    model, xs, y = build()
    model.fit(xs if len(xs) > 1 else xs[0], y, batch_size=4, epochs=2, verbose=0)
    path = os.path.join(HERE, name + ".lstmfast")
    model.save(path, metadata={"made_by": "tests/data/make_saved_models.py"})
    x = xs if len(xs) > 1 else xs[0]
    pred = model.predict(x, verbose=0)
    model.train_on_batch(x, y)
    arrays = {f"x{k}": a for k, a in enumerate(xs)}
    arrays.update(y=y, prediction=pred)
    arrays.update({f"weight{k}": w for k, w in enumerate(model.get_weights())})
    np.savez(os.path.join(HERE, name + ".expected.npz"), **arrays)


if __name__ == "__main__":
    write(f"sequential_format{saving.FORMAT_VERSION}", sequential)
    write(f"functional_format{saving.FORMAT_VERSION}", functional)
