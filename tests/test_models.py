"""Whole models: gradients by finite differences, training, saving, summary, errors.

Gradient checks run the model's own training path (forward with caches, loss, backward) in
float64 and compare every weight's gradient, on a sample of its elements, with central
differences of the same loss.
"""
import json
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast
from lstmfast import backend, saving
from lstmfast.layers import LSTM, Bidirectional, Dense, Embedding, Input, TimeDistributed
from lstmfast.models import Model, Sequential

FD_EPS = 1e-6
FD_RTOL = 1e-5
FD_ATOL = 1e-8


def loss_and_grads(model, xs, ys, seed=7):
    """Loss and the gradient of every weight, from the model's training path (fixed dropout masks)."""
    backend.set_random_seed(seed)
    for layer in model._layers:
        layer.zero_grads()
    values, masks, caches = model._run(xs, training=True, keep_caches=True)
    loss, out_grads = model._loss_and_grads(ys, values, masks, None)
    model._backward(caches, out_grads)
    return loss, [layer.grads[k].copy() for layer in model._layers for k in layer.weights]


def loss_only(model, xs, ys, seed=7):
    backend.set_random_seed(seed)
    values, masks, _ = model._run(xs, training=True, keep_caches=True)
    return model._loss_and_grads(ys, values, masks, None)[0]


def check_model_gradients(model, xs, ys, samples_per_weight=12, seed=0):
    _, grads = loss_and_grads(model, xs, ys)
    weights = [w for layer in model._layers for w in layer.weights.values()]
    assert len(weights) == len(grads) and weights
    rng = np.random.default_rng(seed)
    for w, g in zip(weights, grads):
        flat_w, flat_g = w.reshape(-1), g.reshape(-1)
        picks = rng.choice(flat_w.size, size=min(samples_per_weight, flat_w.size), replace=False)
        for j in picks:
            old = flat_w[j]
            flat_w[j] = old + FD_EPS
            up = loss_only(model, xs, ys)
            flat_w[j] = old - FD_EPS
            down = loss_only(model, xs, ys)
            flat_w[j] = old
            numeric = (up - down) / (2 * FD_EPS)
            assert_allclose(flat_g[j], numeric, rtol=FD_RTOL, atol=FD_ATOL,
                            err_msg=f"weight of shape {w.shape}, element {j}")


def one_hot(labels, n):
    out = np.zeros(labels.shape + (n,))
    np.put_along_axis(out, labels[..., None], 1.0, axis=-1)
    return out


# ---- gradients through whole models ------------------------------------------------------------

