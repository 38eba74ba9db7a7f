"""The old Keras layouts (lstmfast.interop.keras_legacy): Keras 1's per-gate LSTM arrays and layer
options, Keras 2's CuDNNLSTM weights; and legacy .h5 files written as Keras 1.2.2 and Keras 2.2.4
(standalone) ``model.save`` wrote them, for ``lstmfast.load_model`` (class TestLoadLegacyFiles).

Expectations never come from the conversions under test: Keras 1's per-gate LSTM step and cuDNN's
step on the parameter buffer Keras 2's CuDNNLSTM built are written out here from their equations,
in float64, and compared with lstmfast.reference run on the converted weights."""
import copy
import json

import h5py
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast
from lstmfast import reference
from lstmfast.interop.keras_legacy import (
    is_keras1,
    keras1_config,
    lstm_weights_from_cudnn,
    lstm_weights_from_keras1,
)
from lstmfast.layers import deserialize

F64_ATOL = 1e-12  # float64 step written here versus the float64 reference: rounding only
F32_ATOL = 1e-5   # a float32 model loaded from a file versus the float64 reference on its weights

# (X, H, B, T): sizes 1 included, X != H (where a transpose and cuDNN's re-shape differ) and X == H
SHAPES = [(1, 1, 1, 1), (3, 4, 2, 5), (5, 2, 3, 4), (4, 4, 1, 3)]


def shape_id(shape):
    return "X{}H{}B{}T{}".format(*shape)


# ---- the equations, written out ----------------------------------------------------------------

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def hard_sigmoid(z):
    """Keras 1's (TensorFlow and Theano backends) and Keras 2's."""
    return np.clip(0.2 * z + 0.5, 0.0, 1.0)


ACTIVATIONS = {"sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid}


def keras1_lstm(x, gates, inner_activation):
    """Keras 1.2.2's LSTM step (consume_less "cpu"/"mem") over x [B,T,X]; ``gates[g] = (W_g [X,H],
    U_g [H,H], b_g [H])`` for g in i, f, c, o. Returns the outputs h [B,T,H]."""
    act = ACTIVATIONS[inner_activation]
    B, T, _ = x.shape
    H = gates["i"][1].shape[0]
    h, c = np.zeros((B, H)), np.zeros((B, H))
    ys = []
    for t in range(T):
        def z(g):
            W, U, b = gates[g]
            return x[:, t] @ W + h @ U + b
        i = act(z("i"))
        f = act(z("f"))
        c = f * c + i * np.tanh(z("c"))
        o = act(z("o"))
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys, axis=1)


def keras1_gpu_lstm(x, W, U, b, inner_activation):
    """Keras 1's LSTM step with consume_less="gpu": z = x W + h U + b, split in four as i, f, c, o."""
    act = ACTIVATIONS[inner_activation]
    B, T, _ = x.shape
    H = U.shape[0]
    h, c = np.zeros((B, H)), np.zeros((B, H))
    ys = []
    for t in range(T):
        z = x[:, t] @ W + h @ U + b
        i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        c = act(f) * c + act(i) * np.tanh(g)
        h = act(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys, axis=1)


def cudnn_params(kernel, recurrent_kernel, bias):
    """The parameter buffer Keras 2's CuDNNLSTM gave cuDNN: the four gate blocks (i, f, c, o) of
    ``kernel``, then of ``recurrent_kernel``, each flattened row-major, then ``bias [8H]``."""
    blocks = np.split(kernel, 4, axis=1) + np.split(recurrent_kernel, 4, axis=1)
    return np.concatenate([block.reshape(-1) for block in blocks] + [bias.reshape(-1)])


