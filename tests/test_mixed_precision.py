"""Dtype policies (lstmfast.mixed_precision, keras.mixed_precision's API) and the bfloat16 products
they ask for.

* The policies' names, dtypes and errors, against Keras's own; layers, configs and saved models
  (lstmfast's and Keras's files, both ways) keep them.
* The bfloat16 products (``ops.matmul``/``ops.lstm_forward(..., precision="bfloat16")``): on the
  CuPy stand-in ("emulated", whose products round their operands exactly as cuBLAS's bfloat16
  conversion does: to nearest, ties to even) they must match the NumPy oracle with bfloat16
  operands (``reference.bfloat16_round``) to float32 accuracy, and differ from the float32
  products by at most the bfloat16 bound; on a real GPU (cuBLAS may use bfloat16 or TF32, and the
  sequence kernels keep the recurrence in float32) within that bound of float32.
* On the CPU a mixed_bfloat16 model computes in float32: the float32 model's numbers exactly."""
import ctypes
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast
from lstmfast import layers as L
from lstmfast import mixed_precision, ops, reference
from lstmfast.cuda import ops as cuda_ops

from conftest import peer
from test_cuda import device_side, emulated, fit_model  # noqa: F401

# A bfloat16 operand carries 8 significant bits: each product term is off by at most about 2^-8 of
# its size (2^-7 with both operands). Through an LSTM's 7 steps and its backward pass the measured
# difference to float32 is 2-6e-3 of the largest value (emulation); BF16_BOUND leaves 3x room.
# FLOAT32: float32 accumulation against the float64 oracle on the same rounded operands (1-2e-7 seen).
BF16_BOUND = 2e-2
FLOAT32 = 2e-6


@pytest.fixture(autouse=True)
def default_policy(monkeypatch):
    monkeypatch.setattr(mixed_precision, "_global", None)
    monkeypatch.setattr(mixed_precision, "_warned_float16", False)


@pytest.fixture(params=["emulated", "gpu"])
def side(request, monkeypatch):
    return device_side(request.param, request, monkeypatch)


def relative_error(got, want) -> float:
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


# ---- the policies ---------------------------------------------------------------------------------

def test_policies_report_what_keras_reports():
    keras = peer("keras")
    for name in mixed_precision.NAMES:
        ours, theirs = mixed_precision.DTypePolicy(name), keras.mixed_precision.DTypePolicy(name)
        assert (ours.name, ours.variable_dtype, ours.compute_dtype) == \
            (theirs.name, theirs.variable_dtype, theirs.compute_dtype)
        assert repr(ours) == repr(theirs)
    for ours, theirs in ((lstmfast.mixed_precision, keras.mixed_precision), (lstmfast.config, keras.config)):
        for name in ("set_dtype_policy", "dtype_policy"):
            assert hasattr(ours, name) and hasattr(theirs, name)
    assert {n for n in dir(keras.mixed_precision) if not n.startswith("_")} <= set(dir(mixed_precision))


def test_layers_take_the_policy_by_name_object_or_keras_config():
    dense = L.Dense(3, dtype="mixed_bfloat16")
    assert (dense.dtype, dense.variable_dtype, dense.compute_dtype) == ("float32", "float32", "bfloat16")
    assert dense.dtype_policy == mixed_precision.Policy("mixed_bfloat16")
    assert L.LSTM(3, dtype=mixed_precision.DTypePolicy("mixed_bfloat16")).compute_dtype == "bfloat16"
    keras_form = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_bfloat16"}}
    assert L.Dense(3, dtype=keras_form).dtype_policy.name == "mixed_bfloat16"
    for plain in ("float64", np.float64, np.dtype("f8"), "f8"):
        layer = L.Dense(3, dtype=plain)
        assert layer.dtype == layer.compute_dtype == "float64" and layer.dtype_policy.name == "float64"
    assert L.Dense(3).dtype_policy.name == "float32"
    dense = L.Dense(3)
    dense.dtype_policy = "mixed_bfloat16"  # Keras lets a policy be set; the products follow it
    assert (dense.compute_dtype, dense._gemm_precision) == ("bfloat16", "bfloat16")
    with pytest.raises(ValueError, match="keeps variables in float64, this layer's are float32"):
        dense.dtype_policy = "float64"


