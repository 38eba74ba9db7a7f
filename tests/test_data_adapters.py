"""fit/evaluate/predict on generators and PyDatasets (lstmfast.data_adapters): the same batches give
the same training as arrays; Keras's steps, shuffling, on_epoch_end and error semantics."""
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import backend, utils
from lstmfast.callbacks import LambdaCallback
from lstmfast.layers import LSTM, Dense, Input
from lstmfast.models import Sequential

from conftest import peer

T, X, H, N, BS = 4, 3, 5, 12, 4


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, T, X)).astype(np.float32), rng.normal(size=(N, 2)).astype(np.float32)


def model(seed=1):
    backend.set_random_seed(seed)
    m = Sequential([Input((T, X)), LSTM(H), Dense(2)])
    m.compile(optimizer="adam", loss="mse", metrics=["mae"])
    return m


def gen(x, y, batch=BS, epochs=1, sw=None):
    for _ in range(epochs):
        for lo in range(0, len(x), batch):
            if sw is None:
                yield x[lo:lo + batch], y[lo:lo + batch]
            else:
                yield x[lo:lo + batch], y[lo:lo + batch], sw[lo:lo + batch]


class Batches(utils.PyDataset):
    def __init__(self, x, y, batch=BS):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch
        self.calls, self.epochs_ended, self.epochs_begun = [], 0, 0

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        self.calls.append(i)
        s = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[s], self.y[s]

    def on_epoch_begin(self):
        self.epochs_begun += 1

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_generator_fit_matches_array_fit():
    x, y = data()
    a = model()
    ha = a.fit(x, y, batch_size=BS, epochs=3, shuffle=False, verbose=0)
    b = model()
    hb = b.fit(gen(x, y, epochs=3), steps_per_epoch=N // BS, epochs=3, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert_array_equal(wa, wb)
    assert ha.history == hb.history and len(hb.history["loss"]) == 3 and "mae" in hb.history


def test_pydataset_fit_matches_array_fit_and_calls_epoch_hooks():
    x, y = data()
    a = model()
    a.fit(x, y, batch_size=BS, epochs=3, shuffle=False, verbose=0)
    ds = Batches(x, y)
    b = model()
    h = b.fit(ds, epochs=3, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert_array_equal(wa, wb)
    assert ds.epochs_ended == 3 and ds.epochs_begun == 3 and len(h.history["loss"]) == 3
    assert ds.calls == [0, 1, 2] * 3


def test_pydataset_shuffle_reorders_batches_per_epoch_generator_never():
    x, y = data()
    ds = Batches(x, y, batch=1)
    model().fit(ds, epochs=2, verbose=0)                     # shuffle=True by default
    first, second = ds.calls[:N], ds.calls[N:]
    assert sorted(first) == sorted(second) == list(range(N))
    assert first != list(range(N)) and first != second     # shuffled, differently each epoch
    seen = []
    m = model()
    m.fit(gen(x, y, batch=1), epochs=1, verbose=0, shuffle=True,
          callbacks=[LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))])
    assert seen == list(range(N))
    backend.set_random_seed(3)
    a = Batches(x, y, batch=1)
    model().fit(a, epochs=1, verbose=0)
    backend.set_random_seed(3)
    b = Batches(x, y, batch=1)
    model().fit(b, epochs=1, verbose=0)
    assert a.calls == b.calls                              # set_random_seed makes the order reproducible


def test_steps_per_epoch_continues_the_generator_and_pydataset_across_epochs():
    x, y = data()
    batches = []
    m = model()
    m.fit(gen(x, y, epochs=2), steps_per_epoch=2, epochs=3, verbose=0,
          callbacks=[LambdaCallback(on_epoch_end=lambda e, logs: batches.append(e))])
    assert batches == [0, 1, 2]
    ds, ends = Batches(x, y), []
    with pytest.warns(UserWarning, match="ran out of data"):
        model().fit(ds, steps_per_epoch=2, epochs=3, shuffle=False, verbose=0,
                    callbacks=[LambdaCallback(on_epoch_end=lambda e, logs: ends.append(len(ds.calls)))])
    assert ends == [2, 3, 5] and ds.calls == [0, 1, 2, 0, 1]  # Keras 3: the pass goes on, ends short, restarts
    ds = Batches(x, y)
    with pytest.warns(UserWarning, match="ran out of data"):
        model().fit(ds, steps_per_epoch=4, epochs=1, shuffle=False, verbose=0)
    assert ds.calls == [0, 1, 2]


def test_generator_without_steps_runs_until_exhausted_then_stops():
    x, y = data()
    seen = []
    cb = LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    h = model().fit(gen(x, y), epochs=1, verbose=0, callbacks=[cb])
    assert seen == [0, 1, 2] and len(h.history["loss"]) == 1
    with pytest.warns(UserWarning, match="ran out of data"):
        h = model().fit(gen(x, y), epochs=3, verbose=0)
    assert len(h.history["loss"]) == 1                     # the next epoch has no data: training stops


