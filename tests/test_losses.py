"""Losses: values and gradients against the Keras formulas, weights, clipping, errors, lookup.

References: the formulas written out again here (loops over rows with ``math``), central finite
differences in float64, and Keras 3 itself when installed.
"""
import contextlib
import json
import math
import sys
import types
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import losses

from conftest import peer

EPS = 1e-7                                   # Keras backend.epsilon()
F64 = dict(rtol=1e-12, atol=1e-13)           # the same float64 formula, different operation order
F32 = dict(rtol=2e-6, atol=1e-7)             # float32 result versus the float64 reference
FD_H = 1e-6                                  # central-difference step (float64)
FD = dict(rtol=1e-6, atol=1e-8)              # finite differences versus the analytic gradient

LOSS_NAMES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
              "mean_squared_error", "mean_absolute_error")


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
def test_loss_value_and_gradient(variant, shape):
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
def test_loss_sample_weight(variant, shape, weight_shape):
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
def test_binary_crossentropy_stable_at_zero_and_one(dtype, shape):
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
def test_binary_crossentropy_keeps_tiny_losses(dtype):
    """No cancellation: a confident right answer costs its small true loss, not 0."""
    t = np.ones((20, 1), dtype)
    value = losses.BinaryCrossentropy(from_logits=True)(t, np.full((20, 1), 20.0, dtype))
    assert value == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-5)
    value, _ = losses.BinaryCrossentropy(from_logits=True).value_and_grad(t, np.full((20, 1), 20.0, dtype))
    assert value == pytest.approx(math.log1p(math.exp(-20.0)), rel=1e-5)
    p = np.full((20, 1), 0.999, dtype)
    value, _ = losses.BinaryCrossentropy().value_and_grad(t, p)
    assert value == pytest.approx(-math.log(float(p[0, 0])), rel=1e-5)


def test_categorical_crossentropy_clips_like_keras():
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
def test_from_logits_matches_softmax_probabilities(name):
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
def test_loss_keeps_dtype(dtype):
    """The value and gradient in y_pred's dtype agree with the float64 reference to that dtype's precision."""
    rng = np.random.default_rng(2)
    for name, logits, ls in LOSS_VARIANTS:
        y_true, y_pred = make_case(name, (2, 5), rng, logits)
        loss = make_loss(name, logits, ls)
        value, grad = loss.value_and_grad(y_true, y_pred.astype(dtype))
        value64, grad64 = loss.value_and_grad(y_true, y_pred)
        tol = F32 if dtype == np.float32 else F64
        assert isinstance(value, float) and grad.dtype == dtype
        assert loss.values(y_true, y_pred.astype(dtype)).dtype == dtype
        assert_allclose(value, ref_values(name, y_true, y_pred, logits, ls).mean(), **tol)
        assert_allclose(grad, grad64, **tol)


def test_gradient_is_a_fresh_array():
    mse = losses.get("mse")
    y = np.ones((2, 1), np.float32)
    _, g1 = mse.value_and_grad(y, np.zeros((2, 1), np.float32))
    _, g2 = mse.value_and_grad(y, np.full((2, 1), 3.0, np.float32))
    assert g1 is not g2 and g1[0, 0] == pytest.approx(-1.0)


def test_target_shapes_accepted():
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
            scce.value_and_grad(np.array([0, bad] * 20), np.full((40, 5), 0.2))   # a larger batch
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
# On another array module: the formulas compute with the array module of y_pred (CuPy for a device
# array), never with NumPy's own functions.
# ---------------------------------------------------------------------------------------------

_DEVICE_CALLS = [0]  # > 0 while a function of the stand-in module or a method of a device array runs


@contextlib.contextmanager
def _device_call():
    _DEVICE_CALLS[0] += 1
    try:
        yield
    finally:
        _DEVICE_CALLS[0] -= 1


def _host(a):
    return a.view(np.ndarray) if isinstance(a, DeviceArray) else a


def _device(a):
    return a.view(DeviceArray) if type(a) is np.ndarray else a