@pytest.mark.parametrize("dtype, error, words", [
    ("bfloat16", ValueError, "use 'mixed_bfloat16'"), ("float16", ValueError, "use 'mixed_float16'"),
    ("int32", ValueError, "'float32', 'float64', 'mixed_bfloat16', 'mixed_float16', got 'int32'"),
    ("mixed_int8", ValueError, "got 'mixed_int8'"), ([1], TypeError, "got [1]"),
    ({"config": {}}, ValueError, "must name a policy")])
def test_bad_policies_name_the_argument(dtype, error, words):
    with pytest.raises(error, match="layer dtype") as info:
        L.Dense(3, dtype=dtype)
    assert words in str(info.value)
    with pytest.raises(error):
        mixed_precision.set_global_policy(dtype)
    assert mixed_precision.global_policy().name == "float32"  # unchanged by the refused call


def test_the_global_policy_applies_to_layers_made_without_a_dtype():
    mixed_precision.set_global_policy("mixed_bfloat16")
    assert lstmfast.config.dtype_policy() is mixed_precision.global_policy()
    model = lstmfast.Sequential([L.Input((4, 3)), L.LSTM(5), L.Dense(2, dtype="float32")])
    assert [layer.dtype_policy.name for layer in model.layers] == ["mixed_bfloat16", "float32"]
    mixed_precision.set_global_policy(None)
    assert L.Dense(1).dtype_policy.name == "float32"
    lstmfast.backend.set_floatx("float64")
    try:  # the default follows floatx
        assert mixed_precision.global_policy().name == "float64" and L.Dense(1).dtype == "float64"
    finally:
        lstmfast.backend.set_floatx("float32")


def test_mixed_float16_warns_once_and_computes_in_float32():
    with pytest.warns(UserWarning, match="computes 'mixed_float16' layers in float32"):
        layer = L.Dense(2, dtype="mixed_float16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.Dense(2, dtype="mixed_float16")  # once per process
    assert (layer.dtype, layer.compute_dtype, layer._gemm_precision) == ("float32", "float16", None)


def build_pair(policy, seed=0):
    lstmfast.utils.set_random_seed(seed)
    model = lstmfast.Sequential([L.Input((6, 3)), L.LSTM(8, return_sequences=True, dtype=policy),
                                 L.LSTM(5, dtype=policy), L.Dense(2, dtype=policy)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_on_the_cpu_mixed_bfloat16_gives_the_float32_numbers():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 6, 3)).astype("f4"), rng.standard_normal((16, 2)).astype("f4")
    histories, predictions = [], []
    for policy in ("float32", "mixed_bfloat16"):
        model = build_pair(policy)
        histories.append(model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False).history["loss"])
        predictions.append(model.predict(x, verbose=0))
    assert histories[0] == histories[1]
    assert_array_equal(predictions[0], predictions[1])
    assert predictions[1].dtype == np.float32


