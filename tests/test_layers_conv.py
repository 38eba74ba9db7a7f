"""Conv1D, MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D, GlobalAveragePooling1D, Reshape, Permute
and SpatialDropout1D: finite-difference gradient checks in float64 over the options that change the
arithmetic (padding, strides, dilation, groups, data_format, pool sizes that do not divide T, masks),
Keras 3 parity of outputs, input and weight gradients (torch autograd through the Keras layer, same
weights) and of the output masks, configs, shapes with None, errors, and models that train, save and
load with them."""
import contextlib
import importlib
import json
import sys
import types
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_layers import built, check_gradients, masks
from test_models import check_model_gradients

import lstmfast
from lstmfast import backend, layers, optimizers
from lstmfast.layers import (
    LSTM,
    AveragePooling1D,
    Conv1D,
    Dense,
    Dropout,
    Embedding,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    Input,
    MaxPooling1D,
    Permute,
    Reshape,
    SpatialDropout1D,
)
from lstmfast.models import Model, Sequential

B, T, C = 3, 5, 4
# float32 lstmfast versus Keras 3 on the torch backend (float32 both, different summation order).
KERAS_ATOL, KERAS_RTOL = 1e-5, 1e-5
KERAS_GRAD_ATOL, KERAS_GRAD_RTOL = 1e-4, 1e-4


@pytest.fixture
def rng():
    backend.set_random_seed(1234)
    return np.random.default_rng(20240611)


def randomize(layer, rng):
    """Non-zero biases too, so that every term shows."""
    for w in layer.weights.values():
        w[...] = rng.standard_normal(w.shape) * 0.5
    return layer


# ---------------------------------------------------------------------------------------------
# A direct reference for Conv1D: the defining sum, one output entry at a time.
# ---------------------------------------------------------------------------------------------

