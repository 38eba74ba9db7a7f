"""model.export(path, format="onnx") (lstmfast.interop.onnx_export): onnxruntime runs the exported
graph and must reproduce predict on the tutorial models and on every layer and mask form the
exporter handles, at two batch sizes and two lengths (the batch and time axes are dynamic)."""
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lstmfast import backend
from lstmfast.interop import onnx_export
from lstmfast.layers import (
    LSTM,
    Activation,
    Add,
    Attention,
    Average,
    BatchNormalization,
    Bidirectional,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Input,
    LayerNormalization,
    Masking,
    RepeatVector,
    Subtract,
    TimeDistributed,
)
from lstmfast.models import Model, Sequential
from lstmfast.tasks import echo, imdb, seq2seq, text

from conftest import peer

ORT_ATOL = 1e-5  # onnxruntime's float32 LSTM versus the engine's float32: a few ulp per step
ORT_RTOL = 1e-5
SHAPES = [(3, 7), (1, 2)]  # (batch, time) pairs: the exported graph must take both


def ort_outputs(path, xs):
    ort = peer("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    for spec, x in zip(session.get_inputs(), xs):
        kind = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}[spec.type]
        feeds[spec.name] = np.asarray(x).astype(kind)
    return session.run(None, feeds)


def check_export(model, make_inputs, tmp_path, shapes=SHAPES, predict_model=None, **export_kwargs):
    """Export ``model``, then for each (B, T): onnxruntime's outputs equal ``predict``'s
    (``predict_model``'s, a twin that takes any length, when the model fixes its length)."""
    peer("onnx")
    path = tmp_path / f"{model.name}.onnx"
    model.export(path, **export_kwargs)
    for B, T in shapes:
        xs = make_inputs(B, T)
        xs = xs if isinstance(xs, list) else [xs]
        want = (predict_model or model).predict(xs if len(xs) > 1 else xs[0], verbose=0)
        want = want if isinstance(want, list) else [want]
        got = ort_outputs(path, xs)
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape, f"output {k} at B={B}, T={T}"
            assert_allclose(g, w, rtol=ORT_RTOL, atol=ORT_ATOL, err_msg=f"output {k} at B={B}, T={T}")
    return path