@pytest.mark.parametrize("extension", [".keras", ".h5", ".lstmfast"])
def test_saved_models_keep_their_policies(tmp_path, extension):
    model = build_pair("mixed_bfloat16")
    path = str(tmp_path / f"m{extension}")
    model.save(path)
    loaded = lstmfast.load_model(path)
    assert [layer.dtype_policy.name for layer in loaded.layers] == ["mixed_bfloat16"] * 3
    assert model.layers[0].get_config()["dtype"] == "mixed_bfloat16"


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_keras_and_lstmfast_read_each_others_mixed_models(tmp_path, extension):
    keras = peer("keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(8, dtype="mixed_bfloat16"),
                                   keras.layers.Dense(2, dtype="mixed_bfloat16")])
        theirs.save(str(tmp_path / f"k{extension}"))
        x = np.random.default_rng(1).standard_normal((4, 6, 3)).astype("f4")
        keras_bf16 = theirs.predict(x, verbose=0).astype(np.float32)  # Keras's output is bfloat16 (ml_dtypes)
    ours = lstmfast.load_model(str(tmp_path / f"k{extension}"))
    assert [layer.dtype_policy.name for layer in ours.layers] == ["mixed_bfloat16"] * 2
    got = ours.predict(x, verbose=0)  # float32 on the CPU; Keras computed in bfloat16
    assert relative_error(got, keras_bf16) < BF16_BOUND
    ours.save(str(tmp_path / f"l{extension}"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = keras.saving.load_model(str(tmp_path / f"l{extension}"))
    assert [layer.dtype_policy.name for layer in back.layers] == ["mixed_bfloat16"] * 2


# ---- the bfloat16 products -----------------------------------------------------------------------

def test_the_stand_in_rounding_is_the_oracles():
    """cuda.ops.bfloat16_rounded (bit arithmetic, what the stand-in products use) against
    reference.bfloat16_round (frexp arithmetic): random bit patterns (NaN, infinities and
    subnormals among them), exact ties, and the edges of the range."""
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2 ** 16, 2_000).astype(np.uint32) << 16) | 0x8000
    edges = np.array([0.0, -0.0, 3.4028235e38, -3.3895314e38, 3.3961e38, 1.1754944e-38, 1e-45, 1.0 + 2 ** -8,
                      1.0 + 3 * 2 ** -8, 65504.0, np.inf, -np.inf, np.nan], np.float32)
    for a in (patterns.view(np.float32), ties.view(np.float32), edges):
        want = reference.bfloat16_round(a)
        got = cuda_ops.bfloat16_rounded(np, a)
        assert got.dtype == np.float32
        with np.errstate(invalid="ignore"):
            assert_array_equal(got.astype(np.float64), want)
    assert reference.bfloat16_round(np.float32(1.0 + 2 ** -8)) == 1.0            # a tie: to even
    assert reference.bfloat16_round(np.float32(1.0 + 3 * 2 ** -8)) == 1.0 + 2 ** -6
    assert np.isinf(reference.bfloat16_round(np.float32(3.4028235e38)))          # above the largest bfloat16


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("stack", [(), (3,)])
def test_bfloat16_matmul(side, trans_a, trans_b, stack):
    rng = np.random.default_rng(5)
    M, K, N = 7, 300, 9
    a = rng.standard_normal(stack + ((K, M) if trans_a else (M, K))).astype("f4")
    b = rng.standard_normal(stack + ((N, K) if trans_b else (K, N))).astype("f4")
    def op(v, transposed):
        return np.swapaxes(v, -1, -2) if transposed else v

    exact = op(a, trans_a).astype(np.float64) @ op(b, trans_b)
    rounded = reference.bfloat16_round(op(a, trans_a)) @ reference.bfloat16_round(op(b, trans_b))
    scale = np.abs(op(a, trans_a)).astype(np.float64) @ np.abs(op(b, trans_b))  # sum of |terms|
    start = rng.standard_normal(exact.shape).astype("f4")
    out = side.to_device(start.copy())
    got = ops.matmul(side.to_device(a), side.to_device(b), trans_a, trans_b, out=out, accumulate=True,
                     precision="bfloat16")
    assert got is out
    got = side.to_host(got) - start.astype(np.float64)
    assert (np.abs(got - exact) <= 2 ** -7 * scale + 1e-5).all()   # the bfloat16 bound, term by term
    if side.name == "emulated":
        assert_allclose(got, rounded, rtol=0, atol=FLOAT32 * np.abs(rounded).max())
        assert np.abs(got - exact).max() > 100 * FLOAT32 * np.abs(exact).max()  # it did round
    fresh = side.to_host(ops.matmul(side.to_device(a), side.to_device(b), trans_a, trans_b, precision="bfloat16"))
    assert fresh.dtype == np.float32 and fresh.shape == exact.shape


def lstm_case(rng, T=7, B=5, X=12, H=16):
    f4 = lambda *shape, scale=1.0: (rng.standard_normal(shape) * scale).astype("f4")  # noqa: E731
    return dict(x=f4(T, B, X), kernel=f4(X, 4 * H, scale=0.3), recurrent_kernel=f4(H, 4 * H, scale=0.3),
                bias=f4(4 * H, scale=0.1), h0=f4(B, H, scale=0.5), c0=f4(B, H, scale=0.5),
                lengths=np.array([7, 3, 0, 7, 5][:B], np.int32),
                recurrent_dropout_mask=(rng.random((B, H)) > 0.2).astype("f4") * np.float32(1.25)), f4(T, B, H)


def test_bfloat16_lstm_forward_and_backward(side):
    rng = np.random.default_rng(2)
    case, dy = lstm_case(rng)
    out = ops.lstm_forward(**side.kwargs_to_device(case), precision="bfloat16")
    grads = ops.lstm_backward(out.cache, side.to_device(dy))
    for precision in (None, "bfloat16"):
        want = reference.lstm_forward(**case, precision=precision)
        want_grads = reference.lstm_backward(want.cache, dy)
        pairs = [(out.y, want.y), (out.h, want.h), (out.c, want.c)] + list(zip(grads[:6], want_grads[:6]))
        errors = [relative_error(side.to_host(g), w) for g, w in pairs]
        if precision is None:
            assert max(errors) < BF16_BOUND, errors
            if side.name == "emulated":
                assert max(errors) > 100 * FLOAT32, errors  # it did round
        elif side.name == "emulated":
            assert max(errors) < FLOAT32, errors


