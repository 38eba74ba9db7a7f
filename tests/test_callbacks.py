"""Callbacks and the progress bar, driven through a CallbackList as Model.fit drives them, with
Keras 3 itself as the reference when installed; and the callbacks of fit, evaluate and predict on a
real model."""
import csv
import os
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from lstmfast import backend, callbacks, metrics, optimizers
from lstmfast.layers import Dense, Input
from lstmfast.models import Sequential

from conftest import peer


class FakeModel:
    """What the callbacks touch: weights, stop_training, save/save_weights, optimizer, metrics."""

    def __init__(self):
        self.stop_training = False
        self.weights = [np.zeros(2), np.zeros((1, 3))]
        self.optimizer = optimizers.SGD(learning_rate=0.1)
        self.saved = []
        self.metrics = []

    def get_weights(self):
        return self.weights  # the live arrays: callbacks must copy what they keep

    def set_weights(self, weights):
        for w, v in zip(self.weights, weights):
            w[...] = v

    def save(self, path, overwrite=True):
        self.saved.append(("model", path))
        with open(path, "w") as f:
            f.write("model")

    def save_weights(self, path, overwrite=True):
        self.saved.append(("weights", path))
        with open(path, "w") as f:
            f.write("weights")


def fit(model, cbs, epoch_logs, batches=0):
    """Drive a CallbackList like Model.fit: the weights of epoch e are filled with e."""
    cl = callbacks.CallbackList(cbs, model=model, add_history=True, epochs=len(epoch_logs), steps=batches or None)
    cl.on_train_begin()
    for epoch, logs in enumerate(epoch_logs):
        cl.on_epoch_begin(epoch)
        for w in model.weights:
            w[...] = epoch
        for b in range(batches):
            cl.on_train_batch_begin(b)
            cl.on_train_batch_end(b, {"loss": 1.0 / (b + 1)})
        cl.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    cl.on_train_end()
    return cl


def test_early_stopping_patience_and_restore():
    model = FakeModel()
    es = callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    losses_seq = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5]
    fit(model, [es], [{"val_loss": v} for v in losses_seq])
    assert es.stopped_epoch == 3 and model.stop_training
    assert es.best == 0.9 and es.best_epoch == 1
    assert_array_equal(model.weights[0], 1.0)                       # weights of the best epoch
    assert model.history.epoch == [0, 1, 2, 3]
    # Keras 3 restores the best weights at the end even without an early stop
    model = FakeModel()
    es = callbacks.EarlyStopping(monitor="loss", patience=5, restore_best_weights=True)
    fit(model, [es], [{"loss": v} for v in (1.0, 0.5, 0.7)])
    assert not model.stop_training and es.stopped_epoch == 0
    assert_array_equal(model.weights[1], 1.0)
    # patience 0 stops at the first non-improvement; min_delta demands a real improvement
    model = FakeModel()
    es = callbacks.EarlyStopping(monitor="loss", min_delta=0.2)
    fit(model, [es], [{"loss": v} for v in (1.0, 0.9, 0.5)])
    assert es.stopped_epoch == 1


def test_early_stopping_modes_baseline_and_warmup():
    model = FakeModel()
    es = callbacks.EarlyStopping(monitor="val_accuracy", patience=1)  # auto: maximise
    fit(model, [es], [{"val_accuracy": v} for v in (0.5, 0.6, 0.7, 0.65, 0.6)])
    assert es.stopped_epoch == 3 and es.best == 0.7
    model = FakeModel()
    es = callbacks.EarlyStopping(monitor="score", mode="max", patience=1)
    fit(model, [es], [{"score": v} for v in (1, 2, 3)])
    assert es.stopped_epoch == 0 and not model.stop_training
    model = FakeModel()
    es = callbacks.EarlyStopping(monitor="score", patience=1)
    with pytest.raises(ValueError, match="mode='max' or mode='min'"):
        fit(model, [es], [{"score": 1.0}])
    model = FakeModel()
    model.metrics = [metrics.BinaryAccuracy(name="hits")]              # a model metric gives the direction
    es = callbacks.EarlyStopping(monitor="val_hits", patience=0)
    fit(model, [es], [{"val_hits": v} for v in (0.1, 0.2, 0.1)])
    assert es.stopped_epoch == 2
    model = FakeModel()
    es = callbacks.EarlyStopping(monitor="loss", patience=2)
    fit(model, [es], [{"loss": v} for v in (0.9, 0.8, 0.85)])
    assert not model.stop_training
    model = FakeModel()
    # Keras 3: an improvement that does not beat the baseline does not reset the wait
    es = callbacks.EarlyStopping(monitor="loss", patience=2, baseline=0.5)
    fit(model, [es], [{"loss": v} for v in (0.9, 0.8, 0.85)])
    assert es.stopped_epoch == 2
    model = FakeModel()
    es = callbacks.EarlyStopping(monitor="loss", patience=0, start_from_epoch=2)
    fit(model, [es], [{"loss": v} for v in (1.0, 2.0, 3.0, 2.5, 2.6)])
    assert es.stopped_epoch == 4


