"""Losses, metrics, optimizers, callbacks and data utils of the Keras-style training API.

References: the formulas written out again here (loops over rows with ``math``), central finite
differences in float64, torch.optim where its rule is the same, and Keras 3 itself when installed.
Every loss and metric runs through both its pure-Python path (tiny arrays) and its NumPy path.
"""
import csv
import json
import math
import os
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import backend, callbacks, losses, metrics, optimizers, utils

EPS = 1e-7                                   # Keras backend.epsilon()
F64 = dict(rtol=1e-12, atol=1e-13)           # the same float64 formula, different operation order
F32 = dict(rtol=2e-6, atol=1e-7)             # float32 result versus the float64 reference
FD_H = 1e-6                                  # central-difference step (float64)
FD = dict(rtol=1e-6, atol=1e-8)              # finite differences versus the analytic gradient
TORCH = dict(rtol=1e-12, atol=1e-14)         # torch.optim in float64, same rule
KERAS32 = dict(rtol=1e-5, atol=1e-6)         # Keras 3 (float32) versus lstmfast float32

LOSS_NAMES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
              "mean_squared_error", "mean_absolute_error")


@pytest.fixture(params=["python", "numpy"])
def path(request, monkeypatch):
    """Force the pure-Python path for every size, or the NumPy path for every size."""
    size = 10**9 if request.param == "python" else 0
    monkeypatch.setattr(losses, "SMALL_SIZE", size)
    monkeypatch.setattr(metrics, "SMALL_SIZE", size)
    return request.param


# ---------------------------------------------------------------------------------------------
# Reference losses: per-element values written row by row with math.
# ---------------------------------------------------------------------------------------------

def _rows(a):
    return a.reshape(-1, a.shape[-1])


def ref_values(name, y_true, y_pred, from_logits=False, label_smoothing=0.0):
    """Per-element loss values, shape y_pred.shape[:-1], from the Keras formulas."""
    p = np.asarray(y_pred, np.float64)
    C = p.shape[-1]
    out = []
    if name == "sparse_categorical_crossentropy":
        labels = np.asarray(y_true).reshape(-1)
        t = np.zeros((labels.size, C))
        t[np.arange(labels.size), labels] = 1.0
        name = "categorical_crossentropy"
    else:
        t = _rows(np.asarray(y_true, np.float64).reshape(p.shape))
    for row_t, row_p in zip(t, _rows(p)):
        row_t, row_p = list(row_t), list(row_p)
        if name == "categorical_crossentropy":
            row_t = [x * (1 - label_smoothing) + label_smoothing / C for x in row_t]
            if from_logits:
                m = max(row_p)
                lse = m + math.log(sum(math.exp(x - m) for x in row_p))
                out.append(-sum(a * (x - lse) for a, x in zip(row_t, row_p)))
            else:
                s = sum(row_p)
                out.append(-sum(a * math.log(min(max(x / s, EPS), 1 - EPS)) for a, x in zip(row_t, row_p)))
        elif name == "binary_crossentropy":
            row_t = [x * (1 - label_smoothing) + 0.5 * label_smoothing for x in row_t]
            if from_logits:
                sig = [1 / (1 + math.exp(-x)) for x in row_p]
                out.append(-sum(a * math.log(s) + (1 - a) * math.log(1 - s) for a, s in zip(row_t, sig)) / C)
            else:
                pc = [min(max(x, EPS), 1 - EPS) for x in row_p]
                out.append(-sum(a * math.log(x) + (1 - a) * math.log(1 - x) for a, x in zip(row_t, pc)) / C)
        elif name == "mean_squared_error":
            out.append(sum((x - a) ** 2 for a, x in zip(row_t, row_p)) / C)
        elif name == "mean_absolute_error":
            out.append(sum(abs(x - a) for a, x in zip(row_t, row_p)) / C)
    return np.array(out).reshape(p.shape[:-1])


def make_case(name, shape, rng, from_logits=False):
    """(y_true, y_pred) for a loss on y_pred of ``shape`` [..., C], away from clip boundaries."""
    C = shape[-1]
    if name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        labels = rng.integers(0, C, size=shape[:-1])
        y_true = labels if name.startswith("sparse") else np.eye(C)[labels]
        y_pred = rng.normal(size=shape) if from_logits else rng.uniform(0.05, 1.0, size=shape)
    elif name == "binary_crossentropy":
        y_true = rng.integers(0, 2, size=shape).astype(np.float64)
        y_pred = rng.normal(size=shape) * 2 if from_logits else rng.uniform(0.02, 0.98, size=shape)
    else:
        y_true = rng.normal(size=shape)
        y_pred = rng.normal(size=shape)
    return y_true, y_pred


def make_loss(name, from_logits=False, label_smoothing=0.0):
    kwargs = {}
    if from_logits:
        kwargs["from_logits"] = True
    if label_smoothing:
        kwargs["label_smoothing"] = label_smoothing
    cls = type(losses.get(name))
    return cls(**kwargs)


def finite_differences(fn, y_pred):
    grad = np.zeros_like(y_pred)
    for i in np.ndindex(y_pred.shape):
        up, down = y_pred.copy(), y_pred.copy()
        up[i] += FD_H
        down[i] -= FD_H
        grad[i] = (fn(up) - fn(down)) / (2 * FD_H)
    return grad


LOSS_VARIANTS = [(n, False, 0.0) for n in LOSS_NAMES] + [
    ("categorical_crossentropy", True, 0.0), ("sparse_categorical_crossentropy", True, 0.0),
    ("binary_crossentropy", True, 0.0), ("categorical_crossentropy", False, 0.2),
    ("categorical_crossentropy", True, 0.1), ("binary_crossentropy", False, 0.3), ("binary_crossentropy", True, 0.2)]