def test_bfloat16_precision_is_refused_where_it_cannot_apply(side):
    case, _ = lstm_case(np.random.default_rng(0))
    double = {k: (v.astype("f8") if v.dtype == np.float32 else v) for k, v in case.items()}
    with pytest.raises(ValueError, match="precision='bfloat16' needs float32 arrays, got float64"):
        ops.lstm_forward(**side.kwargs_to_device(double), precision="bfloat16")
    with pytest.raises(ValueError, match="precision must be None or 'bfloat16', got 'float16'"):
        ops.lstm_forward(**side.kwargs_to_device(case), precision="float16")
    with pytest.raises(ValueError, match="needs float32 arrays"):
        ops.matmul(side.to_device(np.ones((2, 3))), side.to_device(np.ones((3, 2))), precision="bfloat16")


def test_a_mixed_bfloat16_model_trains_on_the_device_within_the_bound(side):
    """The same seeded model with float32 and mixed_bfloat16 layers, trained on the device: the
    losses agree within the bfloat16 bound, and on the stand-in they differ (the products rounded)."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((16, 6, 3)).astype("f4"), rng.standard_normal((16, 2)).astype("f4")

    def build(policy):
        def make():
            return build_pair(policy), x, y
        return make

    _, float32_history, float32_prediction = fit_model(build("float32"), "cuda")
    _, history, prediction = fit_model(build("mixed_bfloat16"), "cuda")
    assert_allclose(history["loss"], float32_history["loss"], rtol=BF16_BOUND)
    assert relative_error(prediction, float32_prediction) < BF16_BOUND
    if side.name == "emulated":
        assert history["loss"] != float32_history["loss"]


def one_layer_models():
    """name -> (a function building the model with new layers, its input): every layer kind whose
    products follow the policy (wrappers through their inner layers)."""
    rng = np.random.default_rng(6)
    seq = rng.standard_normal((4, 9, 6)).astype("f4")

    def attention():
        q, v = L.Input((9, 6)), L.Input((9, 6))
        return lstmfast.Model([q, v], L.Attention(use_scale=True)([q, v]))

    def additive():
        q, v = L.Input((9, 6)), L.Input((9, 6))
        return lstmfast.Model([q, v], L.AdditiveAttention()([q, v]))

    return {"Dense": (lambda: lstmfast.Sequential([L.Input((6,)), L.Dense(5)]), seq[:, 0]),
            "LSTM": (lambda: lstmfast.Sequential([L.Input((9, 6)), L.LSTM(5, return_sequences=True)]), seq),
            "Conv1D": (lambda: lstmfast.Sequential([L.Input((9, 6)), L.Conv1D(5, 3)]), seq),
            "Conv1D groups": (lambda: lstmfast.Sequential([L.Input((9, 6)), L.Conv1D(4, 3, groups=2)]), seq),
            "Attention": (attention, [seq, seq[:, ::-1].copy()]),
            "AdditiveAttention": (additive, [seq, seq[:, ::-1].copy()]),
            "TimeDistributed": (lambda: lstmfast.Sequential([L.Input((9, 6)), L.TimeDistributed(L.Dense(5))]), seq),
            "Bidirectional": (lambda: lstmfast.Sequential([L.Input((9, 6)), L.Bidirectional(L.LSTM(5))]), seq)}


@pytest.mark.parametrize("name", list(one_layer_models()))
def test_every_layer_with_products_follows_the_policy(name, side):
    """Under mixed_bfloat16 each layer's forward and input gradient on the device differ from the
    float32 layer's (on the stand-in) by at most the bfloat16 bound; on the CPU they are equal."""
    build, x = one_layer_models()[name]
    results = {}
    for backend_name in ("cpu", "cuda"):
        for policy in ("float32", "mixed_bfloat16"):
            mixed_precision.set_global_policy(policy)
            lstmfast.utils.set_random_seed(0)
            model = build()
            model.compile(optimizer="sgd", loss="mse")
            lstmfast.set_backend(backend_name)
            try:
                before = model.get_weights()
                y = model.predict(x, verbose=0)
                model.train_on_batch(x, np.zeros_like(y))  # one SGD step: the weights move by -0.01 gradient
                results[backend_name, policy] = (y, [b - a for a, b in zip(before, model.get_weights())])
            finally:
                lstmfast.set_backend("cpu")
    mixed_precision.set_global_policy(None)
    assert_array_equal(results["cpu", "mixed_bfloat16"][0], results["cpu", "float32"][0])
    (y32, steps32), (y16, steps16) = results["cuda", "float32"], results["cuda", "mixed_bfloat16"]
    errors = [relative_error(y16, y32)] + [relative_error(a, b) for a, b in zip(steps16, steps32)]
    assert max(errors) < BF16_BOUND, errors
    if side.name == "emulated":
        assert min(errors) > 100 * FLOAT32, errors  # the output and every weight's step rounded


