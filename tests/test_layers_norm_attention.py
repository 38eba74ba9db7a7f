"""BatchNormalization, LayerNormalization, the element-wise merges, Attention, AdditiveAttention and
Lambda: finite-difference gradient checks in float64, Keras 3 parity of outputs, masks and gradients
(torch autograd through the Keras layer, same weights), BatchNormalization's moving statistics,
models that train, save and load with them, configs and errors."""
import importlib
import json
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
    Add,
    AdditiveAttention,
    Attention,
    Average,
    BatchNormalization,
    Concatenate,
    Dense,
    Embedding,
    Input,
    Lambda,
    LayerNormalization,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
)
from lstmfast.models import Model, Sequential

B, T, C = 3, 5, 4
# float32 lstmfast versus Keras 3 on the torch backend (float32 both; Keras computes some ops,
# e.g. BatchNormalization's statistics, in float32 whatever the layer dtype).
KERAS_ATOL, KERAS_RTOL = 2e-5, 2e-5
KERAS_GRAD_ATOL, KERAS_GRAD_RTOL = 1e-4, 1e-4
MERGES = [Add, Subtract, Multiply, Average, Maximum, Minimum]


@pytest.fixture
def rng():
    backend.set_random_seed(1234)
    return np.random.default_rng(20240607)


class TrainableView:
    """A layer seen by ``check_gradients`` with only the weights it trains (in inference the output
    depends on the moving statistics, and a frozen layer's on all its weights, whose gradients
    lstmfast leaves at zero)."""

    def __init__(self, layer):
        self.layer, self.name = layer, layer.name
        trained = {id(w) for w in layer.trainable_weights}
        self.weights = {k: w for k, w in layer.weights.items() if id(w) in trained}
        self.grads = {k: layer.grads[k] for k in self.weights}

    def forward(self, *args, **kwargs):
        return self.layer.forward(*args, **kwargs)

    def backward(self, *args):
        return self.layer.backward(*args)

    def reset_states(self):
        self.layer.reset_states()

    def zero_grads(self):
        self.layer.zero_grads()


def randomize(layer, rng, positive=("moving_variance",)):
    """Non-default weights, so that parity and gradient checks see every term."""
    for key, w in layer.weights.items():
        values = rng.uniform(0.5, 1.5, w.shape) if key in positive else rng.standard_normal(w.shape) * 0.7
        w[...] = values
    return layer


def post_mask(b=B, t=T):
    """A [b, t] mask whose rows keep the first step (no row is fully masked)."""
    lengths = np.arange(b) % t + 1
    return np.arange(t)[None, :] < lengths[::-1, None]


# ---------------------------------------------------------------------------------------------
# Finite-difference gradients (float64).
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, shape, mask_kind", [
    (dict(), (B, C), None),
    (dict(), (B, T, C), None),
    (dict(), (B, T, C), "post"),
    (dict(), (B, T, C), "arbitrary"),
    (dict(axis=1), (B, T, C), None),
    (dict(axis=1, center=False), (B, T, C), None),
    (dict(scale=False, momentum=0.5, epsilon=0.1), (B, T, C), "pre"),
    (dict(center=False, scale=False), (B, T, C), None),
])
def test_batch_normalization_gradients_training(float64, rng, options, shape, mask_kind):
    layer = randomize(built(BatchNormalization(**options), shape), rng)
    mask = None if mask_kind is None else masks(mask_kind)
    check_gradients(layer, rng.standard_normal(shape) * 2 + 1, mask=mask, training=True)
    assert not layer.grads["moving_mean"].any() and not layer.grads["moving_variance"].any()


@pytest.mark.parametrize("options", [dict(), dict(axis=1), dict(center=False, scale=False)])
def test_batch_normalization_gradients_inference(float64, rng, options):
    layer = randomize(built(BatchNormalization(**options), (B, T, C)), rng)
    x = rng.standard_normal((B, T, C))
    check_gradients(TrainableView(layer), x, mask=masks("post"))
    assert not layer.grads["moving_mean"].any() and not layer.grads["moving_variance"].any()
    frozen = randomize(built(BatchNormalization(trainable=False), (B, T, C)), rng)
    before = frozen.get_weights()
    check_gradients(TrainableView(frozen), x, training=True)  # frozen: inference mode, as Keras
    for a, b in zip(before, frozen.get_weights()):
        assert_array_equal(a, b)
    assert not any(g.any() for g in frozen.grads.values())


@pytest.mark.parametrize("options, shape", [
    (dict(), (B, C)),
    (dict(), (B, T, C)),
    (dict(axis=1), (B, T, C)),
    (dict(axis=[1, 2]), (B, T, C)),
    (dict(axis=[-1, 1], epsilon=0.5), (B, T, C)),
    (dict(center=False), (B, T, C)),
    (dict(scale=False, center=False), (B, T, C)),
])
def test_layer_normalization_gradients(float64, rng, options, shape):
    layer = randomize(built(LayerNormalization(**options), shape), rng)
    check_gradients(layer, rng.standard_normal(shape) * 2 + 0.5, mask=masks("post") if len(shape) == 3 else None)


def test_layer_normalization_rms_scaling_gradients(float64, rng):
    with pytest.warns(UserWarning, match="rms_scaling=True is deprecated"):
        layer = LayerNormalization(rms_scaling=True)
    randomize(built(layer, (B, T, C)), rng)
    assert list(layer.weights) == ["gamma"]
    check_gradients(layer, rng.standard_normal((B, T, C)) + 0.5)


MERGE_SHAPES = {"two": [(B, T, C), (B, T, C)], "three": [(B, T, C), (B, T, C), (B, T, C)],
                "rank": [(B, T, C), (B, C)], "ones": [(B, 1, C), (B, T, 1)]}