def conv1d_reference(x, kernel, bias, strides, padding, dilation, groups):
    """``y[b, t, f]`` by its defining sum over a zero-padded channels_last ``x`` (pre-activation)."""
    Bn, Tn, Cn = x.shape
    k, cg, F = kernel.shape
    span = dilation * (k - 1) + 1
    if padding == "valid":
        left, n_out = 0, (Tn - span) // strides + 1
    else:
        n_out = -(-Tn // strides)
        total = max(0, (n_out - 1) * strides + span - Tn)
        left = span - 1 if padding == "causal" else total // 2
    padded = np.zeros((Bn, left + Tn + span + strides * n_out, Cn))
    padded[:, left:left + Tn] = x
    y = np.zeros((Bn, n_out, F))
    fg = F // groups
    for t in range(n_out):
        for f in range(F):
            g = f // fg
            taps = padded[:, t * strides + np.arange(k) * dilation, g * cg:(g + 1) * cg]  # [B, k, cg]
            y[:, t, f] = (taps * kernel[:, :, f]).sum(axis=(1, 2))
    return y + (0 if bias is None else bias)


# ---------------------------------------------------------------------------------------------
# Gradients (float64, finite differences).
# ---------------------------------------------------------------------------------------------

CONV_OPTIONS = {
    "valid": dict(),
    "same": dict(padding="same"),
    "causal": dict(padding="causal"),
    "valid_stride3_t_not_divisible": dict(strides=3),
    "same_stride2": dict(padding="same", strides=2),
    "same_stride3_kernel2": dict(padding="same", strides=3, kernel_size=2),
    "causal_stride2": dict(padding="causal", strides=2),
    "valid_dilation2": dict(dilation_rate=2),
    "same_dilation2": dict(padding="same", dilation_rate=2),
    "causal_dilation3": dict(padding="causal", dilation_rate=3),
    "kernel1": dict(kernel_size=1),
    "kernel1_stride2": dict(kernel_size=1, strides=2),
    "same_kernel_longer_than_t": dict(padding="same", kernel_size=8),
    "groups2": dict(groups=2),
    "groups4_same_stride2": dict(groups=4, padding="same", strides=2, filters=8),
    "channels_first": dict(data_format="channels_first", padding="same"),
    "channels_first_groups_causal": dict(data_format="channels_first", groups=2, padding="causal"),
    "no_bias_sigmoid": dict(use_bias=False, activation="sigmoid"),
    "softmax": dict(activation="softmax", padding="same"),
}


def make_conv(options):
    options = dict(options)
    return Conv1D(options.pop("filters", 6), options.pop("kernel_size", 3), **options)


@pytest.mark.parametrize("name", sorted(CONV_OPTIONS))
def test_conv1d_gradients(float64, rng, name):
    layer = make_conv({"activation": "tanh", **CONV_OPTIONS[name]})
    steps = 7
    shape = (B, steps, C) if layer.data_format == "channels_last" else (B, C, steps)
    randomize(built(layer, (None,) + shape[1:]), rng)
    x = rng.standard_normal(shape)
    out = check_gradients(layer, x)
    assert out.shape == layer.compute_output_shape(shape)
    # the values are the defining sum's
    x_last = x if layer.data_format == "channels_last" else x.transpose(0, 2, 1)
    z = conv1d_reference(x_last, layer.weights["kernel"], layer.weights.get("bias"), layer.strides, layer.padding,
                         layer.dilation_rate, layer.groups)
    expected = layer.activation(z)
    assert_allclose(out, expected if layer.data_format == "channels_last" else expected.transpose(0, 2, 1),
                    rtol=1e-12, atol=1e-12)


def test_conv1d_accumulates_weight_gradients_and_ignores_the_mask(float64, rng):
    layer = randomize(built(Conv1D(3, 2, padding="causal"), (None, T, C)), rng)
    x = rng.standard_normal((B, T, C))
    y, cache = layer.forward(x)
    assert_array_equal(layer.forward(x, mask=masks("arbitrary"))[0], y)  # Keras drops the mask
    assert layer.compute_mask(x, masks("post")) is None
    dy = rng.standard_normal(y.shape)
    layer.zero_grads()
    layer.backward(cache, dy)
    once = {k: g.copy() for k, g in layer.grads.items()}
    layer.backward(layer.forward(x)[1], dy)
    for key in once:
        assert_allclose(layer.grads[key], 2 * once[key], rtol=1e-12)
    frozen = randomize(built(Conv1D(3, 2, trainable=False), (None, T, C)), rng)
    frozen.zero_grads()
    dx = frozen.backward(frozen.forward(x)[1], rng.standard_normal((B, T - 1, 3)))
    assert dx.shape == x.shape and all(not g.any() for g in frozen.grads.values())


POOL_CASES = {
    "pool2_valid_t_not_divisible": (dict(pool_size=2), (B, T, C)),
    "pool3_stride1_overlap": (dict(pool_size=3, strides=1), (B, T, C)),
    "pool2_stride3_gaps": (dict(pool_size=2, strides=3), (B, 7, C)),
    "pool3_stride2_same_symmetric": (dict(pool_size=3, strides=2, padding="same"), (B, T, C)),
    "pool4_stride1_same_asymmetric": (dict(pool_size=4, strides=1, padding="same"), (B, T, C)),
    "pool2_same_t_odd": (dict(pool_size=2, padding="same"), (B, T, C)),
    "pool5_stride2_same": (dict(pool_size=5, strides=2, padding="same"), (B, 6, C)),
    "pool1": (dict(pool_size=1), (B, T, C)),
    "pool_whole_sequence": (dict(pool_size=T), (B, T, C)),
    "channels_first_same": (dict(pool_size=3, strides=2, padding="same", data_format="channels_first"), (B, C, T)),
}


@pytest.mark.parametrize("cls", [MaxPooling1D, AveragePooling1D])
@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_pooling_gradients(float64, rng, cls, name):
    options, shape = POOL_CASES[name]
    layer = built(cls(**options), (None,) + shape[1:])
    out = check_gradients(layer, rng.standard_normal(shape))
    assert out.shape == layer.compute_output_shape(shape)


def test_pooling_values_by_hand(float64):
    x = np.array([1.0, 5.0, 2.0, 4.0, 3.0]).reshape(1, T, 1)
    assert_array_equal(MaxPooling1D(2)(x).ravel(), [5, 4])                              # the last step is left out
    assert_array_equal(MaxPooling1D(2, padding="same")(x).ravel(), [5, 4, 3])
    assert_array_equal(MaxPooling1D(3, strides=1, padding="same")(x).ravel(), [5, 5, 5, 4, 4])
    assert_array_equal(AveragePooling1D(2)(x).ravel(), [3, 3])
    # 'same' averages leave the padding out of the count: [1 5 2 4 3] padded 1 left, 2 right for 4 taps
    assert_allclose(AveragePooling1D(4, strides=1, padding="same")(x).ravel(),
                    [8 / 3, 12 / 4, 14 / 4, 9 / 3, 7 / 2])
    assert_allclose(AveragePooling1D(2, padding="same")(x).ravel(), [3, 3, 3])


def test_max_pooling_ties_give_one_winner(float64):
    x = np.array([[[2.0], [2.0], [1.0], [7.0], [7.0], [7.0]]])
    for layer, expected in [(MaxPooling1D(2), [1, 0, 0, 1, 1, 0]),
                            (MaxPooling1D(3, strides=1), [1, 0, 0, 3, 0, 0]),  # windows 1-3, 2-4, 3-5 pick t=3
                            (GlobalMaxPooling1D(), [0, 0, 0, 1, 0, 0])]:
        y, cache = layer.forward(x)
        dx = layer.backward(cache, np.ones_like(y))
        assert_array_equal(dx.ravel(), expected, err_msg=type(layer).__name__)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("mask_kind", [None, "post", "pre"])
@pytest.mark.parametrize("cls", [GlobalMaxPooling1D, GlobalAveragePooling1D])
def test_global_pooling_gradients(float64, rng, cls, keepdims, data_format, mask_kind):
    layer = cls(data_format=data_format, keepdims=keepdims)
    shape = (B, T, C) if data_format == "channels_last" else (B, C, T)
    built(layer, (None,) + shape[1:])
    x = rng.standard_normal(shape)
    mask = None if mask_kind is None else masks(mask_kind)
    out = check_gradients(layer, x, mask=mask)
    assert out.shape == layer.compute_output_shape(shape)
    x_last = x if data_format == "channels_last" else x.transpose(0, 2, 1)
    if cls is GlobalMaxPooling1D or mask is None:  # GlobalMaxPooling1D ignores the mask, as Keras
        expected = x_last.max(axis=1) if cls is GlobalMaxPooling1D else x_last.mean(axis=1)
    else:
        expected = np.stack([x_last[b][mask[b]].mean(axis=0) for b in range(B)])
    assert_allclose(out.reshape(B, C), expected, rtol=1e-12)
    assert layer.compute_mask(x, mask) is None


def test_global_average_pooling_masked_values_are_left_out_and_empty_rows_give_nan(float64, rng):
    x = rng.standard_normal((B, T, C))
    mask = masks("arbitrary")  # row 1 is fully masked
    x[~mask] = np.inf  # masked entries are left out, not multiplied by zero
    layer = GlobalAveragePooling1D()
    y, cache = layer.forward(x, mask=mask)
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    assert_allclose(y[0], x[0][mask[0]].mean(axis=0))
    dx = layer.backward(cache, np.ones_like(y))
    assert_array_equal(dx[~mask], 0)
    assert_allclose(dx[0][mask[0]], 1 / mask[0].sum())


@pytest.mark.parametrize("make, shape", [
    (lambda: Reshape((2, -1)), (B, T, C)),
    (lambda: Reshape((T * C,)), (B, T, C)),
    (lambda: Reshape((C, 1, T)), (B, T, C)),
    (lambda: Permute((2, 1)), (B, T, C)),
    (lambda: Permute((3, 1, 2)), (B, T, C, 2)),
    (lambda: Permute((1, 2)), (B, T, C)),
])
def test_reshaping_gradients(float64, rng, make, shape):
    layer = built(make(), (None,) + shape[1:])
    x = rng.standard_normal(shape)
    out = check_gradients(layer, x)
    assert out.shape == layer.compute_output_shape(shape)
    if isinstance(layer, Permute):
        assert_array_equal(out, x.transpose((0,) + layer.dims))
    else:
        assert_array_equal(out.ravel(), x.ravel())


def test_spatial_dropout_gradients_and_channel_draws(float64, rng):
    layer = built(SpatialDropout1D(0.4), (None, 6, 8))
    x = rng.standard_normal((4, 6, 8))
    out = check_gradients(layer, x, training=True, seed=3)
    kept = out != 0
    assert (kept == kept[:, :1]).all()  # one draw per (batch, channel), shared by every step
    assert 0 < kept.mean() < 1
    assert_allclose(out[kept], x[kept] / 0.6)
    assert_array_equal(layer(x), x)  # inference: the identity
    mask = masks("pre")
    assert layer.compute_mask(x[:3, :5], mask) is mask  # the mask passes through
    big = np.ones((400, 3, 50))
    dropped = SpatialDropout1D(0.3, seed=5).forward(big, training=True)[0] == 0
    assert 0.25 < dropped.mean() < 0.35
    assert_array_equal(SpatialDropout1D(0.3, seed=5).forward(big, training=True)[0],
                       SpatialDropout1D(0.3, seed=5).forward(big, training=True)[0])


# ---------------------------------------------------------------------------------------------
# Keras 3 parity: outputs, gradients and masks (skipped without keras).
# ---------------------------------------------------------------------------------------------

def keras_build(keras_layer, shape, weights=()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keras_layer.build(shape)
        if weights:
            keras_layer.set_weights(weights)
    return keras_layer


def keras_run(keras_layer, x, grad_output, mask=None, training=False):
    """(output, input grad, trainable-weight grads, output mask) of a Keras layer called eagerly on a
    torch tensor with ``mask`` attached as a Keras mask, for the loss ``sum(out * grad_output)``."""
    import torch
    keras_backend = importlib.import_module("keras.src.backend")
    tensor = torch.tensor(x, requires_grad=True)
    if mask is not None:
        keras_backend.set_keras_mask(tensor, torch.tensor(mask))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "does not support masking ... will destroy the mask"
        out = keras_layer(tensor, training=training)
    (out * torch.tensor(grad_output)).sum().backward()
    out_mask = keras_backend.get_keras_mask(out)
    weight_grads = [v.value.grad.numpy() for v in keras_layer.trainable_weights]
    return (out.detach().numpy(), tensor.grad.numpy(), weight_grads,
            None if out_mask is None else out_mask.numpy())


def compare_with_keras(ours, theirs, x, rng, mask=None):
    """Outputs, input and weight gradients and output masks of ``ours`` and Keras's ``theirs``."""
    out, cache = ours.forward(x, False, mask)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    ours.zero_grads()
    dx = ours.backward(cache, grad)
    values, input_grad, weight_grads, keras_mask = keras_run(theirs, x, grad, mask)
    assert_allclose(out, values, atol=KERAS_ATOL, rtol=KERAS_RTOL)
    assert_allclose(dx, input_grad, atol=KERAS_GRAD_ATOL, rtol=KERAS_GRAD_RTOL)
    ours_grads = [g for g, _ in ours.trainable_pairs()]
    assert len(ours_grads) == len(weight_grads)
    for a, b in zip(ours_grads, weight_grads):
        assert_allclose(a, b, atol=KERAS_GRAD_ATOL, rtol=KERAS_GRAD_RTOL)
    our_mask = ours.compute_mask(x, mask)
    if keras_mask is None:
        assert our_mask is None
    else:
        assert_array_equal(our_mask, keras_mask)


KERAS_CONV = [
    dict(),
    dict(padding="same", activation="relu"),
    dict(padding="same", strides=2),
    dict(padding="same", strides=3, kernel_size=4),
    dict(padding="causal", dilation_rate=2),
    dict(padding="valid", strides=2, kernel_size=1),
    dict(padding="same", dilation_rate=3, use_bias=False),
    dict(groups=2, filters=4),
    dict(groups=4, filters=8, padding="same", strides=2),
    dict(data_format="channels_first", padding="same", strides=2),
    dict(data_format="channels_first", padding="causal", groups=2, filters=4),
]


@pytest.mark.parametrize("options", KERAS_CONV, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("mask_kind", [None, "arbitrary"])
def test_keras_parity_conv1d(keras, rng, options, mask_kind):
    options = dict(options)
    filters, kernel_size = options.pop("filters", 5), options.pop("kernel_size", 3)
    ours = Conv1D(filters, kernel_size, **options)
    shape = (B, 9, C) if ours.data_format == "channels_last" else (B, C, 9)
    randomize(built(ours, (None,) + shape[1:]), rng)
    weights = ours.get_weights()
    theirs = keras_build(keras.layers.Conv1D(filters, kernel_size, **options), (None,) + shape[1:], weights)
    x = rng.standard_normal(shape).astype(np.float32)
    mask = None if mask_kind is None else np.tile(masks("arbitrary"), (1, 2))[:, :9]
    compare_with_keras(ours, theirs, x, rng, mask)


KERAS_POOL = [
    ("max", dict()),
    ("max", dict(pool_size=3, strides=1)),
    ("max", dict(pool_size=2, strides=3)),
    ("max", dict(pool_size=3, strides=2, padding="same")),
    ("max", dict(pool_size=2, padding="same")),
    ("max", dict(pool_size=4, strides=1, padding="same")),
    ("max", dict(pool_size=3, padding="same", data_format="channels_first")),
    ("average", dict(pool_size=2)),
    ("average", dict(pool_size=3, strides=1)),
    ("average", dict(pool_size=2, strides=3)),
    ("average", dict(pool_size=3, strides=2, padding="same")),
    ("average", dict(pool_size=3, strides=1, padding="same")),
    ("average", dict(pool_size=3, padding="same", data_format="channels_first")),
    # Not here: 'same' average pooling with more padding on the right than on the left (pool_size=4,
    # strides=1; pool_size=2 on 6 steps): Keras's torch backend pads those with copies of the edge
    # steps and counts them, where its TensorFlow and JAX backends, and lstmfast, leave the padding
    # out (test_pooling_values_by_hand pins that).
]


@pytest.mark.parametrize("kind, options", KERAS_POOL,
                         ids=lambda o: o if isinstance(o, str) else "-".join(f"{k}={v}" for k, v in o.items()))
def test_keras_parity_pooling(keras, rng, kind, options):
    ours = (MaxPooling1D if kind == "max" else AveragePooling1D)(**options)
    keras_cls = keras.layers.MaxPooling1D if kind == "max" else keras.layers.AveragePooling1D
    shape = (B, 7, C) if ours.data_format == "channels_last" else (B, C, 7)
    theirs = keras_build(keras_cls(**options), (None,) + shape[1:])
    x = rng.standard_normal(shape).astype(np.float32)
    compare_with_keras(ours, theirs, x, rng, mask=np.tile(masks("post"), (1, 2))[:, :7])


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "post", "pre", "arbitrary"])
@pytest.mark.parametrize("kind", ["max", "average"])
def test_keras_parity_global_pooling(keras, rng, kind, data_format, keepdims, mask_kind):
    ours = (GlobalMaxPooling1D if kind == "max" else GlobalAveragePooling1D)(data_format=data_format,
                                                                            keepdims=keepdims)
    keras_cls = keras.layers.GlobalMaxPooling1D if kind == "max" else keras.layers.GlobalAveragePooling1D
    shape = (B, T, C) if data_format == "channels_last" else (B, C, T)
    theirs = keras_build(keras_cls(data_format=data_format, keepdims=keepdims), (None,) + shape[1:])
    x = rng.standard_normal(shape).astype(np.float32)
    compare_with_keras(ours, theirs, x, rng, None if mask_kind is None else masks(mask_kind))


@pytest.mark.parametrize("make, shape", [
    (lambda m: m.Reshape((2, -1)), (B, T, C)),
    (lambda m: m.Reshape((C, T)), (B, T, C)),
    (lambda m: m.Permute((2, 1)), (B, T, C)),
    (lambda m: m.Permute((3, 1, 2)), (B, T, C, 2)),
    (lambda m: m.SpatialDropout1D(0.5), (B, T, C)),  # inference: the identity
])
def test_keras_parity_reshaping_and_spatial_dropout(keras, rng, make, shape):
    ours = built(make(layers), (None,) + shape[1:])
    theirs = keras_build(make(keras.layers), (None,) + shape[1:])
    x = rng.standard_normal(shape).astype(np.float32)
    compare_with_keras(ours, theirs, x, rng, mask=masks("pre") if len(shape) == 3 else None)


def test_keras_parity_spatial_dropout_training_draws_whole_channels(keras):
    x = np.ones((64, 6, 32), np.float32)
    theirs = keras.layers.SpatialDropout1D(0.5, seed=1)
    values, _, _, _ = keras_run(theirs, x, np.ones_like(x), training=True)
    ours = SpatialDropout1D(0.5, seed=1).forward(x, training=True)[0]
    for out in (values, ours):
        assert set(np.unique(out)) == {0.0, 2.0}
        assert (out == out[:, :1]).all()


def test_keras_parity_masked_embedding_spatial_dropout_global_average(keras, rng):
    """A model whose mask goes through SpatialDropout1D into GlobalAveragePooling1D, as Keras runs it."""
    ids = rng.integers(1, 20, (B, T))
    ids[~masks("post")] = 0
    ours = Sequential([Input((T,), dtype="int32"), Embedding(20, 6, mask_zero=True), SpatialDropout1D(0.3),
                       GlobalAveragePooling1D(), Dense(2)])
    expected = ours.predict(ids, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = keras.Sequential([keras.Input((T,), dtype="int32"), keras.layers.Embedding(20, 6, mask_zero=True),
                                   keras.layers.SpatialDropout1D(0.3), keras.layers.GlobalAveragePooling1D(),
                                   keras.layers.Dense(2)])
        theirs.set_weights(ours.get_weights())
        got = keras.ops.convert_to_numpy(theirs(ids))
    assert_allclose(expected, got, atol=KERAS_ATOL, rtol=KERAS_RTOL)


KERAS_CONFIG_CASES = [
    lambda m: m.Conv1D(4, 3, strides=2, padding="same", dilation_rate=1, groups=2, use_bias=False),
    lambda m: m.Conv1D(4, (2,), padding="causal", dilation_rate=(3,), data_format="channels_first"),
    lambda m: m.MaxPooling1D(3, strides=1, padding="same"),
    lambda m: m.AveragePooling1D(3),
    lambda m: m.GlobalMaxPooling1D(keepdims=True),
    lambda m: m.GlobalAveragePooling1D(data_format="channels_first"),
    lambda m: m.Reshape((2, -1)),
    lambda m: m.Permute((2, 1)),
    lambda m: m.SpatialDropout1D(0.25, seed=4),
]


@pytest.mark.parametrize("make", KERAS_CONFIG_CASES)
def test_keras_parity_config_values(keras, make):
    """The arguments both configs hold have the same values (Keras's tuples as JSON lists)."""
    ours = make(layers).get_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = json.loads(json.dumps(make(keras.layers).get_config(), default=str))
    shared = set(ours) & set(theirs) - {"name", "dtype", "trainable", "kernel_initializer", "bias_initializer",
                                        "activation"}
    assert shared
    for key in shared:
        assert ours[key] == theirs[key], key


# ---------------------------------------------------------------------------------------------
# Configs, shapes and errors.
# ---------------------------------------------------------------------------------------------

CONFIG_CASES = [
    (lambda: Conv1D(4, 3, strides=2, padding="same", activation="relu", kernel_initializer="he_normal",
                    input_shape=(7, 4)), (2, 7, 4)),
    (lambda: Conv1D(6, (2,), padding="causal", dilation_rate=2, groups=2, use_bias=False, dtype="float64"), (2, 7, 4)),
    (lambda: Conv1D(2, 3, data_format="channels_first"), (2, 4, 7)),
    (lambda: MaxPooling1D(3, strides=2, padding="SAME"), (2, 7, 4)),
    (lambda: AveragePooling1D(pool_size=(2,), data_format="channels_first"), (2, 4, 7)),
    (lambda: GlobalMaxPooling1D(keepdims=True), (2, 7, 4)),
    (lambda: GlobalAveragePooling1D(data_format="channels_first"), (2, 4, 7)),
    (lambda: Reshape((-1, 2)), (2, 7, 4)),
    (lambda: Permute((2, 1)), (2, 7, 4)),
    (lambda: SpatialDropout1D(0.2, seed=3), (2, 7, 4)),
]


@pytest.mark.parametrize("make, shape", CONFIG_CASES)
def test_config_round_trip(rng, make, shape):
    layer = make()
    config = json.loads(json.dumps(layers.serialize(layer)))
    assert config["config"] == layer.get_config()  # JSON-serialisable as it is
    clone = layers.deserialize(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
    x = rng.standard_normal(shape)
    y = layer(x)
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert_array_equal(clone(x), y)


def test_conv1d_config_defaults_and_weights():
    layer = Conv1D(8, 5)
    config = layer.get_config()
    assert (config["kernel_size"], config["strides"], config["padding"], config["data_format"],
            config["dilation_rate"], config["groups"], config["activation"], config["use_bias"]) == \
        ([5], [1], "valid", "channels_last", [1], 1, "linear", True)
    built(layer, (None, 20, 6))
    assert list(layer.weights) == ["kernel", "bias"]
    assert [w.shape for w in layer.get_weights()] == [(5, 6, 8), (8,)]
    assert built(Conv1D(8, 5, groups=2), (None, 20, 6)).weights["kernel"].shape == (5, 3, 8)
    assert layer.count_params() == 5 * 6 * 8 + 8
    # glorot_uniform with Keras's fans for a [k, in, out] kernel: limit sqrt(6 / (k * (in + out)))
    assert np.abs(layer.weights["kernel"]).max() <= np.sqrt(6 / (5 * (6 + 8)))
    pool = MaxPooling1D().get_config()
    assert (pool["pool_size"], pool["strides"], pool["padding"]) == ([2], [2], "valid")


def test_symbolic_shapes_with_none():
    x = Input((None, 4))
    h = Conv1D(6, 3, padding="same", strides=2)(x)
    assert h.shape == (None, None, 6)
    assert MaxPooling1D(2)(h).shape == (None, None, 6)
    assert AveragePooling1D(3, padding="same")(h).shape == (None, None, 6)
    assert GlobalMaxPooling1D()(h).shape == (None, 6)
    assert GlobalAveragePooling1D(keepdims=True)(h).shape == (None, 1, 6)
    assert Permute((2, 1))(h).shape == (None, 6, None)
    assert Reshape((-1, 3))(h).shape == (None, None, 3)
    assert SpatialDropout1D(0.1)(h).shape == (None, None, 6)
    fixed = Input((9, 4))
    assert Conv1D(2, 3)(fixed).shape == (None, 7, 2)
    assert Conv1D(2, 3, padding="causal", strides=2)(fixed).shape == (None, 5, 2)
    assert Conv1D(2, 3, dilation_rate=4)(fixed).shape == (None, 1, 2)
    assert Conv1D(2, 3, data_format="channels_first")(Input((4, 9))).shape == (None, 2, 7)
    assert MaxPooling1D(2)(fixed).shape == (None, 4, 4)
    assert MaxPooling1D(2, padding="same")(fixed).shape == (None, 5, 4)
    assert AveragePooling1D(4, strides=3)(fixed).shape == (None, 2, 4)
    assert Reshape((-1, 6))(fixed).shape == (None, 6, 6)
    assert GlobalAveragePooling1D(data_format="channels_first")(fixed).shape == (None, 9)


def test_constructor_errors():
    with pytest.raises(ValueError, match="'c': filters must be a positive int, got 0"):
        Conv1D(0, 3, name="c")
    with pytest.raises(ValueError, match=r"kernel_size must be a positive int or a tuple of 1 int, got \(3, 3\)"):
        Conv1D(2, (3, 3))
    with pytest.raises(ValueError, match="kernel_size must be a positive int, got '3'"):
        Conv1D(2, "3")
    with pytest.raises(ValueError, match="strides must be a positive int, got 0"):
        Conv1D(2, 3, strides=0)
    with pytest.raises(ValueError, match="padding must be one of 'valid', 'same', 'causal', got 'full'"):
        Conv1D(2, 3, padding="full")
    with pytest.raises(ValueError, match="data_format must be 'channels_last' or 'channels_first', got 'NCW'"):
        Conv1D(2, 3, data_format="NCW")
    with pytest.raises(ValueError, match="filters must be divisible by groups, got filters=5, groups=2"):
        Conv1D(5, 3, groups=2)
    with pytest.raises(ValueError, match="strides > 1 cannot be combined with dilation_rate > 1"):
        Conv1D(2, 3, strides=2, dilation_rate=2)
    with pytest.raises(NotImplementedError, match="kernel_regularizer is not supported"):
        Conv1D(2, 3, kernel_regularizer="l2")
    with pytest.raises(NotImplementedError, match="bias_constraint"):
        Conv1D(2, 3, bias_constraint="non_neg")
    with pytest.raises(ValueError, match="padding must be one of 'valid', 'same', got 'causal'"):
        MaxPooling1D(2, padding="causal")
    with pytest.raises(ValueError, match="pool_size must be a positive int, got 0"):
        AveragePooling1D(0)
    with pytest.raises(ValueError, match="strides must be a positive int, got -1"):
        MaxPooling1D(2, strides=-1)
    with pytest.raises(ValueError, match="data_format must be"):
        GlobalAveragePooling1D(data_format="channels_middle")
    with pytest.raises(ValueError, match=r"at most one -1 \(inferred\), got \(-1, -1\)"):
        Reshape((-1, -1))
    with pytest.raises(ValueError, match="non-negative ints"):
        Reshape((-2, 3))
    with pytest.raises(ValueError, match="target_shape must be a tuple or list of ints, got 6"):
        Reshape(6)
    with pytest.raises(ValueError, match=r"dims must be a permutation of 1..2 .*got \[0, 1\]"):
        Permute((0, 1))
    with pytest.raises(ValueError, match=r"dims must be a permutation of 1..2 .*got \[1, 1\]"):
        Permute((1, 1))
    with pytest.raises(ValueError, match="rate must be a float in"):
        SpatialDropout1D(1.0)
    with pytest.raises(TypeError, match="takes no noise_shape"):
        SpatialDropout1D(0.5, noise_shape=(None, 1, None))


def test_input_shape_errors(rng):
    with pytest.raises(ValueError, match=r"Conv1D 'c' needs inputs of shape \(batch, steps, channels\) "
                                         r"\(data_format='channels_last'\), got shape \(2, 5\)"):
        Conv1D(2, 3, name="c")(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"needs inputs of shape \(batch, channels, steps\)"):
        Conv1D(2, 3, data_format="channels_first")(np.ones((2, 5, 3, 1)))
    with pytest.raises(ValueError, match="input channels must be divisible by groups=2, got 3 channels"):
        Conv1D(2, 3, groups=2)(np.ones((1, 5, 3)))
    with pytest.raises(ValueError, match="needs a known number of input channels"):
        Conv1D(2, 3)(Input((5, None)))
    conv = Conv1D(2, 3, name="c")
    conv(np.ones((1, 5, 3)))
    with pytest.raises(ValueError, match=r"'c' was built for 3 input channels, got input of shape \(1, 5, 4\)"):
        conv(np.ones((1, 5, 4)))
    with pytest.raises(ValueError, match=r"Conv1D 'c': an input of 2 steps is shorter than one window \(3 steps: "
                                         r"size 3, dilation 1\) with padding='valid'"):
        conv(np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match=r"shorter than one window \(7 steps: size 3, dilation 3\)"):
        Conv1D(2, 3, dilation_rate=3)(Input((6, 3)))
    assert Conv1D(2, 3, padding="same")(np.ones((1, 2, 3))).shape == (1, 2, 2)  # 'same' takes short inputs
    with pytest.raises(ValueError, match=r"MaxPooling1D 'p': an input of 2 steps is shorter than one window"):
        MaxPooling1D(3, name="p")(np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match=r"AveragePooling1D 'p' needs inputs of shape \(batch, steps, channels\)"):
        AveragePooling1D(2, name="p")(np.ones((4, 6)))
    with pytest.raises(ValueError, match=r"GlobalMaxPooling1D 'g' needs inputs of shape"):
        GlobalMaxPooling1D(name="g")(Input((3, 4, 5)))
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, steps\) = \(3, 5\), got \(3, 4\)"):
        GlobalAveragePooling1D()(np.ones((3, 5, 2)), mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match=r"Reshape 'r': cannot reshape inputs of shape \(None, 5, 3\) \(15 entries "
                                         r"per sample\) to target_shape \(4, -1\)"):
        Reshape((4, -1), name="r")(Input((5, 3)))
    with pytest.raises(ValueError, match=r"cannot reshape inputs of shape \(2, 5, 3\)"):
        Reshape((2, 7))(np.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"Permute 'p' with dims=\[2, 1\] needs inputs of rank 3"):
        Permute((2, 1), name="p")(np.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"SpatialDropout1D 's' needs inputs of shape \(batch, steps, channels\), "
                                         r"got shape \(4, 6\)"):
        SpatialDropout1D(0.5, name="s")(np.ones((4, 6)))


class DeviceArray(np.ndarray):
    """A NumPy array posing as a device array: like CuPy, it refuses host arrays in its arithmetic."""

    device = contextlib.nullcontext()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_host(ufunc.__name__, inputs + kwargs.get("out", ()))
        inputs = tuple(a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) for a in kwargs["out"])
        return _on_device(getattr(ufunc, method)(*inputs, **kwargs))


def _refuse_host(what, values):
    for a in values:
        if type(a) is np.ndarray and a.ndim > 0:
            raise TypeError(f"{what} got a host array of shape {a.shape} among device arrays")


def _on_device(value):
    if type(value) is np.ndarray:
        return value.view(DeviceArray)
    if isinstance(value, tuple):
        return tuple(_on_device(v) for v in value)
    return value


class FakeArrayModule(types.ModuleType):
    """NumPy's namespace as a device array module: results are DeviceArrays; host arrays are
    refused except by the explicit transfers (asarray, array)."""

    def __init__(self, target=np):
        super().__init__(getattr(target, "__name__", "cupy"))
        self._target = target

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if isinstance(value, types.ModuleType):
            return FakeArrayModule(value)
        if not callable(value) or isinstance(value, type):
            return value

        def on_device(*args, **kwargs):
            if name not in ("asarray", "array"):
                _refuse_host(name, args)
            return _on_device(value(*args, **kwargs))
        return on_device


@pytest.mark.parametrize("make, shape, training", [
    (lambda: Conv1D(4, 3, padding="same", activation="tanh"), (2, 7, 4), False),
    (lambda: Conv1D(4, 3, groups=2, strides=2, data_format="channels_first"), (2, 4, 7), False),
    (lambda: MaxPooling1D(3, 2, "same"), (2, 7, 4), False),
    (lambda: AveragePooling1D(4, 1, "same"), (2, 7, 4), False),
    (lambda: GlobalMaxPooling1D(), (2, 7, 4), False),
    (lambda: GlobalAveragePooling1D(keepdims=True), (2, 7, 4), False),
    (lambda: Reshape((-1, 2)), (2, 7, 4), False),
    (lambda: Permute((2, 1)), (2, 7, 4), False),
    (lambda: SpatialDropout1D(0.5, seed=2), (2, 7, 4), True),
])
def test_layers_compute_with_the_array_module_of_their_inputs(monkeypatch, rng, make, shape, training):
    """On a device array module (a stand-in for CuPy) each layer computes there, moves its host data
    (masks, dropout draws, window counts) over explicitly, and gives what it gives on NumPy."""
    fake = FakeArrayModule()
    fake.ndarray = DeviceArray
    x = rng.standard_normal(shape).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], bool)
    host, device = make(), make()
    host(x)
    device.build(x.shape)
    device.set_weights(host.get_weights())
    y, cache = host.forward(x, training, mask)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    dx = host.backward(cache, grad)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    for arrays in (device.weights, device.grads):
        for key in arrays:
            arrays[key] = fake.asarray(arrays[key])
    backend.set_random_seed(1234)
    y_dev, cache_dev = device.forward(fake.asarray(x), training, fake.asarray(mask))
    dx_dev = device.backward(cache_dev, fake.asarray(grad))
    assert type(y_dev) is DeviceArray and type(dx_dev) is DeviceArray
    assert_allclose(y_dev.view(np.ndarray), y, rtol=1e-6, atol=1e-6)
    assert_allclose(dx_dev.view(np.ndarray), dx, rtol=1e-6, atol=1e-6)
    for key in host.grads:
        assert type(device.grads[key]) is DeviceArray
        assert_allclose(device.grads[key].view(np.ndarray), host.grads[key], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Models.
# ---------------------------------------------------------------------------------------------

def conv_task(rng, n, steps=16):
    """Does a rising edge (a step up by more than 1 in channel 0) occur, anywhere in the sequence?"""
    x = rng.standard_normal((n, steps, 3)).astype(np.float32) * 0.5
    y = (np.diff(x[:, :, 0], axis=1) > 1.3).any(axis=1).astype(np.float32)[:, None]
    return x, y


def test_sequential_conv_pool_lstm_model_trains_saves_and_loads(rng, tmp_path):
    backend.set_random_seed(11)
    model = Sequential([Input((16, 3)), Conv1D(8, 3, padding="causal", activation="relu"),
                        MaxPooling1D(2), SpatialDropout1D(0.1), LSTM(8), Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizers.Adam(0.02), loss="binary_crossentropy", metrics=["accuracy"])
    x, y = conv_task(rng, 128)
    assert 0.25 < y.mean() < 0.75
    history = model.fit(x, y, batch_size=32, epochs=30, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    path = tmp_path / "conv.lstmfast"
    model.save(path)
    loaded = lstmfast.models.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    test_x, _ = conv_task(rng, 10)
    assert_array_equal(model.predict(test_x, verbose=0), loaded.predict(test_x, verbose=0))


def test_functional_conv_model_trains_saves_and_loads(rng, tmp_path):
    backend.set_random_seed(12)
    inputs = Input((16, 3))
    h = Conv1D(8, 3, padding="same", activation="tanh")(inputs)
    h = MaxPooling1D(2, padding="same")(h)
    seq = LSTM(8, return_sequences=True)(h)
    pooled = GlobalMaxPooling1D()(Conv1D(4, 2, strides=2, groups=2, data_format="channels_first")(
        Permute((2, 1))(seq)))
    averaged = GlobalAveragePooling1D()(AveragePooling1D(2, strides=1)(seq))
    merged = layers.Concatenate()([Reshape((-1,))(pooled), averaged])
    outputs = Dense(1, activation="sigmoid")(merged)
    model = Model(inputs, outputs)
    model.compile(optimizer=optimizers.Adam(0.02), loss="binary_crossentropy")
    x, y = conv_task(rng, 128)
    history = model.fit(x, y, batch_size=32, epochs=20, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    path = tmp_path / "conv_functional.lstmfast"
    model.save(path)
    loaded = lstmfast.models.load_model(path)
    test_x, _ = conv_task(rng, 10)
    assert_array_equal(model.predict(test_x, verbose=0), loaded.predict(test_x, verbose=0))


def test_conv_model_gradients(float64):
    backend.set_random_seed(4)
    model = Sequential([Input((9, 3)), Conv1D(4, 3, padding="same", strides=2, activation="tanh"),
                        MaxPooling1D(2, padding="same"), LSTM(3), Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    data = np.random.default_rng(4)
    x = data.standard_normal((3, 9, 3))
    y = np.eye(2)[data.integers(0, 2, 3)]
    check_model_gradients(model, [x], [y], samples_per_weight=8)


def test_masked_model_global_average_consumes_the_mask(rng):
    """Embedding(mask_zero) -> SpatialDropout1D (passes the mask) -> GlobalAveragePooling1D (averages the
    unmasked steps): padding changes nothing."""
    model = Sequential([Input((6,), dtype="int32"), Embedding(10, 4, mask_zero=True), SpatialDropout1D(0.2),
                        GlobalAveragePooling1D(), Dense(1)])
    ids = rng.integers(1, 10, (4, 3))
    padded = np.concatenate([ids, np.zeros((4, 3), ids.dtype)], axis=1)
    pre_padded = np.concatenate([np.zeros((4, 3), ids.dtype), ids], axis=1)
    expected = model.layers[-1](model.layers[0](ids).mean(axis=1))
    assert_allclose(model.predict(padded, verbose=0), expected, rtol=1e-6)
    assert_allclose(model.predict(pre_padded, verbose=0), expected, rtol=1e-6)
    assert isinstance(model.layers[1], Dropout)  # as Keras: a Dropout whose noise is per channel