SHAPES = [(1, 1), (1, 4), (3, 4), (2, 3, 4), (5, 1)]


def _variant_id(v):
    name, logits, ls = v
    return name + ("-logits" if logits else "") + (f"-ls{ls}" if ls else "")


# ---------------------------------------------------------------------------------------------
# Losses.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", LOSS_VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("shape", SHAPES)
def test_loss_value_and_gradient(variant, shape, path):
    name, logits, ls = variant
    if name == "categorical_crossentropy" and shape[-1] == 1 and not logits:
        shape = shape[:-1] + (3,)
    rng = np.random.default_rng(abs(hash((name, logits, ls, shape))) % 2**32)
    y_true, y_pred = make_case(name, shape, rng, logits)
    loss = make_loss(name, logits, ls)
    expected = ref_values(name, y_true, y_pred, logits, ls).mean()
    value, grad = loss.value_and_grad(y_true, y_pred)
    assert isinstance(value, float)
    assert_allclose(value, expected, **F64)
    assert_allclose(loss(y_true, y_pred), expected, **F64)
    assert grad.shape == y_pred.shape and grad.dtype == y_pred.dtype
    assert_allclose(grad, finite_differences(lambda p: loss(y_true, p), y_pred), **FD)


def broadcast_weight(w, values_shape):
    """The documented rule: a trailing axis of 1 dropped, then leading axes aligned."""
    w = np.asarray(w)
    if w.ndim == len(values_shape) + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    return np.broadcast_to(w.reshape(w.shape + (1,) * (len(values_shape) - w.ndim)), values_shape)


@pytest.mark.parametrize("variant", LOSS_VARIANTS[:8], ids=_variant_id)
@pytest.mark.parametrize("shape,weight_shape", [((4, 3), (4,)), ((4, 3), (4, 1)), ((2, 3, 4), (2,)),
                                                ((2, 3, 4), (2, 3)), ((2, 3, 4), ()), ((1, 2), (1,))])
def test_loss_sample_weight(variant, shape, weight_shape, path):
    """Weights broadcast over the element values with leading axes aligned; denominator = count."""
    name, logits, ls = variant
    rng = np.random.default_rng(3)
    y_true, y_pred = make_case(name, shape, rng, logits)
    w = rng.uniform(0.0, 2.0, size=weight_shape)
    loss = make_loss(name, logits, ls)
    values = ref_values(name, y_true, y_pred, logits, ls)
    w_full = broadcast_weight(w, values.shape)
    expected = (values * w_full).sum() / values.size
    value, grad = loss.value_and_grad(y_true, y_pred, w)
    assert_allclose(value, expected, **F64)
    assert_allclose(loss(y_true, y_pred, w), expected, **F64)
    assert_allclose(grad, finite_differences(lambda p: loss(y_true, p, w), y_pred), **FD)


def test_sample_weight_denominator_is_element_count():
    """Keras 3 "sum_over_batch_size": zero weights still count in the denominator."""
    y_true = np.array([[1.0], [2.0], [3.0], [4.0]])
    y_pred = np.zeros((4, 1))
    mse = losses.MeanSquaredError()
    assert mse(y_true, y_pred, np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(1.0 / 4)
    assert mse(y_true, y_pred, np.array([0.0, 0.0, 0.0, 2.0])) == pytest.approx(32.0 / 4)
    # a mask of sequence steps passed as sample_weight is used as given
    y3 = np.ones((1, 4, 1))
    mask = np.array([[1.0, 1.0, 0.0, 0.0]])
    assert mse(y3, np.zeros((1, 4, 1)), mask) == pytest.approx(2.0 / 4)
    assert mse(y3, np.zeros((1, 4, 1)), mask * 4 / mask.sum()) == pytest.approx(1.0)
    assert losses.MeanSquaredError(reduction="sum")(y_true, y_pred) == pytest.approx(30.0)


def test_sample_weight_errors():
    mse = losses.get("mse")
    with pytest.raises(ValueError, match=r"sample_weight shape \(3,\).*\(4,\)"):
        mse.value_and_grad(np.zeros((4, 2)), np.zeros((4, 2)), np.ones(3))
    with pytest.raises(ValueError, match="sample_weight"):
        mse(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), np.ones((3,)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (8, 1), (4, 6)])
def test_binary_crossentropy_stable_at_zero_and_one(dtype, shape, path):
    rng = np.random.default_rng(5)
    y_pred = rng.integers(0, 2, size=shape).astype(dtype)      # exactly 0 or 1
    y_true = rng.integers(0, 2, size=shape).astype(dtype)
    bce = losses.BinaryCrossentropy()
    value, grad = bce.value_and_grad(y_true, y_pred)
    assert math.isfinite(value) and np.isfinite(grad).all()
    assert_array_equal(grad, 0)  # clipped entries get no gradient, as in Keras
    # the clip bounds as rounded to the dtype: in float32 1 - eps is 1 - 1.19e-7
    pc = np.clip(y_pred, dtype(EPS), dtype(1 - EPS)).astype(np.float64)
    t = y_true.astype(np.float64)
    assert value == pytest.approx(-(t * np.log(pc) + (1 - t) * np.log(1 - pc)).mean(), rel=1e-6)
    wrong = (y_pred != y_true).mean()
    logits = (y_pred * 2 - 1) * 1000                            # saturated logits
    value, grad = losses.BinaryCrossentropy(from_logits=True).value_and_grad(y_true, logits)
    assert math.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx(wrong * 1000, rel=1e-6)
    assert_allclose(grad, (np.where(logits > 0, 1, 0) - y_true) / y_true.size, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_crossentropy_keeps_tiny_losses(dtype, path):
    """No cancellation: a confident right answer costs its small true loss, not 0."""
    t = np.ones((20, 1), dtype)
    value = losses.BinaryCrossentropy(from_logits=True)(t, np.full((20, 1), 20.0, dtype))
    assert value == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-5)
    value, _ = losses.BinaryCrossentropy(from_logits=True).value_and_grad(t, np.full((20, 1), 20.0, dtype))
    assert value == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-5)
    p = np.full((20, 1), 0.999, dtype)
    value, _ = losses.BinaryCrossentropy().value_and_grad(t, p)
    assert value == pytest.approx(-math.log(float(p[0, 0])), rel=1e-5)