def test_gradients_embedding_lstm_dense(float64):
    backend.set_random_seed(1)
    model = Sequential([Embedding(12, 5), LSTM(6), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(1)
    x = rng.integers(1, 12, size=(4, 7))
    model._ensure_built_from([x])
    check_model_gradients(model, [x], [one_hot(rng.integers(0, 3, 4), 3)])


def test_gradients_stacked_return_sequences(float64):
    backend.set_random_seed(2)
    model = Sequential([LSTM(5, return_sequences=True, input_shape=(6, 3)), LSTM(4, return_sequences=True),
                        TimeDistributed(Dense(2))])
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(2)
    check_model_gradients(model, [rng.standard_normal((3, 6, 3))], [rng.standard_normal((3, 6, 2))])


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_gradients_bidirectional(float64, merge_mode):
    backend.set_random_seed(3)
    model = Sequential([Bidirectional(LSTM(4), merge_mode=merge_mode, input_shape=(5, 3)),
                        Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    rng = np.random.default_rng(3)
    check_model_gradients(model, [rng.standard_normal((4, 5, 3))], [rng.integers(0, 2, (4, 1)).astype(float)])


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_gradients_masked(float64, padding):
    backend.set_random_seed(4)
    model = Sequential([Embedding(10, 4, mask_zero=True), LSTM(5, return_sequences=True), LSTM(3),
                        Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(4)
    x = rng.integers(1, 10, size=(5, 6))
    for b, n in enumerate([6, 3, 1, 4, 5]):
        if padding == "pre":
            x[b, :6 - n] = 0
        else:
            x[b, n:] = 0
    model._ensure_built_from([x])
    check_model_gradients(model, [x], [rng.integers(0, 2, 5)])


def test_gradients_masked_sequence_loss(float64):
    # A masked sequence output: the loss is the mean over unmasked steps (Keras semantics).
    backend.set_random_seed(5)
    model = Sequential([Embedding(8, 3, mask_zero=True), LSTM(4, return_sequences=True),
                        Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(5)
    x = rng.integers(1, 8, size=(3, 5))
    x[0, 3:] = 0
    x[2, :2] = 0
    model._ensure_built_from([x])
    y = one_hot(rng.integers(0, 3, (3, 5)), 3)
    check_model_gradients(model, [x], [y])
    # Changing targets at masked steps must not change the loss.
    y2 = y.copy()
    y2[0, 3:] = np.roll(y2[0, 3:], 1, axis=-1)
    y2[2, :2] = np.roll(y2[2, :2], 1, axis=-1)
    assert not np.array_equal(y2, y)
    assert loss_only(model, [x], [y2]) == pytest.approx(loss_only(model, [x], [y]), rel=1e-12)


def test_gradients_recurrent_dropout_fixed_seed(float64):
    backend.set_random_seed(6)
    model = Sequential([LSTM(6, dropout=0.3, recurrent_dropout=0.4, input_shape=(4, 3)), Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 2))
    check_model_gradients(model, [x], [y])
    # The masks really act: training-mode loss differs from inference-mode loss.
    inference = model._loss_and_grads([y], model._run([x], training=False, keep_caches=False)[0],
                                      [None] * model._n_tensors, None)[0]
    assert abs(loss_only(model, [x], [y]) - inference) > 1e-6


def test_gradients_functional_encoder_decoder(float64):
    backend.set_random_seed(7)
    enc_in = Input(shape=(5, 3))
    _, h, c = LSTM(4, return_state=True)(enc_in)
    dec_in = Input(shape=(4, 2))
    dec = LSTM(4, return_sequences=True)(dec_in, initial_state=[h, c])
    out = Dense(2, activation="softmax")(dec)
    model = Model([enc_in, dec_in], out)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 4, 2))]
    check_model_gradients(model, xs, [one_hot(rng.integers(0, 2, (3, 4)), 2)])


# ---- training, prediction, weights ------------------------------------------------------------

def small_classifier(units=8, features=4, classes=3, length=5, optimizer="adam"):
    model = Sequential([LSTM(units, input_shape=(length, features)), Dense(classes, activation="softmax")])
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_fit_learns_and_reports_history():
    backend.set_random_seed(11)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((256, 5, 4)).astype(np.float32)
    labels = (x[:, -1, 0] > 0).astype(int) + (x[:, 0, 1] > 0).astype(int)
    y = one_hot(labels, 3).astype(np.float32)
    model = small_classifier(optimizer=lstmfast.optimizers.Adam(learning_rate=0.02))
    history = model.fit(x, y, batch_size=16, epochs=8, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 8 and history.epoch == list(range(8))
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.7
    loss, acc = model.evaluate(x, y, verbose=0)
    assert acc > 0.8 and loss < history.history["loss"][0]
    p = model.predict(x[:10], verbose=0)
    assert p.shape == (10, 3) and np.allclose(p.sum(-1), 1, atol=1e-5)


def test_train_test_predict_on_batch_agree_with_fit_semantics():
    backend.set_random_seed(12)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 5, 4)).astype(np.float32)
    y = one_hot(rng.integers(0, 3, 8), 3).astype(np.float32)
    model = small_classifier()
    before = model.test_on_batch(x, y)
    loss_before = before[0]
    model.train_on_batch(x, y)
    after = model.test_on_batch(x, y, return_dict=True)
    assert after["loss"] < loss_before
    assert_allclose(model.predict_on_batch(x), model.predict(x, verbose=0), rtol=1e-6)


def test_get_set_weights_round_trip():
    backend.set_random_seed(13)
    a, b = small_classifier(), small_classifier()
    weights = a.get_weights()
    assert [w.shape for w in weights] == [(4, 32), (8, 32), (32,), (8, 3), (3,)]
    b.set_weights(weights)
    x = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))
    weights[0][0, 0] += 1.0  # get_weights returns copies
    assert not np.array_equal(a.get_weights()[0], weights[0])


def test_set_weights_errors_name_the_problem():
    model = small_classifier()
    weights = model.get_weights()
    with pytest.raises(ValueError, match="5 weight arrays, got 4"):
        model.set_weights(weights[:4])
    bad = list(weights)
    bad[1] = np.zeros((4, 32), np.float32)
    with pytest.raises(ValueError, match=r"\(8, 32\)"):
        model.set_weights(bad)


def test_summary_counts_match_keras():
    model = Sequential([LSTM(25, input_shape=(5, 10)), Dense(10, activation="softmax")])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert model.count_params() == 3860
    assert "3,600" in text and "260" in text and "Total params: 3,860" in text
    assert "(None, 25)" in text and "(None, 10)" in text


def test_training_is_bitwise_reproducible_across_thread_counts():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((64, 6, 4)).astype(np.float32)
    y = one_hot(rng.integers(0, 3, 64), 3).astype(np.float32)
    original = lstmfast.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1):
            lstmfast.set_num_threads(threads)
            lstmfast.utils.set_random_seed(99)
            model = Sequential([LSTM(70, input_shape=(6, 4), dropout=0.1, recurrent_dropout=0.1),
                                Dense(3, activation="softmax")])
            model.compile(optimizer="adam", loss="categorical_crossentropy")
            model.fit(x, y, batch_size=16, epochs=2, verbose=0)
            results.append(model.get_weights())
    finally:
        lstmfast.set_num_threads(original)
    for other in results[1:]:
        for w1, w2 in zip(results[0], other):
            assert_array_equal(w1, w2)


# ---- saving -----------------------------------------------------------------------------------

def test_save_load_identical_predictions_and_resume(tmp_path):
    backend.set_random_seed(15)
    rng = np.random.default_rng(15)
    x = rng.standard_normal((32, 5, 4)).astype(np.float32)
    y = one_hot(rng.integers(0, 3, 32), 3).astype(np.float32)
    model = small_classifier()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    path = tmp_path / "model.lstmfast"
    model.save(path)
    loaded = lstmfast.load_model(path)
    assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    # Training resumes exactly: one more epoch on both gives the same weights.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert_array_equal(a, b)
    # The file is a zip of JSON and .npy: nothing pickled.
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert "model.json" in names and all(n == "model.json" or n.endswith(".npy") for n in names)
        json.loads(z.read("model.json"))


@pytest.mark.parametrize("name", ["sequential_format1", "functional_format1"])
def test_files_written_by_earlier_versions_still_load(name):
    """tests/data holds files saved by an earlier lstmfast (tests/data/make_saved_models.py): they load
    with their weights and optimizer state, so predictions and the next training step are the same."""
    path = os.path.join(os.path.dirname(__file__), "data", name + ".lstmfast")
    expected = np.load(os.path.join(os.path.dirname(__file__), "data", name + ".expected.npz"))
    xs = [expected[f"x{k}"] for k in range(2) if f"x{k}" in expected]
    x = xs if len(xs) > 1 else xs[0]
    model = lstmfast.load_model(path)
    assert saving.read_metadata(path) == {"made_by": "tests/data/make_saved_models.py"}
    assert_allclose(model.predict(x, verbose=0), expected["prediction"], rtol=1e-6, atol=1e-7)
    model.train_on_batch(x, expected["y"])
    weights = model.get_weights()
    assert len(weights) == sum(k.startswith("weight") for k in expected.files)
    for k, w in enumerate(weights):
        assert_allclose(w, expected[f"weight{k}"], rtol=1e-5, atol=1e-7, err_msg=f"weight {k}")


def test_a_model_saved_and_loaded_keeps_its_config(tmp_path):
    model = lstmfast.load_model(os.path.join(os.path.dirname(__file__), "data", "functional_format1.lstmfast"))
    model.save(tmp_path / "again.lstmfast")
    again = lstmfast.load_model(tmp_path / "again.lstmfast")
    assert again.get_config() == model.get_config()
    assert again.get_compile_config() == model.get_compile_config()
    assert Model.from_config(model.get_config()).get_config() == model.get_config()
    with zipfile.ZipFile(tmp_path / "again.lstmfast") as z:
        manifest = json.loads(z.read("model.json"))
    with zipfile.ZipFile(os.path.join(os.path.dirname(__file__), "data", "functional_format1.lstmfast")) as z:
        old = json.loads(z.read("model.json"))
    assert list(manifest) == list(old)               # the same entries, in the same order
    assert {k: v for k, v in manifest.items() if k != "metadata"} == {k: v for k, v in old.items() if k != "metadata"}


def test_saving_does_not_import_models():
    # saving reads and writes the archive; building models from it is models.load_model (no import cycle)
    code = "import sys, lstmfast.saving; sys.exit('lstmfast.models' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
    assert lstmfast.load_model is lstmfast.models.load_model


def test_save_load_functional_model(tmp_path):
    backend.set_random_seed(16)
    enc_in = Input(shape=(5, 3))
    _, h, c = LSTM(4, return_state=True)(enc_in)
    dec_in = Input(shape=(4, 2))
    dec = LSTM(4, return_sequences=True)(dec_in, initial_state=[h, c])
    model = Model([enc_in, dec_in], Dense(2, activation="softmax")(dec))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(16)
    xs = [rng.standard_normal((3, 5, 3)).astype(np.float32), rng.standard_normal((3, 4, 2)).astype(np.float32)]
    path = tmp_path / "s2s.lstmfast"
    model.save(path)
    loaded = lstmfast.load_model(path)
    assert_array_equal(model.predict(xs, verbose=0), loaded.predict(xs, verbose=0))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    model = small_classifier()
    path = tmp_path / "m.lstmfast"
    model.save(path)
    first = path.read_bytes()
    model.set_weights([w + 1 for w in model.get_weights()])
    model.save(path)
    assert path.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lstmfast"]
    with pytest.raises(FileExistsError):
        model.save(path, overwrite=False)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_saved_files_get_the_permissions_the_umask_gives(tmp_path, umask):
    # The temporary file behind the atomic write must not leave an owner-only (0600) model file.
    model = small_classifier()
    old = os.umask(umask)
    try:
        model.save(tmp_path / "m.lstmfast")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.lstmfast").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("content,match", [
    (b"definitely not a zip", "not a zip archive"),
    (None, "no model.json"),
])
def test_load_rejects_damaged_or_foreign_files(tmp_path, content, match):
    path = tmp_path / "bad.lstmfast"
    if content is None:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("something.txt", "hello")
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        lstmfast.load_model(path)


