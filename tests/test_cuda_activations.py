"""The activation kernels of the GPU engine (lstmfast.cuda.activations, activation_rules.cuh)
against the NumPy formulas of lstmfast.activations: on the CuPy stand-in ("emulated", the same
element functions compiled by g++) and on a real GPU when there is one. The compile tests are in
test_cuda.py with the other kernels'."""
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lstmfast import activations, ops
from lstmfast.cuda import _kernels
from lstmfast.cuda import activations as cuda_activations
from lstmfast.layers import Activation, Dense
from lstmfast.models import Sequential

from test_cuda import Launches, device_side, emulated, fit_model, model_side  # noqa: F401  (fixtures)

# libm and NumPy's own exp/tanh/expm1 differ by an ulp or so; near a cancellation (tanh's 1 - y^2 at
# saturation) that is all of a tiny value, hence the absolute part.
TOLERANCE = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-15)}
NAMES = sorted(cuda_activations.CODES) + [cuda_activations.SOFTMAX]


@pytest.fixture(params=["emulated", "gpu"])
def side(request, monkeypatch):
    return device_side(request.param, request, monkeypatch)


def inputs(dtype, shape=(7, 37)):
    """Values on every branch: both signs, zero, tiny, and large enough to saturate exp."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    flat = x.reshape(-1)
    flat[:12] = [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 95.0, -95.0, 3.0, -3.0, 0.5, -0.5]
    return x


def test_the_codes_are_those_of_the_header():
    header = _kernels.read(_kernels.ACTIVATION_HEADER_FILE)
    enum = re.search(r"enum ActivationCode : int \{(.*?)\};", header, re.S).group(1)
    codes = {re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower(): int(value)
             for name, value in re.findall(r"k(\w+) = (\d+)", enum)}
    assert codes == cuda_activations.CODES
    # every activation but linear (the identity: nothing to launch) has a kernel
    assert set(activations.ACTIVATIONS) - {"linear"} == set(NAMES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_one_kernel_computes_the_activation_and_its_gradient(name, dtype, side):
    act = activations.get(name)
    x = inputs(dtype)
    dy = np.random.default_rng(3).standard_normal(x.shape).astype(dtype)
    with np.errstate(over="ignore"):  # exponential(95) is inf in float32, on both sides
        want_y = act(x)
        want_dx = act.backward(x, want_y, dy)
    dx_, y_, dy_ = side.to_device(x), None, side.to_device(dy)
    Launches.reset()
    y_ = act(dx_)
    dx = act.backward(dx_, y_, dy_)
    if side.name == "emulated":
        assert Launches.kernels == [("softmax" if name == "softmax" else "activation") + "_forward",
                                    ("softmax" if name == "softmax" else "activation") + "_backward"]
        assert Launches.count == 2
    assert type(y_) is type(dx_) and type(dx) is type(dx_)
    assert y_.dtype == dtype and dx.dtype == dtype
    assert_allclose(side.to_host(y_), want_y, **TOLERANCE[dtype], err_msg="forward")
    assert_allclose(side.to_host(dx), want_dx, **TOLERANCE[dtype], err_msg="backward")


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softplus", "elu", "gelu", "softmax"])
def test_nan_comes_out_nan_as_in_numpy(name, side):
    act = activations.get(name)
    x = np.array([[np.nan, 1.0, -2.0]], np.float32)
    want = act(x)
    got = side.to_host(act(side.to_device(x)))
    assert (np.isnan(got) == np.isnan(want)).all(), (got, want)
    assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=2e-6)


def test_softmax_rows_wider_than_a_warp_and_a_single_column(side):
    for shape in [(3, 1), (2, 5, 200), (1, 33)]:
        x = np.random.default_rng(4).standard_normal(shape).astype(np.float32) * 10
        got = side.to_host(activations.softmax(side.to_device(x)))
        assert_allclose(got, activations.softmax(x), rtol=2e-6, atol=1e-8)
        assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


def test_arrays_without_a_kernel_take_the_formulas(emulated):  # noqa: F811
    """Strided and integer device arrays, and host arrays, run the NumPy formulas (no kernel)."""
    x = inputs(np.float32, (6, 8))
    device = emulated.to_device(x)
    Launches.reset()
    strided = activations.sigmoid(device[:, ::2])
    assert "activation_forward" not in Launches.kernels
    assert_allclose(emulated.to_host(strided), activations.sigmoid(x[:, ::2]), rtol=2e-6)
    assert ops.device_activation("sigmoid", x) is None            # a host array
    assert ops.device_activation("linear", device) is None        # nothing to launch
    assert ops.device_activation("sigmoid", device[:0]) is None   # empty
    assert ops.device_activation("sigmoid", emulated.to_device(np.arange(4))) is None  # integers
    assert ops.device_activation_grad("tanh", device, device, device[:, ::-1].copy()) is not None
    assert ops.device_activation_grad("tanh", device, device.astype(np.float64), device) is None  # mixed dtypes


def dense_model(activation):
    """Dense(activation) -> Dense(softmax): both activation kernels inside a training step."""
    def build():
        model = Sequential([Dense(6, activation=activation, input_shape=(5,)), Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        rng = np.random.default_rng(6)
        return model, rng.standard_normal((24, 5)).astype(np.float32), rng.integers(0, 3, 24)
    return build


@pytest.mark.parametrize("activation", ["sigmoid", "gelu", "selu", "hard_sigmoid"])
def test_a_model_trains_on_the_device_as_on_the_host(activation, model_side):  # noqa: F811
    build = dense_model(activation)
    _, cpu_history, cpu_prediction = fit_model(build, "cpu")
    _, history, prediction = fit_model(build, "cuda")
    for key, values in cpu_history.items():
        assert_allclose(history[key], values, rtol=2e-5, atol=1e-6, err_msg=key)
    assert_allclose(prediction, cpu_prediction, rtol=2e-5, atol=1e-6)


def test_an_activation_layer_on_the_device_launches_one_kernel_each_way(emulated):  # noqa: F811
    layer = Activation("swish")
    x = inputs(np.float32, (5, 4))
    _, cache = layer.forward(x, training=True)
    want = layer.backward(cache, np.ones_like(x))
    Launches.reset()
    _, cache = layer.forward(emulated.to_device(x), training=True)
    got = layer.backward(cache, emulated.to_device(np.ones_like(x)))
    assert Launches.kernels == ["activation_forward", "activation_backward"]
    assert_allclose(emulated.to_host(got), want, rtol=2e-6, atol=1e-7)
