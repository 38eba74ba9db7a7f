"""Keras-style layers (lstmfast.layers, activations, initializers): finite-difference gradient checks
of every backward pass in float64, the LSTM layer against the NumPy oracle and against Keras's
masking semantics row by row, Keras 3 parity when keras is installed, configs and errors."""
import json
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import activations, backend, initializers, layers, reference
from lstmfast.layers import (
    LSTM,
    Activation,
    Bidirectional,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Input,
    InputLayer,
    KerasTensor,
    Masking,
    RepeatVector,
    TimeDistributed,
)

# Finite differences in float64: central differences with step FD_EPS have truncation error
# ~eps^2 and rounding error ~1e-16/eps relative to the loss; a wrong gradient is off by O(1).
FD_EPS = 1e-6
FD_RTOL = 1e-6
FD_ATOL = 1e-8
# float64 layer versus the float64 oracle: same equations, different summation order.
F64_RTOL, F64_ATOL = 1e-10, 1e-12
# float32 layer versus the oracle fed the same float32 values.
F32_RTOL, F32_ATOL = 1e-4, 1e-5
# float32 lstmfast versus Keras 3 on the torch backend (float32 both).
KERAS_ATOL = 1e-5

B, T, X, H = 3, 5, 3, 4


@pytest.fixture
def rng():
    backend.set_random_seed(1234)
    return np.random.default_rng(20240601)


# ---------------------------------------------------------------------------------------------
# Finite-difference machinery.
# ---------------------------------------------------------------------------------------------

def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _numeric_grad(loss, array):
    """Central differences of ``loss()`` w.r.t. every entry of ``array`` (perturbed in place)."""
    grad = np.zeros(array.shape)
    flat = array.reshape(-1)  # a view: perturbs the array the layer reads
    assert np.shares_memory(flat, array)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + FD_EPS
        plus = loss()
        flat[i] = saved - FD_EPS
        minus = loss()
        flat[i] = saved
        grad.reshape(-1)[i] = (plus - minus) / (2 * FD_EPS)
    return grad


def check_gradients(layer, inputs, mask=None, training=False, seed=None, input_grads=True, rng=None):
    """Compare ``layer.backward`` with finite differences of ``sum(out * W)`` (W fixed, random),
    for every weight and every float input. ``seed`` reseeds lstmfast's generator before each
    forward pass, so dropout masks are the same in every evaluation; stateful layers are reset."""
    rng = rng or np.random.default_rng(7)

    def run():
        if seed is not None:
            backend.set_random_seed(seed)
        layer.reset_states()
        return layer.forward(inputs, training=training, mask=mask)

    outputs, cache = run()
    targets = [rng.standard_normal(o.shape) for o in _as_list(outputs)]

    def loss():
        outs, _ = run()
        return sum(float((o * w).sum()) for o, w in zip(_as_list(outs), targets))

    layer.zero_grads()
    grad_outputs = targets if isinstance(outputs, list) else targets[0]
    grad_inputs = layer.backward(cache, grad_outputs)
    assert len(layer.weights) == len(layer.grads)
    for key, weight in layer.weights.items():
        assert layer.grads[key].shape == weight.shape
        assert_allclose(layer.grads[key], _numeric_grad(loss, weight), rtol=FD_RTOL, atol=FD_ATOL,
                        err_msg=f"{layer.name}: gradient of weight {key!r}")
    if input_grads:
        for index, (x, dx) in enumerate(zip(_as_list(inputs), _as_list(grad_inputs))):
            assert dx is not None and dx.shape == x.shape, f"input {index}"
            assert_allclose(dx, _numeric_grad(loss, x), rtol=FD_RTOL, atol=FD_ATOL,
                            err_msg=f"{layer.name}: gradient of input {index}")
    return outputs


def built(layer, *shapes):
    layer.build(shapes[0] if len(shapes) == 1 else list(shapes))
    return layer


def masks(kind):
    """[B=3, T=5] masks: post-padded, pre-padded, arbitrary with an all-masked row."""
    return {
        "post": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool),
        "pre": np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], bool),
        "arbitrary": np.array([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 0]], bool),
    }[kind]


# ---------------------------------------------------------------------------------------------
# Gradients: simple layers.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", sorted(activations.ACTIVATIONS))
def test_dense_gradients_each_activation(float64, rng, activation):
    layer = built(Dense(5, activation=activation), (None, 4))
    layer.weights["bias"][:] = rng.standard_normal(5) * 0.1
    check_gradients(layer, rng.standard_normal((3, 4)))


def test_dense_gradients_sequence_input_softmax_no_bias(float64, rng):
    layer = built(Dense(4, activation="softmax", use_bias=False), (None, T, 3))
    assert list(layer.weights) == ["kernel"]
    check_gradients(layer, rng.standard_normal((2, T, 3)))


def test_embedding_gradients_repeated_indices(float64, rng):
    layer = built(Embedding(7, 3), (None, 4))
    ids = np.array([[1, 2, 2, 0], [6, 1, 1, 1]])
    out = check_gradients(layer, ids, input_grads=False)
    assert_array_equal(out, layer.weights["embeddings"][ids])
    layer.zero_grads()
    assert layer.backward(layer.forward(ids)[1], np.ones((2, 4, 3))) is None