@pytest.mark.parametrize("cls, shapes", [(cls, shapes) for cls in MERGES for name, shapes in MERGE_SHAPES.items()
                                         if not (cls is Subtract and name == "three")],
                         ids=[f"{cls.__name__}-{name}" for cls in MERGES for name in MERGE_SHAPES
                              if not (cls is Subtract and name == "three")])
def test_merge_gradients(float64, rng, cls, shapes):
    xs = [rng.standard_normal(s) for s in shapes]
    layer = built(cls(), *shapes)
    out = check_gradients(layer, xs)
    assert out.shape == np.broadcast_shapes(*[(s[0],) + (1,) * (3 - len(s)) + s[1:] for s in shapes])


@pytest.mark.parametrize("cls", MERGES)
@pytest.mark.parametrize("which", ["all", "some"])
def test_merge_gradients_masked(float64, rng, cls, which):
    n = 2 if cls is Subtract else 3
    xs = [rng.standard_normal((B, T, C)) for _ in range(n)]
    given = [masks("post"), masks("pre"), masks("arbitrary")][:n]
    if which == "some":
        given[1] = None
    layer = built(cls(), *[x.shape for x in xs])
    check_gradients(layer, xs, mask=given)
    expected = None if which == "some" else np.logical_or.reduce(given)
    got = layer.compute_mask(xs, given)
    assert (got is None) if expected is None else np.array_equal(got, expected)


ATTENTION_CASES = [
    ("dot", dict(), {}),
    ("dot_scale", dict(use_scale=True), {}),
    ("concat", dict(score_mode="concat"), {}),
    ("concat_scale", dict(score_mode="concat", use_scale=True), {}),
    ("additive", "additive", {}),
    ("additive_no_scale", "additive_no_scale", {}),
    ("dot_causal", dict(use_scale=True), dict(use_causal_mask=True)),
    ("concat_causal", dict(score_mode="concat"), dict(use_causal_mask=True)),
    ("additive_causal", "additive", dict(use_causal_mask=True)),
    ("dot_scores", dict(use_scale=True), dict(return_attention_scores=True)),
    ("additive_scores_causal", "additive", dict(return_attention_scores=True, use_causal_mask=True)),
]


def make_attention(options, **extra):
    if options == "additive":
        return AdditiveAttention(**extra)
    if options == "additive_no_scale":
        return AdditiveAttention(use_scale=False, **extra)
    return Attention(**options, **extra)


@pytest.mark.parametrize("n_inputs", [2, 3])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "masked"])
@pytest.mark.parametrize("case, options, kwargs", ATTENTION_CASES, ids=[c[0] for c in ATTENTION_CASES])
def test_attention_gradients(float64, rng, case, options, kwargs, masked, n_inputs):
    tq, tv, d = 4, 5, 3
    xs = [rng.standard_normal((B, tq, d)), rng.standard_normal((B, tv, d)), rng.standard_normal((B, tv, d))][:n_inputs]
    layer = randomize(built(make_attention(options), *[x.shape for x in xs]), rng)
    mask = None
    if masked:
        mask = [post_mask(B, tq)[::-1].copy(), post_mask(B, tv)] + [None] * (n_inputs - 2)
    layer_forward = layer.forward

    def forward(inputs, training=False, mask=None):
        return layer_forward(inputs, training, mask, **kwargs)

    layer.forward = forward
    out = check_gradients(layer, xs, mask=mask)
    if kwargs.get("return_attention_scores"):
        assert isinstance(out, list) and out[1].shape == (B, tq, tv)


@pytest.mark.parametrize("make", [lambda: Attention(dropout=0.4), lambda: AdditiveAttention(dropout=0.4)],
                         ids=["attention", "additive"])
def test_attention_gradients_dropout_fixed_seed(float64, rng, make):
    xs = [rng.standard_normal((B, 4, 3)), rng.standard_normal((B, T, 3))]
    layer = randomize(built(make(), *[x.shape for x in xs]), rng)
    check_gradients(layer, xs, mask=[None, post_mask()], training=True, seed=11)
    dropped, _ = layer.forward(xs, training=True)
    assert not np.allclose(dropped, layer.call(xs))  # dropout acted in training, not in inference


def test_attention_dropout_seed_and_scores(rng):
    xs = [rng.standard_normal((B, 4, 3)).astype(np.float32), rng.standard_normal((B, T, 3)).astype(np.float32)]
    a, b = Attention(dropout=0.5, seed=3), Attention(dropout=0.5, seed=3)
    out_a, scores_a = a(xs, training=True, return_attention_scores=True)
    out_b, scores_b = b(xs, training=True, return_attention_scores=True)
    assert_array_equal(out_a, out_b)
    assert_array_equal(scores_a, scores_b)
    assert set(np.unique(scores_a[scores_a == 0])) == {0.0} and (scores_a == 0).mean() > 0.2
    assert_allclose(out_a, scores_a @ xs[1], rtol=1e-5, atol=1e-6)  # the returned scores are the dropped weights


def test_attention_backward_with_missing_output_gradients(float64, rng):
    xs = [rng.standard_normal((B, 4, 3)), rng.standard_normal((B, T, 3))]
    layer = randomize(built(Attention(use_scale=True), *[x.shape for x in xs]), rng)
    (out, scores), cache = layer.forward(xs, return_attention_scores=True)
    g = rng.standard_normal(scores.shape)
    layer.zero_grads()
    with_none = layer.backward(cache, [None, g])
    scale_grad = layer.grads["scale"].copy()
    layer.zero_grads()
    with_zeros = layer.backward(layer.forward(xs, return_attention_scores=True)[1], [np.zeros(out.shape), g])
    for a, b in zip(with_none, with_zeros):
        assert_allclose(a, b, rtol=1e-12)
    assert_allclose(scale_grad, layer.grads["scale"], rtol=1e-12) and scale_grad != 0