class DeviceArray(np.ndarray):
    """Stands in for a CuPy array: NumPy's functions and ufuncs refuse it (as NumPy refuses CuPy's
    arrays); its methods and operators, and the functions of the stand-in module, work."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if not _DEVICE_CALLS[0]:
            raise TypeError(f"numpy.{ufunc.__name__}.{method} got a device array")
        if out is not None:
            kwargs["out"] = tuple(_host(o) for o in out)
        result = getattr(ufunc, method)(*map(_host, inputs), **kwargs)
        return out[0] if out is not None else _device(result)

    def __array_function__(self, func, types, args, kwargs):
        if not _DEVICE_CALLS[0] and func not in (np.shape, np.ndim):  # metadata, not data
            raise TypeError(f"numpy.{func.__name__} got a device array")
        return _device(func(*map(_host, args), **{k: _host(v) for k, v in kwargs.items()}))


def _on_device(function):
    def call(*args, **kwargs):
        with _device_call():
            return _device(function(*args, **kwargs))
    return call


for _name in ("sum", "max", "min", "mean", "argmax", "all", "__neg__", "__abs__", "__eq__", "__ne__", "__lt__",
              "__le__", "__gt__", "__ge__", "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__",
              "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "__pow__"):
    setattr(DeviceArray, _name, _on_device(getattr(np.ndarray, _name)))

DEVICE = types.ModuleType("cupy")  # the stand-in module: what lstmfast.ops.array_module returns for a DeviceArray
DEVICE.ndarray = DeviceArray
DEVICE.float64 = np.float64
DEVICE.asarray = lambda a, dtype=None: np.asarray(_host(a), dtype).view(DeviceArray)
for _name in ("exp", "log", "log1p", "abs", "sign", "maximum", "minimum", "where", "arange", "empty", "zeros",
              "broadcast_to"):
    setattr(DEVICE, _name, _on_device(lambda *args, _f=getattr(np, _name), **kwargs:
                                      _f(*map(_host, args), **{k: _host(v) for k, v in kwargs.items()})))


@pytest.fixture
def device(monkeypatch):
    """The stand-in module, seen by lstmfast.ops.array_module as CuPy."""
    monkeypatch.setitem(sys.modules, "cupy", DEVICE)
    with pytest.raises(TypeError, match="numpy.log.__call__ got a device array"):
        np.log(DEVICE.asarray([1.0]))
    return DEVICE


@pytest.mark.parametrize("variant", LOSS_VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("shape", [(1, 4), (3, 4)])
def test_loss_on_another_array_module(variant, shape, device):
    name, logits, ls = variant
    rng = np.random.default_rng(14)
    y_true, y_pred = make_case(name, shape, rng, logits)
    w = rng.uniform(size=shape[0])
    loss = make_loss(name, logits, ls)
    value, grad = loss.value_and_grad(y_true, y_pred, w)
    for t in (device.asarray(y_true), y_true):  # targets on the device, or still on the host
        p = device.asarray(y_pred)
        value_d, grad_d = loss.value_and_grad(t, p, device.asarray(w))
        assert type(grad_d) is DeviceArray and grad_d.dtype == grad.dtype
        assert_allclose(value_d, value, **F64)
        assert_allclose(_host(grad_d), grad, **F64)
        value_d, grad_d = loss.value_and_grad(t, p)
        assert_allclose(value_d, loss(y_true, y_pred), **F64)
        assert_allclose(_host(grad_d), loss.value_and_grad(y_true, y_pred)[1], **F64)
        assert_allclose(loss(t, p, w), loss(y_true, y_pred, w), **F64)
        values = loss.values(t, p)
        assert type(values) is DeviceArray
        assert_allclose(_host(values), loss.values(y_true, y_pred), **F64)


# ---------------------------------------------------------------------------------------------
# Custom losses and Keras 3 as the reference (skipped without keras).
# ---------------------------------------------------------------------------------------------

def test_custom_loss_subclass_and_degenerate_inputs():
    class Half(losses.Loss):
        """0.5 * mean((p - t)^2) through the older hooks: _values and an in-place _grad."""
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
    # probabilities summing to 0: NaN as in Keras, not an exception
    with np.errstate(all="ignore"):
        value, grad = losses.get("categorical_crossentropy").value_and_grad(np.eye(3)[:1], np.zeros((1, 3)))
    assert math.isnan(value)


def test_custom_loss_subclass_states_its_formula():
    class Cubic(losses.Loss):
        """mean_c (p - t)^3: the formula hook, on the array module of y_pred."""
        name = "cubic"

        def _formula(self, t, p, grad):
            d = p - t
            C = p.shape[-1]
            return (d * d * d).sum(-1) / C, ((3.0 / C) * d * d if grad else None)

    rng = np.random.default_rng(6)
    y_true, y_pred = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    w = rng.uniform(size=3)
    loss = Cubic()
    expected = (((y_pred - y_true) ** 3).mean(-1) * w).sum() / 3
    assert_allclose(loss(y_true, y_pred, w), expected, **F64)
    assert_allclose(loss.values(y_true, y_pred), ((y_pred - y_true) ** 3).mean(-1), **F64)
    value, grad = loss.value_and_grad(y_true, y_pred, w)
    assert_allclose(value, expected, **F64)
    assert_allclose(grad, finite_differences(lambda p: loss(y_true, p, w), y_pred), **FD)
    assert losses.Loss.__doc__ and "_formula" in losses.Loss.__doc__


@pytest.mark.parametrize("variant", LOSS_VARIANTS, ids=_variant_id)
def test_loss_matches_keras(variant):
    keras = peer("keras")
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
