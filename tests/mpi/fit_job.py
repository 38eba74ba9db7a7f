"""A data-parallel training job for tests/test_distributed.py: ``mpiexec -n N python fit_job.py OUT
CASE``, or plain ``python fit_job.py OUT CASE`` for the one-process baseline. Every rank writes its
final weights, history and predictions to ``OUT.rank<r>.npz``."""
import sys

import numpy as np

import lstmfast
from lstmfast import layers as L


def data(case):
    rng = np.random.default_rng(11)
    n, T = 33, 6  # 33 samples in batches of 10: an uneven last batch of 3
    if case == "masked":
        x = rng.integers(1, 20, (n, T))
        for i in range(n):  # padded at the end, a different number of steps per sample
            x[i, T - i % 4:] = 0
        y = rng.standard_normal((n, T, 2)).astype("float32")
        return x, y, None
    x = rng.standard_normal((n, T, 3)).astype("float32")
    y = rng.integers(0, 3, n)
    sw = rng.uniform(0.5, 2.0, n)
    return x, y, sw


def model(case):
    lstmfast.utils.set_random_seed(5)
    if case == "masked":
        m = lstmfast.Sequential([L.Input((None,), dtype="int32"), L.Embedding(20, 4, mask_zero=True),
                                 L.LSTM(5, return_sequences=True), L.Dense(2)])
        m.compile(optimizer=lstmfast.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    else:
        m = lstmfast.Sequential([L.Input((6, 3)), L.LSTM(5), L.Dense(3, activation="softmax")])
        m.compile(optimizer=lstmfast.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return m


SHUFFLE = True


def main(out, case):
    rank, size = lstmfast.distributed.init()
    x, y, sw = data(case)
    m = model(case)
    history = m.fit(x, y, sample_weight=sw, batch_size=10, epochs=3, shuffle=SHUFFLE, verbose=0,
                    validation_data=(x[:9], y[:9]))
    evaluated = m.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    predicted = m.predict(x, batch_size=8, verbose=0)
    arrays = {f"w{k}": w for k, w in enumerate(m.get_weights())}
    arrays.update({f"h_{k}": np.asarray(v) for k, v in history.history.items()})
    arrays.update({f"e_{k}": np.asarray(v) for k, v in evaluated.items()})
    np.savez(f"{out}.rank{rank}.npz", predicted=predicted, size=size, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