def cudnn_lstm(x, params, H):
    """What cuDNN computed from ``params``: linear layers 0-3 (input; gates i, f, c, o) are row-major
    [H, X] matrices, 4-7 (recurrent) [H, H], then eight [H] biases (input ones, recurrent ones);
    z_g = M_g x + R_g h + bW_g + bR_g, sigmoid gates. Returns h [B,T,H] for x [B,T,X]."""
    B, T, X = x.shape
    matrices, offset = [], 0
    for layer in range(8):
        n = X if layer < 4 else H
        matrices.append(params[offset:offset + H * n].reshape(H, n))
        offset += H * n
    biases = params[offset:].reshape(8, H)
    assert offset + 8 * H == params.size
    h, c = np.zeros((B, H)), np.zeros((B, H))
    ys = []
    for t in range(T):
        z = [x[:, t] @ matrices[g].T + h @ matrices[4 + g].T + biases[g] + biases[4 + g] for g in range(4)]
        i, f, g, o = sigmoid(z[0]), sigmoid(z[1]), np.tanh(z[2]), sigmoid(z[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys, axis=1)


def reference_lstm(x, weights, recurrent_activation="sigmoid"):
    """lstmfast.reference on batch-major x [B,T,X]: outputs [B,T,H]."""
    out = reference.lstm_forward(np.transpose(x, (1, 0, 2)), *weights, recurrent_activation=recurrent_activation,
                                 training=False)
    return np.transpose(out.y, (1, 0, 2))


def keras1_gate_arrays(rng, X, H):
    """Random Keras 1 per-gate arrays: (the 12 arrays in a file's order, {gate: (W, U, b)})."""
    gates = {g: (rng.normal(size=(X, H)), rng.normal(size=(H, H)) * 0.5, rng.uniform(-1, 1, H)) for g in "icfo"}
    return [a for g in "icfo" for a in gates[g]], gates


# ---- is_keras1 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [None, "1.2.2", b"1.2.2", np.bytes_(b"1.0.0"), "1", " 1.1.0 "])
def test_is_keras1_true(version):
    assert is_keras1(version) is True


@pytest.mark.parametrize("version", ["2.2.4", b"2.1.6", np.bytes_(b"2.0.0"), "3.1.0", "10.0", ""])
def test_is_keras1_false(version):
    assert is_keras1(version) is False


# ---- Keras 1 LSTM arrays -----------------------------------------------------------------------

@pytest.mark.parametrize("inner_activation", ["hard_sigmoid", "sigmoid"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_keras1_per_gate_arrays_compute_keras1s_lstm(shape, inner_activation):
    X, H, B, T = shape
    rng = np.random.default_rng(X * 100 + H * 10 + B)
    arrays, gates = keras1_gate_arrays(rng, X, H)
    x = rng.normal(size=(B, T, X))
    weights = lstm_weights_from_keras1(arrays, H)
    assert [w.shape for w in weights] == [(X, 4 * H), (H, 4 * H), (4 * H,)]
    assert_allclose(reference_lstm(x, weights, inner_activation), keras1_lstm(x, gates, inner_activation),
                    rtol=0, atol=F64_ATOL)


def test_keras1_gate_columns_are_exactly_the_per_gate_arrays():
    X, H = 3, 2
    arrays, gates = keras1_gate_arrays(np.random.default_rng(1), X, H)
    kernel, recurrent_kernel, bias = lstm_weights_from_keras1(arrays, H)
    for k, g in enumerate("ifco"):  # lstmfast's gate order
        columns = slice(k * H, (k + 1) * H)
        assert_array_equal(kernel[:, columns], gates[g][0])
        assert_array_equal(recurrent_kernel[:, columns], gates[g][1])
        assert_array_equal(bias[columns], gates[g][2])


def test_keras1_keeps_float32():
    arrays, _ = keras1_gate_arrays(np.random.default_rng(2), 3, 2)
    weights = lstm_weights_from_keras1([a.astype(np.float32) for a in arrays], 2)
    assert all(w.dtype == np.float32 for w in weights)


@pytest.mark.parametrize("inner_activation", ["hard_sigmoid", "sigmoid"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_keras1_gpu_arrays_are_returned_unchanged(shape, inner_activation):
    X, H, B, T = shape
    rng = np.random.default_rng(7 + X + H)
    W, U, b = rng.normal(size=(X, 4 * H)), rng.normal(size=(H, 4 * H)) * 0.5, rng.uniform(-1, 1, 4 * H)
    weights = lstm_weights_from_keras1([W, U, b], H)
    for got, want in zip(weights, (W, U, b)):
        assert_array_equal(got, want)
    x = rng.normal(size=(B, T, X))
    assert_allclose(reference_lstm(x, weights, inner_activation), keras1_gpu_lstm(x, W, U, b, inner_activation),
                    rtol=0, atol=F64_ATOL)


def test_keras1_refuses_bad_arrays():
    arrays, _ = keras1_gate_arrays(np.random.default_rng(3), 3, 2)
    with pytest.raises(ValueError, match="12 per-gate arrays.*got 11"):
        lstm_weights_from_keras1(arrays[:11], 2)
    with pytest.raises(ValueError, match=r"W_i must have shape \(3, 3\), got \(3, 2\)"):
        lstm_weights_from_keras1(arrays, 3)  # units disagree with the arrays
    bad = list(arrays)
    bad[7] = np.zeros((2, 3))  # U_f
    with pytest.raises(ValueError, match=r"U_f must have shape \(2, 2\)"):
        lstm_weights_from_keras1(bad, 2)
    with pytest.raises(ValueError, match="W_i must be 2-D"):
        lstm_weights_from_keras1([np.zeros(3)] + arrays[1:], 2)
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        lstm_weights_from_keras1([np.zeros((3, 8)), np.zeros((2, 8)), np.zeros(16)], 2)
    with pytest.raises(ValueError, match="units must be a positive int"):
        lstm_weights_from_keras1(arrays, 0)


# ---- Keras 2 CuDNNLSTM arrays ------------------------------------------------------------------

def cudnn_arrays_of(kernel, recurrent_kernel, bias, rng):
    """The arrays a CuDNNLSTM that computes the LSTM (kernel, recurrent_kernel, bias) holds: cuDNN
    must see M_g = kernel_g.T [H, n] per gate, so the stored [n, H] block holds M_g's numbers in
    row-major order; the bias is split at random into an input and a recurrent half."""
    def stored(weights):
        n = weights.shape[0]
        return np.concatenate([np.reshape(block.T, (n, -1)) for block in np.split(weights, 4, axis=1)], axis=1)
    bias_in = rng.uniform(-1, 1, bias.shape).astype(bias.dtype)
    return [stored(kernel), stored(recurrent_kernel), np.concatenate([bias_in, bias - bias_in])]


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_cudnn_arrays_compute_what_cudnn_computed(shape):
    X, H, B, T = shape
    rng = np.random.default_rng(11 + X * 7 + H)
    arrays = [rng.normal(size=(X, 4 * H)), rng.normal(size=(H, 4 * H)) * 0.5, rng.uniform(-1, 1, 8 * H)]
    x = rng.normal(size=(B, T, X))
    weights = lstm_weights_from_cudnn(arrays, H)
    assert [w.shape for w in weights] == [(X, 4 * H), (H, 4 * H), (4 * H,)]
    assert_allclose(reference_lstm(x, weights), cudnn_lstm(x, cudnn_params(*arrays), H), rtol=0, atol=F64_ATOL)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_cudnn_arrays_of_a_known_lstm_give_it_back(shape):
    X, H, B, T = shape
    rng = np.random.default_rng(23 + X + H * 5)
    lstm = [rng.normal(size=(X, 4 * H)), rng.normal(size=(H, 4 * H)) * 0.5, rng.uniform(-1, 1, 4 * H)]
    arrays = cudnn_arrays_of(*lstm, rng)
    x = rng.normal(size=(B, T, X))
    # The constructed arrays do make cuDNN compute the known LSTM...
    assert_allclose(cudnn_lstm(x, cudnn_params(*arrays), H), reference_lstm(x, lstm), rtol=0, atol=F64_ATOL)
    # ...and the conversion returns that LSTM's weights.
    kernel, recurrent_kernel, bias = lstm_weights_from_cudnn(arrays, H)
    assert_array_equal(kernel, lstm[0])
    assert_array_equal(recurrent_kernel, lstm[1])
    assert_allclose(bias, lstm[2], rtol=0, atol=1e-15)


def test_cudnn_bias_halves_are_summed_in_the_file_dtype():
    H = 3
    rng = np.random.default_rng(5)
    bias = rng.uniform(-1, 1, 8 * H).astype(np.float32)
    arrays = [np.zeros((2, 4 * H), np.float32), np.zeros((H, 4 * H), np.float32), bias]
    _, _, summed = lstm_weights_from_cudnn(arrays, H)
    assert summed.dtype == np.float32
    assert_array_equal(summed, bias[:4 * H] + bias[4 * H:])
    # float32 addition is correctly rounded: the same as summing exactly and rounding once
    assert_array_equal(summed, (bias[:4 * H].astype(np.float64) + bias[4 * H:]).astype(np.float32))


def test_cudnn_input_kernel_is_not_a_per_gate_transpose():
    X, H = 3, 2
    kernel = np.arange(X * 4 * H, dtype=np.float64).reshape(X, 4 * H)
    converted, _, _ = lstm_weights_from_cudnn([kernel, np.zeros((H, 4 * H)), np.zeros(8 * H)], H)
    # gate i's stored block [[0,1],[8,9],[16,17]] holds M_i = [[0,1,8],[9,16,17]] row by row
    assert_array_equal(converted[:, :H], [[0, 9], [1, 16], [8, 17]])


def test_cudnn_refuses_bad_arrays():
    H = 2
    good = [np.zeros((3, 8)), np.zeros((2, 8)), np.zeros(16)]
    with pytest.raises(ValueError, match=r"bias must have shape \(16,\), got \(8,\)"):
        lstm_weights_from_cudnn(good[:2] + [np.zeros(8)], H)  # an LSTM's bias, not a CuDNNLSTM's
    with pytest.raises(ValueError, match=r"\[kernel, recurrent_kernel, bias\], got 2"):
        lstm_weights_from_cudnn(good[:2], H)
    with pytest.raises(ValueError, match=r"kernel must have shape \[X, 8\], got \(3, 6\)"):
        lstm_weights_from_cudnn([np.zeros((3, 6))] + good[1:], H)
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape \(3, 12\)"):
        lstm_weights_from_cudnn([np.zeros((3, 12)), np.zeros((2, 12)), np.zeros(24)], 3)


# ---- Keras 1 layer options ---------------------------------------------------------------------

# Configs as Keras 1.2.2's get_config wrote them.
K1_LSTM_FIRST = {
    "name": "lstm_1", "trainable": True, "batch_input_shape": [None, 5, 3], "input_dtype": "float32",
    "return_sequences": True, "go_backwards": False, "stateful": False, "unroll": False, "consume_less": "cpu",
    "input_dim": 3, "input_length": 5, "output_dim": 4, "init": "glorot_uniform", "inner_init": "orthogonal",
    "forget_bias_init": "one", "activation": "tanh", "inner_activation": "hard_sigmoid", "W_regularizer": None,
    "U_regularizer": None, "b_regularizer": None, "dropout_W": 0.25, "dropout_U": 0.5}
K1_LSTM_MIDDLE = {
    "name": "lstm_2", "trainable": True, "return_sequences": False, "go_backwards": True, "stateful": False,
    "unroll": False, "consume_less": "gpu", "input_dim": 4, "input_length": None, "output_dim": 6, "init": "zero",
    "inner_init": "one", "forget_bias_init": "zero", "activation": "tanh", "inner_activation": "sigmoid",
    "W_regularizer": None, "U_regularizer": None, "b_regularizer": None, "dropout_W": 0.0, "dropout_U": 0.0}
K1_DENSE = {
    "name": "dense_1", "trainable": True, "output_dim": 2, "init": "glorot_uniform", "activation": "softmax",
    "W_regularizer": None, "b_regularizer": None, "activity_regularizer": None, "W_constraint": None,
    "b_constraint": None, "bias": False, "input_dim": 6}
K1_EMBEDDING = {
    "name": "embedding_1", "trainable": True, "batch_input_shape": [None, 5], "input_dtype": "int32",
    "input_dim": 7, "output_dim": 3, "init": "uniform", "input_length": 5, "mask_zero": True,
    "activity_regularizer": None, "W_regularizer": None, "W_constraint": None, "dropout": 0.0}
K1_MERGE = {
    "name": "merge_1", "mode": "concat", "mode_type": "raw", "concat_axis": -1, "dot_axes": -1,
    "output_shape": None, "output_shape_type": "raw", "output_mask": None, "output_mask_type": "raw", "arguments": {}}


def test_keras1_lstm_config():
    assert keras1_config("LSTM", K1_LSTM_FIRST) == ("LSTM", {
        "name": "lstm_1", "trainable": True, "batch_input_shape": [None, 5, 3], "dtype": "float32",
        "return_sequences": True, "go_backwards": False, "stateful": False, "unroll": False, "units": 4,
        "kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal", "unit_forget_bias": True,
        "activation": "tanh", "recurrent_activation": "hard_sigmoid", "kernel_regularizer": None,
        "recurrent_regularizer": None, "bias_regularizer": None, "dropout": 0.25, "recurrent_dropout": 0.5})


def test_keras1_lstm_config_without_batch_input_shape():
    cls, config = keras1_config("LSTM", K1_LSTM_MIDDLE)
    assert cls == "LSTM"
    assert config["batch_input_shape"] == [None, None, 4]  # from input_length, input_dim, as Keras 2 did
    assert config["unit_forget_bias"] is False
    assert config["kernel_initializer"] == "zeros" and config["recurrent_initializer"] == "ones"
    assert config["go_backwards"] is True and config["recurrent_activation"] == "sigmoid"
    for gone in ("input_dim", "input_length", "consume_less", "forget_bias_init", "output_dim", "init"):
        assert gone not in config


def test_keras1_dense_config():
    assert keras1_config("Dense", K1_DENSE) == ("Dense", {
        "name": "dense_1", "trainable": True, "units": 2, "kernel_initializer": "glorot_uniform",
        "activation": "softmax", "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
        "kernel_constraint": None, "bias_constraint": None, "use_bias": False, "batch_input_shape": [None, 6]})


def test_keras1_embedding_config():
    assert keras1_config("Embedding", K1_EMBEDDING) == ("Embedding", {
        "name": "embedding_1", "trainable": True, "batch_input_shape": [None, 5], "input_dim": 7, "output_dim": 3,
        "embeddings_initializer": "uniform", "input_length": 5, "mask_zero": True, "activity_regularizer": None,
        "embeddings_regularizer": None, "embeddings_constraint": None})


def test_keras1_embedding_dropout_is_dropped_with_a_warning():
    with pytest.warns(UserWarning, match="dropout=0.2"):
        _, config = keras1_config("Embedding", {**K1_EMBEDDING, "dropout": 0.2})
    assert "dropout" not in config


@pytest.mark.parametrize("class_name, config, want", [
    ("Dropout", {"name": "dropout_1", "trainable": True, "p": 0.3},
     {"name": "dropout_1", "trainable": True, "rate": 0.3}),
    ("Activation", {"name": "activation_1", "trainable": True, "activation": "relu"},
     {"name": "activation_1", "trainable": True, "activation": "relu"}),
    ("RepeatVector", {"name": "repeatvector_1", "trainable": True, "n": 3},
     {"name": "repeatvector_1", "trainable": True, "n": 3}),
    ("Masking", {"name": "masking_1", "trainable": True, "batch_input_shape": [None, 5, 2], "input_dtype": "float32",
                 "mask_value": 0.0},
     {"name": "masking_1", "trainable": True, "batch_input_shape": [None, 5, 2], "dtype": "float32",
      "mask_value": 0.0}),
    ("Flatten", {"name": "flatten_1", "trainable": True}, {"name": "flatten_1", "trainable": True}),
    ("InputLayer", {"batch_input_shape": [None, 5], "input_dtype": "int32", "sparse": False, "name": "input_1"},
     {"batch_input_shape": [None, 5], "dtype": "int32", "sparse": False, "name": "input_1"}),
])
def test_keras1_simple_layer_configs(class_name, config, want):
    assert keras1_config(class_name, config) == (class_name, want)


def test_keras1_wrapped_layers_are_translated():
    td = {"name": "timedistributed_1", "trainable": True, "layer": {"class_name": "Dense", "config": K1_DENSE}}
    cls, config = keras1_config("TimeDistributed", td)
    assert cls == "TimeDistributed"
    assert config["layer"] == {"class_name": "Dense", "config": keras1_config("Dense", K1_DENSE)[1]}
    bi = {"name": "bidirectional_1", "trainable": True, "batch_input_shape": [None, 5, 3], "input_dtype": "float32",
          "merge_mode": "ave", "layer": {"class_name": "LSTM", "config": K1_LSTM_MIDDLE}}
    cls, config = keras1_config("Bidirectional", bi)
    assert cls == "Bidirectional" and config["merge_mode"] == "ave" and config["dtype"] == "float32"
    assert config["layer"] == {"class_name": "LSTM", "config": keras1_config("LSTM", K1_LSTM_MIDDLE)[1]}


@pytest.mark.parametrize("mode, class_name", [("concat", "Concatenate"), ("sum", "Add"), ("mul", "Multiply"),
                                              ("ave", "Average"), ("max", "Maximum")])
def test_keras1_merge_modes(mode, class_name):
    cls, config = keras1_config("Merge", {**K1_MERGE, "mode": mode, "concat_axis": 1})
    assert cls == class_name
    assert config == ({"name": "merge_1", "axis": 1} if mode == "concat" else {"name": "merge_1"})


def test_keras1_merge_refusals():
    for mode in ("cos", "dot"):
        with pytest.raises(ValueError, match=f"mode must be one of concat, sum, mul, ave, max .*got '{mode}'"):
            keras1_config("Merge", {**K1_MERGE, "mode": mode})
    with pytest.raises(ValueError, match="Python lambda, and loading never runs code"):
        keras1_config("Merge", {**K1_MERGE, "mode": "4wEAAAAAAA...", "mode_type": "lambda"})
    with pytest.raises(ValueError, match="merges whole sub-models"):
        keras1_config("Merge", {**K1_MERGE, "layers": [{"class_name": "Sequential", "config": []}]})


def test_keras1_unknown_layer_keeps_its_options():
    gru = {"name": "gru_1", "trainable": True, "output_dim": 4, "inner_init": "orthogonal", "dropout_W": 0.0}
    assert keras1_config("GRU", gru) == ("GRU", gru)
    pool = {"name": "globalmaxpooling1d_1", "trainable": True, "batch_input_shape": [None, 5, 3],
            "input_dtype": "float32"}
    assert keras1_config("GlobalMaxPooling1D", pool) == (
        "GlobalMaxPooling1D", {"name": "globalmaxpooling1d_1", "trainable": True, "batch_input_shape": [None, 5, 3],
                               "dtype": "float32"})


ALL_K1_CONFIGS = [("LSTM", K1_LSTM_FIRST), ("LSTM", K1_LSTM_MIDDLE), ("Dense", K1_DENSE), ("Embedding", K1_EMBEDDING),
                  ("Merge", K1_MERGE),
                  ("Bidirectional", {"name": "b", "merge_mode": "concat", "layer": {
                      "class_name": "LSTM", "config": {**K1_LSTM_MIDDLE, "go_backwards": False}}}),
                  ("TimeDistributed", {"name": "t", "layer": {"class_name": "Dense", "config": K1_DENSE}})]


@pytest.mark.parametrize("class_name, config", ALL_K1_CONFIGS)
def test_keras1_config_leaves_its_argument_alone_and_is_idempotent(class_name, config):
    before = copy.deepcopy(config)
    once = keras1_config(class_name, config)
    assert config == before
    assert keras1_config(*once) == once


@pytest.mark.parametrize("class_name, config", ALL_K1_CONFIGS)
def test_keras1_translations_build_lstmfast_layers(class_name, config):
    cls, translated = keras1_config(class_name, config)
    layer = deserialize({"class_name": cls, "config": translated})
    assert type(layer).__name__ == cls


# ---- legacy .h5 files, written as Keras 1.2.2 and Keras 2.2.4 wrote them -----------------------
#
# The model: token ids [B, T] -> Embedding(VOCAB, EMBED) -> LSTM(UNITS) -> Dense(CLASSES, softmax).
# Keras 1.2.2's models.save_model: root attributes keras_version, model_config, training_config (no
# backend); model_weights has only layer_names; each layer group lists its arrays in weight_names
# (variable names: "lstm_1_W_i" on Theano, "lstm_1_W_i:0" on TensorFlow). Keras 2.2.4's
# engine/saving.py adds backend to the root and keras_version and backend to model_weights, and
# names arrays "lstm_1/kernel:0" (so a subgroup "lstm_1" under the layer group). Strings were written
# by h5py 2 as fixed-length bytes.

VOCAB, T_STEPS, EMBED, UNITS, CLASSES, BATCH = 7, 5, 3, 4, 2, 3


def _h5_text(text):
    return np.bytes_(text.encode("utf-8"))


def _h5_names(names):
    # Keras wrote a list: of bytes as fixed-length strings, an empty one as np.asarray([]) (float64).
    return np.array([n.encode("utf-8") for n in names], dtype="S") if names else np.asarray([])


def _write_weights(group, layer_names, arrays_by_layer):
    """``layer_names`` on ``group``; a group per layer with its ``weight_names`` and datasets."""
    group.attrs["layer_names"] = _h5_names(layer_names)
    for layer in layer_names:
        layer_group = group.create_group(layer)
        named = arrays_by_layer.get(layer, [])
        layer_group.attrs["weight_names"] = _h5_names([name for name, _ in named])
        for name, array in named:
            layer_group.create_dataset(name, data=array)


def _model_weights(rng, lstm_count=1):
    """float32 weights of the model, LSTMs in lstmfast's layout: {"embeddings", "lstms": [(kernel,
    recurrent_kernel, bias), ...], "dense": (kernel, bias)}; biases far from zero."""
    def lstm():
        return (rng.normal(size=(EMBED, 4 * UNITS)).astype(np.float32),
                (rng.normal(size=(UNITS, 4 * UNITS)) * 0.5).astype(np.float32),
                rng.uniform(-1, 1, 4 * UNITS).astype(np.float32))
    return {"embeddings": rng.uniform(-1, 1, (VOCAB, EMBED)).astype(np.float32),
            "lstms": [lstm() for _ in range(lstm_count)],
            "dense": (rng.normal(size=(UNITS * lstm_count, CLASSES)).astype(np.float32),
                      rng.uniform(-1, 1, CLASSES).astype(np.float32))}


def _prediction(x, weights, recurrent_activation, backwards=(False,)):
    """float64 prediction [B, CLASSES]: the LSTMs' final h (of the time-reversed input where
    ``backwards``) concatenated, then Dense + softmax."""
    embedded = weights["embeddings"].astype(np.float64)[x]                       # [B,T,E]
    finals = []
    for lstm, backward in zip(weights["lstms"], backwards):
        sequence = embedded[:, ::-1] if backward else embedded
        finals.append(reference_lstm(sequence, lstm, recurrent_activation)[:, -1])
    kernel, bias = weights["dense"]
    logits = np.concatenate(finals, axis=-1) @ kernel.astype(np.float64) + bias
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _keras1_lstm_config(name, consume_less, go_backwards):
    return {"name": name, "trainable": True, "return_sequences": False, "go_backwards": go_backwards,
            "stateful": False, "unroll": False, "consume_less": consume_less, "input_dim": EMBED,
            "input_length": None, "output_dim": UNITS, "init": "glorot_uniform", "inner_init": "orthogonal",
            "forget_bias_init": "one", "activation": "tanh", "inner_activation": "hard_sigmoid",
            "W_regularizer": None, "U_regularizer": None, "b_regularizer": None, "dropout_W": 0.0, "dropout_U": 0.0}


def _keras1_lstm_arrays(name, lstm, consume_less, suffix):
    """A Keras 1 LSTM's (name, array) list as its file holds it."""
    kernel, recurrent_kernel, bias = lstm
    if consume_less == "gpu":
        return [(f"{name}_W{suffix}", kernel), (f"{name}_U{suffix}", recurrent_kernel), (f"{name}_b{suffix}", bias)]
    named = []
    for gate in "icfo":  # Keras 1's trainable_weights order
        columns = slice("ifco".index(gate) * UNITS, ("ifco".index(gate) + 1) * UNITS)
        named += [(f"{name}_W_{gate}{suffix}", kernel[:, columns]), (f"{name}_U_{gate}{suffix}",
                  recurrent_kernel[:, columns]), (f"{name}_b_{gate}{suffix}", bias[columns])]
    return named


def write_keras1_h5(path, consume_less="cpu", backend="theano", functional=False, seed=0):
    """Write the model as Keras 1.2.2's ``model.save`` did, compiled (Adam) but never trained (so no
    optimizer_weights). ``consume_less``: "cpu" (12 per-gate LSTM arrays) or "gpu" (3 arrays);
    ``backend``: "theano" or "tensorflow" (the variable names' style). ``functional``: a Model whose
    Embedding feeds two LSTMs (the second with go_backwards) joined by a concat ``Merge``, instead of
    the Sequential. Returns ``(x, expected)``: token ids [B, T] (int32) and the prediction
    [B, CLASSES] (float64, from lstmfast.reference)."""
    rng = np.random.default_rng(seed)
    weights = _model_weights(rng, lstm_count=2 if functional else 1)
    x = rng.integers(0, VOCAB, (BATCH, T_STEPS)).astype(np.int32)
    suffix = ":0" if backend == "tensorflow" else ""
    embedding = {"name": "embedding_1", "trainable": True, "batch_input_shape": [None, T_STEPS],
                 "input_dtype": "int32", "input_dim": VOCAB, "output_dim": EMBED, "init": "uniform",
                 "input_length": T_STEPS, "mask_zero": False, "activity_regularizer": None, "W_regularizer": None,
                 "W_constraint": None, "dropout": 0.0}
    dense = {"name": "dense_1", "trainable": True, "output_dim": CLASSES, "init": "glorot_uniform",
             "activation": "softmax", "W_regularizer": None, "b_regularizer": None, "activity_regularizer": None,
             "W_constraint": None, "b_constraint": None, "bias": True, "input_dim": UNITS * len(weights["lstms"])}
    arrays = {"embedding_1": [(f"embedding_1_W{suffix}", weights["embeddings"])],
              "dense_1": [(f"dense_1_W{suffix}", weights["dense"][0]), (f"dense_1_b{suffix}", weights["dense"][1])]}
    if functional:
        names = ["input_1", "embedding_1", "lstm_1", "lstm_2", "merge_1", "dense_1"]
        backwards = (False, True)
        merge = {"name": "merge_1", "mode": "concat", "mode_type": "raw", "concat_axis": -1, "dot_axes": -1,
                 "output_shape": None, "output_shape_type": "raw", "output_mask": None, "output_mask_type": "raw",
                 "arguments": {}}
        entries = [
            ("InputLayer", {"batch_input_shape": [None, T_STEPS], "input_dtype": "int32", "sparse": False,
                            "name": "input_1"}, []),
            ("Embedding", embedding, [[["input_1", 0, 0]]]),
            ("LSTM", _keras1_lstm_config("lstm_1", consume_less, False), [[["embedding_1", 0, 0]]]),
            ("LSTM", _keras1_lstm_config("lstm_2", consume_less, True), [[["embedding_1", 0, 0]]]),
            ("Merge", merge, [[["lstm_1", 0, 0], ["lstm_2", 0, 0]]]),
            ("Dense", dense, [[["merge_1", 0, 0]]])]
        model_config = {"class_name": "Model", "config": {
            "name": "model_1",
            "layers": [{"name": c["name"], "class_name": cls, "config": c, "inbound_nodes": nodes}
                       for cls, c, nodes in entries],
            "input_layers": [["input_1", 0, 0]], "output_layers": [["dense_1", 0, 0]]}}
    else:
        names = ["embedding_1", "lstm_1", "dense_1"]
        backwards = (False,)
        model_config = {"class_name": "Sequential", "config": [
            {"class_name": "Embedding", "config": embedding},
            {"class_name": "LSTM", "config": _keras1_lstm_config("lstm_1", consume_less, False)},
            {"class_name": "Dense", "config": dense}]}
    for k, lstm in enumerate(weights["lstms"]):
        name = f"lstm_{k + 1}"
        arrays[name] = _keras1_lstm_arrays(name, lstm, consume_less, suffix)
    training_config = {"optimizer_config": {"class_name": "Adam", "config": {
        "lr": 0.0010000000474974513, "beta_1": 0.8999999761581421, "beta_2": 0.9990000128746033,
        "decay": 0.0, "epsilon": 1e-08}}, "loss": "categorical_crossentropy", "metrics": ["accuracy"],
        "sample_weight_mode": None, "loss_weights": None}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = _h5_text("1.2.2")
        f.attrs["model_config"] = _h5_text(json.dumps(model_config))
        _write_weights(f.create_group("model_weights"), names, arrays)
        f.attrs["training_config"] = _h5_text(json.dumps(training_config))
    return x, _prediction(x, weights, "hard_sigmoid", backwards)


_K2_GLOROT = {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg",
                                                          "distribution": "uniform", "seed": None}}
_K2_ZEROS = {"class_name": "Zeros", "config": {}}


def _keras2_lstm_config(lstm):
    base = {"name": "lstm_1" if lstm == "LSTM" else "cu_dnnlstm_1", "trainable": True, "return_sequences": False,
            "return_state": False, "go_backwards": False, "stateful": False}
    shared = {"units": UNITS, "kernel_initializer": _K2_GLOROT,
              "recurrent_initializer": {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None}},
              "bias_initializer": _K2_ZEROS, "unit_forget_bias": True, "kernel_regularizer": None,
              "recurrent_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
              "kernel_constraint": None, "recurrent_constraint": None, "bias_constraint": None}
    if lstm == "CuDNNLSTM":
        return {**base, **shared}
    return {**base, "unroll": False, **shared, "activation": "tanh", "recurrent_activation": "hard_sigmoid",
            "use_bias": True, "dropout": 0.0, "recurrent_dropout": 0.0, "implementation": 1}


def write_keras2_h5(path, lstm="LSTM", functional=False, seed=0):
    """Write the model as standalone Keras 2.2.4's ``model.save`` did (TensorFlow backend), compiled
    (Adam) but never trained. ``lstm``: "LSTM" (Keras 2.2.4's default recurrent_activation
    "hard_sigmoid") or "CuDNNLSTM" (sigmoid; arrays in the layout cuDNN read, bias [8H]: see
    ``cudnn_arrays_of``). ``functional``: a Model with an InputLayer instead of the Sequential.
    Returns ``(x, expected)`` as ``write_keras1_h5`` does."""
    rng = np.random.default_rng(seed)
    weights = _model_weights(rng)
    x = rng.integers(0, VOCAB, (BATCH, T_STEPS)).astype(np.int32)
    lstm_config = _keras2_lstm_config(lstm)
    lstm_name = lstm_config["name"]
    embedding = {"name": "embedding_1", "trainable": True, "batch_input_shape": [None, T_STEPS], "dtype": "float32",
                 "input_dim": VOCAB, "output_dim": EMBED,
                 "embeddings_initializer": {"class_name": "RandomUniform",
                                            "config": {"minval": -0.05, "maxval": 0.05, "seed": None}},
                 "embeddings_regularizer": None, "activity_regularizer": None, "embeddings_constraint": None,
                 "mask_zero": False, "input_length": T_STEPS}
    dense = {"name": "dense_1", "trainable": True, "units": CLASSES, "activation": "softmax", "use_bias": True,
             "kernel_initializer": _K2_GLOROT, "bias_initializer": _K2_ZEROS, "kernel_regularizer": None,
             "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
             "bias_constraint": None}
    if lstm == "CuDNNLSTM":
        stored = cudnn_arrays_of(*weights["lstms"][0], rng)
        # the model computes with the float32 halves' sum
        weights["lstms"][0] = weights["lstms"][0][:2] + (stored[2][:4 * UNITS] + stored[2][4 * UNITS:],)
        recurrent_activation = "sigmoid"
    else:
        stored = list(weights["lstms"][0])
        recurrent_activation = "hard_sigmoid"
    arrays = {"embedding_1": [("embedding_1/embeddings:0", weights["embeddings"])],
              lstm_name: [(f"{lstm_name}/{key}:0", array)
                          for key, array in zip(("kernel", "recurrent_kernel", "bias"), stored)],
              "dense_1": [("dense_1/kernel:0", weights["dense"][0]), ("dense_1/bias:0", weights["dense"][1])]}
    if functional:
        names = ["input_1", "embedding_1", lstm_name, "dense_1"]
        entries = [("InputLayer", {"batch_input_shape": [None, T_STEPS], "dtype": "int32", "sparse": False,
                                   "name": "input_1"}, []),
                   ("Embedding", embedding, [[["input_1", 0, 0, {}]]]),
                   (lstm, lstm_config, [[["embedding_1", 0, 0, {}]]]),
                   ("Dense", dense, [[[lstm_name, 0, 0, {}]]])]
        model_config = {"class_name": "Model", "config": {
            "name": "model_1",
            "layers": [{"name": c["name"], "class_name": cls, "config": c, "inbound_nodes": nodes}
                       for cls, c, nodes in entries],
            "input_layers": [["input_1", 0, 0]], "output_layers": [["dense_1", 0, 0]]}}
    else:
        names = ["embedding_1", lstm_name, "dense_1"]
        model_config = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": [
            {"class_name": "Embedding", "config": embedding}, {"class_name": lstm, "config": lstm_config},
            {"class_name": "Dense", "config": dense}]}}
    training_config = {"optimizer_config": {"class_name": "Adam", "config": {
        "lr": 0.0010000000474974513, "beta_1": 0.8999999761581421, "beta_2": 0.9990000128746033,
        "decay": 0.0, "epsilon": 1e-07, "amsgrad": False}}, "loss": "categorical_crossentropy",
        "metrics": ["accuracy"], "sample_weight_mode": None, "loss_weights": None}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = _h5_text("2.2.4")
        f.attrs["backend"] = _h5_text("tensorflow")
        f.attrs["model_config"] = _h5_text(json.dumps(model_config))
        group = f.create_group("model_weights")
        _write_weights(group, names, arrays)
        group.attrs["backend"] = _h5_text("tensorflow")
        group.attrs["keras_version"] = _h5_text("2.2.4")
        f.attrs["training_config"] = _h5_text(json.dumps(training_config))
    return x, _prediction(x, weights, recurrent_activation)


