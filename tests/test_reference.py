"""The NumPy oracle (lstmfast.reference) checked by central finite differences, hand-worked values,
direct checks of the padding rules and, where torch is installed, torch.nn.LSTM."""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import reference

from conftest import peer

# Central differences in float64: truncation error ~EPS**2, rounding ~1e-16 * |L| / EPS ~ 1e-10.
FD_EPS = 1e-6
FD_RTOL = 1e-6
FD_ATOL = 1e-8
# Two float64 implementations of the same equations differ only by summation order.
TORCH_RTOL = 1e-10
TORCH_ATOL = 1e-12
# Same equations on a batch versus one row: BLAS may block the products differently.
ROW_RTOL = 1e-12
ROW_ATOL = 1e-14

DROPOUT_P = 0.3  # mask values are 0 or 1 / (1 - p), as inverted dropout makes them
GRAD_NAMES = ("x", "kernel", "recurrent_kernel", "bias", "h0", "c0", "peephole")
GRAD_FIELDS = dict(x="dx", kernel="dkernel", recurrent_kernel="drecurrent_kernel", bias="dbias",
                   h0="dh0", c0="dc0", peephole="dpeephole")

SHAPES = [  # (T, B, X, H)
    (1, 1, 1, 1),
    (3, 2, 2, 3),
    (2, 3, 1, 2),
    (3, 3, 3, 1),
    (1, 2, 3, 2),
    (2, 1, 2, 2),
]


def make_mask(rng, B, H):
    """Recurrent dropout mask [B,H] of 0 and 1/(1-p), with at least one of each when B*H >= 2."""
    keep = 1.0 / (1.0 - DROPOUT_P)
    mask = np.where(rng.random((B, H)) < DROPOUT_P, 0.0, keep)
    if mask.size >= 2:
        mask.flat[0], mask.flat[1] = 0.0, keep
    return mask


def mixed_lengths(T, B):
    """[B] lengths cycling through in-between, 0 and T (B=3 and T>=2 covers all three)."""
    pattern = [max(1, T - 1), 0, T]
    return np.array([pattern[b % 3] for b in range(B)], dtype=np.int32)


def make_inputs(rng, T, B, X, H, *, peephole=True, lengths=None, initial_state=True, mask=False,
                activation="sigmoid", scale=0.5):
    """Keyword arguments for lstm_forward; weights scaled by ``scale``, inputs and state N(0,1)."""
    args = dict(
        x=rng.standard_normal((T, B, X)),
        kernel=scale * rng.standard_normal((X, 4 * H)),
        recurrent_kernel=scale * rng.standard_normal((H, 4 * H)),
        bias=scale * rng.standard_normal(4 * H),
        recurrent_activation=activation,
    )
    if initial_state:
        args["h0"] = rng.standard_normal((B, H))
        args["c0"] = rng.standard_normal((B, H))
    if peephole:
        args["peephole"] = scale * rng.standard_normal((3, H))
    if lengths == "full":
        args["lengths"] = np.full(B, T, dtype=np.int32)
    elif lengths == "mixed":
        args["lengths"] = mixed_lengths(T, B)
    if mask:
        args["recurrent_dropout_mask"] = make_mask(rng, B, H)
    return args


def loss_weights(rng, T, B, H):
    """Fixed weights (Wy [T,B,H], Wh [B,H], Wc [B,H]) of L = sum(y Wy) + sum(h Wh) + sum(c Wc)."""
    return rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))


def loss(args, weights):
    Wy, Wh, Wc = weights
    out = reference.lstm_forward(**args, training=False)
    return np.sum(out.y * Wy) + np.sum(out.h * Wh) + np.sum(out.c * Wc)


def numerical_gradient(args, name, weights):
    """dL/d args[name] by central differences, every element."""
    array = args[name]
    grad = np.zeros_like(array)
    for index in np.ndindex(*array.shape):
        original = array[index]
        array[index] = original + FD_EPS
        plus = loss(args, weights)
        array[index] = original - FD_EPS
        minus = loss(args, weights)
        array[index] = original
        grad[index] = (plus - minus) / (2 * FD_EPS)
    return grad


