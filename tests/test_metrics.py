"""Metrics: Keras 3's resolution of "accuracy"/"crossentropy", values, weighting and reduction over
sequences, lookup.

References: the values computed again here with NumPy, the loss references of test_losses.py, and
Keras 3 itself when installed.
"""
import json
import math
import warnings

import numpy as np
import pytest
from test_losses import DEVICE, DeviceArray, device, make_case, ref_values  # noqa: F401 (device: a fixture)

from lstmfast import losses, metrics

from conftest import peer

# ---------------------------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss,true_shape,pred_shape,expected", [
    ("binary_crossentropy", (4, 1), (4, 1), metrics.BinaryAccuracy),
    ("binary_crossentropy", (4, 3), (4, 3), metrics.CategoricalAccuracy),   # Keras 3 ignores the loss
    ("mse", (4, 1), (4, 1), metrics.BinaryAccuracy),                       # last dim 1
    ("categorical_crossentropy", (4, 3), (4, 3), metrics.CategoricalAccuracy),
    ("sparse_categorical_crossentropy", (4,), (4, 3), metrics.SparseCategoricalAccuracy),
    ("sparse_categorical_crossentropy", (4, 1), (4, 3), metrics.SparseCategoricalAccuracy),
    ("categorical_crossentropy", (2, 5, 3), (2, 5, 3), metrics.CategoricalAccuracy),
    ("sparse_categorical_crossentropy", (2, 5), (2, 5, 3), metrics.SparseCategoricalAccuracy),
    (None, (4, 3), (4, 3), metrics.CategoricalAccuracy),
])
@pytest.mark.parametrize("identifier", ["accuracy", "acc", "Accuracy"])
def test_accuracy_resolution(loss, true_shape, pred_shape, expected, identifier):
    m = metrics.resolve(identifier, loss, np.zeros(true_shape), np.zeros(pred_shape))
    assert type(m) is expected and m.name == identifier
    lazy = metrics.get(identifier, loss=loss)
    assert lazy.name == identifier and lazy.direction == "up"
    lazy.update_state(np.zeros(true_shape), np.zeros(pred_shape))
    assert type(lazy.resolved) is expected


def test_crossentropy_resolution():
    ce = metrics.resolve("crossentropy", losses.CategoricalCrossentropy(from_logits=True),
                         np.zeros((2, 3)), np.zeros((2, 3)))
    assert type(ce) is metrics.CategoricalCrossentropy and ce.name == "crossentropy"
    assert ce._loss.from_logits
    assert type(metrics.resolve("ce", "bce", np.zeros((2, 1)), np.zeros((2, 1)))) is metrics.BinaryCrossentropy
    assert type(metrics.resolve("mse", "bce", np.zeros((2, 1)), np.zeros((2, 1)))) is metrics.MeanSquaredError
    # Keras 3's "crossentropy" loss identifier
    assert type(losses.resolve("ce", np.zeros(2), np.zeros((2, 4)))) is losses.SparseCategoricalCrossentropy
    assert type(losses.resolve("CrossEntropy", np.zeros((2, 4)), np.zeros((2, 4)))) is losses.CategoricalCrossentropy
    assert type(losses.resolve("crossentropy", np.zeros((2, 1)), np.zeros((2, 1)))) is losses.BinaryCrossentropy
    assert type(losses.resolve("mse", np.zeros((2, 1)), np.zeros((2, 1)))) is losses.MeanSquaredError
    with pytest.raises(ValueError, match="resolve"):
        losses.get("crossentropy")


