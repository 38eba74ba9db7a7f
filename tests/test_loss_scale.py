"""LossScaleOptimizer (keras.mixed_precision's dynamic loss scaling) against Keras's own: the scale's
course and the skipped steps on the same gradients, training equal to the inner optimizer's when
every gradient is finite, a non-finite batch skipped by ``fit`` (on the CPU and on the device),
its state in saved models (lstmfast's and Keras's files), and the errors."""
import json
import warnings
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast
from lstmfast import layers as L
from lstmfast import optimizers as O

from conftest import peer
from test_cuda import Transfers, device_side  # noqa: F401


@pytest.fixture(params=["emulated", "gpu"])
def side(request, monkeypatch):
    return device_side(request.param, request, monkeypatch)


# Gradients step by step: finite ones, an inf, a NaN; with dynamic_growth_steps=2 the scale
# doubles after two finite steps in a row and halves at each non-finite one.
def scripted_gradients():
    rng = np.random.default_rng(0)
    out = []
    for k in range(9):
        g = [rng.standard_normal((3, 2)).astype("f4"), rng.standard_normal(2).astype("f4")]
        if k == 3:
            g[0][1, 1] = np.inf
        if k == 6:
            g[1][0] = np.nan
        out.append(g)
    return out


def test_the_scale_and_the_skipped_steps_are_keras():
    keras = peer("keras")
    rng = np.random.default_rng(1)
    start = [rng.standard_normal((3, 2)).astype("f4"), rng.standard_normal(2).astype("f4")]
    ours = O.LossScaleOptimizer(O.SGD(0.1, momentum=0.9), initial_scale=8.0, dynamic_growth_steps=2)
    theirs = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.1, momentum=0.9), initial_scale=8.0,
                                                      dynamic_growth_steps=2)
    our_vars = [w.copy() for w in start]
    with warnings.catch_warnings():  # Keras's own warnings are not ours to fail on
        warnings.simplefilter("ignore")
        their_vars = [keras.Variable(w) for w in start]
        for step, grads in enumerate(scripted_gradients()):
            ours.apply(grads, our_vars)
            theirs.apply([keras.ops.convert_to_tensor(g) for g in grads], their_vars)
            numbers = [keras.ops.convert_to_numpy(v) for v in (theirs.dynamic_scale, theirs.step_counter,
                                                                 theirs.iterations)]
            assert (ours.dynamic_scale, ours.step_counter, ours.iterations) == \
                (float(numbers[0]), int(numbers[1]), int(numbers[2])), step
            for a, b in zip(our_vars, their_vars):
                assert_allclose(a, keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7, err_msg=f"step {step}")
    assert ours.iterations == 7 and ours.dynamic_scale == 16.0  # two steps skipped
    assert float(ours.scale_loss(np.float32(0.5))) == 8.0