def test_lambda_gradients_with_backward(float64, rng):
    square = Lambda(lambda x, power: x ** power, arguments={"power": 3},
                    backward=lambda x, g, power: g * power * x ** (power - 1))
    check_gradients(square, rng.standard_normal((B, T, C)))
    pair = Lambda(lambda xs: xs[0] * xs[1], backward=lambda xs, g: [g * xs[1], g * xs[0]])
    check_gradients(pair, [rng.standard_normal((B, C)), rng.standard_normal((B, C))])


# ---------------------------------------------------------------------------------------------
# BatchNormalization's statistics and the non-trainable weights protocol.
# ---------------------------------------------------------------------------------------------

def test_batch_normalization_statistics(rng):
    layer = built(BatchNormalization(momentum=0.8), (None, T, C))
    assert list(layer.weights) == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert layer.non_trainable == {"moving_mean", "moving_variance"}
    assert [w.shape for w in layer.trainable_weights] == [(C,), (C,)]
    assert len(layer.non_trainable_weights) == 2 and layer.count_params() == 4 * C
    x = (rng.standard_normal((B, T, C)) * 3 + 2).astype(np.float32)
    mean_before = layer.weights["moving_mean"]
    y = layer(x, training=True)
    assert_allclose(y.reshape(-1, C).mean(0), 0, atol=1e-5)
    assert_allclose(y.reshape(-1, C).var(0), x.reshape(-1, C).var(0) / (x.reshape(-1, C).var(0) + 1e-3), rtol=1e-4)
    assert layer.weights["moving_mean"] is mean_before  # updated in place
    assert_allclose(layer.weights["moving_mean"], 0.2 * x.reshape(-1, C).mean(0), rtol=1e-5)
    assert_allclose(layer.weights["moving_variance"], 0.8 + 0.2 * x.reshape(-1, C).var(0), rtol=1e-5)
    stats = [w.copy() for w in layer.get_weights()]
    inference = layer(x)  # inference: the moving statistics, nothing updated
    for a, b in zip(stats, layer.get_weights()):
        assert_array_equal(a, b)
    expected = (x - stats[2]) / np.sqrt(stats[3] + 1e-3)
    assert_allclose(inference, expected, rtol=1e-5, atol=1e-5)
    masked = built(BatchNormalization(momentum=0.0), (None, T, C))
    mask = masks("arbitrary")
    masked(x, training=True, mask=mask)
    assert_allclose(masked.weights["moving_mean"], x[mask].mean(0), rtol=1e-5)
    assert_allclose(masked.weights["moving_variance"], x[mask].var(0), rtol=1e-4)


def test_non_trainable_protocol_in_wrappers_and_models():
    bn = BatchNormalization()
    wrapped = layers.TimeDistributed(bn)
    wrapped.build((None, T, C))
    assert len(wrapped.trainable_pairs()) == 2 and len(wrapped.non_trainable_weights) == 2
    dense = built(Dense(3), (None, C))
    assert [w for _, w in dense.trainable_pairs()] == dense.trainable_weights
    dense.trainable = False
    assert dense.trainable_pairs() == [] and len(dense.non_trainable_weights) == 2


# ---------------------------------------------------------------------------------------------
# Symbolic shapes and masks.
# ---------------------------------------------------------------------------------------------

def test_symbolic_shapes():
    x = Input((None, C))
    assert BatchNormalization()(x).shape == (None, None, C)
    assert LayerNormalization(axis=[1, 2])(Input((T, C))).shape == (None, T, C)
    assert Add()([x, Input((C,))]).shape == (None, None, C)
    assert Multiply()([Input((1, C)), Input((T, 1))]).shape == (None, T, C)
    assert Maximum()([Input((T, C), batch_size=2), Input((T, C))]).shape == (2, T, C)
    q, v, k = Input((4, 3)), Input((None, 6)), Input((None, 3))
    assert Attention()([q, k]).shape == (None, 4, 3)
    assert Attention()([q, v, k]).shape == (None, 4, 6)
    out, scores = Attention()([q, v, k], return_attention_scores=True)
    assert out.shape == (None, 4, 6) and scores.shape == (None, 4, None)
    assert AdditiveAttention()([q, Input((7, 3))]).shape == (None, 4, 3)
    assert Lambda(lambda t: t[:, :, :2])(Input((T, C))).shape == (None, T, 2)
    assert Lambda(lambda t: t.sum(axis=1))(x).shape == (None, C)
    assert Lambda(lambda t: t, output_shape=(9,))(x).shape == (None, 9)
    assert Lambda(lambda t: t, output_shape=lambda s: (s[0], 1))(x).shape == (None, 1)
    first, second = Lambda(lambda ts: [ts[0] * 2, ts[1][:, 0]])([Input((T, C)), Input((T, 2))])
    assert first.shape == (None, T, C) and second.shape == (None, 2)


def test_masks_propagate_as_keras(rng):
    ids = rng.integers(1, 9, (B, T))
    ids[~masks("post")] = 0
    emb = Embedding(10, C, mask_zero=True)
    e, m = emb(ids), emb.compute_mask(ids)
    assert_array_equal(BatchNormalization().compute_mask(e, m), m)
    assert_array_equal(LayerNormalization().compute_mask(e, m), m)
    assert_array_equal(Add().compute_mask([e, e], [m, ~m]), np.ones_like(m))
    assert Add().compute_mask([e, e], [m, None]) is None and Add().compute_mask([e, e], None) is None
    att = Attention()
    assert_array_equal(att.compute_mask([e, e], [m, None]), m)
    assert att.compute_mask([e, e], [None, m]) is None
    q_mask, score_mask = att.compute_mask([e, e], [m, m], return_attention_scores=True)
    assert_array_equal(q_mask, m) and score_mask is None
    assert Lambda(lambda t: t).compute_mask(e, m) is None  # no mask argument: the mask is dropped
    assert_array_equal(Lambda(lambda t: t, mask=lambda t, mk: ~mk).compute_mask(e, m), ~m)
    fixed = np.ones((B, T), bool)
    assert Lambda(lambda t: t, mask=fixed).compute_mask(e, m) is fixed
    out = Attention()([e, e], mask=[m, masks("pre")])
    assert not out[~m].any() and out[m].any()  # masked query rows are zero
    # In a model: the masks reach the merge and the attention, and the query mask comes out.
    inp = Input((T,), dtype="int32")
    seq = Embedding(10, C, mask_zero=True)(inp)
    norm = LayerNormalization()(BatchNormalization()(seq))
    attended = Attention()([norm, seq])
    model = Model(inp, Add()([attended, norm]))
    values, out_masks, _ = model._run([ids], training=False, keep_caches=False)
    assert_array_equal(out_masks[model._output_ids[0]], ids != 0)