def test_time_distributed_dense_gradients(float64, rng):
    layer = built(TimeDistributed(Dense(3, activation="tanh")), (None, T, 4))
    assert list(layer.weights) == ["kernel", "bias"] and layer.count_params() == 15
    check_gradients(layer, rng.standard_normal((2, T, 4)))


@pytest.mark.parametrize("make, shape", [
    (lambda: RepeatVector(3), (2, 4)),
    (lambda: Flatten(), (2, 3, 4)),
    (lambda: Activation("softmax"), (2, 3, 4)),
    (lambda: Masking(0.0), (2, 3, 4)),
])
def test_shape_layer_gradients(float64, rng, make, shape):
    layer = built(make(), (None,) + shape[1:])
    check_gradients(layer, rng.standard_normal(shape))


def test_concatenate_gradients_and_mask(float64, rng):
    layer = built(Concatenate(axis=-1), (None, T, 2), (None, T, 3))
    a, b = rng.standard_normal((2, T, 2)), rng.standard_normal((2, T, 3))
    out = check_gradients(layer, [a, b])
    assert out.shape == (2, T, 5)
    m = np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
    assert layer.compute_mask([a, b], [None, None]) is None
    assert layer.compute_mask([a, b], [m, None]).all()          # a missing mask counts as all-True
    assert_array_equal(layer.compute_mask([a, b], [m, m]), m)
    time_concat = built(Concatenate(axis=1), (None, T, 2), (None, T, 2))
    assert_array_equal(time_concat.compute_mask([a, a], [m, None]), np.concatenate([m, np.ones_like(m)], axis=1))


def test_dropout_gradients_with_fixed_seed(float64, rng):
    layer = built(Dropout(0.4), (None, 6))
    x = rng.standard_normal((4, 6))
    out = check_gradients(layer, x, training=True, seed=3)
    kept = out != 0
    assert 0 < kept.mean() < 1
    assert_allclose(out[kept], x[kept] / 0.6)


# ---------------------------------------------------------------------------------------------
# Gradients: LSTM in each mode.
# ---------------------------------------------------------------------------------------------

LSTM_MODES = {
    "last_output": {},
    "return_sequences": dict(return_sequences=True),
    "go_backwards": dict(go_backwards=True),
    "go_backwards_sequences": dict(go_backwards=True, return_sequences=True),
    "peephole": dict(peephole=True, return_sequences=True),
    "no_bias": dict(use_bias=False),
    "return_state": dict(return_state=True),
    "return_state_sequences": dict(return_state=True, return_sequences=True),
}


@pytest.mark.parametrize("mode", sorted(LSTM_MODES))
def test_lstm_gradients(float64, rng, mode):
    layer = built(LSTM(H, **LSTM_MODES[mode]), (None, T, X))
    if layer.peephole:
        layer.weights["peephole"][:] = rng.standard_normal((3, H)) * 0.5
    check_gradients(layer, rng.standard_normal((B, T, X)))


