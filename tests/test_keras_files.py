"""Keras model files in and out (lstmfast.interop.keras_format), against Keras 3 itself.

Models are built and saved by Keras during the test (``.keras`` and its legacy ``.h5``), loaded by
``lstmfast.load_model`` and compared with Keras's own predictions; lstmfast models are saved as
``.keras``/``.h5`` and opened by ``keras.saving.load_model``. Damaged and hostile files must get a
clear error before any large allocation. Keras 1/2 layouts: tests/test_keras_legacy.py."""
import json
import os
import sys
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose

import lstmfast
from lstmfast import layers as L
from lstmfast.interop import keras_format

from conftest import peer

RTOL, ATOL = 1e-5, 1e-5  # float32 against float32: the same math, a few ulp per step


def quiet(fn, *args, **kwargs):
    """Call into Keras with its own warnings silenced (pytest turns warnings into errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def randomize(keras_model, seed=0):
    """Weights far from their initial values (biases and BatchNormalization statistics included)."""
    rng = np.random.default_rng(seed)
    values = []
    for w in keras_model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
        else:
            values.append(rng.uniform(-0.6, 0.6, shape).astype("float32"))
    keras_model.set_weights(values)


# ---- Keras models: a builder per family, each returning (model, inputs) --------------------------

def stack(keras, rng):
    m = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(5, return_sequences=True, go_backwards=True),
                          keras.layers.Dropout(0.2), keras.layers.LSTM(4, unit_forget_bias=False),
                          keras.layers.Dense(2, activation="tanh")])
    return m, rng.standard_normal((3, 6, 3)).astype("float32")


def bidirectional(merge_mode):
    def build(keras, rng):
        inp = keras.Input((None,), dtype="int32")
        x = keras.layers.Embedding(30, 6, mask_zero=True)(inp)
        x = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True), merge_mode=merge_mode)(x)
        if merge_mode is None:
            x = keras.layers.Concatenate()(x)
        x = keras.layers.Bidirectional(keras.layers.LSTM(4), merge_mode=merge_mode or "concat")(x)
        out = keras.layers.Dense(1, activation="sigmoid")(x)
        x = rng.integers(1, 30, (4, 9)).astype("int32")
        x[0, :4] = 0  # padded at the front, as pad_sequences does
        x[2, 6:] = 0
        return keras.Model(inp, out), x
    return build


def seq2seq(keras, rng):
    enc_in, dec_in = keras.Input((5, 3)), keras.Input((4, 2))
    _, h, c = keras.layers.LSTM(6, return_state=True)(enc_in)
    y = keras.layers.LSTM(6, return_sequences=True)(dec_in, initial_state=[h, c])
    out = keras.layers.TimeDistributed(keras.layers.Dense(3, activation="softmax"))(y)
    return keras.Model([enc_in, dec_in], out), [rng.standard_normal((2, 5, 3)).astype("float32"),
                                                 rng.standard_normal((2, 4, 2)).astype("float32")]


def echo(keras, rng):
    m = keras.Sequential([keras.Input((8, 1)), keras.layers.LSTM(10), keras.layers.RepeatVector(8),
                          keras.layers.LSTM(10, return_sequences=True),
                          keras.layers.TimeDistributed(keras.layers.Dense(1))])
    return m, rng.standard_normal((3, 8, 1)).astype("float32")


def masking(keras, rng):
    inp = keras.Input((7, 2))
    x = keras.layers.LSTM(4, return_sequences=True)(keras.layers.Masking(0.0)(inp))
    out = keras.layers.Dense(2)(keras.layers.Activation("relu")(keras.layers.Flatten()(x)))
    x = rng.standard_normal((3, 7, 2)).astype("float32")
    x[1, 5:] = 0.0
    return keras.Model(inp, out), x


def stateful(keras, rng):
    m = keras.Sequential([keras.Input(batch_shape=(2, 5, 3)), keras.layers.LSTM(4, stateful=True),
                          keras.layers.Dense(1)])
    return m, rng.standard_normal((2, 5, 3)).astype("float32")


def convolutional(keras, rng):
    inp = keras.Input((12, 4))
    x = keras.layers.Conv1D(5, 3, padding="causal", activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.LSTM(4, return_sequences=True)(x)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(2)(x)), rng.standard_normal((3, 12, 4)).astype("float32")


def attention_and_merging(keras, rng):
    q_in, v_in = keras.Input((5, 4)), keras.Input((6, 4))
    attended = keras.layers.Attention(use_scale=True)([q_in, v_in])
    a = keras.layers.LSTM(3)(attended)
    b = keras.layers.LSTM(3, go_backwards=True)(q_in)
    merged = [keras.layers.Add()([a, b]), keras.layers.Subtract()([a, b]), keras.layers.Multiply()([a, b]),
              keras.layers.Average()([a, b]), keras.layers.Maximum()([a, b]), keras.layers.Minimum()([a, b])]
    out = keras.layers.Dense(2)(keras.layers.Concatenate()(merged))
    return keras.Model([q_in, v_in], out), [rng.standard_normal((2, 5, 4)).astype("float32"),
                                             rng.standard_normal((2, 6, 4)).astype("float32")]


def hard_sigmoid_keras2(keras, rng):  # used only to check the refusal on Keras 3 files
    m = keras.Sequential([keras.Input((4, 2)), keras.layers.LSTM(3, recurrent_activation="hard_sigmoid")])
    return m, rng.standard_normal((2, 4, 2)).astype("float32")


FAMILIES = {"stack": stack, "bidirectional_concat": bidirectional("concat"), "bidirectional_sum": bidirectional("sum"),
            "bidirectional_mul": bidirectional("mul"), "bidirectional_ave": bidirectional("ave"),
            "bidirectional_none": bidirectional(None), "seq2seq": seq2seq, "echo": echo, "masking": masking,
            "stateful": stateful, "convolutional": convolutional, "attention_and_merging": attention_and_merging}


def keras_predict(model, x):
    out = quiet(model.predict, x, verbose=0, batch_size=len(x[0]) if isinstance(x, list) else len(x))
    return [np.asarray(o) for o in out] if isinstance(out, list) else np.asarray(out)


def assert_same(got, want):
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    else:
        assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def keras():
    return peer("keras")


# ---- Keras -> lstmfast ----------------------------------------------------------------------------

@pytest.mark.parametrize("extension", [".keras", ".h5"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_keras_file_predicts_as_keras(keras, tmp_path, family, extension):
    model, x = quiet(FAMILIES[family], keras, np.random.default_rng(1))
    randomize(model)
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="mse", metrics=["mae"])
    path = str(tmp_path / f"{family}{extension}")
    quiet(model.save, path)
    want = keras_predict(model, x)
    loaded = lstmfast.load_model(path)
    assert_same(loaded.predict(x, verbose=0, batch_size=len(x[0]) if isinstance(x, list) else len(x)), want)
    assert type(loaded).__name__ == ("Sequential" if isinstance(model, keras.Sequential) else "Model")
    assert isinstance(loaded.optimizer, lstmfast.optimizers.Adam)
    assert loaded.optimizer.learning_rate == pytest.approx(0.003)
    assert type(loaded.loss).__name__ == "MeanSquaredError"


def test_seed_flow_train_in_keras_continue_in_lstmfast(keras, tmp_path):
    """The Macbeth flow: Keras trains and saves my.h5; lstmfast loads it, predicts the same, trains on."""
    rng = np.random.default_rng(3)
    vocab, T = 12, 10
    x = rng.integers(0, vocab, (64, T))
    onehot = np.eye(vocab, dtype="float32")[x]
    y = np.eye(vocab, dtype="float32")[(x.sum(axis=1) % vocab)]
    model = keras.Sequential([keras.Input((T, vocab)), keras.layers.LSTM(16),
                              keras.layers.Dense(vocab, activation="softmax")])
    model.compile(optimizer=keras.optimizers.RMSprop(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    quiet(model.fit, onehot, y, epochs=2, batch_size=16, verbose=0)
    quiet(model.save, str(tmp_path / "my.h5"))
    loaded = lstmfast.load_model(str(tmp_path / "my.h5"))
    assert_allclose(loaded.predict(onehot, verbose=0), keras_predict(model, onehot), rtol=RTOL, atol=ATOL)
    assert isinstance(loaded.optimizer, lstmfast.optimizers.RMSprop)
    before = loaded.evaluate(onehot, y, verbose=0)
    history = loaded.fit(onehot, y, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < before[0]
    assert "accuracy" in history.history
    # ... and back to Keras, which predicts what lstmfast predicts.
    loaded.save(str(tmp_path / "again.h5"))
    again = quiet(keras.saving.load_model, str(tmp_path / "again.h5"))
    assert_allclose(keras_predict(again, onehot), loaded.predict(onehot, verbose=0), rtol=RTOL, atol=ATOL)


# ---- lstmfast -> Keras ----------------------------------------------------------------------------

def lstmfast_models():
    rng = np.random.default_rng(2)
    inp = L.Input((None,), dtype="int32")
    e = L.Embedding(40, 6, mask_zero=True)(inp)
    b = L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode="ave")(e)
    seq, h, c = L.LSTM(4, return_state=True, return_sequences=True)(b)
    d = L.LSTM(4, go_backwards=True)(seq)  # no initial_state: Keras 3 drops the mask of a call with one
    masked = lstmfast.Model(inp, L.Dense(3, activation="softmax")(L.Concatenate()([d, h])))
    xm = rng.integers(1, 40, (4, 7)).astype("int32")
    xm[1, :3] = 0
    echo = lstmfast.Sequential([L.Input((6, 2)), L.LSTM(8), L.RepeatVector(6), L.LSTM(8, return_sequences=True),
                                L.TimeDistributed(L.Dense(2)), L.Dropout(0.1)])
    xe = rng.standard_normal((3, 6, 2)).astype("float32")
    inp2 = L.Input((9, 3))
    conv = L.Conv1D(4, 3, padding="same")(inp2)
    conv = L.BatchNormalization()(conv)
    seq, h, c = L.LSTM(5, return_sequences=True, return_state=True)(L.AveragePooling1D(3)(conv))
    conv = L.LSTM(5, return_sequences=True)(seq, initial_state=[h, c])
    conv_model = lstmfast.Model(inp2, L.Dense(1)(L.GlobalMaxPooling1D()(L.LayerNormalization()(conv))))
    xc = rng.standard_normal((2, 9, 3)).astype("float32")
    return {"masked": (masked, xm), "echo": (echo, xe), "conv": (conv_model, xc)}


def perturb(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([(rng.uniform(0.5, 1.5, w.shape) if "moving_variance" in key else
                        rng.uniform(-0.6, 0.6, w.shape)).astype(w.dtype)
                       for key, w in ((k, w) for layer in model.layers for k, w in layer.weights.items())])


@pytest.mark.parametrize("extension", [".keras", ".h5"])
@pytest.mark.parametrize("name", ["masked", "echo", "conv"])
def test_lstmfast_file_opens_in_keras(keras, tmp_path, name, extension):
    model, x = lstmfast_models()[name]
    perturb(model)
    model.compile(optimizer=lstmfast.optimizers.Adam(0.002, beta_1=0.8), loss="mse", metrics=["mae"])
    path = str(tmp_path / f"m{extension}")
    model.save(path)
    theirs = quiet(keras.saving.load_model, path)
    want = model.predict(x, verbose=0)
    assert_allclose(keras_predict(theirs, x), want, rtol=RTOL, atol=ATOL)
    assert type(theirs.optimizer).__name__ == "Adam"
    assert float(theirs.optimizer.learning_rate) == pytest.approx(0.002)
    assert float(theirs.optimizer.beta_1) == pytest.approx(0.8)
    # Keras -> lstmfast again, through Keras's own writer.
    quiet(theirs.save, str(tmp_path / f"k{extension}"))
    assert_allclose(lstmfast.load_model(str(tmp_path / f"k{extension}")).predict(x, verbose=0), want,
                    rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_lstmfast_round_trip_keeps_optimizer_state_and_metadata(tmp_path, extension):
    rng = np.random.default_rng(4)
    model = lstmfast.Sequential([L.Input((5, 3)), L.LSTM(6), L.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x, y = rng.standard_normal((16, 5, 3)).astype("float32"), rng.standard_normal((16, 2)).astype("float32")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = str(tmp_path / f"m{extension}")
    model.save(path, metadata={"vocab": ["a", "b"]})
    loaded = lstmfast.load_model(path)
    assert lstmfast.saving.read_metadata(path) == {"vocab": ["a", "b"]}
    assert loaded.optimizer.iterations == model.optimizer.iterations == 4
    # One more step on each gives the same weights: the Adam moments came along.
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_other_extensions_keep_lstmfast_format(tmp_path):
    model = lstmfast.Sequential([L.Input((3, 2)), L.LSTM(2)])
    model.save(str(tmp_path / "m.lstmfast"))
    with zipfile.ZipFile(tmp_path / "m.lstmfast") as z:
        assert "model.json" in z.namelist()
    assert keras_format.is_keras_file(str(tmp_path / "m.lstmfast")) is None


# ---- refusals -------------------------------------------------------------------------------------

def test_keras3_hard_sigmoid_lstm_is_refused(keras, tmp_path):
    model, _ = hard_sigmoid_keras2(keras, np.random.default_rng(0))
    quiet(model.save, str(tmp_path / "h.keras"))
    with pytest.raises(ValueError, match="hard_sigmoid.*relu6"):
        lstmfast.load_model(str(tmp_path / "h.keras"))


def test_lambda_and_custom_layers_are_refused_without_running_code(keras, tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Dense(3)(inp)))
    quiet(model.save, str(tmp_path / "lambda.keras"))
    with pytest.raises(ValueError, match="Lambda.*never runs code"):
        lstmfast.load_model(str(tmp_path / "lambda.keras"))

    @keras.saving.register_keras_serializable(package="lstmfast_test")
    class Doubler(keras.layers.Layer):
        def call(self, t):
            return t * 2.0

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), Doubler()])
    quiet(model.save, str(tmp_path / "custom.keras"))
    with pytest.raises(ValueError, match="custom object.*lstmfast_test>Doubler"):
        lstmfast.load_model(str(tmp_path / "custom.keras"))


def test_a_layer_lstmfast_lacks_is_named_with_the_supported_list(keras, tmp_path):
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4), keras.layers.Dense(1)])
    quiet(model.save, str(tmp_path / "gru.h5"))
    with pytest.raises(ValueError, match=r"no GRU layer.*It reads: .*Bidirectional.*LSTM"):
        lstmfast.load_model(str(tmp_path / "gru.h5"))


def test_what_keras_cannot_say_is_not_written(tmp_path):
    peephole = lstmfast.Sequential([L.Input((3, 2)), L.LSTM(2, peephole=True)])
    with pytest.raises(ValueError, match="peepholes"):
        peephole.save(str(tmp_path / "p.keras"))
    hard = lstmfast.Sequential([L.Input((3, 2)), L.LSTM(2, recurrent_activation="hard_sigmoid")])
    with pytest.raises(ValueError, match="hard_sigmoid"):
        hard.save(str(tmp_path / "p.h5"))
    assert not os.listdir(tmp_path)  # nothing half-written


def test_without_h5py_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    model = lstmfast.Sequential([L.Input((3, 2)), L.LSTM(2)])
    model.save(str(tmp_path / "m.h5"))
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        lstmfast.load_model(str(tmp_path / "m.h5"))
    with pytest.raises(ImportError, match="pip install h5py"):
        model.save(str(tmp_path / "n.keras"))


# ---- damaged and hostile files --------------------------------------------------------------------

def small_model():
    model = lstmfast.Sequential([L.Input((4, 3)), L.LSTM(5), L.Dense(2)])
    return model


def text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_zip_bomb_weights_are_refused_before_extracting(tmp_path):
    small_model().save(str(tmp_path / "ok.keras"))
    with zipfile.ZipFile(tmp_path / "ok.keras") as z:
        config = z.read("config.json")
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", config)
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", b"\0" * (64 << 20))  # 64 MiB of zeros: some 64 KiB on disk
    assert os.path.getsize(bomb) < (1 << 20)
    errors = []

    def load():
        with pytest.raises(ValueError, match="declares .* bytes.*refusing") as e:
            lstmfast.load_model(str(bomb))
        errors.append(e)
    assert peak_bytes(load) < (8 << 20)
    assert errors


def test_oversized_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_format, "_MAX_JSON_BYTES", 1 << 20)
    path = tmp_path / "big.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", "{" + " " * (2 << 20) + "}")
        z.writestr("model.weights.h5", b"")
    with pytest.raises(ValueError, match="config.json declares .* bytes"):
        lstmfast.load_model(str(path))


def test_hdf5_with_absurd_dataset_shape_is_refused_before_reading(tmp_path):
    h5py = peer("h5py")
    path = str(tmp_path / "m.h5")
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights"][text(f["model_weights"].attrs["layer_names"][1])]
        name = text(group.attrs["weight_names"][0])
        del group[name]
        group.create_dataset(name, shape=(1 << 20, 1 << 20), dtype="f4", chunks=(1, 1))  # 4 TiB declared
    assert os.path.getsize(path) < (1 << 20)
    errors = []

    def load():
        with pytest.raises(ValueError, match="weight values in the file, more than its"):
            lstmfast.load_model(path)
        errors.append(1)
    assert peak_bytes(load) < (8 << 20)
    assert errors


def test_wrong_shapes_and_types_name_the_weight(tmp_path):
    h5py = peer("h5py")
    path = str(tmp_path / "m.h5")
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        weights = f["model_weights"]
        group = weights[text(weights.attrs["layer_names"][-1])]
        name = text(group.attrs["weight_names"][0])
        del group[name]
        group.create_dataset(name, data=np.zeros((4, 4), "f4"))
    with pytest.raises(ValueError, match=r"has shape \(4, 4\) in the file, the layer needs \(5, 2\)"):
        lstmfast.load_model(path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = "{not json"
    with pytest.raises(ValueError, match="model_config is not valid JSON"):
        lstmfast.load_model(path)


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_truncated_files_get_a_clear_error(tmp_path, extension):
    path = tmp_path / f"m{extension}"
    small_model().save(str(path))
    data = path.read_bytes()
    for cut in (len(data) // 2, 100):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="m" + extension.replace(".", r"\.")):
            lstmfast.load_model(str(path))


def test_model_config_of_a_file_keras_wrote_is_read_by_its_weight_names(keras, tmp_path):
    """Legacy .h5 weights are found through weight_names, not dataset names: renaming the datasets
    (and the listed names with them) changes nothing."""
    model, x = stack(keras, np.random.default_rng(5))
    randomize(model)
    path = str(tmp_path / "m.h5")
    quiet(model.save, path)
    h5py = peer("h5py")
    with h5py.File(path, "r+") as f:
        for layer_name in f["model_weights"].attrs["layer_names"]:
            group = f["model_weights"][text(layer_name)]
            names = [text(n) for n in group.attrs["weight_names"]]
            renamed = [f"w{k}" for k in range(len(names))]
            for old, new in zip(names, renamed):
                group[new] = np.asarray(group[old])
                del group[old]
            group.attrs["weight_names"] = np.array([n.encode() for n in renamed], dtype="S")
        config = json.loads(f.attrs["model_config"])
    assert config["class_name"] == "Sequential"
    assert_allclose(lstmfast.load_model(path).predict(x, verbose=0), keras_predict(model, x), rtol=RTOL, atol=ATOL)


# ---- the optimizer state goes both ways: fit continues as it would have ---------------------------

def continuation_data():
    rng = np.random.default_rng(6)
    return rng.standard_normal((32, 6, 3)).astype("float32"), rng.standard_normal((32, 2)).astype("float32")


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop_centered_momentum", "sgd_momentum"])
@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_training_started_in_keras_continues_in_lstmfast(keras, tmp_path, extension, optimizer):
    x, y = continuation_data()
    make = {"adam": lambda: keras.optimizers.Adam(0.01),
            "rmsprop_centered_momentum": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
            "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9)}[optimizer]
    model = quiet(keras.Sequential, [keras.Input((6, 3)), keras.layers.LSTM(5), keras.layers.Dense(2)])
    model.compile(optimizer=make(), loss="mse")
    quiet(model.fit, x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    path = str(tmp_path / f"k{extension}")
    quiet(model.save, path)
    loaded = lstmfast.load_model(path)
    iterations = quiet(lambda: int(keras.ops.convert_to_numpy(model.optimizer.iterations)))
    assert loaded.optimizer.iterations == iterations == 8
    quiet(model.fit, x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    fresh = lstmfast.load_model(path, compile=False)  # the same weights, a new optimizer: not the same steps
    fresh.compile(optimizer=type(loaded.optimizer).from_config(loaded.optimizer.get_config()), loss="mse")
    fresh.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    theirs = [np.asarray(w) for w in quiet(model.get_weights)]
    for a, b in zip(loaded.get_weights(), theirs):
        assert_allclose(a, b, rtol=1e-4, atol=2e-6)
    assert max(np.abs(a - b).max() for a, b in zip(fresh.get_weights(), theirs)) > 1e-4


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_training_started_in_lstmfast_continues_in_keras(keras, tmp_path, extension):
    """Exactly from a .keras file; from an .h5 file with a fresh optimizer (Keras 3 cannot step
    the optimizer state it loads from .h5 files, its own included)."""
    x, y = continuation_data()
    model = lstmfast.Sequential([L.Input((6, 3)), L.LSTM(5), L.Dense(2)])
    model.compile(optimizer=lstmfast.optimizers.Adam(0.01), loss="mse")
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    path = str(tmp_path / f"m{extension}")
    model.save(path)
    theirs = quiet(keras.saving.load_model, path)
    iterations = quiet(lambda: int(keras.ops.convert_to_numpy(theirs.optimizer.iterations)))
    quiet(theirs.fit, x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    if extension == ".keras":
        assert iterations == model.optimizer.iterations - 4 == 8
        for a, b in zip(model.get_weights(), quiet(theirs.get_weights)):
            assert_allclose(a, np.asarray(b), rtol=1e-4, atol=2e-6)
    else:
        assert iterations == 0 and type(theirs.optimizer).__name__ == "Adam"


def test_keras3_mask_dropped_with_initial_state_is_warned(keras, tmp_path):
    """Keras 3 passes no mask to a layer called with an initial_state; lstmfast applies it. The
    loader says so, and the steps before the padding agree."""
    inp = keras.Input((None,), dtype="int32")
    seq, h, c = keras.layers.LSTM(4, return_state=True, return_sequences=True)(
        keras.layers.Embedding(20, 3, mask_zero=True)(inp))
    out = keras.layers.LSTM(4, return_sequences=True)(seq, initial_state=[h, c])
    model = keras.Model(inp, out)
    randomize(model)
    quiet(model.save, str(tmp_path / "m.keras"))
    with pytest.warns(UserWarning, match="without a mask.*initial_state"):
        loaded = lstmfast.load_model(str(tmp_path / "m.keras"))
    x = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]], dtype="int32")  # padded at the end
    ours, theirs = loaded.predict(x, verbose=0), keras_predict(model, x)
    assert_allclose(ours[:, :3], theirs[:, :3], rtol=RTOL, atol=ATOL)
    assert_allclose(ours[1], theirs[1], rtol=RTOL, atol=ATOL)


def test_oversized_hdf5_attribute_is_refused(tmp_path, monkeypatch):
    h5py = peer("h5py")
    path = str(tmp_path / "m.h5")
    small_model().save(path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "pad": "x" * (2 << 20)})
    monkeypatch.setattr(keras_format, "_MAX_JSON_BYTES", 1 << 20)
    with pytest.raises(ValueError, match="attribute 'model_config' holds .* bytes; refusing"):
        lstmfast.load_model(path)


# ---- weights only ---------------------------------------------------------------------------------

def keras_and_lstmfast_twins(keras):
    """The same architecture in both libraries, with layer names that do not match."""
    theirs = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, return_sequences=True),
                               keras.layers.Bidirectional(keras.layers.LSTM(3)), keras.layers.Dense(2)])
    ours = lstmfast.Sequential([L.Input((5, 3)), L.LSTM(4, return_sequences=True, name="first"),
                                L.Bidirectional(L.LSTM(3), name="both_ways"), L.Dense(2, name="head")])
    return theirs, ours


def test_keras_weights_files_load_into_an_lstmfast_model(keras, tmp_path):
    theirs, ours = keras_and_lstmfast_twins(keras)
    randomize(theirs)
    x = np.random.default_rng(7).standard_normal((2, 5, 3)).astype("float32")
    want = keras_predict(theirs, x)
    quiet(theirs.save_weights, str(tmp_path / "w.weights.h5"))  # Keras 3: matched by Keras's paths
    ours.load_weights(str(tmp_path / "w.weights.h5"))
    assert_allclose(ours.predict(x, verbose=0), want, rtol=RTOL, atol=ATOL)
    for source in ("m.h5", "m.keras"):  # a whole model's file: legacy matched in order, .keras by path
        perturb(ours, seed=9)
        quiet(theirs.save, str(tmp_path / source))
        ours.load_weights(str(tmp_path / source))
        assert_allclose(ours.predict(x, verbose=0), want, rtol=RTOL, atol=ATOL)


def test_lstmfast_weights_file_loads_into_keras(keras, tmp_path):
    theirs, ours = keras_and_lstmfast_twins(keras)
    perturb(ours, seed=8)
    x = np.random.default_rng(7).standard_normal((2, 5, 3)).astype("float32")
    ours.save_weights(str(tmp_path / "w.weights.h5"))
    quiet(theirs.load_weights, str(tmp_path / "w.weights.h5"))
    assert_allclose(keras_predict(theirs, x), ours.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


def test_weights_of_another_architecture_are_refused(keras, tmp_path):
    theirs, _ = keras_and_lstmfast_twins(keras)
    quiet(theirs.save, str(tmp_path / "m.h5"))
    other = lstmfast.Sequential([L.Input((5, 3)), L.LSTM(4), L.Dense(2)])
    with pytest.raises(ValueError, match="weights for 3 layers, the model has 2"):
        other.load_weights(str(tmp_path / "m.h5"))


def test_tf_keras_training_config_compiles(keras, tmp_path):
    """tf.keras 2.x wrote metrics per output as MeanMetricWrapper dicts and Adam with lr/decay."""
    model, x = stack(keras, np.random.default_rng(0))
    path = str(tmp_path / "m.h5")
    quiet(model.save, path)
    training = {"loss": "mse", "loss_weights": None, "weighted_metrics": None, "metrics": [[
        {"class_name": "MeanMetricWrapper", "config": {"name": "mae", "dtype": "float32",
                                                       "fn": "mean_absolute_error"}}]],
        "optimizer_config": {"class_name": "Adam", "config": {"name": "Adam", "lr": 0.002, "decay": 0.01,
                                                              "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07,
                                                              "amsgrad": False}}}
    with peer("h5py").File(path, "r+") as f:
        f.attrs["training_config"] = json.dumps(training)
        f.attrs["keras_version"] = "2.9.0"
        f["model_weights"].attrs["keras_version"] = "2.9.0"
    loaded = lstmfast.load_model(path)
    schedule = loaded.optimizer.learning_rate
    assert isinstance(schedule, lstmfast.optimizers.schedules.InverseTimeDecay)
    assert schedule(0) == pytest.approx(0.002) and schedule(100) == pytest.approx(0.002 / 2)
    y = np.zeros((len(x), 2), "float32")
    assert "mae" in loaded.fit(x, y, epochs=1, verbose=0).history


@pytest.mark.parametrize("damage", ["layers_not_a_list", "node_not_a_list", "reference_of_numbers",
                                    "deep_nesting", "config_of_a_string"])
def test_damaged_model_configs_get_a_value_error(tmp_path, damage):
    model = lstmfast.Model(*(lambda i: (i, L.Dense(2)(L.LSTM(3)(i))))(L.Input((4, 2))))
    path = str(tmp_path / "m.h5")
    model.save(path)
    h5py = peer("h5py")
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        if damage == "layers_not_a_list":
            config["config"]["layers"] = 7
        elif damage == "node_not_a_list":
            layers[1]["inbound_nodes"] = [5]
        elif damage == "reference_of_numbers":
            layers[1]["inbound_nodes"] = [{"args": [[1, 2, 3]], "kwargs": {}}]
        elif damage == "deep_nesting":
            layers[1]["inbound_nodes"] = "DEEP"
        else:
            layers[1]["config"] = "not a dict"
        f.attrs["model_config"] = json.dumps(config).replace('"DEEP"', "[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match=r"m\.h5"):
        lstmfast.load_model(path)