# ---------------------------------------------------------------------------------------------
# Keras 3 parity (skipped without keras).
# ---------------------------------------------------------------------------------------------

def keras_weights(layer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's variables warn on NumPy 2's __array__(copy=...)
        return layer.get_weights()


def keras_layer(layer, shapes, weights):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer.build(shapes)
        layer.set_weights(weights)
    return layer


def keras_run(keras, layer, inputs, grad_outputs, keras_masks=None, **call_kwargs):
    """(outputs, input grads, trainable-weight grads, output masks) of a Keras layer called
    eagerly on torch tensors, with the loss ``sum(out * grad_out)``. ``keras_masks``: masks set
    on the input tensors (``_keras_mask``, as in a Keras model)."""
    import torch
    masking = importlib.import_module("keras.src.backend")
    listed = isinstance(inputs, list)
    tensors = [torch.tensor(x, requires_grad=True) for x in (inputs if listed else [inputs])]
    for t, m in zip(tensors, keras_masks or []):
        if m is not None:
            masking.set_keras_mask(t, torch.tensor(m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = layer(tensors if listed else tensors[0], **call_kwargs)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    grads = grad_outputs if isinstance(grad_outputs, list) else [grad_outputs]
    loss = sum((o * torch.tensor(g)).sum() for o, g in zip(outs, grads))
    loss.backward()
    input_grads = [np.zeros(x.shape, np.float32) if t.grad is None else t.grad.numpy() for t, x in
                   zip(tensors, inputs if listed else [inputs])]
    weight_grads = [v.value.grad.numpy() for v in layer.trainable_weights]
    out_masks = [masking.get_keras_mask(o) for o in outs]
    out_masks = [None if mk is None else mk.numpy() for mk in out_masks]
    values = [o.detach().numpy() for o in outs]
    return values, input_grads, weight_grads, out_masks


def compare_with_keras(keras, ours, theirs, inputs, rng, mask=None, keras_masks=None, training=False,
                       **call_kwargs):
    """Outputs, input gradients and trainable-weight gradients of ``ours`` and Keras's ``theirs``."""
    out, cache = ours.forward(inputs, training, mask, **call_kwargs)
    outs = out if isinstance(out, list) else [out]
    grads = [rng.standard_normal(o.shape).astype(np.float32) for o in outs]
    ours.zero_grads()
    dx = ours.backward(cache, grads if isinstance(out, list) else grads[0])
    kwargs = dict(call_kwargs)
    if mask is not None and keras_masks is None:
        kwargs["mask"] = mask
    if training:
        kwargs["training"] = True
    values, input_grads, weight_grads, _ = keras_run(keras, theirs, inputs, grads if isinstance(out, list)
                                                     else grads[0], keras_masks, **kwargs)
    for a, b in zip(outs, values):
        assert_allclose(a, b, atol=KERAS_ATOL, rtol=KERAS_RTOL)
    for a, b in zip(dx if isinstance(dx, list) else [dx], input_grads):
        assert_allclose(a, b, atol=KERAS_GRAD_ATOL, rtol=KERAS_GRAD_RTOL)
    ours_w = [g for g, _ in ours.trainable_pairs()]
    assert len(ours_w) == len(weight_grads)
    for a, b in zip(ours_w, weight_grads):
        assert_allclose(a, b, atol=KERAS_GRAD_ATOL, rtol=KERAS_GRAD_RTOL)


@pytest.mark.parametrize("options, shape, mask_kind, training", [
    (dict(), (B, T, C), None, True),
    (dict(), (B, T, C), "arbitrary", True),
    (dict(), (B, T, C), "post", False),
    (dict(axis=1, momentum=0.5), (B, T, C), None, True),
    (dict(center=False, epsilon=0.01), (B, C), None, True),
    (dict(scale=False), (B, T, C), None, False),
])
def test_keras_parity_batch_normalization(keras, rng, options, shape, mask_kind, training):
    ours = randomize(built(BatchNormalization(**options), shape), rng)
    theirs = keras_layer(keras.layers.BatchNormalization(**options), shape, ours.get_weights())
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    mask = None if mask_kind is None else masks(mask_kind)
    compare_with_keras(keras, ours, theirs, x, rng, mask=mask, training=training)
    for a, b in zip(ours.get_weights(), keras_weights(theirs)):  # the moving statistics after one step
        assert_allclose(a, b, atol=KERAS_ATOL, rtol=KERAS_RTOL)


def test_keras_parity_batch_normalization_moving_statistics(keras, rng):
    ours = randomize(built(BatchNormalization(momentum=0.7), (None, T, C)), rng)
    theirs = keras_layer(keras.layers.BatchNormalization(momentum=0.7), (None, T, C), ours.get_weights())
    for step in range(6):
        x = (rng.standard_normal((B + step, T, C)) * (step + 1) + step).astype(np.float32)
        mask = None if step % 2 else rng.random((B + step, T)) < 0.7
        ours(x, training=True, mask=mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs(x, training=True, mask=mask)
    for a, b in zip(ours.get_weights(), keras_weights(theirs)):
        assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    values, _, _, _ = keras_run(keras, theirs, x, np.zeros(x.shape, np.float32))
    assert_allclose(ours(x), values[0], atol=KERAS_ATOL, rtol=KERAS_RTOL)


@pytest.mark.parametrize("options, shape", [
    (dict(), (B, T, C)),
    (dict(axis=[1, 2], epsilon=0.1), (B, T, C)),
    (dict(axis=[-2, -1], scale=False), (B, T, C)),
    (dict(center=False), (B, C)),
    (dict(rms_scaling=True), (B, T, C)),
])
def test_keras_parity_layer_normalization(keras, rng, options, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rms_scaling's deprecation warning (ours and Keras's)
        ours = randomize(built(LayerNormalization(**options), shape), rng)
        theirs = keras_layer(keras.layers.LayerNormalization(**options), shape, ours.get_weights())
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    compare_with_keras(keras, ours, theirs, x, rng)


@pytest.mark.parametrize("cls", MERGES)
@pytest.mark.parametrize("case", ["plain", "rank", "masked_all", "masked_some"])
def test_keras_parity_merges(keras, rng, cls, case):
    n = 2 if cls is Subtract else 3
    shapes = [(B, T, C)] * n
    if case == "rank":
        shapes = [(B, T, C), (B, C)] + [(B, 1, C)] * (n - 2)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    given = None
    if case.startswith("masked"):
        given = [masks("post"), masks("pre"), masks("arbitrary")][:n]
        if case == "masked_some":
            given[0] = None
    ours = built(cls(), *shapes)
    theirs = keras_layer(getattr(keras.layers, cls.__name__)(), shapes, [])
    compare_with_keras(keras, ours, theirs, xs, rng, mask=given, keras_masks=given)
    _, _, _, keras_mask = keras_run(keras, theirs, xs, np.zeros(ours.call(xs, mask=given).shape, np.float32), given)
    ours_mask = ours.compute_mask(xs, given)
    if keras_mask[0] is None:  # Keras sets the mask only where it has one
        assert ours_mask is None
    else:
        assert_array_equal(ours_mask, keras_mask[0])
    keras_shape = theirs.compute_output_shape([(None,) + s[1:] for s in shapes])
    assert ours.compute_output_shape([(None,) + s[1:] for s in shapes]) == tuple(keras_shape)


KERAS_ATTENTION_CASES = [
    ("dot", dict(), {}),
    ("dot_scale", dict(use_scale=True), {}),
    ("concat_scale", dict(score_mode="concat", use_scale=True), {}),
    ("concat", dict(score_mode="concat"), {}),
    ("dot_causal_scores", dict(use_scale=True), dict(use_causal_mask=True, return_attention_scores=True)),
    ("concat_causal", dict(score_mode="concat"), dict(use_causal_mask=True)),
]


@pytest.mark.parametrize("n_inputs", [2, 3])
@pytest.mark.parametrize("mask_kind", [None, "values", "both", "empty_row"])
@pytest.mark.parametrize("case, options, kwargs", KERAS_ATTENTION_CASES, ids=[c[0] for c in KERAS_ATTENTION_CASES])
def test_keras_parity_attention(keras, rng, case, options, kwargs, mask_kind, n_inputs):
    tq, tv, d = 4, T, 3
    xs = [rng.standard_normal(s).astype(np.float32) for s in [(B, tq, d), (B, tv, d), (B, tv, d)][:n_inputs]]
    shapes = [x.shape for x in xs]
    ours = randomize(built(Attention(**options), *shapes), rng)
    theirs = keras_layer(keras.layers.Attention(**options), shapes, ours.get_weights())
    mask = None
    if mask_kind is not None:
        value_mask = masks("post") if mask_kind != "empty_row" else masks("arbitrary")  # row 1: no key at all
        mask = [masks("pre")[:, :tq] if mask_kind != "values" else None, value_mask]
    compare_with_keras(keras, ours, theirs, xs, rng, mask=mask, **kwargs)
    assert tuple(theirs.compute_output_shape([(None,) + s[1:] for s in shapes])) == \
        ours.compute_output_shape([(None,) + s[1:] for s in shapes])


@pytest.mark.parametrize("options", [dict(), dict(use_scale=False)])
@pytest.mark.parametrize("kwargs", [{}, dict(use_causal_mask=True, return_attention_scores=True)])
def test_keras_parity_additive_attention(keras, rng, options, kwargs):
    xs = [rng.standard_normal(s).astype(np.float32) for s in [(B, 4, 3), (B, T, 3), (B, T, 3)]]
    shapes = [x.shape for x in xs]
    ours = randomize(built(AdditiveAttention(**options), *shapes), rng)
    theirs = keras_layer(keras.layers.AdditiveAttention(**options), shapes, ours.get_weights())
    compare_with_keras(keras, ours, theirs, xs, rng, mask=[masks("pre")[:, :4], masks("post")], **kwargs)


def test_keras_parity_configs_and_counts(keras):
    pairs = [
        (BatchNormalization(axis=1, momentum=0.9, epsilon=0.01, center=False), (None, T, C),
         ["axis", "momentum", "epsilon", "center", "scale"]),
        (LayerNormalization(axis=[1, 2], epsilon=0.1, scale=False), (None, T, C),
         ["axis", "epsilon", "center", "scale", "rms_scaling"]),
        (Attention(use_scale=True, score_mode="concat", dropout=0.25, seed=4), [(None, 4, 3), (None, T, 3)],
         ["use_scale", "score_mode", "dropout", "seed"]),
        (AdditiveAttention(use_scale=False, dropout=0.5), [(None, 4, 3), (None, T, 3)],
         ["use_scale", "dropout", "seed"]),
        (Add(), [(None, C), (None, C)], []),
    ]
    for ours, shape, keys in pairs:
        config = ours.get_config()
        assert set(keys) <= set(config)
        cls = getattr(keras.layers, type(ours).__name__)
        theirs = cls.from_config({k: config[k] for k in keys})
        theirs_config = theirs.get_config()
        for k in keys:
            assert config[k] == theirs_config[k], (type(ours).__name__, k)
        built(ours, *(shape if isinstance(shape, list) else [shape]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.build(shape)
        assert ours.count_params() == theirs.count_params()
        assert [w.shape for w in ours.get_weights()] == [tuple(w.shape) for w in keras_weights(theirs)]
        assert sum(w.size for w in ours.trainable_weights) == \
            sum(int(np.prod(w.shape)) for w in theirs.trainable_weights)


# ---------------------------------------------------------------------------------------------
# Models.
# ---------------------------------------------------------------------------------------------

VOCAB, SRC_T, TGT_T, START = 9, 6, 6, 1


def seq2seq_data(rng, n):
    """Reverse a sequence of tokens 2..VOCAB-1 of random length (0-padded)."""
    src = np.zeros((n, SRC_T), np.int32)
    for row, length in zip(src, rng.integers(3, SRC_T + 1, n)):
        row[:length] = rng.integers(2, VOCAB, length)
    target = np.zeros((n, TGT_T), np.int32)
    for t_row, s_row in zip(target, src):
        tokens = s_row[s_row != 0][::-1]
        t_row[:len(tokens)] = tokens
    dec_in = np.concatenate([np.full((n, 1), START, np.int32), target[:, :-1]], axis=1)
    dec_in[target == 0] = 0
    return src, dec_in, target


def seq2seq_attention_model(units=24):
    enc_in = Input((SRC_T,), dtype="int32", name="source")
    enc_emb = Embedding(VOCAB, 12, mask_zero=True)(enc_in)
    enc_seq, h, c = LSTM(units, return_sequences=True, return_state=True)(enc_emb)
    dec_in = Input((TGT_T,), dtype="int32", name="target_in")
    dec_emb = Embedding(VOCAB, 12, mask_zero=True)(dec_in)
    dec_seq = LSTM(units, return_sequences=True)(dec_emb, initial_state=[h, c])
    context = Attention(use_scale=True)([dec_seq, enc_seq])
    merged = Concatenate()([dec_seq, context])
    out = Dense(VOCAB, activation="softmax")(merged)
    return Model([enc_in, dec_in], out)


def test_seq2seq_attention_model_trains_saves_and_loads(rng, tmp_path):
    backend.set_random_seed(3)
    model = seq2seq_attention_model()
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    src, dec_in, target = seq2seq_data(rng, 96)
    history = model.fit([src, dec_in], target, batch_size=16, epochs=6, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    path = tmp_path / "s2s_attention.lstmfast"
    model.save(path)
    loaded = lstmfast.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    test_src, test_dec, _ = seq2seq_data(rng, 8)
    assert_array_equal(model.predict([test_src, test_dec], verbose=0), loaded.predict([test_src, test_dec], verbose=0))
    # training resumes identically (the optimizer state was saved)
    for m in (model, loaded):
        m.train_on_batch([src[:16], dec_in[:16]], target[:16])
    assert_allclose(model.predict([test_src, test_dec], verbose=0), loaded.predict([test_src, test_dec], verbose=0),
                    rtol=1e-5, atol=1e-6)


def test_seq2seq_attention_model_gradients(float64):
    backend.set_random_seed(5)
    model = seq2seq_attention_model(units=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    src, dec_in, target = seq2seq_data(np.random.default_rng(5), 3)
    check_model_gradients(model, [src, dec_in], [target], samples_per_weight=6)


def test_call_kwargs_in_functional_models_are_kept_and_saved(rng, tmp_path):
    x = Input((T, C))
    query = Dense(C)(x)
    attended, scores = Attention(use_scale=True)([query, x], use_causal_mask=True, return_attention_scores=True)
    out = LayerNormalization()(Add()([attended, x]))
    model = Model(x, [out, scores])
    node = scores._history[0]._inbound_nodes[0]
    assert node.layer_kwargs == {"use_causal_mask": True, "return_attention_scores": True}
    data = rng.standard_normal((B, T, C)).astype(np.float32)
    got_out, got_scores = model.predict(data, verbose=0)
    assert_allclose(np.triu(got_scores, 1), 0, atol=1e-6)  # causal: no weight on later steps
    layer = scores._history[0]
    eager_out, eager_scores = layer([query._history[0](data), data], use_causal_mask=True,
                                    return_attention_scores=True)
    assert_allclose(got_scores, eager_scores, rtol=1e-6)
    model.compile(optimizer="adam", loss=["mse", "mse"])
    model.fit(data, [data, got_scores], epochs=2, verbose=0)
    path = tmp_path / "causal.lstmfast"
    model.save(path)
    steps = model.get_config()["steps"]
    assert any(s.get("kwargs") == {"use_causal_mask": True, "return_attention_scores": True} for s in steps)
    loaded = lstmfast.load_model(path)
    for a, b in zip(model.predict(data, verbose=0), loaded.predict(data, verbose=0)):
        assert_array_equal(a, b)


def test_batch_normalization_in_sequential_model(rng, tmp_path):
    backend.set_random_seed(8)
    model = Sequential([Input((C,)), BatchNormalization(momentum=0.9), Dense(8, activation="tanh"),
                        BatchNormalization(), Dense(1)])
    model.compile(optimizer=optimizers.AdamW(learning_rate=0.02, weight_decay=0.2), loss="mse")
    bn = model.layers[0]
    moving = [bn.weights["moving_mean"], bn.weights["moving_variance"]]
    assert all(all(w is not m for w in model.trainable_weights) for m in moving)
    assert len(model.trainable_weights) == 8 and len(model.non_trainable_weights) == 4
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    total = 4 * C + (C * 8 + 8) + 4 * 8 + 9
    assert model.count_params() == total
    assert f"Total params: {total:,}" in text and f"Non-trainable params: {2 * C + 2 * 8:,}" in text
    x = (rng.standard_normal((64, C)) * 3 + 5).astype(np.float32)
    y = (x @ rng.standard_normal((C, 1)) / 5).astype(np.float32)
    # One step: the first layer's moving statistics move by the momentum rule only (weight decay
    # would shrink them too if the optimizer touched them).
    model.train_on_batch(x[:32], y[:32])
    assert_allclose(bn.weights["moving_mean"], 0.1 * x[:32].mean(0), rtol=1e-5)
    assert_allclose(bn.weights["moving_variance"], 0.9 + 0.1 * x[:32].var(0), rtol=1e-5)
    history = model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.optimizer.iterations == 1 + 15 * 4
    path = tmp_path / "bn.lstmfast"
    model.save(path)
    loaded = lstmfast.load_model(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert_array_equal(a, b)
    assert_array_equal(loaded.layers[0].weights["moving_mean"], bn.weights["moving_mean"])
    assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert_allclose(model.evaluate(x, y, verbose=0), loaded.evaluate(x, y, verbose=0), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Lambda.
# ---------------------------------------------------------------------------------------------

def test_lambda_forward_arguments_mask_and_training(rng):
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    scaled = Lambda(lambda t, factor: t * factor, arguments={"factor": 3.0})
    assert_allclose(scaled(x), 3 * x)
    seen = {}

    def spy(t, mask=None, training=None):
        seen["mask"], seen["training"] = mask, training
        return t

    Lambda(spy)(x, training=True, mask=masks("post"))
    assert seen["training"] is True and seen["mask"] is not None


def test_lambda_in_models(rng, tmp_path):
    x = rng.standard_normal((32, T, C)).astype(np.float32)
    y = rng.standard_normal((32, 1)).astype(np.float32)
    # Before any weight (preprocessing): no backward needed, fit works without one.
    model = Sequential([Input((T, C)), Lambda(lambda t: t * 0.5, name="halve"), LSTM(4), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.predict(x, verbose=0).shape == (32, 1)
    with pytest.raises(ValueError, match="Lambda layer 'halve' cannot be serialised"):
        model.save(tmp_path / "lambda.lstmfast")
    assert not (tmp_path / "lambda.lstmfast").exists()
    model.save_weights(tmp_path / "lambda.weights")
    # After a weight, training needs the backward pass.
    stuck = Sequential([Input((T, C)), LSTM(4), Lambda(lambda t: t ** 2, name="square"), Dense(1)])
    stuck.compile(optimizer="adam", loss="mse")
    assert stuck.evaluate(x, y, verbose=0) > 0
    with pytest.raises(NotImplementedError, match="Lambda 'square' has no backward pass.*backward="):
        stuck.fit(x, y, epochs=1, verbose=0)
    backend.set_random_seed(2)
    fine = Sequential([Input((T, C)), LSTM(4), Lambda(lambda t: t ** 2, backward=lambda t, g: 2 * t * g), Dense(1)])
    fine.compile(optimizer=optimizers.Adam(0.02), loss="mse")
    history = fine.fit(x, y, epochs=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


# ---------------------------------------------------------------------------------------------
# Configs and errors.
# ---------------------------------------------------------------------------------------------

CONFIG_CASES = [
    (lambda: BatchNormalization(axis=1, momentum=0.9, epsilon=0.01, center=False, gamma_initializer="glorot_uniform",
                                moving_variance_initializer="ones", name="bn"), [(B, T, C)], False),
    (lambda: LayerNormalization(axis=[1, 2], epsilon=0.1, beta_initializer="uniform"), [(B, T, C)], False),
    (lambda: Add(), [(B, T, C), (B, C)], False),
    (lambda: Subtract(), [(B, C), (B, C)], False),
    (lambda: Multiply(), [(B, C), (B, C), (B, C)], False),
    (lambda: Average(), [(B, C), (B, C)], False),
    (lambda: Maximum(), [(B, C), (B, C)], False),
    (lambda: Minimum(dtype="float64"), [(B, C), (B, C)], False),
    (lambda: Attention(use_scale=True, score_mode="concat", dropout=0.2, seed=5), [(B, 4, 3), (B, T, 3)], True),
    (lambda: AdditiveAttention(use_scale=True, dropout=0.1), [(B, 4, 3), (B, T, 3), (B, T, 3)], True),
]


@pytest.mark.parametrize("make, shapes, list_input", CONFIG_CASES)
def test_config_round_trip(rng, make, shapes, list_input):
    layer = make()
    config = json.loads(json.dumps(layers.serialize(layer)))
    clone = layers.deserialize(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    xs = [rng.standard_normal(s) for s in shapes]
    inputs = xs if len(xs) > 1 or list_input else xs[0]
    y = layer(inputs)
    randomize(layer, rng)
    y = layer(inputs)
    clone.build([x.shape for x in xs] if len(xs) > 1 else xs[0].shape)
    clone.set_weights(layer.get_weights())
    assert_array_equal(clone(inputs), y)


def test_batch_normalization_errors(rng):
    with pytest.raises(NotImplementedError, match="'bn': gamma_regularizer is not supported.*'l2'"):
        BatchNormalization(gamma_regularizer="l2", name="bn")
    with pytest.raises(NotImplementedError, match="renorm=True is not supported"):
        BatchNormalization(renorm=True)
    with pytest.raises(NotImplementedError, match="synchronized=True is not supported"):
        BatchNormalization(synchronized=True)
    with pytest.raises(TypeError, match="axis must be an int, got \\[1, 2\\]"):
        BatchNormalization(axis=[1, 2])
    with pytest.raises(ValueError, match="momentum must be a float >= 0, got 'x'"):
        BatchNormalization(momentum="x")
    with pytest.raises(ValueError, match="axis=3 is out of bounds for inputs of rank 3"):
        BatchNormalization(axis=3)(Input((T, C)))
    with pytest.raises(ValueError, match="axis -1 of the input shape .* must be known"):
        BatchNormalization()(Input((T, None)))
    layer = BatchNormalization(name="b")
    layer(np.ones((B, T, C), np.float32))
    with pytest.raises(ValueError, match="'b': the mask must have one dimension less than the inputs, got mask "
                                         "shape \\(3, 5, 4\\)"):
        layer(np.ones((B, T, C), np.float32), mask=np.ones((B, T, C), bool))
    with pytest.raises(ValueError, match="'b' was built for inputs of rank 3 with 4 channels"):
        layer(np.ones((B, T, 5), np.float32))


def test_layer_normalization_errors():
    with pytest.raises(TypeError, match="axis must be an int or a list of ints, got 'x'"):
        LayerNormalization(axis="x")
    with pytest.raises(NotImplementedError, match="beta_constraint"):
        LayerNormalization(beta_constraint="non_neg")
    with pytest.raises(ValueError, match="axis=-4 is out of bounds for inputs of rank 3"):
        LayerNormalization(axis=[-4, 1])(Input((T, C)))
    with pytest.raises(ValueError, match="names an axis twice"):
        LayerNormalization(axis=[-1, 2])(Input((T, C)))
    layer = LayerNormalization(name="ln")
    layer(np.ones((B, C), np.float32))
    with pytest.raises(ValueError, match="'ln' was built for inputs of rank 2 with 4 on axis 1, got shape"):
        layer(np.ones((B, C + 1), np.float32))


def test_merge_errors():
    with pytest.raises(ValueError, match="Add 'a' must be called on a list of inputs"):
        Add(name="a")(Input((C,)))
    with pytest.raises(ValueError, match="Subtract 's' must be called on exactly 2 inputs, got 3"):
        Subtract(name="s")([Input((C,))] * 3)
    with pytest.raises(ValueError, match="'m': inputs have incompatible shapes"):
        Multiply(name="m")([Input((T, C)), Input((T, C + 1))])
    with pytest.raises(ValueError, match="cannot merge inputs with different batch sizes"):
        Maximum()([np.ones((2, C)), np.ones((3, C))])
    with pytest.raises(ValueError, match="mask 0 must have one dimension less than its input"):
        Minimum()([np.ones((2, C)), np.ones((2, C))], mask=[np.ones((2, C), bool), None])


def test_attention_errors(rng):
    with pytest.raises(ValueError, match="score_mode must be 'dot' or 'concat', got 'sum'"):
        Attention(score_mode="sum")
    with pytest.raises(ValueError, match="dropout must be a float in \\[0, 1\\), got 1.5"):
        AdditiveAttention(dropout=1.5)
    with pytest.raises(ValueError, match="'att' must be called on a list \\[query, value\\] or "
                                         "\\[query, value, key\\], got 4 inputs"):
        Attention(name="att")([Input((4, 3))] * 4)
    with pytest.raises(ValueError, match="must be called on a list .* got one input of shape"):
        Attention()(Input((4, 3)))
    with pytest.raises(ValueError, match="query and key must have the same last dim"):
        Attention()([Input((4, 3)), Input((T, 2))])
    with pytest.raises(ValueError, match="key and value must have the same number of steps"):
        Attention()([Input((4, 3)), Input((T, 2)), Input((T + 1, 3))])
    with pytest.raises(ValueError, match="value must have shape \\(batch, steps, dim\\)"):
        Attention()([Input((4, 3)), Input((3,))])
    with pytest.raises(TypeError, match="got unexpected call argument\\(s\\): return_scores \\(it accepts training, "
                                        "mask, return_attention_scores, use_causal_mask\\)"):
        Attention()([Input((4, 3)), Input((T, 3))], return_scores=True)
    with pytest.raises(TypeError, match="unexpected call argument\\(s\\): use_causal_mask"):
        Dense(2)(Input((3,)), use_causal_mask=True)
    with pytest.raises(ValueError, match="do not pass mask= with KerasTensors"):
        Attention()([Input((4, 3)), Input((T, 3))], mask=[None, None])
    xs = [rng.standard_normal((B, 4, 3)), rng.standard_normal((B, T, 3))]
    with pytest.raises(ValueError, match="mask must be a list \\[query_mask, value_mask\\]"):
        Attention()(xs, mask=masks("post"))


def test_lambda_errors(tmp_path):
    with pytest.raises(TypeError, match="'f': function must be callable, got int"):
        Lambda(3, name="f")
    with pytest.raises(TypeError, match="output_shape must be a tuple"):
        Lambda(lambda t: t, output_shape=5)
    with pytest.raises(TypeError, match="backward must be callable"):
        Lambda(lambda t: t, backward="grad")
    with pytest.raises(NotImplementedError, match="'odd': could not infer the output shape .* give output_shape="):
        Lambda(lambda t: t.reshape(3, -1), name="odd")(Input((T, C)))
    layer = Lambda(lambda t: t + 1, name="plus")
    out, cache = layer.forward(np.ones((2, 3)))
    with pytest.raises(NotImplementedError, match="Lambda 'plus' has no backward pass"):
        layer.backward(cache, np.ones((2, 3)))
    with pytest.raises(ValueError, match="Lambda layer 'plus' cannot be serialised"):
        layers.serialize(layer)
    with pytest.raises(ValueError, match="Lambda layer 'evil' cannot be loaded from a config: lstmfast never "
                                         "runs code"):
        layers.deserialize({"class_name": "Lambda", "config": {"name": "evil", "function": "os.system"}})
    # a model file naming a Lambda loads nothing and runs nothing
    model = Sequential([Input((C,)), Dense(2, name="d")])
    model.save(tmp_path / "m.lstmfast")
    config = model.get_config()
    config["layers"].append({"class_name": "Lambda", "config": {"name": "evil", "function": {"code": "..."}}})
    with pytest.raises(ValueError, match="Lambda layer 'evil' cannot be loaded"):
        lstmfast.models.model_from_config(config)