def test_load_rejects_truncated_and_tampered_files(tmp_path):
    model = small_classifier()
    path = tmp_path / "m.lstmfast"
    model.save(path)
    data = path.read_bytes()
    (tmp_path / "cut.lstmfast").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        lstmfast.load_model(tmp_path / "cut.lstmfast")
    # An unknown layer class in the architecture is refused, never imported.
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("model.json"))
        arrays = {n: z.read(n) for n in z.namelist() if n != "model.json"}
    manifest["model"]["layers"][0]["class_name"] = "os.system"
    tampered = tmp_path / "tampered.lstmfast"
    with zipfile.ZipFile(tampered, "w") as z:
        z.writestr("model.json", json.dumps(manifest))
        for n, b in arrays.items():
            z.writestr(n, b)
    with pytest.raises(ValueError, match="unknown layer class 'os.system'"):
        lstmfast.load_model(tampered)


def test_pickled_array_in_file_is_refused(tmp_path):
    model = small_classifier()
    path = tmp_path / "m.lstmfast"
    model.save(path)
    import io
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    rewritten = tmp_path / "pickled.lstmfast"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(rewritten, "w") as zout:
        for n in zin.namelist():
            zout.writestr(n, buf.getvalue() if n == "weights/00000.npy" else zin.read(n))
    with pytest.raises(ValueError, match="cannot read weights/00000.npy"):
        lstmfast.load_model(rewritten)