def tutorial_model(optimizer, seed=0):
    lstmfast.utils.set_random_seed(seed)
    model = lstmfast.Sequential([L.Input((5, 3)), L.LSTM(6), L.Dense(2)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def batches(nan_at=None):
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((8, 5, 3)).astype("f4") for _ in range(6)]
    if nan_at is not None:
        xs[nan_at][3, 2, 1] = np.nan
    return xs, rng.standard_normal((8, 2)).astype("f4")


def train(model, xs, y):
    """Per batch: the loss and the weights after it."""
    out = []
    for x in xs:
        loss = model.train_on_batch(x, y)
        out.append((loss, model.get_weights()))
    return out


def test_with_finite_gradients_the_steps_are_the_inner_optimizers():
    xs, y = batches()
    plain = train(tutorial_model(O.Adam(0.01)), xs, y)
    scaled_model = tutorial_model(O.LossScaleOptimizer(O.Adam(0.01), dynamic_growth_steps=2))
    scaled = train(scaled_model, xs, y)
    for (loss_a, weights_a), (loss_b, weights_b) in zip(plain, scaled):
        assert loss_a == loss_b
        for a, b in zip(weights_a, weights_b):
            assert_array_equal(a, b)  # power-of-two scales: the unscaled gradients are exact
    assert scaled_model.optimizer.dynamic_scale == 2.0 ** 18  # doubled three times
    assert scaled_model.optimizer.iterations == 6


def check_nan_batch_skipped(history, model, at):
    assert np.isnan(history[at][0]) and all(np.isfinite(loss) for loss, _ in history[:at] + history[at + 1:])
    for a, b in zip(history[at - 1][1], history[at][1]):
        assert_array_equal(a, b)  # the step was skipped
    assert model.optimizer.iterations == len(history) - 1
    assert model.optimizer.dynamic_scale == 2.0 ** 14  # halved once, never grown (2000 steps)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_fit_skips_a_batch_whose_gradients_are_not_finite():
    xs, y = batches(nan_at=2)
    model = tutorial_model(O.LossScaleOptimizer(O.Adam(0.01)))
    check_nan_batch_skipped(train(model, xs, y), model, 2)
    plain = tutorial_model(O.Adam(0.01))
    train(plain, xs, y)
    assert not all(np.isfinite(w).all() for w in plain.get_weights())  # what it saves you from


def test_on_the_device_a_nan_batch_is_skipped_with_one_read_per_step(side):
    xs, y = batches(nan_at=2)
    model = tutorial_model(O.LossScaleOptimizer(O.Adam(0.01)))
    lstmfast.set_backend("cuda")
    try:
        history = []
        for x in xs:
            Transfers.reset()
            loss = model.train_on_batch(x, y)
            reads = Transfers.count
            history.append((float(loss), model.get_weights()))
            if side.name == "emulated":  # train_on_batch's loss, and the finiteness of the gradients
                assert reads == 2 and "all_finite" in " ".join(Transfers.sites), Transfers.sites
    finally:
        lstmfast.set_backend("cpu")
    check_nan_batch_skipped(history, model, 2)
    cpu = tutorial_model(O.LossScaleOptimizer(O.Adam(0.01)))
    for (_, got), (_, want) in zip(history, train(cpu, xs, y)):
        for a, b in zip(got, want):
            assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("extension", [".lstmfast", ".keras", ".h5"])
def test_saved_models_keep_the_scale_and_the_inner_optimizer(tmp_path, extension):
    xs, y = batches(nan_at=1)
    model = tutorial_model(O.LossScaleOptimizer(O.SGD(0.05, momentum=0.5), initial_scale=64.0,
                                                dynamic_growth_steps=3))
    train(model, xs[:4], y)
    want = (model.optimizer.dynamic_scale, model.optimizer.step_counter, model.optimizer.iterations)
    assert want == (32.0, 2, 3)
    path = str(tmp_path / f"m{extension}")
    model.save(path)
    loaded = lstmfast.load_model(path)
    opt = loaded.optimizer
    assert isinstance(opt, O.LossScaleOptimizer) and isinstance(opt.inner_optimizer, O.SGD)
    assert (opt.dynamic_scale, opt.step_counter, opt.iterations) == want
    assert (opt.initial_scale, opt.dynamic_growth_steps, opt.inner_optimizer.momentum) == (64.0, 3, 0.5)
    # training goes on as it would have
    train(model, xs[4:], y)
    train(loaded, xs[4:], y)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        assert_array_equal(a, b)


def test_an_optimizer_without_slots_keeps_its_step_count_in_a_saved_model(tmp_path):
    """Plain SGD has no slots: its step count alone must survive (a schedule depends on it)."""
    schedule = O.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = tutorial_model(O.SGD(schedule))
    xs, y = batches()
    train(model, xs[:3], y)
    model.save(str(tmp_path / "m.lstmfast"))
    loaded = lstmfast.load_model(str(tmp_path / "m.lstmfast"))
    assert loaded.optimizer.iterations == 3
    assert loaded.optimizer.current_learning_rate() == pytest.approx(0.1 * 0.5 ** 3)


def test_keras_opens_our_loss_scale_optimizer_and_we_open_keras():
    keras = peer("keras")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        model = tutorial_model(O.LossScaleOptimizer(O.Adam(0.003), initial_scale=1024.0, dynamic_growth_steps=7))
        model.save(f"{tmp}/ours.keras")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = keras.saving.load_model(f"{tmp}/ours.keras")
        opt = theirs.optimizer
        assert type(opt).__name__ == "LossScaleOptimizer" and type(opt.inner_optimizer).__name__ == "Adam"
        assert (opt.initial_scale, opt.dynamic_growth_steps) == (1024.0, 7)
        assert float(opt.inner_optimizer.learning_rate) == pytest.approx(0.003)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.save(f"{tmp}/theirs.keras")
        back = lstmfast.load_model(f"{tmp}/theirs.keras").optimizer
        assert isinstance(back, O.LossScaleOptimizer) and back.dynamic_growth_steps == 7
        assert back.inner_optimizer.learning_rate == pytest.approx(0.003)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(dynamic=False), ValueError, "dynamic=False"),
    (dict(clipnorm=1.0), ValueError, "clipnorm; set it on the inner optimizer"),
    (dict(initial_scale=0.0), ValueError, "initial_scale must be a finite number > 0"),
    (dict(initial_scale=float("inf")), ValueError, "initial_scale"),
    (dict(dynamic_growth_steps=0), ValueError, "dynamic_growth_steps must be an int >= 1, got 0"),
    (dict(dynamic_growth_steps=2.5), ValueError, "dynamic_growth_steps"),
    (dict(lr=0.1), TypeError, "learning_rate"),
    (dict(momentum=0.9), TypeError, "unexpected keyword argument(s): momentum")])