def test_writers_store_what_keras_stored(tmp_path):
    """The writers' own layouts, read back with h5py (what the loader will see)."""
    x, expected = write_keras1_h5(tmp_path / "k1.h5", backend="tensorflow")
    with h5py.File(tmp_path / "k1.h5", "r") as f:
        assert f.attrs["keras_version"] == b"1.2.2" and "backend" not in f.attrs
        assert isinstance(json.loads(f.attrs["model_config"])["config"], list)
        weights = f["model_weights"]
        assert set(weights.attrs) == {"layer_names"}
        assert list(weights.attrs["layer_names"]) == [b"embedding_1", b"lstm_1", b"dense_1"]
        names = list(weights["lstm_1"].attrs["weight_names"])
        assert names[:4] == [b"lstm_1_W_i:0", b"lstm_1_U_i:0", b"lstm_1_b_i:0", b"lstm_1_W_c:0"]
        assert weights["lstm_1"]["lstm_1_U_f:0"].shape == (UNITS, UNITS)
    assert x.shape == (BATCH, T_STEPS) and expected.shape == (BATCH, CLASSES)
    assert_allclose(expected.sum(axis=1), 1.0, rtol=0, atol=1e-12)

    write_keras2_h5(tmp_path / "k2.h5", lstm="CuDNNLSTM", functional=True)
    with h5py.File(tmp_path / "k2.h5", "r") as f:
        weights = f["model_weights"]
        assert weights.attrs["keras_version"] == b"2.2.4" and weights.attrs["backend"] == b"tensorflow"
        assert weights["input_1"].attrs["weight_names"].shape == (0,)
        assert list(weights["cu_dnnlstm_1"].attrs["weight_names"]) == [
            b"cu_dnnlstm_1/kernel:0", b"cu_dnnlstm_1/recurrent_kernel:0", b"cu_dnnlstm_1/bias:0"]
        assert weights["cu_dnnlstm_1"]["cu_dnnlstm_1"]["bias:0"].shape == (8 * UNITS,)
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        assert layers[1]["inbound_nodes"] == [[["input_1", 0, 0, {}]]]