def test_save_and_load_weights(tmp_path):
    a, b = small_classifier(), small_classifier()
    path = tmp_path / "w.lstmfast"
    a.save_weights(path)
    b.load_weights(path)
    for w1, w2 in zip(a.get_weights(), b.get_weights()):
        assert_array_equal(w1, w2)
    with pytest.raises(ValueError, match="holds only weights"):
        lstmfast.load_model(path)
    other = Sequential([LSTM(9, input_shape=(5, 4)), Dense(3)])
    with pytest.raises(ValueError, match="shape"):
        other.load_weights(path)


# ---- bad input --------------------------------------------------------------------------------

def test_fit_before_compile_raises():
    model = Sequential([LSTM(4, input_shape=(3, 2)), Dense(2)])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, 3, 2)), np.zeros((2, 2)), verbose=0)


def test_x_y_batch_mismatch():
    model = small_classifier()
    with pytest.raises(ValueError, match="same number of samples"):
        model.fit(np.zeros((4, 5, 4), np.float32), np.zeros((3, 3), np.float32), verbose=0)


def test_wrong_feature_count():
    model = small_classifier()
    with pytest.raises(ValueError, match=r"\(5, 4\).*got \(2, 5, 7\)"):
        model.fit(np.zeros((2, 5, 7), np.float32), np.zeros((2, 3), np.float32), verbose=0)