def test_accuracy_values():
    bacc = metrics.BinaryAccuracy()
    bacc.update_state(np.array([[1], [0], [1], [0]]), np.array([[0.9], [0.5], [0.5], [0.2]]))  # 0.5 -> class 0
    assert bacc.result() == pytest.approx(0.75)
    bacc.update_state(np.array([[1.0]]), np.array([[0.1]]), sample_weight=np.array([4.0]))
    assert bacc.result() == pytest.approx(3 / 8)
    bacc.reset_state()
    assert bacc.result() == 0.0
    cacc = metrics.CategoricalAccuracy()
    cacc.update_state(np.eye(3)[[0, 1, 2]], np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]))
    assert cacc.result() == pytest.approx(2 / 3)                   # a tie goes to the first maximum
    sacc = metrics.SparseCategoricalAccuracy()
    sacc.update_state(np.array([[0], [2]]), np.array([[0.6, 0.4, 0.0], [0.6, 0.1, 0.3]]),
                      sample_weight=np.array([1.0, 3.0]))
    assert sacc.result() == pytest.approx(0.25)
    bacc = metrics.BinaryAccuracy(threshold=0.0)
    bacc.update_state(np.array([[1, 0, 1]]), np.array([[0.5, -1.0, -0.1]]))
    assert bacc.result() == pytest.approx(2 / 3)


def test_metrics_on_sequences_follow_keras_reduction():
    """Values are averaged per sample first; weights of shape (B,) weight whole samples, (B, T) steps."""
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, size=(2, 4))
    probs = rng.uniform(size=(2, 4, 3))
    hits = (probs.argmax(-1) == labels).astype(float)
    m = metrics.SparseCategoricalAccuracy()
    m.update_state(labels, probs)
    assert m.result() == pytest.approx(hits.mean())
    m.reset_state()
    w = np.array([1.0, 3.0])
    m.update_state(labels, probs, w)
    assert m.result() == pytest.approx((hits.mean(1) * w).sum() / w.sum())
    m.reset_state()
    ws = rng.uniform(size=(2, 4))
    m.update_state(labels, probs, ws)
    assert m.result() == pytest.approx((hits * ws).sum() / ws.sum())


def test_mean_and_loss_metrics():
    mean = metrics.Mean("loss")
    assert mean.name == "loss" and mean.result() == 0.0
    mean.update_state(2.0)
    mean.update_state(np.array([1.0, 3.0, 5.0]))
    assert mean.result() == pytest.approx(11 / 4)
    mean.update_state(10.0, sample_weight=4)
    assert mean.result() == pytest.approx(51 / 8)
    mean.reset_state()
    assert mean.result() == 0.0
    rng = np.random.default_rng(9)
    for short, name in (("mse", "mean_squared_error"), ("mae", "mean_absolute_error"),
                        ("bce", "binary_crossentropy"), ("categorical_crossentropy",) * 2,
                        ("sparse_categorical_crossentropy",) * 2):
        C = 3 if "categorical" in name else 2
        t, p = make_case(name, (5, C), rng)
        w = rng.uniform(size=5)
        m = metrics.get(short)
        assert m.name == short
        m.update_state(t[:2], p[:2], w[:2])
        m.update_state(t[2:], p[2:], w[2:])
        values = ref_values(name, t, p)
        assert m.result() == pytest.approx((values * w).sum() / w.sum(), rel=1e-12)
    rmse = metrics.get("root_mean_squared_error")
    rmse.update_state(np.zeros((2, 1)), np.array([[3.0], [4.0]]))
    assert rmse.result() == pytest.approx(math.sqrt(12.5))