def test_bad_arguments_name_themselves(kwargs, error, words):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # lr=: Keras 2's spelling, mapped first
        with pytest.raises(error) as info:
            O.LossScaleOptimizer(O.SGD(), **kwargs)
    assert words in str(info.value)


def test_bad_inner_optimizers_and_states():
    with pytest.raises(TypeError, match="inner_optimizer must be an lstmfast optimizer"):
        O.LossScaleOptimizer("adam")
    with pytest.raises(TypeError, match="not a LossScaleOptimizer"):
        O.LossScaleOptimizer(O.LossScaleOptimizer(O.SGD()))
    opt = O.LossScaleOptimizer(O.SGD(), dynamic_growth_steps=4)
    for bad in ([0.0, 1], [float("nan"), 0], [2.0, 4], [2.0, -1], [2.0], "2.0", [True, 0], [2.0, 1.5]):
        with pytest.raises(ValueError, match="'loss_scale' must be"):
            opt.set_state({"iterations": 0, "slots": [], "loss_scale": bad})
    assert O.deserialize(O.serialize(opt)).dynamic_growth_steps == 4
    with pytest.raises(ValueError, match="needs 'inner_optimizer'"):
        O.deserialize({"class_name": "LossScaleOptimizer", "config": {}})
    with pytest.raises(ValueError, match="unknown optimizer"):
        O.get("lossscaleoptimizer")  # it wraps another: not made from a name


def test_a_damaged_loss_scale_in_a_file_is_refused_clearly(tmp_path):
    model = tutorial_model(O.LossScaleOptimizer(O.SGD(0.05)))
    xs, y = batches()
    train(model, xs[:2], y)
    path = tmp_path / "m.lstmfast"
    model.save(str(path))
    damaged = tmp_path / "damaged.lstmfast"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".json") and b"loss_scale" in data:
                manifest = json.loads(data)
                manifest["optimizer_state"]["loss_scale"] = [-3.0, 10 ** 12]
                data = json.dumps(manifest).encode()
            dst.writestr(info, data)
    with pytest.raises(ValueError, match="damaged.lstmfast.*loss_scale"):
        lstmfast.load_model(str(damaged))