def _read_arrays(path):
    """{layer name: its float64 arrays in weight_names order} of a legacy file."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        return {layer.decode(): [np.asarray(group[layer][name], np.float64)
                                 for name in group[layer].attrs["weight_names"]]
                for layer in group.attrs["layer_names"]}


def test_writers_weights_reproduce_the_expected_prediction(tmp_path):
    """The stored arrays, run by the equations written out here (not by the loader), predict what
    the writers return."""
    for consume_less in ("cpu", "gpu"):
        x, expected = write_keras1_h5(tmp_path / "k1.h5", consume_less=consume_less)
        read = _read_arrays(tmp_path / "k1.h5")
        embedded = read["embedding_1"][0][x]
        if consume_less == "cpu":
            gates = {g: tuple(read["lstm_1"][3 * k:3 * k + 3]) for k, g in enumerate("icfo")}
            h = keras1_lstm(embedded, gates, "hard_sigmoid")[:, -1]
        else:
            h = keras1_gpu_lstm(embedded, *read["lstm_1"], "hard_sigmoid")[:, -1]
        logits = h @ read["dense_1"][0] + read["dense_1"][1]
        assert_allclose(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), expected, rtol=0, atol=1e-12)

    x, expected = write_keras2_h5(tmp_path / "k2.h5", lstm="CuDNNLSTM")
    read = _read_arrays(tmp_path / "k2.h5")
    h = cudnn_lstm(read["embedding_1"][0][x], cudnn_params(*read["cu_dnnlstm_1"]), UNITS)[:, -1]
    logits = h @ read["dense_1"][0] + read["dense_1"][1]
    assert_allclose(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), expected, rtol=0, atol=1e-6)


# ---- end to end: lstmfast.load_model on those files (needs keras_format.py's loader) -----------

class TestLoadLegacyFiles:
    @pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
    @pytest.mark.parametrize("backend", ["theano", "tensorflow"])
    @pytest.mark.parametrize("consume_less", ["cpu", "gpu"])
    def test_keras1(self, tmp_path, consume_less, backend, functional):
        path = tmp_path / "keras1.h5"
        x, expected = write_keras1_h5(path, consume_less=consume_less, backend=backend, functional=functional)
        model = lstmfast.load_model(str(path))
        assert_allclose(model.predict(x, verbose=0), expected, rtol=0, atol=F32_ATOL)

    @pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
    @pytest.mark.parametrize("lstm", ["LSTM", "CuDNNLSTM"])
    def test_keras2(self, tmp_path, lstm, functional):
        path = tmp_path / "keras2.h5"
        x, expected = write_keras2_h5(path, lstm=lstm, functional=functional)
        model = lstmfast.load_model(str(path))
        assert_allclose(model.predict(x, verbose=0), expected, rtol=0, atol=F32_ATOL)