def test_wrong_number_of_classes():
    model = small_classifier()
    with pytest.raises(ValueError, match="3"):
        model.fit(np.zeros((2, 5, 4), np.float32), np.zeros((2, 5), np.float32), verbose=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(optimizer="adamw_typo", loss="mse"), "adam"),
    (dict(optimizer="adam", loss="mean_squared_typo"), "mse|mean_squared_error"),
    (dict(optimizer="adam", loss="mse", metrics=["accuracyy"]), "accuracy"),
])
def test_unknown_names_list_valid_ones(kwargs, match):
    model = Sequential([LSTM(4, input_shape=(3, 2)), Dense(2)])
    with pytest.raises(ValueError, match=match):
        model.compile(**kwargs)


def test_unknown_activation_lists_valid_ones():
    with pytest.raises(ValueError, match="relu"):
        Sequential([LSTM(4, input_shape=(3, 2)), Dense(2, activation="relux")])


def test_stateful_layer_fed_another_batch_size():
    model = Sequential([LSTM(4, stateful=True, batch_input_shape=(2, 3, 2)), Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((2, 3, 2), np.float32), np.zeros((2, 2), np.float32), batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="batch size"):
        model.predict(np.zeros((3, 3, 2), np.float32), batch_size=3, verbose=0)


# ---- the echo task ----------------------------------------------------------------------------

def test_echo_task_reaches_full_accuracy():
    from lstmfast.tasks import echo
    # The tutorial's budget: 10,000 single-example updates.
    result = echo.run(steps=10_000, seed=2, verbose=0)
    assert result["accuracy"] == 1.0, result
    ex = result["example"]
    assert len(ex["sequence"]) == 5 and ex["expected"] == ex["sequence"][2]


def test_echo_cli_writes_metrics(tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "lstmfast", "echo", "--steps", "300", "--quiet",
                           "--metrics-json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert set(metrics) >= {"accuracy", "train_seconds", "example"} and 0.0 <= metrics["accuracy"] <= 1.0


def test_echo_cli_rejects_bad_options():
    proc = subprocess.run([sys.executable, "-m", "lstmfast", "echo", "--index", "9", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "index" in proc.stderr


def test_metadata_round_trip(tmp_path):
    model = small_classifier()
    path = tmp_path / "m.lstmfast"
    model.save(path, metadata={"task": "text", "vocab": ["a", "b"]})
    assert saving.read_metadata(path) == {"task": "text", "vocab": ["a", "b"]}
    model.save(path)
    assert saving.read_metadata(path) == {}
    with pytest.raises(TypeError, match="JSON"):
        model.save(path, metadata={"bad": object()})


def test_fit_verbose_2_reports_the_epoch_time(capsys):
    # One line per epoch, timed from the epoch's start (the bar is only drawn at the end).
    model = Sequential([Dense(2, input_shape=(3,))])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((400, 3), np.float32), np.zeros((400, 2), np.float32), batch_size=2, epochs=2, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if "/step" in line]
    assert len(lines) == 2
    assert all(line.startswith("200/200 - ") and " 0us/step" not in line for line in lines), lines