@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_gradients_initial_state(float64, rng, return_sequences):
    layer = built(LSTM(H, return_state=True, return_sequences=return_sequences), (None, T, X), (None, H), (None, H))
    x, h0, c0 = rng.standard_normal((B, T, X)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    check_gradients(layer, [x, h0, c0])


def test_lstm_gradients_hard_sigmoid_away_from_kinks(float64, rng):
    layer = built(LSTM(H, recurrent_activation="hard_sigmoid", return_sequences=True), (None, T, X))
    for w in layer.weights.values():
        w *= 0.3
    x = rng.standard_normal((B, T, X)) * 0.5
    # The gates' pre-activations stay inside (-2.5, 2.5), where hard_sigmoid is linear.
    out = reference.lstm_forward(x.transpose(1, 0, 2), *layer.get_weights(), recurrent_activation="hard_sigmoid")
    gates = out.cache["gates"].reshape(T, B, 4, H)[:, :, [0, 1, 3]]
    assert ((gates > 0.01) & (gates < 0.99)).all()
    check_gradients(layer, x)


@pytest.mark.parametrize("kind", ["post", "pre", "arbitrary"])
@pytest.mark.parametrize("options", [
    dict(), dict(return_sequences=True), dict(go_backwards=True, return_sequences=True),
    dict(return_sequences=True, zero_output_for_mask=True), dict(go_backwards=True, zero_output_for_mask=True),
], ids=["last", "sequences", "backwards_sequences", "zero_output_sequences", "backwards_zero_output_last"])
def test_lstm_gradients_masked(float64, rng, kind, options):
    layer = built(LSTM(H, **options), (None, T, X))
    check_gradients(layer, rng.standard_normal((B, T, X)), mask=masks(kind))


def test_lstm_gradients_masked_with_state_and_empty_row(float64, rng):
    # Row 1 is fully masked: its output is zero (Keras) but its state is the initial state.
    layer = built(LSTM(H, return_state=True), (None, T, X), (None, H), (None, H))
    inputs = [rng.standard_normal((B, T, X)), rng.standard_normal((B, H)), rng.standard_normal((B, H))]
    y, h, c = check_gradients(layer, inputs, mask=masks("arbitrary"))
    assert_array_equal(y[1], 0)
    assert_allclose(h[1], inputs[1][1])
    assert_allclose(c[1], inputs[2][1])


def test_lstm_gradients_dropout_fixed_masks(float64, rng):
    layer = built(LSTM(H, dropout=0.3, recurrent_dropout=0.4, return_sequences=True), (None, T, X))
    x = rng.standard_normal((B, T, X))
    out = check_gradients(layer, x, training=True, seed=11)
    # The masks did something: training differs from inference.
    assert np.abs(out - layer.call(x, training=False)).max() > 1e-3


def test_lstm_gradients_dropout_masked(float64, rng):
    layer = built(LSTM(H, dropout=0.3, recurrent_dropout=0.3, return_sequences=True), (None, T, X))
    check_gradients(layer, rng.standard_normal((B, T, X)), mask=masks("pre"), training=True, seed=5)


def test_lstm_gradients_stateful_first_batch(float64, rng):
    layer = built(LSTM(H, stateful=True, return_sequences=True), (B, T, X))
    check_gradients(layer, rng.standard_normal((B, T, X)))


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_gradients(float64, rng, merge_mode, return_sequences):
    layer = built(Bidirectional(LSTM(H, return_sequences=return_sequences), merge_mode=merge_mode), (None, T, X))
    assert len(layer.weights) == 6
    check_gradients(layer, rng.standard_normal((B, T, X)))


@pytest.mark.parametrize("kind", ["post", "pre", "arbitrary"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_gradients_masked(float64, rng, kind, return_sequences):
    layer = built(Bidirectional(LSTM(H, return_sequences=return_sequences), merge_mode="concat"), (None, T, X))
    check_gradients(layer, rng.standard_normal((B, T, X)), mask=masks(kind))


def test_bidirectional_gradients_state_in_and_out(float64, rng):
    layer = Bidirectional(LSTM(H, return_state=True, return_sequences=True), merge_mode="sum")
    built(layer, (None, T, X), *[(None, H)] * 4)
    inputs = [rng.standard_normal((B, T, X))] + [rng.standard_normal((B, H)) for _ in range(4)]
    out = check_gradients(layer, inputs, mask=masks("post"))
    assert len(out) == 5


# ---------------------------------------------------------------------------------------------
# LSTM forward values: the oracle, and Keras's masking semantics row by row.
# ---------------------------------------------------------------------------------------------

def _oracle(layer, x_bm, h0=None, c0=None):
    """reference.lstm_forward on a batch-major input, honouring go_backwards; outputs in
    processing order, batch-major."""
    x_tm = x_bm.transpose(1, 0, 2).astype(np.float64)
    if layer.go_backwards:
        x_tm = x_tm[::-1]
    w = layer.weights
    out = reference.lstm_forward(x_tm, w["kernel"], w["recurrent_kernel"], w.get("bias"), h0, c0,
                                 w.get("peephole"), recurrent_activation=layer.recurrent_activation,
                                 training=False)
    return out.y.transpose(1, 0, 2), out.h, out.c


@pytest.mark.parametrize("options", [
    dict(), dict(return_sequences=True), dict(go_backwards=True, return_sequences=True),
    dict(peephole=True, return_sequences=True), dict(recurrent_activation="hard_sigmoid", return_sequences=True),
], ids=["last", "sequences", "backwards", "peephole", "hard_sigmoid"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lstm_matches_reference(rng, options, dtype):
    layer = LSTM(7, dtype=dtype, return_state=True, **options)
    x = rng.standard_normal((4, 6, 5)).astype(dtype)
    h0, c0 = rng.standard_normal((4, 7)).astype(dtype), rng.standard_normal((4, 7)).astype(dtype)
    if layer.peephole:
        layer.build((None, 6, 5))
        layer.weights["peephole"][:] = rng.standard_normal((3, 7))
    y, h, c = layer(x, initial_state=[h0, c0])
    assert y.dtype == h.dtype == np.dtype(dtype)
    ys, h_ref, c_ref = _oracle(layer, x, h0, c0)
    tol = dict(rtol=F64_RTOL, atol=F64_ATOL) if dtype == "float64" else dict(rtol=F32_RTOL, atol=F32_ATOL)
    assert_allclose(y, ys if layer.return_sequences else h_ref, **tol)
    assert_allclose(h, h_ref, **tol)
    assert_allclose(c, c_ref, **tol)
    # The training path gives the same numbers as the inference path.
    outs, _ = layer.forward([x, h0, c0])
    for a, b in zip(outs, (y, h, c)):
        assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["post", "pre", "arbitrary"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
def test_masked_lstm_matches_rowwise_keras_semantics(float64, rng, kind, go_backwards, zero_output):
    """Each row alone on its unmasked steps: the output at a masked step repeats the previous
    output (zeros before the first valid step) or is zero (zero_output_for_mask), the final state
    is the one after the last unmasked step, the last output is zero for an empty row."""
    mask = masks(kind)
    layer = LSTM(H, return_sequences=True, return_state=True, go_backwards=go_backwards,
                 zero_output_for_mask=zero_output)
    last = LSTM(H, return_state=True, go_backwards=go_backwards, zero_output_for_mask=zero_output)
    x, h0, c0 = rng.standard_normal((B, T, X)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    y, h, c = layer(x, mask=mask, initial_state=[h0, c0])
    last(x[:1])
    last.set_weights(layer.get_weights())
    y_last, h_last, _ = last(x, mask=mask, initial_state=[h0, c0])
    for b in range(B):
        m = mask[b, ::-1] if go_backwards else mask[b]           # processing order
        xb = x[b, ::-1] if go_backwards else x[b]
        out = reference.lstm_forward(xb[m][:, None, :], layer.weights["kernel"], layer.weights["recurrent_kernel"],
                                     layer.weights["bias"], h0[b:b + 1], c0[b:b + 1], training=False)
        expected, previous, j = np.zeros((T, H)), np.zeros(H), 0
        for t in range(T):
            if m[t]:
                previous = out.y[j, 0]
                j += 1
            expected[t] = previous if (m[t] or not zero_output) else 0.0
        assert_allclose(y[b], expected, rtol=F64_RTOL, atol=F64_ATOL, err_msg=f"row {b}")
        assert_allclose(h[b], out.h[0], rtol=F64_RTOL, atol=F64_ATOL)
        assert_allclose(c[b], out.c[0], rtol=F64_RTOL, atol=F64_ATOL)
        assert_allclose(h_last[b], out.h[0], rtol=F64_RTOL, atol=F64_ATOL)
        assert_allclose(y_last[b], expected[-1], rtol=F64_RTOL, atol=F64_ATOL)


def test_all_true_mask_takes_the_fast_path(rng, monkeypatch):
    layer = LSTM(H, return_sequences=True)
    x = rng.standard_normal((B, T, X)).astype(np.float32)
    plain = layer(x)

    def refuse(*args, **kwargs):
        raise AssertionError("an all-True mask must not gather")

    monkeypatch.setattr(layers.lstm, "_MaskPlan", refuse)
    assert_array_equal(layer(x, mask=np.ones((B, T), bool)), plain)
    assert_array_equal(layer.forward(x, mask=np.ones((B, T), bool))[0], plain)


def test_stateful_lstm_carries_state_and_checks_batch_size(rng):
    x = rng.standard_normal((2, 6, X)).astype(np.float32)
    whole = LSTM(H, return_sequences=True)
    stateful = LSTM(H, return_sequences=True, stateful=True, batch_input_shape=(2, 3, X))
    stateful.build((2, 3, X))
    whole.build((None, 6, X))
    whole.set_weights(stateful.get_weights())
    expected = whole(x)
    first, cache = stateful.forward(x[:, :3])
    second = stateful(x[:, 3:])
    assert_allclose(np.concatenate([first, second], axis=1), expected, rtol=1e-5, atol=1e-6)
    # The first batch's backward pass still works after the state moved on.
    assert stateful.backward(cache, np.ones_like(first)).shape == (2, 3, X)
    stateful.reset_states()
    assert_allclose(stateful(x[:, :3]), expected[:, :3], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="stateful LSTM 'lstm.*' was built for batch size 2, got 1"):
        stateful(x[:1, :3])


def test_stateful_batch_size_from_first_batch(rng):
    layer = LSTM(H, stateful=True)
    layer(np.zeros((4, 2, X), np.float32))
    with pytest.raises(ValueError, match="was built for batch size 4, got 3"):
        layer(np.zeros((3, 2, X), np.float32))


def test_shared_layer_accumulates_gradients(float64, rng):
    """forward/backward keep no per-layer cache: two uses of one layer, backward in any order."""
    layer = built(LSTM(H, return_sequences=True), (None, T, X))
    x1, x2 = rng.standard_normal((B, T, X)), rng.standard_normal((2, T, X))
    g1, g2 = rng.standard_normal((B, T, H)), rng.standard_normal((2, T, H))
    layer.zero_grads()
    _, c1 = layer.forward(x1)
    _, c2 = layer.forward(x2)
    dx2 = layer.backward(c2, g2)
    dx1 = layer.backward(c1, g1)
    both = {k: g.copy() for k, g in layer.grads.items()}
    layer.zero_grads()
    assert_allclose(layer.backward(layer.forward(x1)[1], g1), dx1)
    assert_allclose(layer.backward(layer.forward(x2)[1], g2), dx2)
    for k, g in layer.grads.items():
        assert_allclose(both[k], g, rtol=1e-12, atol=1e-14)


def test_float64_input_to_float32_layers(rng):
    x = rng.standard_normal((2, T, X))
    lstm, dense = LSTM(H), Dense(2)
    y = dense(lstm(x))
    assert y.dtype == np.float32
    out, cache = dense.forward(lstm.call(x))
    assert dense.backward(cache, np.ones((2, 2))).dtype == np.float32


def test_non_trainable_layer_leaves_grads_alone(rng):
    layer = built(Dense(3, trainable=False), (None, 4))
    _, cache = layer.forward(rng.standard_normal((2, 4)))
    assert layer.backward(cache, np.ones((2, 3))).shape == (2, 4)
    assert all(not g.any() for g in layer.grads.values())
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2
    inner = Dense(2, trainable=False)
    wrapper = TimeDistributed(inner)
    assert wrapper.trainable and not inner.trainable  # construction keeps the inner flag
    wrapper.trainable = True
    assert inner.trainable
    bidirectional = Bidirectional(LSTM(2), trainable=False)
    assert not bidirectional.forward_layer.trainable and not bidirectional.backward_layer.trainable


# ---------------------------------------------------------------------------------------------
# Masks, shapes and the functional API.
# ---------------------------------------------------------------------------------------------

def test_mask_propagation():
    ids = np.array([[0, 0, 3, 4], [5, 6, 0, 0]])
    emb = Embedding(10, 3, mask_zero=True)
    emb(ids)
    mask = emb.compute_mask(ids)
    assert_array_equal(mask, ids != 0)
    assert Embedding(10, 3).compute_mask(ids) is None
    assert LSTM(2).compute_mask(None, mask) is None
    assert_array_equal(LSTM(2, return_sequences=True).compute_mask(None, mask), mask)
    state_masks = LSTM(2, return_sequences=True, return_state=True).compute_mask(None, mask)
    assert state_masks[0] is mask and state_masks[1:] == [None, None]
    assert Dense(2).compute_mask(None, mask) is mask
    assert Dropout(0.1).compute_mask(None, mask) is mask
    assert TimeDistributed(Dense(2)).compute_mask(None, mask) is mask
    assert Flatten().compute_mask(None, mask) is None
    assert RepeatVector(2).compute_mask(None, mask) is None
    assert Bidirectional(LSTM(2, return_sequences=True)).compute_mask(None, mask) is mask
    assert Bidirectional(LSTM(2)).compute_mask(None, mask) is None
    x = np.array([[[0.0, 0.0], [1.0, 0.0]]])
    masking = Masking()
    assert_array_equal(masking.compute_mask(x), [[False, True]])
    _, cache = masking.forward(x)
    assert_array_equal(masking.backward(cache, np.ones((1, 2, 2))), [[[0, 0], [1, 1]]])


def test_functional_api_nodes_and_shapes():
    layers.reset_uids()
    x = Input(shape=(7, 5), name="seq")
    h0, c0 = Input(shape=(4,)), Input(shape=(4,))
    assert isinstance(x, KerasTensor) and x.shape == (None, 7, 5) and x.dtype == "float32"
    source = x._history[0]
    assert isinstance(source, InputLayer) and source.name == "seq" and source._inbound_nodes[0].inputs == []
    lstm = LSTM(4, return_sequences=True, return_state=True)
    y, h, c = lstm(x, initial_state=[h0, c0])
    assert (y.shape, h.shape, c.shape) == ((None, 7, 4), (None, 4), (None, 4))
    node = lstm._inbound_nodes[0]
    assert node.inputs == [x, h0, c0] and node.outputs == [y, h, c]
    assert node.call_kwargs == {"n_inputs": 3}
    assert y._history == (lstm, 0, 0) and c._history == (lstm, 0, 2)
    assert lstm.built and lstm.weights["kernel"].shape == (5, 16)
    z = Dense(3, activation="softmax")(y)
    assert z.shape == (None, 7, 3) and z._history[0].name == "dense"
    out = Dropout(0.5)(Concatenate()([z, y]), training=True)
    assert out.shape == (None, 7, 7) and out._history[0]._inbound_nodes[0].call_kwargs["training"] is True
    ids = Input(shape=(None,), dtype="int32")
    e = Embedding(20, 6)(ids)
    assert ids.dtype == "int32" and e.shape == (None, None, 6)
    both = Bidirectional(LSTM(3, return_state=True), merge_mode=None)(e)
    assert [t.shape for t in both] == [(None, 3)] * 6
    second = LSTM(2, name="lstm_twice")
    second(e)
    second(e)
    assert len(second._inbound_nodes) == 2 and second.output.shape == (None, 2)
    assert [LSTM(1).name, LSTM(1).name, Dense(1).name] == ["lstm_2", "lstm_3", "dense_1"]


def test_numeric_call_builds():
    dense = Dense(3)
    assert not dense.built
    y = dense(np.ones((2, 4)))
    assert dense.built and y.shape == (2, 3) and y.dtype == np.float32
    assert RepeatVector(3)(np.ones((2, 4))).shape == (2, 3, 4)
    assert Flatten()(np.ones((2, 3, 4))).shape == (2, 12)
    assert TimeDistributed(Dense(2))(np.ones((2, 3, 4))).shape == (2, 3, 2)


@pytest.mark.parametrize("merge_mode, expected", [("concat", (None, 7, 6)), ("sum", (None, 7, 3)), (None, None)])
def test_bidirectional_output_shapes(merge_mode, expected):
    layer = Bidirectional(LSTM(3, return_sequences=True), merge_mode=merge_mode)
    shape = layer.compute_output_shape((None, 7, 5))
    assert shape == (expected if expected else [(None, 7, 3), (None, 7, 3)])
    assert layer.forward_layer.name.startswith("forward_") and layer.backward_layer.name.startswith("backward_")
    assert layer.backward_layer.go_backwards and not layer.forward_layer.go_backwards
    layer.build((None, 7, 5))
    names = list(layer.weights)
    assert names[:3] == [f"{layer.forward_layer.name}/{k}" for k in ("kernel", "recurrent_kernel", "bias")]
    assert names[3:] == [f"{layer.backward_layer.name}/{k}" for k in ("kernel", "recurrent_kernel", "bias")]
    new = np.full((5, 12), 0.5, np.float32)
    layer.weights[names[0]] = new  # assignment reaches the sublayer
    assert layer.forward_layer.weights["kernel"] is new


# ---------------------------------------------------------------------------------------------
# Initializers and activations.
# ---------------------------------------------------------------------------------------------

def test_initializers(rng):
    assert initializers.get("orthogonal")((6, 6)).dtype == np.float32
    q = initializers.get("orthogonal")((4, 16), "float64")
    assert_allclose(q @ q.T, np.eye(4), atol=1e-12)
    limit = np.sqrt(6 / (30 + 50))
    w = initializers.get("glorot_uniform")((30, 50), "float64")
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    w = initializers.get("uniform")((1000,), "float64")
    assert np.abs(w).max() <= 0.05 and w.std() > 0.02
    w = initializers.get("he_normal")((400, 300), "float64")
    assert abs(w.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)
    assert np.abs(w).max() <= 2 * np.sqrt(2 / 400) / 0.87962566103423978
    assert_array_equal(initializers.Constant(2.5)((2,)), [2.5, 2.5])
    for name in ("zeros", "ones", "normal", "random_normal", "random_uniform", "glorot_normal", "he_uniform",
                 "lecun_uniform", "lecun_normal", "truncated_normal"):
        init = initializers.get(name)
        assert init((3, 2)).shape == (3, 2)
        assert initializers.get(initializers.serialize(init)).get_config() == init.get_config()
    backend.set_random_seed(5)
    a = initializers.get("glorot_uniform")((3, 3))
    backend.set_random_seed(5)
    assert_array_equal(a, initializers.get("glorot_uniform")((3, 3)))
    assert_array_equal(initializers.RandomNormal(seed=1)((3,)), initializers.RandomNormal(seed=1)((3,)))


def test_lstm_initial_weights(rng):
    layer = built(LSTM(25), (None, 8, 10))
    kernel, recurrent, bias = layer.get_weights()
    assert (kernel.shape, recurrent.shape, bias.shape) == ((10, 100), (25, 100), (100,))
    assert_array_equal(bias, np.r_[np.zeros(25), np.ones(25), np.zeros(50)])  # unit_forget_bias
    assert_allclose(recurrent @ recurrent.T, np.eye(25), atol=1e-5)           # orthogonal
    assert_array_equal(built(LSTM(3, unit_forget_bias=False), (None, 2, 2)).weights["bias"], 0)
    peep = built(LSTM(12, peephole=True), (None, 2, 2)).weights["peephole"]
    assert peep.shape == (3, 12) and 0 < np.abs(peep).max() <= np.sqrt(3 / 12)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown activation 'relux'.*relu.*softmax"):
        activations.get("relux")
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(2, activation="nope")
    with pytest.raises(ValueError, match="unknown initializer 'glorot'.*glorot_uniform.*orthogonal"):
        initializers.get("glorot")
    with pytest.raises(ValueError, match="unknown initializer"):
        Dense(2, kernel_initializer="bad").build((None, 3))
    with pytest.raises(TypeError, match="backward"):
        activations.get(lambda x: x)


def test_activation_values():
    x = np.linspace(-5, 5, 41)
    assert_allclose(activations.get("hard_sigmoid")(x), np.clip(x / 6 + 0.5, 0, 1))
    assert_allclose(activations.get("softmax")(np.array([[1000.0, 1000.0]])), [[0.5, 0.5]])
    assert_allclose(activations.get("sigmoid")(np.array([-800.0, 800.0])), [0.0, 1.0])
    assert activations.get(None) is activations.get("linear") is activations.linear
    assert activations.get("silu") is activations.swish


# ---------------------------------------------------------------------------------------------
# Configs, weights and errors.
# ---------------------------------------------------------------------------------------------

CONFIG_CASES = [
    (lambda: Dense(4, activation="relu", input_shape=(3,)), (2, 3)),
    (lambda: Embedding(9, 4, mask_zero=True, input_length=5), None),
    (lambda: Dropout(0.25, seed=3), (2, 3)),
    (lambda: RepeatVector(3), (2, 3)),
    (lambda: TimeDistributed(Dense(2, activation="sigmoid")), (2, 4, 3)),
    (lambda: Activation("tanh"), (2, 3)),
    (lambda: Flatten(), (2, 3, 2)),
    (lambda: Masking(mask_value=-1.0), (2, 3, 2)),
    (lambda: LSTM(3, return_sequences=True, go_backwards=True, dropout=0.1, recurrent_activation="hard_sigmoid",
                  kernel_initializer=initializers.RandomNormal(stddev=0.3), batch_input_shape=(2, 4, 3)), (2, 4, 3)),
    (lambda: LSTM(3, peephole=True, stateful=True, dtype="float64"), (2, 4, 3)),
    (lambda: Bidirectional(LSTM(3, return_sequences=True), merge_mode="ave"), (2, 4, 3)),
]


@pytest.mark.parametrize("make, shape", CONFIG_CASES)
def test_config_round_trip(rng, make, shape):
    layer = make()
    config = json.loads(json.dumps(layers.serialize(layer)))
    clone = layers.deserialize(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    assert clone.name == layer.name and clone.dtype == layer.dtype
    if shape is None:
        x = rng.integers(0, 9, (2, 5))
    else:
        x = rng.standard_normal(shape)
    y = layer(x)
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert_array_equal(clone(x), y)
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_input_layer_config_and_hints():
    layer = InputLayer(shape=(3, 4), dtype="int32", name="ids")
    assert layer.get_config() == {"batch_shape": [None, 3, 4], "dtype": "int32", "sparse": False, "name": "ids"}
    assert InputLayer.from_config(layer.get_config()).batch_shape == (None, 3, 4)
    assert Dense(2, input_dim=7)._input_shape_hint == (None, 7)
    assert LSTM(2, input_shape=(5, 3), batch_size=8)._input_shape_hint == (8, 5, 3)
    assert Dense(2).get_config().get("batch_input_shape") is None


def test_set_weights_errors():
    layer = Dense(3, name="out")
    with pytest.raises(ValueError, match="'out' is not built"):
        layer.set_weights([np.zeros((2, 3)), np.zeros(3)])
    layer.build((None, 2))
    with pytest.raises(ValueError, match=r"'out': weight 0 \('kernel'\) expects shape \(2, 3\), got \(3, 2\)"):
        layer.set_weights([np.zeros((3, 2)), np.zeros(3)])
    with pytest.raises(ValueError, match=r"'out' expects 2 weight arrays \(kernel, bias\), got 1"):
        layer.set_weights([np.zeros((2, 3))])
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"weight 1 \('bias'\)"):
        layer.set_weights([np.ones((2, 3)), np.zeros(4)])
    assert_array_equal(layer.get_weights()[0], before[0])  # nothing was half-set
    kernel = layer.weights["kernel"]
    layer.set_weights([np.ones((2, 3)), np.ones(3)])
    assert layer.weights["kernel"] is kernel and kernel.sum() == 6  # copied in place


def test_constructor_errors():
    with pytest.raises(ValueError, match="only activation='tanh' is supported.*'relu'"):
        LSTM(4, activation="relu")
    with pytest.raises(ValueError, match="recurrent_activation must be 'sigmoid' or 'hard_sigmoid'"):
        LSTM(4, recurrent_activation="tanh")
    with pytest.raises(TypeError, match="unexpected keyword argument.*bogus.*unitz"):
        Dense(3, unitz=4, bogus=1)
    with pytest.raises(ValueError, match="units must be a positive int"):
        LSTM(0)
    with pytest.raises(ValueError, match="rate must be a float in"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(LSTM(2), merge_mode="max")
    with pytest.raises(NotImplementedError, match="kernel_regularizer"):
        Dense(2, kernel_regularizer="l2")
    with pytest.raises(ValueError, match="layer dtype: dtype policy .float16. keeps variables in float16"):
        Dense(2, dtype="float16")


def test_call_errors(rng):
    emb = Embedding(5, 2, name="emb")
    with pytest.raises(ValueError, match=r"'emb': index 7 at position \(1, 0\) is out of range for input_dim=5"):
        emb(np.array([[1, 2], [7, 0]]))
    with pytest.raises(ValueError, match="index -1"):
        emb(np.array([[-1, 2]]))
    assert_array_equal(emb(np.array([[1.0, 4.0]])), emb(np.array([[1, 4]])))  # float ids are accepted
    dense = Dense(2, name="d")
    dense(np.ones((1, 3)))
    with pytest.raises(ValueError, match="'d' was built for 3 input features"):
        dense(np.ones((1, 4)))
    lstm = LSTM(2, name="l")
    lstm(np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="'l'.*kernel"):
        lstm(np.ones((1, 2, 4)))
    with pytest.raises(ValueError, match=r"'l' needs input of shape \(batch, timesteps, features\)"):
        lstm(np.ones((2, 3)))
    with pytest.raises(ValueError, match="mask must have shape"):
        lstm(np.ones((1, 2, 3)), mask=np.ones((1, 3), bool))


def test_count_params():
    assert built(LSTM(25), (None, 12, 10)).count_params() == 3600
    assert built(Dense(10), (None, 25)).count_params() == 260
    assert built(Bidirectional(LSTM(25)), (None, 12, 10)).count_params() == 7200
    assert built(LSTM(25, peephole=True, use_bias=False), (None, 12, 10)).count_params() == 3600 - 100 + 75
    assert built(Embedding(100, 8), (None, 5)).count_params() == 800


def test_dropout_modes(rng):
    x = np.ones((200, 50), np.float32)
    layer = Dropout(0.5, noise_shape=(None, 1), seed=1)
    assert_array_equal(layer(x), x)  # inference: identity
    out, cache = layer.forward(x, training=True)
    assert set(np.unique(out)) <= {0.0, 2.0} and 0.3 < (out == 0).mean() < 0.7
    assert (out == out[:, :1]).all()  # one draw per row with noise_shape (None, 1)
    a = Dropout(0.5, seed=9).forward(x, training=True)[0]
    assert_array_equal(a, Dropout(0.5, seed=9).forward(x, training=True)[0])


# ---------------------------------------------------------------------------------------------
# Keras 3 parity (optional: skipped without keras).
# ---------------------------------------------------------------------------------------------

# The `keras` fixture (conftest.py) gives Keras on the torch backend, or skips.

def _keras_run(keras, model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(x)
        return [keras.ops.convert_to_numpy(o) for o in out] if isinstance(out, (list, tuple)) \
            else keras.ops.convert_to_numpy(out)


def _keras_layer(keras, build_shape, layer, weights):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer.build(build_shape)
        layer.set_weights(weights)
    return layer


@pytest.mark.parametrize("options", [dict(), dict(return_sequences=True), dict(go_backwards=True),
                                     dict(go_backwards=True, return_sequences=True),
                                     dict(return_state=True, return_sequences=True)],
                         ids=["last", "sequences", "backwards_last", "backwards_sequences", "state"])
def test_keras_parity_lstm(keras, rng, options):
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    ours = LSTM(6, **options)
    expected = ours(x)
    theirs = _keras_layer(keras, (None, 7, 5), keras.layers.LSTM(6, **options), ours.get_weights())
    got = _keras_run(keras, theirs, x)
    for a, b in zip(_as_list(expected), _as_list(got)):
        assert_allclose(a, b, atol=KERAS_ATOL)


@pytest.mark.parametrize("padding", ["pre", "post", "arbitrary"])
@pytest.mark.parametrize("wrap", ["lstm_last", "lstm_sequences", "lstm_backwards", "bidirectional_concat",
                                  "bidirectional_sum_sequences"])
def test_keras_parity_masked_embedding_lstm(keras, rng, padding, wrap):
    ids = rng.integers(1, 20, (B, T))
    ids[~masks(padding)] = 0
    emb = Embedding(20, 5, mask_zero=True)
    make = {
        "lstm_last": lambda m: m.LSTM(6),
        "lstm_sequences": lambda m: m.LSTM(6, return_sequences=True),
        "lstm_backwards": lambda m: m.LSTM(6, go_backwards=True, return_sequences=True),
        "bidirectional_concat": lambda m: m.Bidirectional(m.LSTM(6)),
        "bidirectional_sum_sequences": lambda m: m.Bidirectional(m.LSTM(6, return_sequences=True), merge_mode="sum"),
    }[wrap]
    rnn = make(layers)
    e = emb(ids)
    expected = rnn(e, mask=emb.compute_mask(ids))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.Sequential([keras.Input((T,), dtype="int32"), keras.layers.Embedding(20, 5, mask_zero=True),
                                  make(keras.layers)])
        model.layers[0].set_weights(emb.get_weights())
        model.layers[1].set_weights(rnn.get_weights())
    assert_allclose(expected, _keras_run(keras, model, ids), atol=KERAS_ATOL)


@pytest.mark.parametrize("activation", sorted(activations.ACTIVATIONS))
def test_keras_parity_dense_activations(keras, rng, activation):
    x = (rng.standard_normal((4, 3, 6)) * 2).astype(np.float32)
    ours = Dense(5, activation=activation)
    expected = ours(x)
    theirs = _keras_layer(keras, (None, 3, 6), keras.layers.Dense(5, activation=activation), ours.get_weights())
    assert_allclose(expected, _keras_run(keras, theirs, x), atol=KERAS_ATOL, rtol=1e-5)


def test_keras_parity_embedding_and_bidirectional_state(keras, rng):
    ids = rng.integers(0, 30, (3, 4))
    ours = Embedding(30, 7)
    expected = ours(ids)
    theirs = _keras_layer(keras, (None, 4), keras.layers.Embedding(30, 7), ours.get_weights())
    assert_allclose(expected, _keras_run(keras, theirs, ids), atol=KERAS_ATOL)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    ours = Bidirectional(LSTM(3, return_state=True, return_sequences=True), merge_mode="mul")
    expected = ours(x)
    theirs = _keras_layer(keras, (None, 4, 5), keras.layers.Bidirectional(
        keras.layers.LSTM(3, return_state=True, return_sequences=True), merge_mode="mul"), ours.get_weights())
    got = _keras_run(keras, theirs, x)
    assert len(got) == len(expected) == 5
    for a, b in zip(expected, got):
        assert_allclose(a, b, atol=KERAS_ATOL)