def test_categorical_crossentropy_clips_like_keras(path):
    """p is renormalised, then clipped; clipped entries stop the gradient."""
    y_pred = np.array([[0.0, 2.0, 2.0]])                       # normalises to (0, 0.5, 0.5)
    y_true = np.array([[1.0, 0.0, 0.0]])
    value, grad = losses.get("categorical_crossentropy").value_and_grad(y_true, y_pred)
    assert value == pytest.approx(-math.log(EPS))
    assert_array_equal(grad, 0)
    logits = np.array([[1000.0, -1000.0, 0.0]])
    value, grad = losses.CategoricalCrossentropy(from_logits=True).value_and_grad(y_true, logits)
    assert value == 0.0 and np.isfinite(grad).all()


@pytest.mark.parametrize("name", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_from_logits_matches_softmax_probabilities(name, path):
    rng = np.random.default_rng(11)
    y_true, logits = make_case(name, (5, 4), rng, from_logits=True)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    cls = type(losses.get(name))
    assert_allclose(cls(from_logits=True)(y_true, logits), cls()(y_true, probs), rtol=1e-12)
    x = rng.normal(size=(6, 2))
    t = rng.integers(0, 2, size=(6, 2)).astype(float)
    assert_allclose(losses.BinaryCrossentropy(from_logits=True)(t, x),
                    losses.BinaryCrossentropy()(t, 1 / (1 + np.exp(-x))), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_paths_agree_and_keep_dtype(dtype, monkeypatch):
    rng = np.random.default_rng(2)
    for name, logits, ls in LOSS_VARIANTS:
        y_true, y_pred = make_case(name, (2, 5), rng, logits)
        y_pred = y_pred.astype(dtype)
        loss = make_loss(name, logits, ls)
        monkeypatch.setattr(losses, "SMALL_SIZE", 10**9)
        v1, g1 = loss.value_and_grad(y_true, y_pred)
        monkeypatch.setattr(losses, "SMALL_SIZE", 0)
        v2, g2 = loss.value_and_grad(y_true, y_pred)
        tol = F32 if dtype == np.float32 else F64
        assert g1.dtype == g2.dtype == dtype
        assert_allclose(v1, v2, **tol)
        assert_allclose(g1, g2, **tol)
        assert_allclose(v1, ref_values(name, y_true, y_pred, logits, ls).mean(), **tol)


def test_gradient_is_a_fresh_array(path):
    mse = losses.get("mse")
    y = np.ones((2, 1), np.float32)
    _, g1 = mse.value_and_grad(y, np.zeros((2, 1), np.float32))
    _, g2 = mse.value_and_grad(y, np.full((2, 1), 3.0, np.float32))
    assert g1 is not g2 and g1[0, 0] == pytest.approx(-1.0)


def test_target_shapes_accepted(path):
    rng = np.random.default_rng(4)
    p = rng.uniform(0.1, 0.9, size=(4, 1))
    t = rng.integers(0, 2, size=4).astype(float)
    for name in ("mse", "mae", "binary_crossentropy"):
        loss = losses.get(name)
        assert loss(t, p) == pytest.approx(loss(t[:, None], p))           # (B,) against (B, 1)
        assert loss(t[:, None, None], p) == pytest.approx(loss(t[:, None], p))
    probs = rng.uniform(0.1, 1.0, size=(2, 3, 4))
    labels = rng.integers(0, 4, size=(2, 3))
    scce = losses.get("sparse_categorical_crossentropy")
    v = scce(labels, probs)
    assert scce(labels[..., None], probs) == pytest.approx(v)            # (B, T, 1) labels
    assert scce(labels.astype(np.float32), probs) == pytest.approx(v)    # integral float labels
    assert scce(labels.astype(np.uint8), probs) == pytest.approx(v)


def test_loss_errors():
    cce = losses.get("categorical_crossentropy")
    with pytest.raises(ValueError, match=r"y_true shape \(4, 3\).*y_pred shape \(4, 5\).*5 classes"):
        cce.value_and_grad(np.zeros((4, 3)), np.full((4, 5), 0.2))
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        cce(np.zeros((4,)), np.full((4, 5), 0.2))                          # integer labels to a one-hot loss
    scce = losses.get("sparse_categorical_crossentropy")
    for bad in (5, -1):
        with pytest.raises(ValueError, match=rf"label {bad} is out of range.*5 classes"):
            scce.value_and_grad(np.array([0, bad]), np.full((2, 5), 0.2))
        with pytest.raises(ValueError, match=rf"label {bad} is out of range"):
            scce.value_and_grad(np.array([0, bad] * 20), np.full((40, 5), 0.2))   # NumPy-path check
    with pytest.raises(ValueError, match="integer class labels"):
        scce(np.array([0.5, 1.0]), np.full((2, 5), 0.2))
    with pytest.raises(ValueError, match=r"expected integer labels of shape \(2,\)"):
        scce(np.zeros((2, 5)), np.full((2, 5), 0.2))
    with pytest.raises(ValueError, match=r"y_true shape \(3, 1\) does not match y_pred shape \(4, 1\)"):
        losses.get("mse")(np.zeros((3, 1)), np.zeros((4, 1)))
    with pytest.raises(TypeError, match="float"):
        losses.get("mse")(np.zeros((2, 1)), np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        losses.MeanSquaredError(reduction="none")


def test_loss_lookup_and_serialization():
    assert type(losses.get("MSE")) is losses.MeanSquaredError
    assert type(losses.get("mae")) is losses.MeanAbsoluteError
    assert type(losses.get("Binary_CrossEntropy")) is losses.BinaryCrossentropy
    assert type(losses.get("SparseCategoricalCrossentropy")) is losses.SparseCategoricalCrossentropy
    assert losses.get("mse").name == "mean_squared_error"
    inst = losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)
    assert losses.get(inst) is inst
    with pytest.raises(ValueError, match="valid names:.*categorical_crossentropy.*mse"):
        losses.get("cross_entropyy")
    with pytest.raises(ValueError, match="None"):
        losses.get(None)
    with pytest.raises(TypeError, match="gradient"):
        losses.get(lambda t, p: 0.0)
    back = losses.deserialize(json.loads(json.dumps(losses.serialize(inst))))
    assert type(back) is losses.BinaryCrossentropy and back.get_config() == inst.get_config()
    assert type(losses.deserialize("categorical_crossentropy")) is losses.CategoricalCrossentropy
    keras_style = {"module": "keras.losses", "class_name": "CategoricalCrossentropy", "registered_name": None,
                   "config": {"name": "categorical_crossentropy", "reduction": "sum_over_batch_size",
                              "from_logits": True, "label_smoothing": 0.0, "axis": -1, "dtype": None}}
    assert losses.deserialize(keras_style).from_logits is True


def test_empty_batch():
    value, grad = losses.get("mse").value_and_grad(np.zeros((0, 2)), np.zeros((0, 2)))
    assert value == 0.0 and grad.shape == (0, 2)


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


def test_accuracy_values(path):
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


def test_metrics_on_sequences_follow_keras_reduction(path):
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


def test_mean_and_loss_metrics(path):
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
# Optimizers.
# ---------------------------------------------------------------------------------------------

SHAPES_OPT = [(3, 4), (4,), (2, 1, 3), (1,)]


def reference_steps(kind, cfg, params, grads_seq, lr_at=None):
    """The Keras 3 rules, written out per variable in float64."""
    params = [p.astype(np.float64).copy() for p in params]
    state = [dict() for _ in params]
    for step, grads in enumerate(grads_seq):
        lr = cfg.get("learning_rate") if lr_at is None else lr_at(step)
        t = step + 1
        for p, g, s in zip(params, grads, state):
            g = np.asarray(g, np.float64)
            if kind == "sgd":
                mu = cfg.get("momentum", 0.0)
                if mu:
                    s["m"] = mu * s.get("m", 0.0) - lr * g
                    p += (mu * s["m"] - lr * g) if cfg.get("nesterov") else s["m"]
                else:
                    p -= lr * g
            elif kind == "adam":
                b1, b2, eps = cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999), cfg.get("epsilon", 1e-7)
                s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
                s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
                v = s["v"]
                if cfg.get("amsgrad"):
                    s["vh"] = np.maximum(s.get("vh", 0.0), s["v"])
                    v = s["vh"]
                alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p -= alpha * s["m"] / (np.sqrt(v) + eps)
            elif kind == "rmsprop":
                rho, mu, eps = cfg.get("rho", 0.9), cfg.get("momentum", 0.0), cfg.get("epsilon", 1e-7)
                s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
                denom = s["v"] + eps
                if cfg.get("centered"):
                    s["mg"] = rho * s.get("mg", 0.0) + (1 - rho) * g
                    denom = s["v"] - s["mg"] ** 2 + eps
                inc = lr * g / np.sqrt(denom)
                if mu:
                    s["m"] = mu * s.get("m", 0.0) + inc
                    p -= s["m"]
                else:
                    p -= inc
            elif kind == "adagrad":
                s["acc"] = s.get("acc", cfg.get("initial_accumulator_value", 0.1)) + g * g
                p -= lr * g / np.sqrt(s["acc"] + cfg.get("epsilon", 1e-7))
    return params


OPT_CASES = [
    ("sgd", dict(learning_rate=0.1)),
    ("sgd", dict(learning_rate=0.1, momentum=0.9)),
    ("sgd", dict(learning_rate=0.05, momentum=0.5, nesterov=True)),
    ("adam", dict(learning_rate=0.01)),
    ("adam", dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-3, amsgrad=True)),
    ("rmsprop", dict(learning_rate=0.01)),
    ("rmsprop", dict(learning_rate=0.01, rho=0.8, momentum=0.7, centered=True, epsilon=1e-4)),
    ("adagrad", dict(learning_rate=0.1)),
    ("adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-3)),
]
OPT_CLASSES = {"sgd": optimizers.SGD, "adam": optimizers.Adam, "rmsprop": optimizers.RMSprop,
               "adagrad": optimizers.Adagrad}


def _problem(seed, steps=6, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s).astype(dtype) for s in SHAPES_OPT]
    grads = [[rng.normal(size=s).astype(dtype) for s in SHAPES_OPT] for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("kind,cfg", OPT_CASES, ids=lambda c: str(c) if isinstance(c, str) else
                         "-".join(f"{k}={v}" for k, v in c.items()))
def test_optimizer_matches_hand_reference(kind, cfg):
    params, grads = _problem(1)
    expected = reference_steps(kind, cfg, params, grads)
    opt = OPT_CLASSES[kind](**cfg)
    for g in grads:
        opt.apply_gradients(zip(g, params))
    assert opt.iterations == len(grads)
    for p, e in zip(params, expected):
        assert_allclose(p, e, **F64)
    # float32 variables: float32 arithmetic, same rule
    params32, grads32 = _problem(1, dtype=np.float32)
    opt = OPT_CLASSES[kind](**cfg)
    for g in grads32:
        opt.apply_gradients(zip(g, params32))
    for p, e in zip(params32, expected):
        assert p.dtype == np.float32
        assert_allclose(p, e, rtol=2e-5, atol=2e-6)


def _torch_run(torch_cls, params, grads, **kwargs):
    torch = pytest.importorskip("torch")
    tp = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    opt = torch_cls(tp, **kwargs)
    for g in grads:
        for p, gg in zip(tp, g):
            p.grad = torch.tensor(gg, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for p in tp]


@pytest.mark.parametrize("ours,theirs", [
    (dict(cls="SGD", learning_rate=0.1), dict(cls="SGD", lr=0.1)),
    (dict(cls="SGD", learning_rate=0.1, momentum=0.9), dict(cls="SGD", lr=0.1, momentum=0.9)),
    (dict(cls="SGD", learning_rate=0.1, momentum=0.9, nesterov=True),
     dict(cls="SGD", lr=0.1, momentum=0.9, nesterov=True)),
    # epsilon 0 makes Keras's sqrt(v) + eps and torch's sqrt(v_hat) + eps the same rule
    (dict(cls="Adam", learning_rate=0.01, epsilon=0.0), dict(cls="Adam", lr=0.01, eps=0.0)),
    (dict(cls="Adam", learning_rate=0.01, epsilon=0.0, amsgrad=True), dict(cls="Adam", lr=0.01, eps=0.0, amsgrad=True)),
    (dict(cls="AdamW", learning_rate=0.01, epsilon=0.0, weight_decay=0.1),
     dict(cls="AdamW", lr=0.01, eps=0.0, weight_decay=0.1)),
    # torch puts eps outside the sqrt: equal with eps 0
    (dict(cls="RMSprop", learning_rate=0.01, epsilon=0.0), dict(cls="RMSprop", lr=0.01, alpha=0.9, eps=0.0)),
    (dict(cls="RMSprop", learning_rate=0.01, epsilon=0.0, momentum=0.5, centered=True),
     dict(cls="RMSprop", lr=0.01, alpha=0.9, eps=0.0, momentum=0.5, centered=True)),
    (dict(cls="Adagrad", learning_rate=0.1, epsilon=0.0, initial_accumulator_value=0.1),
     dict(cls="Adagrad", lr=0.1, eps=0.0, initial_accumulator_value=0.1)),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_optimizer_matches_torch(ours, theirs):
    torch = pytest.importorskip("torch")
    params, grads = _problem(2, steps=8)
    expected = _torch_run(getattr(torch.optim, theirs.pop("cls")), params, grads, **theirs)
    opt = getattr(optimizers, ours.pop("cls"))(**ours)
    for g in grads:
        opt.apply_gradients(zip(g, params))
    for p, e in zip(params, expected):
        assert_allclose(p, e, **TORCH)


def test_adam_epsilon_placement_versus_torch():
    """Keras: alpha m / (sqrt(v) + eps); torch: lr m_hat / (sqrt(v_hat) + eps). With a large eps
    they differ, and agree once torch's eps is eps / sqrt(1 - beta_2^t) (one step)."""
    torch = pytest.importorskip("torch")
    params, grads = _problem(3, steps=1)
    eps = 1e-2
    ours = [p.copy() for p in params]
    optimizers.Adam(learning_rate=0.1, epsilon=eps).apply_gradients(zip(grads[0], ours))
    same = _torch_run(torch.optim.Adam, params, grads, lr=0.1, eps=eps / math.sqrt(1 - 0.999))
    differs = _torch_run(torch.optim.Adam, params, grads, lr=0.1, eps=eps)
    for a, b, c in zip(ours, same, differs):
        assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        assert np.abs(a - c).max() > 1e-4


def test_gradient_clipping():
    g = [np.array([3.0, 4.0]), np.array([[0.0, 12.0]]), np.array([-0.5])]

    def step(**clip):
        params = [np.zeros_like(x) for x in g]
        optimizers.SGD(learning_rate=1.0, **clip).apply_gradients(zip(g, params))
        return [-p for p in params]                                 # the clipped gradients

    out = step(clipnorm=1.0)
    assert_allclose(out[0], [0.6, 0.8])
    assert_allclose(out[1], [[0.0, 1.0]])
    assert_allclose(out[2], [-0.5])                                 # norm 0.5 <= 1: untouched
    out = step(global_clipnorm=6.5)                                 # global norm sqrt(25 + 144 + 0.25) = 13.0096
    norm = math.sqrt(25 + 144 + 0.25)
    for o, x in zip(out, g):
        assert_allclose(o, x * 6.5 / norm)
    out = step(global_clipnorm=100.0)
    for o, x in zip(out, g):
        assert_allclose(o, x)
    out = step(clipvalue=2.0)
    assert_allclose(out[0], [2.0, 2.0])
    assert_allclose(out[1], [[0.0, 2.0]])
    assert_allclose(out[2], [-0.5])
    out = step(clipnorm=0.0)                                        # 0 disables, as in Keras
    assert_allclose(out[0], [3.0, 4.0])
    assert_allclose(g[0], [3.0, 4.0])                               # the caller's gradients are untouched
    for clip in (dict(clipnorm=1.0, global_clipnorm=1.0), dict(clipnorm=1.0, clipvalue=0.1),
                 dict(clipvalue=1.0, global_clipnorm=1.0)):
        with pytest.raises(ValueError, match="only one of clipnorm, clipvalue and global_clipnorm"):
            optimizers.Adam(**clip)


def test_learning_rate_schedules():
    d = optimizers.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    s = optimizers.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    for step in (0, 5, 10, 15, 20, 25):
        assert d(step) == pytest.approx(0.1 * 0.5 ** (step / 10))
        assert s(step) == pytest.approx(0.1 * 0.5 ** (step // 10))
    pw = optimizers.PiecewiseConstantDecay([2, 5], [1.0, 0.5, 0.1])
    assert [pw(i) for i in (0, 2, 3, 5, 6)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    cos = optimizers.CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(10) == pytest.approx(0.1) and cos(50) == pytest.approx(0.1)
    assert cos(5) == pytest.approx(0.55)
    warm = optimizers.CosineDecay(0.0, decay_steps=10, warmup_target=1.0, warmup_steps=4)
    assert warm(2) == pytest.approx(0.5) and warm(4) == pytest.approx(1.0) and warm(14) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="decay_steps"):
        optimizers.ExponentialDecay(0.1, decay_steps=0, decay_rate=0.5)
    # the optimizer evaluates the schedule at `iterations` before each step
    params, grads = _problem(4, steps=25)
    opt = optimizers.SGD(learning_rate=s)
    for k, g in enumerate(grads):
        assert opt.current_learning_rate() == pytest.approx(s(k))
        opt.apply_gradients(zip(g, params))
    expected = reference_steps("sgd", {}, _problem(4, steps=25)[0], grads, lr_at=s)
    for p, e in zip(params, expected):
        assert_allclose(p, e, **F64)
    assert optimizers.SGD(learning_rate=lambda step: 0.5 / (step + 1)).current_learning_rate() == 0.5
    assert optimizers.SGD(learning_rate=lambda: 0.25).current_learning_rate() == 0.25   # Keras's no-arg form


def test_learning_rate_setter():
    opt = optimizers.Adam()
    assert opt.learning_rate == 0.001 and opt.current_learning_rate() == 0.001
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5 and opt.get_config()["learning_rate"] == 0.5
    opt.learning_rate = optimizers.ExponentialDecay(1.0, 1, 0.5)
    opt.iterations = 2
    assert opt.current_learning_rate() == 0.25
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate = -1.0
    with pytest.raises(TypeError, match="learning_rate"):
        opt.learning_rate = "fast"


@pytest.mark.parametrize("kind,cfg", OPT_CASES, ids=lambda c: str(c) if isinstance(c, str) else
                         "-".join(f"{k}={v}" for k, v in c.items()))
def test_state_round_trip_resumes_exactly(kind, cfg):
    params, grads = _problem(5, steps=6)
    opt = OPT_CLASSES[kind](**cfg)
    for g in grads[:3]:
        opt.apply_gradients(zip(g, params))
    state = opt.get_state()
    assert state["iterations"] == 3 and len(state["slots"]) == len(params) * len(opt.slot_names)
    saved = [p.copy() for p in params]
    config = json.loads(json.dumps(optimizers.serialize(opt)))
    for g in grads[3:]:
        opt.apply_gradients(zip(g, params))
    for build_first in (True, False):
        resumed = [p.copy() for p in saved]
        other = optimizers.deserialize(config)
        if build_first:
            other.build(resumed)
        other.set_state(state)
        for g in grads[3:]:
            other.apply_gradients(zip(g, resumed))
        for a, b in zip(resumed, params):
            assert_array_equal(a, b)


def test_set_state_errors():
    params, grads = _problem(6, steps=1)
    opt = optimizers.Adam()
    opt.build(params)
    with pytest.raises(ValueError, match=r"has 2 slot arrays, expected 8"):
        opt.set_state({"iterations": 1, "slots": [np.zeros(1)] * 2})
    slots = opt.get_state()["slots"]
    slots[3] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"slot 3 \(variable 1, 'velocity'\): expected shape \(4,\), got \(5, 5\)"):
        opt.set_state({"iterations": 1, "slots": slots})
    with pytest.raises(ValueError, match="iterations"):
        opt.set_state({"iterations": -1, "slots": []})
    pending = optimizers.Adam()
    pending.set_state({"iterations": 2, "slots": [np.zeros(1)] * 3})
    with pytest.raises(ValueError, match="has 3 slot arrays, expected 8"):
        pending.apply_gradients(zip(grads[0], params))


def test_optimizer_lookup_defaults_and_errors():
    adam = optimizers.get("Adam")
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon, adam.amsgrad) == \
        (0.001, 0.9, 0.999, 1e-7, False)
    sgd = optimizers.get("sgd")
    assert (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.01, 0.0, False)
    rms = optimizers.get("RMSPROP")
    assert (rms.learning_rate, rms.rho, rms.momentum, rms.epsilon, rms.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    ada = optimizers.get("adagrad")
    assert (ada.learning_rate, ada.initial_accumulator_value, ada.epsilon) == (0.001, 0.1, 1e-7)
    assert optimizers.get(adam) is adam
    with pytest.raises(ValueError, match="valid names: adagrad, adam, adamw, rmsprop, sgd"):
        optimizers.get("adamax")
    with pytest.raises(TypeError):
        optimizers.get(3)
    sched = optimizers.Adam(learning_rate=optimizers.ExponentialDecay(0.1, 100, 0.9, staircase=True), clipnorm=1.0)
    back = optimizers.deserialize(json.loads(json.dumps(optimizers.serialize(sched))))
    assert isinstance(back.learning_rate, optimizers.ExponentialDecay)
    assert back.learning_rate.get_config() == sched.learning_rate.get_config() and back.clipnorm == 1.0
    keras_cfg = {"class_name": "Adam", "config": {"name": "adam", "learning_rate": 0.01, "weight_decay": None,
                                                  "clipnorm": None, "global_clipnorm": None, "clipvalue": None,
                                                  "use_ema": False, "ema_momentum": 0.99,
                                                  "ema_overwrite_frequency": None, "loss_scale_factor": None,
                                                  "gradient_accumulation_steps": None, "beta_1": 0.9,
                                                  "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False}}
    assert optimizers.deserialize(keras_cfg).learning_rate == 0.01
    keras_cfg["config"]["use_ema"] = True
    with pytest.raises(ValueError, match="use_ema"):
        optimizers.deserialize(keras_cfg)


def test_apply_checks_and_mixed_dtypes():
    params = [np.zeros((2, 2), np.float32), np.zeros(3, np.float64)]
    grads = [np.ones((2, 2), np.float32), np.ones(3)]
    opt = optimizers.SGD(0.5)
    opt.apply_gradients(zip(grads, params))
    assert params[0].dtype == np.float32 and params[1].dtype == np.float64
    assert_allclose(params[0], -0.5) and assert_allclose(params[1], -0.5)
    with pytest.raises(ValueError, match=r"variable 1 must have shape \(3,\).*gradient \(4,\)"):
        opt.apply_gradients(zip([grads[0], np.ones(4)], params))
    with pytest.raises(ValueError, match="built for 2 variables"):
        opt.apply_gradients(zip(grads[:1], params[:1]))
    with pytest.raises(ValueError, match="gradient 0 is None"):
        opt.apply_gradients(zip([None, grads[1]], params))
    with pytest.raises(TypeError, match="variable 0 must be a float NumPy array"):
        optimizers.SGD().build([np.zeros(2, np.int32)])
    frozen = np.zeros(2)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        optimizers.SGD().build([frozen])


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import keras
        except Exception as e:  # not installed, or no usable backend
            pytest.skip(f"keras is not usable here: {e!r}")
    return keras


@pytest.mark.parametrize("name,cfg", [
    ("SGD", dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(learning_rate=0.01)),
    ("Adam", dict(learning_rate=0.01, amsgrad=True, clipnorm=0.5)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True)),
    ("Adagrad", dict(learning_rate=0.1, global_clipnorm=1.0)),
    ("AdamW", dict(learning_rate=0.01, weight_decay=0.1, clipvalue=0.3)),
])
def test_optimizer_matches_keras(name, cfg):
    keras = _keras()
    params, grads = _problem(7, steps=5, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kvars = [keras.Variable(p.copy()) for p in params]
        kopt = getattr(keras.optimizers, name)(**cfg)
        for g in grads:
            kopt.apply_gradients(zip([keras.ops.convert_to_tensor(x) for x in g], kvars))
        expected = [keras.ops.convert_to_numpy(v) for v in kvars]
    opt = getattr(optimizers, name)(**cfg)
    for g in grads:
        opt.apply_gradients(zip(g, params))
    for p, e in zip(params, expected):
        assert_allclose(p, e, **KERAS32)


@pytest.mark.parametrize("variant", LOSS_VARIANTS, ids=_variant_id)
def test_loss_matches_keras(variant):
    keras = _keras()
    name, logits, ls = variant
    rng = np.random.default_rng(12)
    y_true, y_pred = make_case(name, (4, 3, 5), rng, logits)
    w = rng.uniform(size=(4, 3))
    kwargs = {"from_logits": True} if logits else {}
    if ls:
        kwargs["label_smoothing"] = ls
    cls_name = type(losses.get(name)).__name__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = float(keras.ops.convert_to_numpy(getattr(keras.losses, cls_name)(**kwargs)(
            y_true.astype(np.float32) if not name.startswith("sparse") else y_true, y_pred.astype(np.float32),
            sample_weight=w.astype(np.float32))))
    ours = make_loss(name, logits, ls)(y_true, y_pred.astype(np.float32), w)
    assert ours == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Callbacks.
# ---------------------------------------------------------------------------------------------

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
    monkeypatch.setattr(callbacks, "_interactive", lambda: True)
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


# ---------------------------------------------------------------------------------------------
# utils.
# ---------------------------------------------------------------------------------------------

def test_pad_sequences_basic():
    seqs = [[1, 2, 3], [4, 5], [], [6, 7, 8, 9]]
    assert_array_equal(utils.pad_sequences(seqs), [[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 0, 0], [6, 7, 8, 9]])
    assert_array_equal(utils.pad_sequences(seqs, padding="post"),
                       [[1, 2, 3, 0], [4, 5, 0, 0], [0, 0, 0, 0], [6, 7, 8, 9]])
    assert_array_equal(utils.pad_sequences(seqs, maxlen=2), [[2, 3], [4, 5], [0, 0], [8, 9]])
    assert_array_equal(utils.pad_sequences(seqs, maxlen=2, truncating="post"), [[1, 2], [4, 5], [0, 0], [6, 7]])
    assert_array_equal(utils.pad_sequences(seqs, maxlen=5, padding="post", value=-1),
                       [[1, 2, 3, -1, -1], [4, 5, -1, -1, -1], [-1] * 5, [6, 7, 8, 9, -1]])
    out = utils.pad_sequences(seqs)
    assert out.dtype == np.int32 and out.shape == (4, 4)
    assert utils.pad_sequences([[], []]).shape == (2, 0)
    assert utils.pad_sequences([]).shape == (0, 0)
    assert utils.pad_sequences([[1, 2]], maxlen=0).shape == (1, 0)


def test_pad_sequences_dtypes_and_shapes():
    floats = utils.pad_sequences([[0.5, 1.5], [2.5]], dtype="float32", value=-0.5)
    assert floats.dtype == np.float32
    assert_array_equal(floats, [[0.5, 1.5], [-0.5, 2.5]])
    assert_array_equal(utils.pad_sequences([[0.7, 1.9]]), [[0, 1]])       # int dtype truncates, as NumPy
    ragged = [np.ones((3, 2)), np.full((1, 2), 5.0)]
    out = utils.pad_sequences(ragged, dtype="float64", padding="post")
    assert out.shape == (2, 3, 2)
    assert_array_equal(out[1], [[5, 5], [0, 0], [0, 0]])
    words = utils.pad_sequences([["a", "b"], ["c"]], dtype=object, value="<pad>")
    assert words.tolist() == [["a", "b"], ["<pad>", "c"]]
    assert utils.pad_sequences([["ab"], []], dtype="<U5", value="x").tolist() == [["ab"], ["x"]]
    with pytest.raises(ValueError, match="dtype=object"):
        utils.pad_sequences([["a"]], value="<pad>")
    with pytest.raises(ValueError, match='Padding type "middle" not understood'):
        utils.pad_sequences([[1]], padding="middle")
    with pytest.raises(ValueError, match='Truncating type "both" not understood'):
        utils.pad_sequences([[1]], truncating="both")
    with pytest.raises(ValueError, match="non-iterable"):
        utils.pad_sequences([[1], 2])
    with pytest.raises(ValueError, match="different from expected shape"):
        utils.pad_sequences([np.ones((2, 3)), np.ones((2, 4))], dtype="float32")
    with pytest.raises(ValueError, match="maxlen"):
        utils.pad_sequences([[1]], maxlen=-1)


def test_to_categorical():
    out = utils.to_categorical([0, 2, 1])
    assert out.dtype == np.float32 and out.shape == (3, 3)
    assert_array_equal(out, np.eye(3)[[0, 2, 1]])
    assert utils.to_categorical(np.array([[1], [0]]), num_classes=4).shape == (2, 4)   # trailing 1 dropped
    assert utils.to_categorical(np.array([[1, 2], [0, 1]])).shape == (2, 2, 3)
    assert utils.to_categorical(np.array([1.0, 0.0]), dtype="float64").dtype == np.float64
    assert utils.to_categorical(3, num_classes=5).tolist() == [0, 0, 0, 1, 0]
    with pytest.raises(ValueError, match=r"label 3 is out of range for num_classes=3"):
        utils.to_categorical([0, 3], num_classes=3)
    with pytest.raises(ValueError, match="label -1"):
        utils.to_categorical([0, -1])
    with pytest.raises(ValueError, match="non-integer"):
        utils.to_categorical([0.5])
    with pytest.raises(ValueError, match="num_classes"):
        utils.to_categorical([])


def test_utils_reexports_and_normalize():
    assert utils.set_random_seed is backend.set_random_seed
    assert utils.Progbar is callbacks.Progbar
    assert_allclose(utils.normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


# ---------------------------------------------------------------------------------------------
# Keras 3 itself as the reference for metrics, callbacks and utils (skipped without keras).
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
def test_metrics_match_keras(name, true_shape, pred_shape, weight_shape, path):
    keras = _keras()
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
    keras = _keras()
    epoch_logs = [{monitor: v} for v in values]
    theirs_model = CopyingFakeModel()
    theirs = _keras_fit(getattr(keras.callbacks, cls)(monitor=monitor, **kwargs), theirs_model, epoch_logs)
    ours_model = FakeModel()
    ours_cb = getattr(callbacks, cls)(monitor=monitor, **kwargs)
    fit(ours_model, [ours_cb], epoch_logs)
    ours = [{k: v for k, v in zip(ours_model.history.history, row)}
            for row in zip(*ours_model.history.history.values())]
    assert ours == pytest.approx(theirs)
    assert ours_model.stop_training == theirs_model.stop_training
    assert_array_equal(ours_model.weights[0], theirs_model.weights[0])
    assert ours_model.optimizer.current_learning_rate() == pytest.approx(theirs_model.optimizer.learning_rate)


def test_checkpoint_and_csv_match_keras(tmp_path):
    keras = _keras()
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


@pytest.mark.parametrize("args", [
    dict(sequences=[[1, 2, 3], [4, 5], [], [6, 7, 8, 9]]),
    dict(sequences=[[1, 2, 3], [4, 5], [], [6, 7, 8, 9]], maxlen=2, truncating="post", padding="post", value=-1),
    dict(sequences=[[0.5, 1.5], [2.5]], dtype="float32", value=-0.5, maxlen=3),
    dict(sequences=[[0.7, 1.9], [3.2]]),
    dict(sequences=[np.ones((3, 2)), np.full((1, 2), 5.0)], dtype="float64", padding="post"),
    dict(sequences=[["a", "b"], ["c"]], dtype=object, value="<pad>"),
])
def test_pad_sequences_matches_keras(args):
    keras = _keras()
    theirs = keras.utils.pad_sequences(**args)
    ours = utils.pad_sequences(**args)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.tolist() == theirs.tolist()
    labels = np.array([[1], [0], [3]])
    assert_array_equal(utils.to_categorical(labels), keras.utils.to_categorical(labels))
    assert_array_equal(utils.to_categorical(labels, 5), keras.utils.to_categorical(labels, 5))


def test_custom_loss_subclass_and_degenerate_inputs(path):
    class Half(losses.Loss):
        """0.5 * mean((p - t)^2): only the NumPy hooks."""
        name = "half"
        _mean_over_classes = True

        def _values(self, t, p):
            return 0.5 * ((p - t) ** 2).mean(-1)

        def _grad(self, t, p, scale, grad):
            np.subtract(p, t, grad)
            value = float((0.5 * grad * grad * scale).sum())
            np.multiply(grad, scale, grad)
            return value

    y_true, y_pred = np.zeros((2, 1)), np.array([[2.0], [4.0]])
    value, grad = Half().value_and_grad(y_true, y_pred)
    assert value == pytest.approx(5.0)
    assert_array_equal(grad, [[1.0], [2.0]])
    assert losses.get(Half()).name == "half"
    # probabilities summing to 0: NaN as in Keras, not an exception, on both paths
    with np.errstate(all="ignore"):
        value, grad = losses.get("categorical_crossentropy").value_and_grad(np.eye(3)[:1], np.zeros((1, 3)))
    assert math.isnan(value)