def test_early_stopping_missing_monitor_warns():
    model = FakeModel()
    es = callbacks.EarlyStopping(monitor="val_loss")
    with pytest.warns(UserWarning, match="val_loss.*not available. Available metrics are: loss"):
        fit(model, [es], [{"loss": 1.0}])
    assert not model.stop_training
    with pytest.warns(UserWarning, match="unknown"):
        callbacks.EarlyStopping(mode="sideways")


def test_model_checkpoint(tmp_path):
    model = FakeModel()
    pattern = str(tmp_path / "sub" / "ckpt-{epoch:02d}-{val_loss:.2f}.keras")
    mc = callbacks.ModelCheckpoint(pattern, save_best_only=True)
    fit(model, [mc], [{"val_loss": v} for v in (0.5, 0.7, 0.25, 0.3)])
    names = sorted(os.listdir(tmp_path / "sub"))
    assert names == ["ckpt-01-0.50.keras", "ckpt-03-0.25.keras"]
    assert [kind for kind, _ in model.saved] == ["model", "model"]
    model = FakeModel()
    mc = callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch}.weights.h5"), save_weights_only=True,
                                   monitor="val_acc", save_best_only=True)
    fit(model, [mc], [{"val_acc": v} for v in (0.5, 0.4, 0.6)])        # auto: maximise accuracy
    assert [os.path.basename(p) for _, p in model.saved] == ["w-1.weights.h5", "w-3.weights.h5"]
    assert {kind for kind, _ in model.saved} == {"weights"}
    model = FakeModel()
    mc = callbacks.ModelCheckpoint(str(tmp_path / "every-{epoch}.keras"))
    fit(model, [mc], [{"loss": 1.0}] * 3)
    assert len(model.saved) == 3
    model = FakeModel()
    mc = callbacks.ModelCheckpoint(str(tmp_path / "b-{epoch}-{batch}.keras"), save_freq=3)
    fit(model, [mc], [{"loss": 1.0}] * 2, batches=4)                 # 8 batches: saves after batches 3 and 6
    assert [os.path.basename(p) for _, p in model.saved] == ["b-1-3.keras", "b-2-2.keras"]
    model = FakeModel()
    mc = callbacks.ModelCheckpoint(str(tmp_path / "x-{val_loss}.keras"))
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        fit(model, [mc], [{"loss": 1.0}])
    model = FakeModel()
    mc = callbacks.ModelCheckpoint(str(tmp_path / "y.keras"), save_best_only=True)
    with pytest.warns(UserWarning, match="only with val_loss available"):
        fit(model, [mc], [{"loss": 1.0}])
    assert len(model.saved) == 1                                    # Keras 3 saves anyway
    with pytest.raises(ValueError, match="save_freq"):
        callbacks.ModelCheckpoint("z.keras", save_freq="batch")


def test_reduce_lr_on_plateau():
    model = FakeModel()
    rl = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, cooldown=2, min_lr=0.02)
    cl = fit(model, [rl], [{"loss": 1.0}] * 9)
    lrs = model.history.history["learning_rate"]
    # lr logged at each epoch end, before a reduction made in that epoch
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025])
    assert model.optimizer.learning_rate == pytest.approx(0.02)        # floored at min_lr
    assert isinstance(model.optimizer.learning_rate, float)
    assert cl.callbacks[-1] is model.history
    model = FakeModel()
    rl = callbacks.ReduceLROnPlateau(monitor="val_acc", factor=0.1, patience=1)
    fit(model, [rl], [{"val_acc": v} for v in (0.5, 0.6, 0.6)])       # auto: maximise accuracy
    assert model.optimizer.current_learning_rate() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="factor >= 1.0"):
        callbacks.ReduceLROnPlateau(factor=1.5)
    model = FakeModel()
    with pytest.warns(UserWarning, match="val_loss"):
        fit(model, [callbacks.ReduceLROnPlateau()], [{"loss": 1.0}])