def valid_steps(lengths, T, B):
    """[T,B] bool: step t of row b is inside the sequence."""
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    return np.arange(T)[:, None] < lengths[None, :]


def sigma_gates(out, args):
    """Activated i, f, o gates at valid steps (flat), from the forward cache."""
    T, B, _ = args["x"].shape
    H = args["recurrent_kernel"].shape[0]
    gates = out.cache["gates"].reshape(T, B, 4, H)[:, :, [0, 1, 3], :]
    return gates[valid_steps(args.get("lengths"), T, B)].ravel()


def check_gradients(args, rng):
    """Analytic gradients of every differentiable input equal central differences."""
    T, B, _ = args["x"].shape
    H = args["recurrent_kernel"].shape[0]
    weights = loss_weights(rng, T, B, H)
    out = reference.lstm_forward(**args)
    grads = reference.lstm_backward(out.cache, dy=weights[0], dh=weights[1], dc=weights[2])
    for name in GRAD_NAMES:
        analytic = getattr(grads, GRAD_FIELDS[name])
        if args.get(name) is None:
            assert analytic is None, f"{GRAD_FIELDS[name]} should be None without {name}"
            continue
        assert analytic.shape == args[name].shape and analytic.dtype == np.float64
        assert_allclose(analytic, numerical_gradient(args, name, weights), rtol=FD_RTOL,
                        atol=FD_ATOL, err_msg=f"gradient of {name}")
    return out