class ColumnMajorBlas:
    """cuBLAS's sgemm and gemmEx as documented (column-major ``C = alpha op(A) op(B) + beta C``
    over raw addresses and leading dimensions), on host memory: the stand-in's arrays' ``data.ptr``
    are host addresses. gemmEx takes float32 matrices only, with CUBLAS_COMPUTE_32F_FAST_16BF
    (its operands rounded to bfloat16 here). Checks the calls ``_Gemm`` makes on a real GPU."""

    CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
    calls: list = []

    @staticmethod
    def matrix(ptr, rows, cols, ld, dtype):
        assert ld >= max(1, rows)
        buffer = (ctypes.c_char * (ld * cols * np.dtype(dtype).itemsize)).from_address(ptr)
        return np.frombuffer(buffer, dtype).reshape(cols, ld)[:, :rows].T  # a view: writes go through

    def sgemm(self, handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        self.calls.append("sgemm")
        self._run(np.float32, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)

    def gemmEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc,
               compute_type, algo):
        assert (Atype, Btype, Ctype, compute_type, algo) == (0, 0, 0, 75, -1)  # R_32F, FAST_16BF, default
        self.calls.append("gemmEx")
        self._run(np.float32, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
                  rounding=reference.bfloat16_round)

    def _run(self, dtype, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, rounding=None):
        scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
        alpha, beta = (ctypes.cast(p, ctypes.POINTER(scalar)).contents.value for p in (alpha, beta))
        a = self.matrix(A, k if transa else m, m if transa else k, lda, dtype)
        b = self.matrix(B, n if transb else k, k if transb else n, ldb, dtype)
        a, b = (a.T if transa else a).astype(np.float64), (b.T if transb else b).astype(np.float64)
        if rounding is not None:
            a, b = rounding(a), rounding(b)
        c = self.matrix(C, m, n, ldc, dtype)
        c[...] = alpha * (a @ b) + beta * c


@pytest.mark.parametrize("precision", [0, 1], ids=["sgemm", "gemmEx bfloat16"])
@pytest.mark.parametrize("trans_a, trans_b, accumulate", [(False, False, False), (True, False, True),
                                                          (False, True, False), (True, True, True)])
def test_the_cublas_calls_compute_the_row_major_product(precision, trans_a, trans_b, accumulate, emulated):  # noqa: F811
    """``_Gemm``'s cuBLAS calls (row-major C = op(a) op(b) passed as column-major C^T = op(b)^T
    op(a)^T) against a column-major BLAS that follows cuBLAS's documentation: the argument order,
    leading dimensions and transposes of the call a real GPU makes, checked without one."""
    side = emulated
    rng = np.random.default_rng(9)
    m, k, n = 5, 7, 3
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype("f4")
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype("f4")
    start = rng.standard_normal((m, n)).astype("f4")
    gemm = cuda_ops._Gemm(side.xp, np.float32, precision)
    blas = gemm.lib = ColumnMajorBlas()
    ColumnMajorBlas.calls = []
    gemm.handle, gemm.call = 0, blas.sgemm
    gemm.one, gemm.zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    out = side.to_device(start.copy())
    gemm(side.to_device(a), side.to_device(b), out, trans_a, trans_b, accumulate)
    round_ = reference.bfloat16_round if precision else (lambda v: v.astype(np.float64))
    want = round_(a.T if trans_a else a) @ round_(b.T if trans_b else b) + (start if accumulate else 0)
    assert_allclose(side.to_host(out), want, rtol=1e-5, atol=1e-5)
    assert ColumnMajorBlas.calls == ["gemmEx" if precision else "sgemm"]