def floats(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def padded_ids(B, T, vocab, seed=0, kind="post"):
    """Token ids [B, T] with 0 as padding: "post" pads at the end (row lengths T, 1, T-1, ...),
    "any" masks a mix (pre-padding, holes, a row with no token at all)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(B, T))
    for b in range(B):
        if kind == "post":
            ids[b, [T, 1, max(T - 1, 1), max(T // 2, 1)][b % 4]:] = 0
        else:
            ids[b, rng.random(T) < [0.0, 0.5, 1.0, 0.3][b % 4]] = 0
    return ids


def twin(model, shape):
    """A copy of Sequential ``model`` whose input takes any length (predict refuses other lengths)."""
    copy = Sequential([Input(shape=shape)] + [type(layer).from_config(layer.get_config()) for layer in model.layers])
    copy.set_weights(model.get_weights())
    return copy


# ---------------------------------------------------------------------------------------------
# The tutorial models
# ---------------------------------------------------------------------------------------------

def test_echo(tmp_path):
    model = echo.build_model(length=5, features=6, units=7, peephole=True)
    for layer in model.layers:  # trained-looking peepholes and biases, not the zeros they start with
        layer.set_weights([w + floats(*w.shape, seed=9) * 0.3 for w in layer.get_weights()])
    check_export(model, lambda B, T: floats(B, 5, 6, seed=B), tmp_path, shapes=[(3, 5), (1, 5)])
    check_export(model, lambda B, T: floats(B, T, 6, seed=B), tmp_path, predict_model=twin(model, (None, 6)))


def test_macbeth(tmp_path):
    model = Sequential([LSTM(8, input_shape=(None, 1), return_sequences=True), Dropout(0.2), LSTM(8), Dropout(0.2),
                        Dense(12, activation="softmax")])
    check_export(model, lambda B, T: floats(B, T, 1, seed=T), tmp_path)
    stacked = Sequential([Input(shape=(None, 4)), LSTM(6, return_sequences=True), Dropout(0.3),
                          LSTM(5, return_sequences=True), TimeDistributed(Dense(4, activation="softmax"))])
    check_export(stacked, lambda B, T: floats(B, T, 4, seed=T), tmp_path)


def test_imdb(tmp_path):
    model = imdb.build_model("tutorial", num_words=50)  # dropout and recurrent_dropout: inference ignores them
    check_export(model, lambda B, T: np.random.default_rng(T).integers(0, 50, size=(B, T)), tmp_path)


def test_bidirectional_masked_imdb(tmp_path):
    peer("onnx")
    model = Sequential([Input(shape=(None,), dtype="int32"), Embedding(30, 6, mask_zero=True),
                        Bidirectional(LSTM(5, return_sequences=True)), Bidirectional(LSTM(4)),
                        Dense(1, activation="sigmoid")])
    path = check_export(model, lambda B, T: padded_ids(B, T, 30, seed=B), tmp_path, shapes=[(4, 7), (5, 3)])
    onnx = peer("onnx")
    graph = onnx.load(str(path)).graph
    lstms = [node for node in graph.node if node.op_type == "LSTM"]
    assert len(lstms) == 2
    for node in lstms:
        assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "direction")) \
            == b"bidirectional"
        assert node.input[4], "masked batches must give the LSTM operator sequence_lens"
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT32


def test_seq2seq_repeat_vector(tmp_path):
    model = Sequential([Input(shape=(None, 5)), LSTM(8), RepeatVector(4), LSTM(8, return_sequences=True),
                        TimeDistributed(Dense(5, activation="softmax"))])
    check_export(model, lambda B, T: floats(B, T, 5, seed=T), tmp_path)


def test_seq2seq_encoder_decoder_with_states(tmp_path):
    train, encoder, decoder = seq2seq.build_models(tq=6, ta=4, units=8)
    v = len(seq2seq.VOCAB)
    check_export(train, lambda B, T: [floats(B, 6, v, seed=B), floats(B, 4, v, seed=B + 1)], tmp_path,
                 shapes=[(3, None), (1, None)])
    check_export(encoder, lambda B, T: floats(B, 6, v, seed=B), tmp_path, shapes=[(3, None), (1, None)])
    check_export(decoder, lambda B, T: [floats(B, 1, v, seed=B), floats(B, 8, seed=1), floats(B, 8, seed=2)],
                 tmp_path, shapes=[(3, None), (1, None)])


def test_torch_lstm_through_onnx(tmp_path):
    torch = peer("torch")
    from lstmfast.interop import from_torch_lstm
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).eval()
    model = from_torch_lstm(module, return_state=True)
    path = check_export(model, lambda B, T: floats(B, T, 3, seed=T), tmp_path)
    x = floats(2, 5, 3)
    with torch.no_grad():
        y, (h_n, c_n) = module(torch.from_numpy(x))
    out = ort_outputs(path, [x])
    assert_allclose(out[0], y.numpy(), rtol=ORT_RTOL, atol=ORT_ATOL)
    assert_allclose(np.stack(out[1::2]), h_n.numpy(), rtol=ORT_RTOL, atol=ORT_ATOL)
    assert_allclose(np.stack(out[2::2]), c_n.numpy(), rtol=ORT_RTOL, atol=ORT_ATOL)


def test_stateful_text_model_is_refused(tmp_path):
    peer("onnx")
    model = text.build_model(vocab_size=5, layers=1, units=4, dropout=0.0, batch_size=2)
    with pytest.raises(ValueError, match=r"LSTM 'lstm.*' is stateful; an ONNX graph keeps no state"):
        model.export(tmp_path / "text.onnx")
    assert not (tmp_path / "text.onnx").exists()


# ---------------------------------------------------------------------------------------------
# Masks: exact for any mask, not only right-padded batches
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["post", "any"])
def test_masked_lstm_variants(tmp_path, kind):
    ids = Input(shape=(None,), dtype="int32")
    emb = Embedding(20, 3, mask_zero=True)(ids)
    filled = LSTM(4, return_sequences=True)(emb)                           # masked steps repeat the last output
    backwards = LSTM(3, return_sequences=True, go_backwards=True)(filled)
    zeroed = LSTM(3, return_sequences=True, zero_output_for_mask=True, recurrent_activation="hard_sigmoid",
                  peephole=True)(emb)
    last = LSTM(2, zero_output_for_mask=True)(zeroed)
    outs = [backwards, last, LSTM(2, go_backwards=True)(emb)]
    for mode in ("concat", "sum", "ave", "mul", None):
        merged = Bidirectional(LSTM(2, return_sequences=True), merge_mode=mode)(emb)
        outs += merged if isinstance(merged, list) else [merged]
    outs += Bidirectional(LSTM(2, return_state=True), merge_mode="ave")(emb)
    model = Model(ids, outs)
    check_export(model, lambda B, T: padded_ids(B, T, 20, seed=T, kind=kind), tmp_path, shapes=[(4, 6), (8, 3)])


def test_masking_layer_initial_states_and_merges(tmp_path):
    x, h0, c0 = Input(shape=(None, 3)), Input(shape=(4,)), Input(shape=(4,))
    masked = Masking(mask_value=0.0)(x)
    seq, h, c = LSTM(4, return_sequences=True, return_state=True)(masked, initial_state=[h0, c0])
    joined = Concatenate()([seq, Dense(2, activation="tanh")(masked)])
    normed = BatchNormalization()(joined)
    states = [Dense(3)(h0), Dense(3)(c0), Dense(3)(h0), Dense(3)(c0)]
    both = Bidirectional(LSTM(3, return_sequences=True))(normed, initial_state=states)
    merged = Average()([Add()([both, both]), Subtract()([both, Activation("relu")(both)])])
    model = Model([x, h0, c0], [merged, h, c, Flatten()(RepeatVector(2)(h))])
    layer = model.get_layer(normed._history[0].name)
    layer.set_weights([w + floats(*w.shape, seed=4) ** 2 for w in layer.get_weights()])

    def inputs(B, T):
        data = floats(B, T, 3, seed=T)
        data[0, T // 2:] = 0.0  # right-padded
        if B > 1:
            data[1, :] = 0.0    # no step at all: the state stays the initial one
        if B > 2:
            data[2, 0] = 0.0    # a hole in front
        return [data, floats(B, 4, seed=1), floats(B, 4, seed=2)]

    check_export(model, inputs, tmp_path)


def test_activations_time_distributed_and_opset_18(tmp_path):
    x = Input(shape=(None, 3))
    outs = [Dense(2, activation=name)(x) for name in ("relu", "sigmoid", "hard_sigmoid", "softplus", "softsign",
                                                        "elu", "selu", "swish", "gelu", "exponential", None)]
    grid = Input(shape=(None, 4, 2))
    per_step = TimeDistributed(LSTM(3))(grid)  # an inner layer on [B*T, 4, 2]: reshaped around it
    model = Model([x, grid], outs + [per_step, TimeDistributed(Dense(2))(grid)])
    check_export(model, lambda B, T: [floats(B, T, 3, seed=1), floats(B, T, 4, 2, seed=2)], tmp_path)
    masked = Sequential([Input(shape=(None, 2)), Masking(), Bidirectional(LSTM(3, return_sequences=True),
                                                                          merge_mode="ave")])
    check_export(masked, lambda B, T: np.where(floats(B, T, 1) > 0.5, 0.0, floats(B, T, 2)), tmp_path, opset=18)


def test_float64_model(tmp_path):
    old = backend.floatx()
    backend.set_floatx("float64")
    try:
        model = Sequential([Input(shape=(None, 3)), LSTM(4), Dense(2)])
    finally:
        backend.set_floatx(old)
    check_export(model, lambda B, T: floats(B, T, 3), tmp_path)


# ---------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------

def test_unsupported_layer_is_named(tmp_path):
    peer("onnx")
    q = Input(shape=(None, 4))
    model = Model(q, Attention()([q, q]))
    with pytest.raises(ValueError, match=r"layer 'attention.*' \(Attention\) has no ONNX form here; supported "
                                         r"layers: .*Bidirectional.*Embedding.*LSTM.*TimeDistributed"):
        model.export(tmp_path / "a.onnx")
    model = Sequential([Input(shape=(None, 4)), LSTM(3, return_sequences=True), LayerNormalization()])
    with pytest.raises(ValueError, match=r"\(LayerNormalization\) has no ONNX form"):
        model.export(tmp_path / "b.onnx")
    x = Input(shape=(None, 4))
    dropped = Model(x, Dropout(0.5)(x, training=True))  # Monte-Carlo dropout
    with pytest.raises(ValueError, match=r"Dropout 'dropout.*' is called with training=True; its output is random"):
        dropped.export(tmp_path / "c.onnx")
    assert not list(tmp_path.iterdir())


def test_bad_arguments(tmp_path, monkeypatch):
    model = Sequential([Input(shape=(None, 2)), LSTM(3)])
    with pytest.raises(ValueError, match=r"format must be 'onnx'.*got 'tf_saved_model'"):
        model.export(tmp_path / "m", format="tf_saved_model")
    peer("onnx")
    with pytest.raises(ValueError, match=r"opset must be an int in \[15, 21\], got 9"):
        model.export(tmp_path / "m.onnx", opset=9)
    with pytest.raises(FileNotFoundError, match=r"filepath .*the directory .* does not exist"):
        model.export(tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match=r"is not built"):
        Sequential([LSTM(3)]).export(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"needs the onnx package: pip install onnx"):
        onnx_export.export_onnx(model, tmp_path / "m.onnx")