# ---------------------------------------------------------------------------------------------
# Finite differences.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}X{}H{}".format(*s))
@pytest.mark.parametrize("mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["zerostate", "h0c0"])
@pytest.mark.parametrize("lengths", [None, "full", "mixed"])
@pytest.mark.parametrize("peephole", [False, True], ids=["nopeep", "peep"])
@pytest.mark.parametrize("activation", ["sigmoid", "hard_sigmoid"])
def test_gradients_match_finite_differences(shape, mask, initial_state, lengths, peephole,
                                            activation):
    rng = np.random.default_rng(  # one fixed seed per case (hash() of str is salted per run)
        [SHAPES.index(shape), mask, initial_state, [None, "full", "mixed"].index(lengths),
         peephole, activation == "hard_sigmoid"])
    # hard_sigmoid: small weights keep pre-activations off the kinks at z = +-2.5 (checked below).
    scale = 0.5 if activation == "sigmoid" else 0.2
    args = make_inputs(rng, *shape, peephole=peephole, lengths=lengths,
                       initial_state=initial_state, mask=mask, activation=activation, scale=scale)
    out = check_gradients(args, rng)
    if activation == "hard_sigmoid":
        gates = sigma_gates(out, args)
        assert np.all((gates > 0.02) & (gates < 0.98)), "a gate came near a hard_sigmoid kink"


def test_hard_sigmoid_saturated_gradients_match_finite_differences():
    # Bias offsets of +-10 pin some gates at exactly 0 or 1, where the derivative must be 0.
    rng = np.random.default_rng(7)
    T, B, X, H = 3, 2, 2, 4
    args = make_inputs(rng, T, B, X, H, mask=True, activation="hard_sigmoid", scale=0.2)
    offsets = np.array([-10.0, 10.0, 0.0, 10.0])  # per unit, for each of the i, f, o blocks
    for block in (0, 1, 3):
        args["bias"][block * H:(block + 1) * H] += rng.permutation(offsets)
    out = check_gradients(args, rng)
    gates = sigma_gates(out, args)
    assert np.any(gates == 0.0) and np.any(gates == 1.0)
    assert np.all((gates == 0.0) | (gates == 1.0) | ((gates > 0.02) & (gates < 0.98)))


def test_gradients_without_bias_match_finite_differences():
    rng = np.random.default_rng(8)
    args = make_inputs(rng, 3, 2, 2, 2, lengths="mixed", mask=True)
    args["bias"] = None
    check_gradients(args, rng)


# ---------------------------------------------------------------------------------------------
# Values worked out by hand.
# ---------------------------------------------------------------------------------------------

def test_one_step_by_hand():
    # T = B = X = H = 1, with bias, initial state, peepholes and a dropout mask.
    x = 0.5
    kernel = [0.1, -0.2, 0.3, 0.4]          # i, f, g, o
    recurrent_kernel = [0.5, 0.6, -0.7, 0.8]
    bias = [0.01, 0.02, 0.03, 0.04]
    h0, c0, mask = 0.3, -0.4, 2.0
    p_i, p_f, p_o = 0.2, -0.3, 0.4
    hm = h0 * mask                          # 0.6
    z_i = 0.5 * 0.1 + 0.6 * 0.5 + 0.01     # 0.36
    z_f = 0.5 * -0.2 + 0.6 * 0.6 + 0.02    # 0.28
    z_g = 0.5 * 0.3 + 0.6 * -0.7 + 0.03    # -0.24
    z_o = 0.5 * 0.4 + 0.6 * 0.8 + 0.04     # 0.72
    assert hm == pytest.approx(0.6)
    i = 1.0 / (1.0 + math.exp(-(0.36 + 0.2 * -0.4)))     # sigmoid(0.28)
    f = 1.0 / (1.0 + math.exp(-(0.28 + -0.3 * -0.4)))    # sigmoid(0.40)
    g = math.tanh(-0.24)
    c = f * -0.4 + i * g
    o = 1.0 / (1.0 + math.exp(-(0.72 + 0.4 * c)))
    h = o * math.tanh(c)
    assert (z_i, z_f, z_g, z_o) == pytest.approx((0.36, 0.28, -0.24, 0.72))

    out = reference.lstm_forward(
        np.full((1, 1, 1), x), np.array([kernel]), np.array([recurrent_kernel]), np.array(bias),
        h0=np.full((1, 1), h0), c0=np.full((1, 1), c0), peephole=np.array([[p_i], [p_f], [p_o]]),
        recurrent_dropout_mask=np.full((1, 1), mask))
    assert_allclose(out.y, [[[h]]], rtol=1e-14)
    assert_allclose(out.h, [[h]], rtol=1e-14)
    assert_allclose(out.c, [[c]], rtol=1e-14)
    assert_allclose(out.cache["gates"], [[[i, f, g, o]]], rtol=1e-14)


@pytest.mark.parametrize("activation", ["sigmoid", "hard_sigmoid"])
def test_recurrent_activation_values(activation):
    # Zero weights and state, so z = bias: c = sigma(z_i) tanh(z_g), h = sigma(z_o) tanh(c).
    z = np.array([-800.0, -3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0, 800.0])
    if activation == "hard_sigmoid":
        expected = np.array([0.0, 0.0, 0.0, 0.3, 0.5, 0.7, 1.0, 1.0, 1.0])
    else:  # +-800 would overflow a naive exp; filterwarnings=error turns that into a failure
        expected = np.array([0.0] + [1.0 / (1.0 + math.exp(-v)) for v in z[1:-1]] + [1.0])
    H = z.size
    bias = np.concatenate([z, np.zeros(H), np.ones(H), z])
    out = reference.lstm_forward(np.zeros((1, 1, 1)), np.zeros((1, 4 * H)), np.zeros((H, 4 * H)),
                                 bias, recurrent_activation=activation)
    c = expected * math.tanh(1.0)
    assert_allclose(out.c[0], c, rtol=1e-14, atol=0)
    assert_allclose(out.h[0], expected * np.tanh(c), rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------
# Padding (lengths).
# ---------------------------------------------------------------------------------------------

def padded_case(seed=3, T=4, X=2, H=3, lengths=(0, 4, 2, 1)):
    rng = np.random.default_rng(seed)
    B = len(lengths)
    args = make_inputs(rng, T, B, X, H, mask=True)
    args["lengths"] = np.array(lengths, dtype=np.int32)
    return args, loss_weights(rng, T, B, H)


def row_args(args, b):
    """Row b alone, cut to its length, without lengths."""
    L = int(args["lengths"][b])
    row = {k: v for k, v in args.items() if k != "lengths"}
    row["x"] = args["x"][:L, b:b + 1]
    for name in ("h0", "c0", "recurrent_dropout_mask"):
        row[name] = args[name][b:b + 1]
    return row


def test_padded_steps_output_zero_and_final_state_is_last_valid_state():
    args, _ = padded_case()
    out = reference.lstm_forward(**args)
    for b, L in enumerate(args["lengths"]):
        assert_array_equal(out.y[L:, b], 0.0)
        row = reference.lstm_forward(**row_args(args, b))
        assert_allclose(out.y[:L, b], row.y[:, 0], rtol=ROW_RTOL, atol=ROW_ATOL)
        assert_allclose(out.h[b], row.h[0], rtol=ROW_RTOL, atol=ROW_ATOL)
        assert_allclose(out.c[b], row.c[0], rtol=ROW_RTOL, atol=ROW_ATOL)
        if L == 0:
            assert_array_equal(out.h[b], args["h0"][b])
            assert_array_equal(out.c[b], args["c0"][b])


def test_padded_gradients_equal_per_row_gradients_of_cut_sequences():
    args, (Wy, Wh, Wc) = padded_case()
    out = reference.lstm_forward(**args)
    grads = reference.lstm_backward(out.cache, Wy, Wh, Wc)
    summed = dict(dkernel=0.0, drecurrent_kernel=0.0, dbias=0.0, dpeephole=0.0)
    for b, L in enumerate(args["lengths"]):
        row = reference.lstm_forward(**row_args(args, b))
        row_grads = reference.lstm_backward(row.cache, Wy[:L, b:b + 1], Wh[b:b + 1], Wc[b:b + 1])
        assert_array_equal(grads.dx[L:, b], 0.0)  # dy at padded steps is ignored
        assert_allclose(grads.dx[:L, b], row_grads.dx[:, 0], rtol=ROW_RTOL, atol=ROW_ATOL)
        assert_allclose(grads.dh0[b], row_grads.dh0[0], rtol=ROW_RTOL, atol=ROW_ATOL)
        assert_allclose(grads.dc0[b], row_grads.dc0[0], rtol=ROW_RTOL, atol=ROW_ATOL)
        if L == 0:  # the final-state gradients pass straight through every step
            assert_array_equal(grads.dh0[b], Wh[b])
            assert_array_equal(grads.dc0[b], Wc[b])
        for field in summed:
            summed[field] = summed[field] + getattr(row_grads, field)
    for field, value in summed.items():
        assert_allclose(getattr(grads, field), value, rtol=ROW_RTOL, atol=ROW_ATOL, err_msg=field)


def test_all_lengths_zero_returns_initial_state():
    args, (Wy, Wh, Wc) = padded_case(lengths=(0, 0))
    out = reference.lstm_forward(**args)
    assert_array_equal(out.y, 0.0)
    assert_array_equal(out.h, args["h0"])
    assert_array_equal(out.c, args["c0"])
    grads = reference.lstm_backward(out.cache, Wy, Wh, Wc)
    assert_array_equal(grads.dh0, Wh)
    assert_array_equal(grads.dc0, Wc)
    for field in ("dx", "dkernel", "drecurrent_kernel", "dbias", "dpeephole"):
        assert_array_equal(getattr(grads, field), 0.0)


def test_lengths_none_equals_all_full_lengths():
    args, (Wy, Wh, Wc) = padded_case(lengths=(4, 4, 4))
    full = reference.lstm_forward(**args)
    args["lengths"] = None
    unpadded = reference.lstm_forward(**args)
    for a, b in zip(full[:3], unpadded[:3]):
        assert_array_equal(a, b)
    for a, b in zip(reference.lstm_backward(full.cache, Wy, Wh, Wc),
                    reference.lstm_backward(unpadded.cache, Wy, Wh, Wc)):
        assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Optional arguments, modes and errors.
# ---------------------------------------------------------------------------------------------

def test_absent_optional_inputs_mean_zeros_and_no_gradient():
    rng = np.random.default_rng(4)
    T, B, X, H = 3, 2, 2, 2
    args = make_inputs(rng, T, B, X, H, peephole=False, initial_state=False)
    args["bias"] = None
    absent = reference.lstm_forward(**args)
    zeros = reference.lstm_forward(**dict(args, bias=np.zeros(4 * H), h0=np.zeros((B, H)),
                                          c0=np.zeros((B, H)), peephole=np.zeros((3, H)),
                                          recurrent_dropout_mask=np.ones((B, H))))
    for a, b in zip(absent[:3], zeros[:3]):
        assert_allclose(a, b, rtol=1e-15, atol=0)
    dy = rng.standard_normal((T, B, H))
    g_absent = reference.lstm_backward(absent.cache, dy)
    g_zeros = reference.lstm_backward(zeros.cache, dy)
    assert g_absent.dbias is None and g_absent.dh0 is None and g_absent.dc0 is None
    assert g_absent.dpeephole is None
    for field in ("dx", "dkernel", "drecurrent_kernel"):
        assert_allclose(getattr(g_absent, field), getattr(g_zeros, field), rtol=1e-15, atol=0)


def test_absent_incoming_gradients_mean_zeros():
    rng = np.random.default_rng(5)
    T, B, X, H = 2, 2, 3, 2
    out = reference.lstm_forward(**make_inputs(rng, T, B, X, H, lengths="mixed"))
    dh = rng.standard_normal((B, H))
    for a, b in zip(reference.lstm_backward(out.cache, None, dh=dh),
                    reference.lstm_backward(out.cache, np.zeros((T, B, H)), dh, np.zeros((B, H)))):
        assert_array_equal(a, b)
    for g in reference.lstm_backward(out.cache, None):
        assert_array_equal(g, 0.0)


def test_inputs_are_computed_in_float64():
    rng = np.random.default_rng(6)
    args = make_inputs(rng, 2, 2, 2, 2)
    args32 = {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    out = reference.lstm_forward(**args32)
    grads = reference.lstm_backward(out.cache, np.ones((2, 2, 2), dtype=np.float32))
    assert all(a.dtype == np.float64 for a in out[:3])
    assert all(g.dtype == np.float64 for g in grads)
    # The float32 values, widened, go through the float64 computation unchanged.
    widened = {k: v.astype(np.float64) if isinstance(v, np.ndarray) else v
               for k, v in args32.items()}
    assert_array_equal(out.y, reference.lstm_forward(**widened).y)


def test_zero_time_steps_returns_initial_state():
    rng = np.random.default_rng(9)
    args = make_inputs(rng, 0, 2, 3, 2)
    out = reference.lstm_forward(**args)
    assert out.y.shape == (0, 2, 2)
    assert_array_equal(out.h, args["h0"])
    assert_array_equal(out.c, args["c0"])
    dh, dc = rng.standard_normal((2, 2)), rng.standard_normal((2, 2))
    grads = reference.lstm_backward(out.cache, None, dh, dc)
    assert grads.dx.shape == (0, 2, 3)
    assert_array_equal(grads.dh0, dh)
    assert_array_equal(grads.dc0, dc)
    assert_array_equal(grads.dkernel, 0.0)


def test_inference_mode_returns_no_cache_and_same_values():
    rng = np.random.default_rng(10)
    args = make_inputs(rng, 3, 2, 2, 3, lengths="mixed", mask=True)
    train = reference.lstm_forward(**args)
    infer = reference.lstm_forward(**args, training=False)
    assert train.cache is not None and infer.cache is None
    for a, b in zip(train[:3], infer[:3]):
        assert_array_equal(a, b)


def test_bad_activation_raises():
    rng = np.random.default_rng(11)
    args = make_inputs(rng, 1, 1, 1, 1, activation="relu")
    with pytest.raises(ValueError, match="recurrent_activation.*sigmoid.*hard_sigmoid.*relu"):
        reference.lstm_forward(**args)


def test_backward_without_cache_raises():
    with pytest.raises(ValueError, match="training"):
        reference.lstm_backward(None, np.zeros((1, 1, 1)))


@pytest.mark.parametrize("name, value, message", [
    ("lengths", np.array([0, 3]), r"lengths must lie in \[0, 2\]"),
    ("lengths", np.array([-1, 1]), r"lengths must lie in \[0, 2\]"),
    ("lengths", np.array([1]), r"lengths must have shape \(2,\)"),
    ("h0", np.zeros((2, 3)), r"h0 must have shape \(2, 2\)"),
    ("kernel", np.zeros((2, 8)), r"kernel must have shape \(3, 8\)"),
    ("peephole", np.zeros(2), r"peephole must have shape \(3, 2\)"),
])
def test_bad_argument_raises_naming_it(name, value, message):
    args = make_inputs(np.random.default_rng(12), 2, 2, 3, 2)
    args[name] = value
    with pytest.raises(ValueError, match=message):
        reference.lstm_forward(**args)


# ---------------------------------------------------------------------------------------------
# torch.nn.LSTM as a second reference.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (4, 3, 2, 3), (3, 2, 5, 4)],
                         ids=lambda s: "T{}B{}X{}H{}".format(*s))
def test_matches_torch_lstm(shape, packed):
    torch = peer("torch")
    T, B, X, H = shape
    rng = np.random.default_rng(13 + T)
    args = make_inputs(rng, T, B, X, H, peephole=False)
    if packed:  # torch packs only lengths >= 1
        args["lengths"] = np.array([max(1, T - b) for b in range(B)], dtype=np.int32)
    Wy, Wh, Wc = loss_weights(rng, T, B, H)
    out = reference.lstm_forward(**args)
    grads = reference.lstm_backward(out.cache, Wy, Wh, Wc)

    lstm = torch.nn.LSTM(X, H).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(args["kernel"].T))
        lstm.weight_hh_l0.copy_(torch.from_numpy(args["recurrent_kernel"].T))
        lstm.bias_ih_l0.copy_(torch.from_numpy(args["bias"]))
        lstm.bias_hh_l0.zero_()
    x = torch.from_numpy(args["x"]).requires_grad_()
    h0 = torch.from_numpy(args["h0"][None]).requires_grad_()
    c0 = torch.from_numpy(args["c0"][None]).requires_grad_()
    if packed:
        rnn = torch.nn.utils.rnn
        seq = rnn.pack_padded_sequence(x, torch.from_numpy(args["lengths"].astype(np.int64)),
                                       enforce_sorted=False)
        y, (h, c) = lstm(seq, (h0, c0))
        y, _ = rnn.pad_packed_sequence(y, total_length=T)
    else:
        y, (h, c) = lstm(x, (h0, c0))
    loss_value = ((y * torch.from_numpy(Wy)).sum() + (h[0] * torch.from_numpy(Wh)).sum()
                  + (c[0] * torch.from_numpy(Wc)).sum())
    loss_value.backward()

    tol = dict(rtol=TORCH_RTOL, atol=TORCH_ATOL)
    assert_allclose(out.y, y.detach().numpy(), **tol)
    assert_allclose(out.h, h[0].detach().numpy(), **tol)
    assert_allclose(out.c, c[0].detach().numpy(), **tol)
    assert_allclose(grads.dx, x.grad.numpy(), **tol)
    assert_allclose(grads.dkernel, lstm.weight_ih_l0.grad.numpy().T, **tol)
    assert_allclose(grads.drecurrent_kernel, lstm.weight_hh_l0.grad.numpy().T, **tol)
    assert_allclose(grads.dbias, lstm.bias_ih_l0.grad.numpy(), **tol)
    assert_allclose(grads.dbias, lstm.bias_hh_l0.grad.numpy(), **tol)
    assert_allclose(grads.dh0, h0.grad.numpy()[0], **tol)
    assert_allclose(grads.dc0, c0.grad.numpy()[0], **tol)
