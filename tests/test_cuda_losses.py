"""The loss kernels of the GPU engine (lstmfast.cuda.losses, loss_rules.cuh) against the NumPy
formulas of lstmfast.losses: binary crossentropy and sparse categorical crossentropy, on
probabilities and logits, through ``Loss.value_and_grad`` (which asks ``ops.device_loss``), on the
CuPy stand-in ("emulated": the same element functions compiled by g++) and on a real GPU when
there is one. The compile tests are in test_cuda.py with the other kernels'."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from lstmfast import losses, ops

from test_cuda import Launches, device_side, emulated  # noqa: F401  (fixtures)

TOLERANCE = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


@pytest.fixture(params=["emulated", "gpu"])
def side(request, monkeypatch):
    return device_side(request.param, request, monkeypatch)


def probabilities(rng, shape, dtype):
    """Probabilities with the clip bounds' branches: exact 0 and 1, tiny and near 1."""
    p = rng.random(shape)
    p.reshape(-1)[:4] = [0.0, 1.0, 1e-9, 1 - 1e-9]
    return p.astype(dtype)


def compare(side, loss, t, p, sample_weight=None):
    """``value_and_grad`` on the device (one kernel) against the host's, and the kernel used."""
    want_value, want_grad = loss.value_and_grad(t, p, sample_weight)
    Launches.reset()
    value, grad = loss.value_and_grad(side.to_device(t), side.to_device(p),
                                      None if sample_weight is None else side.to_device(sample_weight))
    tol = TOLERANCE[p.dtype.type]
    assert_allclose(side.to_host(grad), want_grad, **tol)
    assert_allclose(float(value), want_value, **tol)
    return Launches.kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 1), (5, 3), (4, 6, 40), (2, 70)])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
def test_binary_crossentropy(from_logits, shape, dtype, side):
    rng = np.random.default_rng(3)
    p = (rng.standard_normal(shape) * 5).astype(dtype) if from_logits else probabilities(rng, shape, dtype)
    t = (rng.random(shape) < 0.5).astype(dtype)
    t.reshape(-1)[1::7] = 0.3  # soft targets too
    kernels = compare(side, losses.BinaryCrossentropy(from_logits=from_logits), t, p)
    assert kernels == ["binary_crossentropy"] or side.name == "gpu"
    compare(side, losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=0.1), t, p,
            rng.random(shape[0]).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 1), (5, 3), (4, 6, 40), (2, 70)])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
def test_sparse_categorical_crossentropy(from_logits, shape, dtype, side):
    rng = np.random.default_rng(4)
    C = shape[-1]
    p = (rng.standard_normal(shape) * 5).astype(dtype) if from_logits else (rng.random(shape) + 0.01).astype(dtype)
    labels = rng.integers(0, C, shape[:-1])
    if not from_logits and C > 1:  # rows whose label's share is 0 and 1: clipped, no gradient
        rows = p.reshape(-1, C)
        rows[0], rows[1] = np.eye(C, dtype=dtype)[1], np.eye(C, dtype=dtype)[0]
        labels.reshape(-1)[:2] = 0
    loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    kernels = compare(side, loss, labels, p)
    assert kernels == ["sparse_crossentropy"] or side.name == "gpu"
    compare(side, loss, labels, p, rng.random(shape[0]).astype(dtype))


def test_nan_propagates_as_on_the_host(emulated):  # noqa: F811
    p = np.array([[0.2, np.nan, 0.3], [0.5, 0.25, 0.25]], np.float32)
    for loss, t in [(losses.BinaryCrossentropy(), np.ones_like(p)),
                    (losses.SparseCategoricalCrossentropy(), np.array([0, 2]))]:
        want_value, want_grad = loss.value_and_grad(t, p)
        value, grad = loss.value_and_grad(emulated.to_device(t), emulated.to_device(p))
        assert np.isnan(want_value) and np.isnan(float(value))
        assert_allclose(emulated.to_host(grad), want_grad, rtol=2e-6, equal_nan=True)


def test_other_layouts_and_dtypes_keep_the_formulas(emulated):  # noqa: F811
    p = emulated.to_device(np.full((4, 3), 0.25, np.float32))
    t = emulated.to_device(np.zeros((4, 3), np.float32))
    assert ops.device_loss("binary_crossentropy", False, t, p[:, :2], 1e-7, 1 - 1e-7) is None      # strided
    assert ops.device_loss("binary_crossentropy", False, t.astype(np.float64), p, 1e-7, 1 - 1e-7) is None
    labels = emulated.to_device(np.zeros(4, np.int32))
    assert ops.device_loss("sparse_categorical_crossentropy", False, labels, p, 1e-7, 1 - 1e-7) is None  # int32
    assert ops.device_loss("mean_squared_error", False, t, p, 1e-7, 1 - 1e-7) is None
    assert ops.device_loss("binary_crossentropy", False, np.zeros((4, 3), np.float32),
                           np.full((4, 3), 0.25, np.float32), 1e-7, 1 - 1e-7) is None                   # host