def test_generator_running_out_before_steps_per_epoch_warns_and_stops():
    x, y = data()
    with pytest.warns(UserWarning, match="ran out of data"):
        h = model().fit(gen(x, y), steps_per_epoch=2, epochs=5, verbose=0)
    assert len(h.history["loss"]) == 2                     # 2 + 1 batches, then it stopped


def test_progress_bar_learns_the_generator_length(capsys):
    x, y = data()
    model().fit(gen(x, y), epochs=1, verbose=1)
    assert "3/3" in capsys.readouterr().out


def test_sample_weights_and_class_weight_from_a_generator():
    x, y = data()
    sw = np.linspace(0.1, 2.0, N)
    a = model()
    a.fit(x, y, sample_weight=sw, batch_size=BS, shuffle=False, verbose=0)
    b = model()
    b.fit(gen(x, y, sw=sw), verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert_array_equal(wa, wb)


def test_validation_data_generator_and_pydataset():
    x, y = data()
    a = model()
    ha = a.fit(x, y, batch_size=BS, shuffle=False, epochs=2, validation_data=(x, y), verbose=0)
    b = model()
    hb = b.fit(Batches(x, y), shuffle=False, epochs=2, validation_data=Batches(x, y), verbose=0)
    c = model()
    hc = c.fit(Batches(x, y), shuffle=False, epochs=2, validation_data=gen(x, y, epochs=2), validation_steps=3,
               verbose=0)
    assert ha.history == hb.history == hc.history and "val_mae" in ha.history


def test_evaluate_and_predict_on_generators():
    x, y = data()
    m = model()
    m.fit(x, y, batch_size=BS, verbose=0)
    want = m.evaluate(x, y, batch_size=BS, verbose=0, return_dict=True)
    assert m.evaluate(gen(x, y), verbose=0, return_dict=True) == want
    assert m.evaluate(Batches(x, y), verbose=0, return_dict=True) == want
    first = m.evaluate(gen(x, y), steps=1, verbose=0, return_dict=True)
    assert first == m.evaluate(x[:BS], y[:BS], verbose=0, return_dict=True)
    p = m.predict(x, batch_size=BS, verbose=0)
    assert_array_equal(m.predict((b[0] for b in gen(x, y)), verbose=0), p)
    assert_array_equal(m.predict(((b[0],) for b in gen(x, y)), verbose=0), p)
    assert_array_equal(m.predict(Batches(x, y), verbose=0), p)  # targets are ignored
    assert_array_equal(m.predict(gen(x, y), steps=2, verbose=0), p[:2 * BS])
    with pytest.warns(UserWarning, match="ran out of data"):
        assert m.predict(gen(x, y), steps=5, verbose=0).shape == p.shape


def test_source_errors():
    x, y = data()
    m = model()
    with pytest.raises(ValueError, match="batch_size"):
        m.fit(gen(x, y), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        m.fit(Batches(x, y), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        m.evaluate(gen(x, y), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(gen(x, y), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="do not give y"):
        m.fit(gen(x, y), y, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        m.fit(gen(x, y), validation_split=0.5, verbose=0)
    with pytest.raises(ValueError, match="no batches"):
        m.fit(iter([]), verbose=0)
    with pytest.raises(ValueError, match=r"batch 1 of the generator.*shape"):
        m.fit(iter([(x[:4], y[:4]), (x[:4, :, :2], y[:4])]), verbose=0)
    with pytest.raises(ValueError, match="batch 0 of the generator.*samples"):
        m.fit(iter([(x[:4], y[:3])]), verbose=0)
    with pytest.raises(ValueError, match="needs targets"):
        m.fit(iter([x[:4]]), verbose=0)
    with pytest.raises(ValueError, match="4 elements"):
        m.fit(iter([(x[:4], y[:4], None, None)]), verbose=0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        m.fit(gen(x, y), steps_per_epoch=0, verbose=0)


def test_loss_history_matches_keras_on_the_same_pydataset():
    keras = peer("keras")
    x, y = data()

    class KerasBatches(keras.utils.PyDataset):
        def __len__(self):
            return N // BS

        def __getitem__(self, i):
            return x[i * BS:(i + 1) * BS], y[i * BS:(i + 1) * BS]

    ours = model()
    theirs = keras.Sequential([keras.Input((T, X)), keras.layers.LSTM(H), keras.layers.Dense(2)])
    theirs.set_weights(ours.get_weights())
    theirs.compile(optimizer="adam", loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = theirs.fit(KerasBatches(), epochs=3, shuffle=False, verbose=0).history["loss"]
    got = ours.fit(Batches(x, y), epochs=3, shuffle=False, verbose=0).history["loss"]
    assert_allclose(got, want, rtol=1e-4)