def test_metric_lookup():
    assert metrics.get("mse").name == "mse" and type(metrics.get("mse")) is metrics.MeanSquaredError
    assert metrics.get("MAE").name == "MAE"
    assert type(metrics.get("categorical_accuracy")) is metrics.CategoricalAccuracy
    assert metrics.get("BinaryAccuracy").name == "binary_accuracy"
    m = metrics.BinaryAccuracy()
    assert metrics.get(m) is m
    with pytest.raises(ValueError, match="valid names:.*accuracy.*mse"):
        metrics.get("accuracyy")

    def doubled(y_true, y_pred):
        return 2 * np.abs(y_true - y_pred)[..., 0]

    f = metrics.get(doubled)
    f.update_state(np.zeros((2, 1)), np.ones((2, 1)))
    assert f.name == "doubled" and f.result() == 2.0
    for name in ("binary_accuracy", "mse", "acc"):
        back = metrics.deserialize(json.loads(json.dumps(metrics.serialize(metrics.get(name)))))
        assert back.name == name
    with pytest.raises(ValueError, match=r"y_true shape \(2,\).*\(2, 3\).*sparse_categorical_accuracy"):
        metrics.CategoricalAccuracy().update_state(np.zeros(2), np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------
# Keras 3 as the reference (skipped without keras).
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,true_shape,pred_shape,weight_shape", [
    ("binary_accuracy", (6, 1), (6, 1), (6,)),
    ("binary_accuracy", (2, 3, 4), (2, 3, 4), (2, 3)),
    ("categorical_accuracy", (2, 3, 4), (2, 3, 4), (2,)),
    ("sparse_categorical_accuracy", (2, 3), (2, 3, 4), (2, 3)),
    ("sparse_categorical_accuracy", (5, 1), (5, 4), None),
    ("mean_squared_error", (2, 3, 2), (2, 3, 2), (2,)),
    ("mean_absolute_error", (4, 2), (4, 2), (4, 1)),
    ("categorical_crossentropy", (2, 3, 4), (2, 3, 4), (2, 3)),
])
def test_metrics_match_keras(name, true_shape, pred_shape, weight_shape):
    keras = peer("keras")
    rng = np.random.default_rng(13)
    y_pred = rng.uniform(0.05, 1.0, size=pred_shape).astype(np.float32)
    if "sparse" in name:
        y_true = rng.integers(0, pred_shape[-1], size=true_shape)
    elif "categorical" in name:
        y_true = np.eye(pred_shape[-1])[rng.integers(0, pred_shape[-1], size=true_shape[:-1])]
    else:
        y_true = rng.integers(0, 2, size=true_shape).astype(np.float32)
    w = None if weight_shape is None else rng.uniform(size=weight_shape).astype(np.float32)
    cls = type(metrics.get(name)).__name__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = getattr(keras.metrics, cls)()
        for sl in (slice(0, 1), slice(1, None)):
            km.update_state(y_true[sl], y_pred[sl], None if w is None else w[sl])
        expected = float(keras.ops.convert_to_numpy(km.result()))
    m = metrics.get(name)
    for sl in (slice(0, 1), slice(1, None)):
        m.update_state(y_true[sl], y_pred[sl], None if w is None else w[sl])
    assert m.result() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# On another array module (test_losses.py's stand-in for CuPy).
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,true_shape,pred_shape", [
    ("binary_accuracy", (3, 1), (3, 1)), ("categorical_accuracy", (1, 4), (1, 4)),
    ("sparse_categorical_accuracy", (2, 3), (2, 3, 4)), ("mse", (3, 2), (3, 2)), ("mae", (1, 2), (1, 2)),
    ("rmse", (3, 2), (3, 2)), ("bce", (3, 2), (3, 2)), ("categorical_crossentropy", (2, 3, 4), (2, 3, 4)),
    ("sparse_categorical_crossentropy", (3,), (3, 4)),
])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.usefixtures("device")
def test_metric_on_another_array_module(name, true_shape, pred_shape, weighted):
    rng = np.random.default_rng(15)
    y_pred = rng.uniform(0.05, 1.0, size=pred_shape)
    C = pred_shape[-1]
    if "sparse" in name:
        y_true = rng.integers(0, C, size=true_shape)
    elif "categorical" in name:
        y_true = np.eye(C)[rng.integers(0, C, size=true_shape[:-1])]
    else:
        y_true = rng.integers(0, 2, size=true_shape).astype(float)
    w = rng.uniform(size=true_shape[:1]) if weighted else None
    on_host, on_device = metrics.get(name), metrics.get(name)
    for _ in range(2):
        on_host.update_state(y_true, y_pred, w)
        on_device.update_state(DEVICE.asarray(y_true), DEVICE.asarray(y_pred), None if w is None else DEVICE.asarray(w))
    assert type(on_device.result()) is float
    assert on_device.result() == pytest.approx(on_host.result(), rel=1e-12)
    fn = getattr(metrics, name, None)
    if callable(fn) and name.endswith("accuracy"):
        assert type(fn(DEVICE.asarray(y_true), DEVICE.asarray(y_pred))) is DeviceArray