def test_learning_rate_scheduler_and_terminate_on_nan(capsys):
    model = FakeModel()
    sched = callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr, verbose=1)
    fit(model, [sched], [{"loss": 1.0}] * 3)
    assert model.history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025])
    assert "LearningRateScheduler setting learning rate to 0.05" in capsys.readouterr().out
    model = FakeModel()
    fit(model, [callbacks.LearningRateScheduler(lambda epoch: 0.3)], [{"loss": 1.0}])
    assert model.optimizer.learning_rate == 0.3
    model = FakeModel()
    term = callbacks.TerminateOnNaN()
    cl = callbacks.CallbackList([term], model=model)
    cl.on_train_batch_end(0, {"loss": 1.0})
    assert not model.stop_training
    cl.on_train_batch_end(1, {"loss": float("nan")})
    assert model.stop_training


def test_csv_logger(tmp_path):
    path = tmp_path / "log.csv"
    fit(FakeModel(), [callbacks.CSVLogger(path)], [{"loss": 0.5, "accuracy": 0.25}, {"loss": 0.25, "accuracy": 0.5}])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert rows[1:] == [["0", "0.25", "0.5", "NA", "NA"], ["1", "0.5", "0.25", "NA", "NA"]]
    fit(FakeModel(), [callbacks.CSVLogger(path, append=True)], [{"loss": 0.125, "accuracy": 0.75}])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 4 and rows[3] == ["0", "0.75", "0.125", "NA", "NA"]
    path2 = tmp_path / "val.tsv"
    fit(FakeModel(), [callbacks.CSVLogger(path2, separator="\t")],
        [{"loss": 1.0, "val_loss": 2.0}])
    assert path2.read_text().splitlines() == ["epoch\tloss\tval_loss", "0\t1.0\t2.0"]


