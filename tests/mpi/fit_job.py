"""Data-parallel training jobs for tests/test_distributed.py: ``mpiexec -n N python fit_job.py OUT
CASE``, or plain ``python fit_job.py OUT CASE`` for the one-process baseline. Every rank writes its
final weights, history, evaluation and predictions to ``OUT.rank<r>.npz``.

Cases: "plain" (sample weights, an uneven last batch, shuffled), "masked" (a masked sequence
output: each rank's share is its unmasked steps), "two_outputs" (that and a per-sample output,
weighted), "generator" (fit and evaluate from a
generator), "train_on_batch" (a loop of train_on_batch, rank 1 starting from other weights),
"files" (progress bar, ModelCheckpoint, CSVLogger, EarlyStopping), "mismatch" (rank 1 builds
another model), "fault" (rank 1 fails in the middle of training)."""
import sys

import numpy as np

import lstmfast
from lstmfast import callbacks
from lstmfast import layers as L


def data(case):
    rng = np.random.default_rng(11)
    n, T = 33, 6  # 33 samples in batches of 10: an uneven last batch of 3
    if case in ("masked", "two_outputs"):
        x = rng.integers(1, 20, (n, T))
        for i in range(n):  # padded at the end, a different number of steps per sample
            x[i, T - i % 4:] = 0
        y = rng.standard_normal((n, T, 2)).astype("float32")
        if case == "two_outputs":
            return x, [y, rng.integers(0, 3, n)], None
        return x, y, None
    x = rng.standard_normal((n, T, 3)).astype("float32")
    y = rng.integers(0, 3, n)
    sw = rng.uniform(0.5, 2.0, n)
    return x, y, sw


def model(case, units=5):
    lstmfast.utils.set_random_seed(5)
    if case == "two_outputs":  # a masked sequence output and a per-sample one, weighted
        inp = L.Input((None,), dtype="int32")
        seq = L.LSTM(units, return_sequences=True)(L.Embedding(20, 4, mask_zero=True)(inp))
        m = lstmfast.Model(inp, [L.Dense(2)(seq), L.Dense(3, activation="softmax")(L.LSTM(3)(seq))])
        m.compile(optimizer=lstmfast.optimizers.Adam(0.01), loss=["mse", "sparse_categorical_crossentropy"],
                  loss_weights=[1.0, 0.5], metrics=[["mae"], ["accuracy"]])
    elif case == "masked":
        m = lstmfast.Sequential([L.Input((None,), dtype="int32"), L.Embedding(20, 4, mask_zero=True),
                                 L.LSTM(units, return_sequences=True), L.Dense(2)])
        m.compile(optimizer=lstmfast.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    else:
        m = lstmfast.Sequential([L.Input((6, 3)), L.LSTM(units), L.Dense(3, activation="softmax")])
        m.compile(optimizer=lstmfast.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return m


def batches(x, y, size):
    while True:
        for lo in range(0, len(x), size):
            yield x[lo:lo + size], y[lo:lo + size]


def main(out, case):
    rank, size = lstmfast.distributed.init()
    x, y, sw = data(case)
    m = model(case, units=6 if case == "mismatch" and rank == 1 else 5)
    first = (lambda a: [b[:9] for b in a]) if isinstance(y, list) else (lambda a: a[:9])
    fit_args = dict(batch_size=10, epochs=3, shuffle=True, verbose=0, validation_data=(x[:9], first(y)))
    if case == "train_on_batch":  # a loop of its own: the batches are split over the ranks as fit's are
        if rank == 1:
            m.set_weights([w + 1.0 for w in m.get_weights()])  # rank 0's weights win at the first step
        for lo in range(0, len(x), 10):
            m.train_on_batch(x[lo:lo + 10], y[lo:lo + 10], sample_weight=sw[lo:lo + 10])
        history = type("History", (), {"history": {}})()
        evaluated = m.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    elif case == "generator":
        history = m.fit(batches(x, y, 10), steps_per_epoch=4, epochs=3, verbose=0)
        evaluated = m.evaluate(batches(x, y, 7), steps=5, verbose=0, return_dict=True)
    else:
        if case == "files":
            fit_args.update(verbose=2, epochs=6, callbacks=[
                callbacks.ModelCheckpoint(f"{out}.rank{rank}.keras"), callbacks.CSVLogger(f"{out}.rank{rank}.csv"),
                callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=1e9, verbose=1)])
        if case == "fault":
            def fail(epoch, logs):
                if rank == 1 and epoch == 1:
                    raise RuntimeError("rank one fails on purpose")
            fit_args.update(epochs=50, callbacks=[callbacks.LambdaCallback(on_epoch_end=fail)])
        history = m.fit(x, y, sample_weight=sw, **fit_args)
        evaluated = m.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    predicted = m.predict(x, batch_size=8, verbose=0)
    arrays = {f"w{k}": w for k, w in enumerate(m.get_weights())}
    arrays.update({f"h_{k}": np.asarray(v) for k, v in history.history.items()})
    arrays.update({f"e_{k}": np.asarray(v) for k, v in evaluated.items()})
    predicted = {f"predicted{k}": p for k, p in enumerate(predicted if isinstance(predicted, list) else [predicted])}
    draws = lstmfast.backend.get_rng().random(3)  # where each rank's generator stands
    np.savez(f"{out}.rank{rank}.npz", size=size, threads=lstmfast.build_info()["threads"], draws=draws,
             **predicted, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