def test_lambda_callback_and_dispatch():
    calls = []
    lam = callbacks.LambdaCallback(
        on_train_begin=lambda logs: calls.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, logs["loss"])),
        on_train_batch_end=lambda batch, logs: calls.append(("batch_end", batch)),
        on_train_end=lambda logs: calls.append("train_end"))
    fit(FakeModel(), [lam], [{"loss": 2.0}], batches=2)
    assert calls == ["train_begin", ("epoch_begin", 0), ("batch_end", 0), ("batch_end", 1),
                     ("epoch_end", 0, 2.0), "train_end"]
    with pytest.raises(TypeError, match="unknown hook"):
        callbacks.LambdaCallback(on_epoch_finish=print)

    class Legacy(callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_batch_end(self, batch, logs=None):
            self.seen.append(batch)

    legacy = Legacy()
    cl = callbacks.CallbackList([legacy], model=FakeModel(), add_history=True)
    assert cl.wants("on_train_batch_end") and not cl.wants("on_train_batch_begin")
    assert cl.wants("on_epoch_end") and not cl.wants("on_test_batch_end")
    cl.on_train_batch_end(4, {})
    assert legacy.seen == [4]
    assert not callbacks.CallbackList([], model=FakeModel()).wants("on_train_batch_end")
    with pytest.raises(TypeError, match="Callback instances"):
        callbacks.CallbackList([object()])


def test_progbar_verbose_1_not_a_tty(capsys):
    cl = callbacks.CallbackList([], model=FakeModel(), add_progbar=True, verbose=1, epochs=2, steps=10)
    cl.on_train_begin()
    for epoch in range(2):
        cl.on_epoch_begin(epoch)
        for b in range(10):
            cl.on_train_batch_end(b, {"accuracy": 0.9, "loss": 0.12345 / (epoch + 1)})
        cl.on_epoch_end(epoch, {"accuracy": 0.9, "loss": 0.12345 / (epoch + 1)})
    cl.on_train_end()
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    assert lines[1].startswith("10/10 " + "━" * 20 + " 0s ")
    assert lines[1].endswith("/step - accuracy: 0.9000 - loss: 0.1235")
    assert lines[3].endswith("- loss: 0.0617")


def test_progbar_verbose_2_and_dynamic(capsys, monkeypatch):
    bar = callbacks.Progbar(target=100, verbose=2)
    bar.update(50, [("loss", 1.0)])
    bar.update(100, [("loss", 2.0)])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("100/100 - 0s - ") and "s/step" in out and out.endswith(" - loss: 2.0000\n")
    bar = callbacks.Progbar(target=10, verbose=0)
    bar.update(1, [("loss", 1.0)])
    bar.update(3, [("loss", 2.0)])                                   # counts for steps 2 and 3
    assert bar._metrics_text() == " - loss: 1.6667"
    bar = callbacks.Progbar(target=10, verbose=0, stateful_metrics=["acc"])
    bar.update(1, [("acc", 1.0)])
    bar.update(3, [("acc", 2.0)])
    assert bar._metrics_text() == " - acc: 2.0000"
    monkeypatch.setattr(callbacks.progbar, "_interactive", lambda: True)
    bar = callbacks.Progbar(target=4, verbose=1, interval=0.0)
    for i in range(1, 5):
        bar.update(i, {"loss": 1e-4})
    out = capsys.readouterr().out
    assert out.count("\r") == 4 and out.endswith("\n") and out.count("\n") == 1
    assert "\x1b[32m" in out and "1/4" in out and "loss: 1.0000e-04" in out
    bar = callbacks.Progbar(target=None, verbose=1, interval=0.0)
    bar.update(3)
    assert "      3/Unknown" in capsys.readouterr().out


def test_history_and_progbar_see_what_callbacks_add(capsys):
    """History and the progress bar come last, so they show logs["learning_rate"] (Keras order)."""
    model = FakeModel()
    cl = callbacks.CallbackList([callbacks.ReduceLROnPlateau(monitor="loss", patience=1)], model=model,
                                add_history=True, add_progbar=True, verbose=2, epochs=1, steps=3)
    cl.on_train_begin()
    cl.on_epoch_begin(0)
    for b in range(3):
        cl.on_train_batch_end(b, {"loss": 1.0})
    cl.on_epoch_end(0, {"loss": 1.0})
    cl.on_train_end()
    assert model.history.history == {"loss": [1.0], "learning_rate": [0.1]}
    out = capsys.readouterr().out
    assert out.startswith("3/3 - 0s - ") and out.endswith("/step - loss: 1.0000 - learning_rate: 0.1000\n")


# ---- Keras 3 itself as the reference (skipped without keras) ---------------------------------

class CopyingFakeModel(FakeModel):
    """get_weights returns copies, as real models do (Keras's callbacks keep them as they come)."""

    def get_weights(self):
        return [w.copy() for w in self.weights]


def _keras_fit(cb, model, epoch_logs):
    cb.set_model(model)
    cb.set_params({"verbose": 0, "epochs": len(epoch_logs), "steps": None})
    history = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cb.on_train_begin()
        for epoch, logs in enumerate(epoch_logs):
            cb.on_epoch_begin(epoch)
            for w in model.weights:
                w[...] = epoch
            logs = dict(logs)
            cb.on_epoch_end(epoch, logs)
            history.append(logs)
            if model.stop_training:
                break
        cb.on_train_end()
    return history


MONITOR_CASES = [
    ("EarlyStopping", dict(patience=2, restore_best_weights=True), "val_loss", (1.0, 0.9, 0.95, 0.96, 0.97, 0.5)),
    ("EarlyStopping", dict(patience=1, min_delta=0.05), "loss", (1.0, 0.97, 0.9, 0.89, 0.88)),
    ("EarlyStopping", dict(patience=5, restore_best_weights=True), "loss", (1.0, 0.5, 0.7)),
    ("EarlyStopping", dict(patience=2, baseline=0.5), "loss", (0.9, 0.8, 0.85, 0.84)),
    ("EarlyStopping", dict(patience=0, start_from_epoch=2), "loss", (1.0, 2.0, 3.0, 2.5, 2.6)),
    ("EarlyStopping", dict(patience=1, mode="max"), "val_auc", (0.5, 0.6, 0.55, 0.7)),
    ("ReduceLROnPlateau", dict(factor=0.5, patience=2, cooldown=2, min_lr=0.02), "loss", (1.0,) * 9),
    ("ReduceLROnPlateau", dict(factor=0.2, patience=1, min_delta=0.1), "val_loss", (1.0, 0.95, 0.8, 0.79, 0.5)),
    ("ReduceLROnPlateau", dict(factor=0.5, patience=1, mode="max"), "val_acc", (0.1, 0.2, 0.2, 0.1)),
]


@pytest.mark.parametrize("cls,kwargs,monitor,values", MONITOR_CASES)
def test_monitor_callbacks_match_keras(cls, kwargs, monitor, values):
    keras = peer("keras")
    epoch_logs = [{monitor: v} for v in values]
    theirs_model = CopyingFakeModel()
    theirs = _keras_fit(getattr(keras.callbacks, cls)(monitor=monitor, **kwargs), theirs_model, epoch_logs)
    ours_model = FakeModel()
    ours_cb = getattr(callbacks, cls)(monitor=monitor, **kwargs)
    fit(ours_model, [ours_cb], epoch_logs)
    ours = [{k: v for k, v in zip(ours_model.history.history, row)}
            for row in zip(*ours_model.history.history.values())]
    assert len(ours) == len(theirs)
    for mine, keras_logs in zip(ours, theirs):  # pytest.approx compares flat structures only
        assert mine == pytest.approx(keras_logs)
    assert ours_model.stop_training == theirs_model.stop_training
    assert_array_equal(ours_model.weights[0], theirs_model.weights[0])
    assert ours_model.optimizer.current_learning_rate() == pytest.approx(theirs_model.optimizer.learning_rate)


def test_checkpoint_and_csv_match_keras(tmp_path):
    keras = peer("keras")
    epoch_logs = [{"loss": 1.0 / (e + 1), "val_loss": v, "accuracy": 0.5 + e / 10}
                  for e, v in enumerate((0.5, 0.7, 0.25, 0.3))]
    for kwargs in (dict(save_best_only=True), dict(), dict(save_best_only=True, monitor="accuracy", mode="max")):
        theirs, ours = FakeModel(), FakeModel()
        pattern = str(tmp_path / "m-{epoch:02d}-{val_loss:.2f}.keras")
        _keras_fit(keras.callbacks.ModelCheckpoint(pattern, **kwargs), theirs, epoch_logs)
        fit(ours, [callbacks.ModelCheckpoint(pattern, **kwargs)], epoch_logs)
        assert ours.saved == theirs.saved
    for logs in (epoch_logs, [{"loss": 0.5, "accuracy": 0.25}, {"loss": 0.25, "accuracy": 0.5}]):
        _keras_fit(keras.callbacks.CSVLogger(str(tmp_path / "k.csv")), FakeModel(), logs)
        fit(FakeModel(), [callbacks.CSVLogger(tmp_path / "o.csv")], logs)
        assert (tmp_path / "o.csv").read_bytes() == (tmp_path / "k.csv").read_bytes()


# ---- the callbacks of fit, evaluate and predict on a real model -----------------------------------

def _recording(base):
    """A callback class derived from ``base`` that records every hook call as (hook, epoch or batch,
    sorted log keys), the logs themselves, and the outputs ``on_predict_batch_end`` receives."""

    def hook_method(hook):
        indexed = "epoch" in hook or "batch" in hook

        def method(self, *args, **kwargs):
            args = list(args)
            index = args.pop(0) if indexed else None
            logs = args[0] if args else kwargs.get("logs")
            self.calls.append((hook, index, sorted(logs or {})))  # Keras passes {} where we pass None
            self.logs.append(dict(logs or {}))
            if hook == "on_predict_batch_end":
                self.outputs.append(logs["outputs"])
        return method

    def __init__(self):
        base.__init__(self)
        self.calls, self.logs, self.outputs = [], [], []

    namespace = {hook: hook_method(hook) for hook in callbacks.base.HOOKS}
    namespace["__init__"] = __init__
    return type("Recorder", (base,), namespace)


Recorder = _recording(callbacks.Callback)
KEYS = ["accuracy", "loss"]


def small_model(seed=1, n=10):
    backend.set_random_seed(seed)
    model = Sequential([Input(shape=(4,)), Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return model, x, y


def batch_calls(stage, steps, keys):
    return [call for k in range(steps)
            for call in ((f"on_{stage}_batch_begin", k, []), (f"on_{stage}_batch_end", k, keys))]


def test_evaluate_runs_its_callbacks():
    model, x, y = small_model()
    rec = Recorder()
    logs = model.evaluate(x, y, batch_size=4, verbose=0, callbacks=[rec], return_dict=True)
    assert rec.calls == [("on_test_begin", None, [])] + batch_calls("test", 3, KEYS) + [("on_test_end", None, KEYS)]
    assert rec.model is model and rec.params["steps"] == 3 and rec.params["epochs"] == 1
    assert rec.logs[-1] == logs and rec.logs[-2] == logs        # the last batch's running logs are the final ones
    first = model.evaluate(x[:4], y[:4], verbose=0, return_dict=True)
    assert rec.logs[2] == pytest.approx(first)                  # after batch 0: the logs of batch 0 alone


def test_predict_runs_its_callbacks():
    model, x, _ = small_model()
    rec = Recorder()
    out = model.predict(x, batch_size=4, verbose=0, callbacks=[rec])
    assert rec.calls == ([("on_predict_begin", None, [])] + batch_calls("predict", 3, ["outputs"])
                         + [("on_predict_end", None, [])])
    assert [o.shape for o in rec.outputs] == [(4, 3), (4, 3), (2, 3)]
    assert_array_equal(np.concatenate(rec.outputs), out)


def test_callbacks_can_stop_evaluate_and_predict_early():
    class StopAfterOneBatch(callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            self.model.stop_evaluating = True

        def on_predict_batch_end(self, batch, logs=None):
            self.model.stop_predicting = True

    model, x, y = small_model()
    assert model.predict(x, batch_size=4, verbose=0, callbacks=[StopAfterOneBatch()]).shape == (4, 3)
    logs = model.evaluate(x, y, batch_size=4, verbose=0, callbacks=[StopAfterOneBatch()], return_dict=True)
    assert logs == pytest.approx(model.evaluate(x[:4], y[:4], verbose=0, return_dict=True))
    assert model.predict(x, batch_size=4, verbose=0).shape == (10, 3)   # the flags are reset on each call


def test_fit_validation_runs_the_test_hooks_of_fits_callbacks():
    model, x, y = small_model()
    rec = Recorder()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, validation_data=(x[:6], y[:6]), callbacks=[rec])
    assert rec.calls == ([("on_train_begin", None, []), ("on_epoch_begin", 0, [])] + batch_calls("train", 3, KEYS)
                         + [("on_test_begin", None, [])] + batch_calls("test", 2, KEYS)
                         + [("on_test_end", None, KEYS), ("on_epoch_end", 0, KEYS + ["val_accuracy", "val_loss"]),
                            ("on_train_end", None, KEYS)])


def test_evaluate_and_predict_show_the_progress_bar(capsys):
    model, x, y = small_model()
    model.evaluate(x, y, batch_size=4, verbose=0)
    model.predict(x, batch_size=4, verbose=0)
    assert capsys.readouterr().out == ""
    model.evaluate(x, y, batch_size=4)                  # verbose="auto": the bar, finished (stdout is no tty)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("3/3 ━") and "- loss: " in lines[0] and "- accuracy: " in lines[0]
    model.predict(x, batch_size=4, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("3/3 - ") and "loss" not in lines[0]


def test_fit_evaluate_predict_call_the_hooks_keras_calls():
    keras = peer("keras")
    theirs_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    theirs_model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    model, x, y = small_model()
    ours, theirs = Recorder(), _recording(keras.callbacks.Callback)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, rec in ((model, ours), (theirs_model, theirs)):
            m.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x[:6], y[:6]), callbacks=[rec])
            m.evaluate(x, y, batch_size=4, verbose=0, callbacks=[rec])
            m.predict(x, batch_size=4, verbose=0, callbacks=[rec])
    # Keras gives on_train_end the last epoch's logs with the val_ entries; lstmfast the training logs only.
    assert [c[:2] for c in ours.calls] == [c[:2] for c in theirs.calls]
    assert [c for c in ours.calls if c[0] != "on_train_end"] == [c for c in theirs.calls if c[0] != "on_train_end"]
    assert [o.shape for o in ours.outputs] == [tuple(o.shape) for o in theirs.outputs]
