"""The engines behind lstmfast.ops against the NumPy float64 oracle (lstmfast.reference): the C++ engine at
every SIMD level and thread count, and the GPU engine (on the CuPy stand-in of test_cuda.py, and on a real
GPU when there is one; conftest's ``engine`` fixture), plus torch.nn.LSTM as a second opinion and the
edge-case behaviour of the API."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast
from lstmfast import LSTMGradients, LSTMOutput, ops, reference

from conftest import ALL_LEVELS, SIMD_LEVELS, level_runs_here, peer

# float32 engine versus the float64 oracle fed the same float32 values: a few ulp per activation,
# accumulated over the recurrence and over the T*B-term sums of the weight gradients.
F32_RTOL = 1e-4
F32_ATOL = 1e-5
# float64 engine versus the float64 oracle: the same equations, different summation order and FMA.
F64_RTOL = 1e-10
F64_ATOL = 1e-12
TOLERANCES = {np.float32: dict(rtol=F32_RTOL, atol=F32_ATOL), np.float64: dict(rtol=F64_RTOL, atol=F64_ATOL)}

ACTIVATIONS = ("sigmoid", "hard_sigmoid")
DROPOUT_P = 0.3
HARD_SIGMOID_OFFSETS = (-6.0, 0.0, 6.0)  # biases far from the kinks at z = +-2.5
OUTPUT_FIELDS = ("y", "h", "c")
GRAD_FIELDS = ("dx", "dkernel", "drecurrent_kernel", "dbias", "dh0", "dc0", "dpeephole")


# ---------------------------------------------------------------------------------------------
# SIMD level and thread count fixtures.
# ---------------------------------------------------------------------------------------------

def skip_unless_supported(level):
    if not level_runs_here(level):
        pytest.skip(f"SIMD level {level!r} is not supported by this CPU "
                    f"(best: {lstmfast.build_info()['simd_supported']!r})")


@pytest.fixture
def simd_level(simd):
    """conftest's ``simd`` (every level this CPU runs, restored afterwards), checked in force."""
    assert lstmfast.build_info()["simd"] == simd
    return simd


@pytest.fixture
def restore_threads():
    original = lstmfast.get_num_threads()
    yield
    lstmfast.set_num_threads(original)


# ---------------------------------------------------------------------------------------------
# Seeded random configurations.
# ---------------------------------------------------------------------------------------------

def _random_config(rng, index):
    """One configuration: sizes and which optional inputs are present."""
    config = dict(
        seed=1000 + index,
        T=int(rng.integers(1, 7)),
        B=int(rng.integers(1, 14)),
        X=int(rng.integers(1, 20)),
        H=int(rng.choice([1, 3, 7, 16, 17, 33])),
        dtype=(np.float32, np.float64)[index % 2],
        peephole=bool(rng.random() < 0.5),
        lengths=str(rng.choice(["none", "full", "mixed", "random"])),
        state=str(rng.choice(["both", "none", "h0", "c0"])),
        activation=ACTIVATIONS[(index // 2) % 2],
        mask=bool(rng.random() < 0.5),
        bias=bool(rng.random() < 0.75),
        incoming=str(rng.choice(["all", "all", "dy", "dhdc"])),
    )
    return config


def _build_configs():
    rng = np.random.default_rng(20240601)
    configs = [_random_config(rng, k) for k in range(48)]
    # Sizes of 1 and SIMD-width remainders; dtype and activation cycle with the index as above.
    edges = [(1, 1, 1, 1), (1, 5, 3, 17), (4, 1, 2, 7), (3, 13, 1, 1), (2, 7, 9, 1), (1, 1, 17, 33),
             (5, 13, 1, 16), (6, 11, 5, 3)]
    for T, B, X, H in edges:
        config = _random_config(rng, len(configs))
        config.update(T=T, B=B, X=X, H=H)
        configs.append(config)
    return configs


CONFIGS = _build_configs()


def config_id(config):
    c = config
    parts = [f"s{c['seed']}", f"T{c['T']}B{c['B']}X{c['X']}H{c['H']}", np.dtype(c["dtype"]).name,
             "hsig" if c["activation"] == "hard_sigmoid" else "sig", f"len-{c['lengths']}", f"state-{c['state']}"]
    parts += [name for name in ("peephole", "mask") if c[name]]
    parts += [] if c["bias"] else ["nobias"]
    parts += [f"in-{c['incoming']}"]
    return "-".join(parts)


def make_lengths(rng, kind, T, B):
    if kind == "none":
        return None
    if kind == "full":
        return np.full(B, T, dtype=np.int32)
    if kind == "mixed":  # 0, T and in-between, cycling
        pattern = [0, T, max(1, T - 1), T // 2]
        return np.array([pattern[b % 4] for b in range(B)], dtype=np.int64)
    return rng.integers(0, T + 1, size=B).astype(np.int32)


def make_case(config):
    """(forward kwargs, backward kwargs), as arrays of the config's dtype."""
    rng = np.random.default_rng(config["seed"])
    T, B, X, H, dtype = config["T"], config["B"], config["X"], config["H"], config["dtype"]
    hard = config["activation"] == "hard_sigmoid"
    # Weights scaled so z is O(1); for hard_sigmoid much smaller, around biases far from the kinks.
    scale = (0.05 if hard else 1.0) / np.sqrt(X + H)
    if hard:
        bias = rng.choice(HARD_SIGMOID_OFFSETS, size=4 * H) + 0.05 * rng.standard_normal(4 * H)
    else:
        bias = 0.5 * rng.standard_normal(4 * H)
    args = dict(
        x=rng.standard_normal((T, B, X)),
        kernel=scale * rng.standard_normal((X, 4 * H)),
        recurrent_kernel=scale * rng.standard_normal((H, 4 * H)),
        bias=bias if config["bias"] else None,
        recurrent_activation=config["activation"],
    )
    if config["state"] in ("both", "h0"):
        args["h0"] = rng.uniform(-1.0, 1.0, (B, H))
    if config["state"] in ("both", "c0"):
        args["c0"] = (0.1 if hard else 1.0) * rng.standard_normal((B, H))
    if config["peephole"]:
        args["peephole"] = (0.05 if hard else 0.5) * rng.standard_normal((3, H))
    args["lengths"] = make_lengths(rng, config["lengths"], T, B)
    if config["mask"]:
        args["recurrent_dropout_mask"] = np.where(rng.random((B, H)) < DROPOUT_P, 0.0, 1.0 / (1.0 - DROPOUT_P))
    incoming = dict(dy=rng.standard_normal((T, B, H)), dh=rng.standard_normal((B, H)),
                    dc=rng.standard_normal((B, H)))
    if config["incoming"] == "dy":
        incoming.update(dh=None, dc=None)
    elif config["incoming"] == "dhdc":
        incoming["dy"] = None
    return cast(args, dtype), cast(incoming, dtype)


def cast(kwargs, dtype):
    return {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
            for k, v in kwargs.items()}


def run_engine(args, incoming):
    out = ops.lstm_forward(**args)
    grads = ops.lstm_backward(out.cache, **incoming)
    return out, grads


def run_on(engine, args, incoming):
    """Forward and backward on ``engine`` (a conftest.Side), the results back as host arrays."""
    out = ops.lstm_forward(**engine.kwargs_to_device(args))
    grads = ops.lstm_backward(out.cache, **engine.kwargs_to_device(incoming))
    assert isinstance(out.y, engine.xp.ndarray) and isinstance(grads.dkernel, engine.xp.ndarray)
    return host(engine, out, grads)


def host(engine, out, grads):
    """An LSTMOutput (without its cache) and LSTMGradients as host arrays."""
    return (LSTMOutput(*(engine.to_host(getattr(out, name)) for name in OUTPUT_FIELDS), None),
            LSTMGradients(*(engine.to_host(getattr(grads, name)) for name in GRAD_FIELDS)))


def run_oracle(args, incoming):
    """The oracle on the same values (float32 inputs widened exactly to float64)."""
    out = reference.lstm_forward(**cast(args, np.float64))
    grads = reference.lstm_backward(out.cache, **cast(incoming, np.float64))
    return out, grads


def assert_matches_oracle(out, grads, ref_out, ref_grads, dtype):
    tol = TOLERANCES[dtype]
    for name in OUTPUT_FIELDS:
        got = getattr(out, name)
        assert got.dtype == dtype, name
        assert_allclose(got, getattr(ref_out, name), **tol, err_msg=name)
    for name in GRAD_FIELDS:
        got, want = getattr(grads, name), getattr(ref_grads, name)
        assert (got is None) == (want is None), f"{name}: engine {got is None}, oracle {want is None}"
        if want is not None:
            assert got.dtype == dtype, name
            assert_allclose(got, want, **tol, err_msg=name)


_ORACLE = {}


def oracle_for(index):
    """The oracle's results for CONFIGS[index], computed once (shared by the SIMD levels)."""
    if index not in _ORACLE:
        args, incoming = make_case(CONFIGS[index])
        _ORACLE[index] = run_oracle(args, incoming)
    return _ORACLE[index]


# ---------------------------------------------------------------------------------------------
# Engine versus oracle.
# ---------------------------------------------------------------------------------------------

def test_configurations_cover_the_edge_cases():
    sizes = {(c["T"], c["B"], c["X"], c["H"]) for c in CONFIGS}
    assert len(CONFIGS) >= 50
    for k, name in enumerate("TBXH"):
        assert any(s[k] == 1 for s in sizes), f"no config with {name} = 1"
    assert {1, 3, 7, 16, 17, 33} <= {c["H"] for c in CONFIGS}
    assert max(c["B"] for c in CONFIGS) >= 13
    for key, values in [("dtype", {np.float32, np.float64}), ("activation", set(ACTIVATIONS)),
                        ("peephole", {True, False}), ("mask", {True, False}), ("bias", {True, False}),
                        ("lengths", {"none", "full", "mixed", "random"}),
                        ("state", {"both", "none", "h0", "c0"})]:
        assert {c[key] for c in CONFIGS} == values, key
    mixed = [(c["T"], make_case(c)[0]["lengths"]) for c in CONFIGS if c["lengths"] == "mixed" and c["B"] >= 3]
    assert any(0 in lengths and T in lengths and np.any((lengths > 0) & (lengths < T)) for T, lengths in mixed)


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=[config_id(c) for c in CONFIGS])
def test_engine_matches_oracle(index, engine):
    config = CONFIGS[index]
    args, incoming = make_case(config)
    out, grads = run_on(engine, args, incoming)
    ref_out, ref_grads = oracle_for(index)
    assert_matches_oracle(out, grads, ref_out, ref_grads, config["dtype"])


# ---------------------------------------------------------------------------------------------
# Threads: bitwise identical results for 1 and 2 threads.
# ---------------------------------------------------------------------------------------------

THREAD_CASES = [
    dict(seed=7, T=7, B=19, X=37, H=70, peephole=False, lengths="none", state="none", mask=False, bias=True,
         activation="sigmoid", incoming="all"),
    dict(seed=8, T=6, B=13, X=20, H=41, peephole=True, lengths="random", state="both", mask=True, bias=True,
         activation="sigmoid", incoming="all"),
    dict(seed=9, T=5, B=17, X=24, H=35, peephole=True, lengths="mixed", state="h0", mask=True, bias=False,
         activation="hard_sigmoid", incoming="all"),
]


def all_arrays(out, grads):
    return [(name, getattr(out, name)) for name in OUTPUT_FIELDS] + \
           [(name, getattr(grads, name)) for name in GRAD_FIELDS if getattr(grads, name) is not None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", THREAD_CASES, ids=lambda c: "T{T}B{B}X{X}H{H}".format(**c))
def test_one_and_two_threads_give_identical_bits(case, dtype, simd_level, restore_threads):
    args, incoming = make_case(dict(case, dtype=dtype))
    results = {}
    for threads in (1, 2):
        lstmfast.set_num_threads(threads)
        assert lstmfast.get_num_threads() == threads
        results[threads] = all_arrays(*run_engine(args, incoming))
    for (name, one), (_, two) in zip(results[1], results[2]):
        assert_array_equal(one, two, err_msg=name, strict=True)
    # And the numbers are right, not just repeatable.
    ref_out, ref_grads = run_oracle(args, incoming)
    out, grads = run_engine(args, incoming)
    assert_matches_oracle(out, grads, ref_out, ref_grads, dtype)


def test_set_simd_level_rejects_unsupported_levels():
    best = lstmfast.build_info()["simd_supported"]
    unsupported = SIMD_LEVELS[SIMD_LEVELS.index(best) + 1:]
    if not unsupported:
        pytest.skip(f"this CPU supports every SIMD level (best: {best!r})")
    original = lstmfast.build_info()["simd"]
    for level in unsupported:
        with pytest.raises(ValueError, match=f"{level}.*not supported.*{best}"):
            lstmfast.set_simd_level(level)
        assert lstmfast.build_info()["simd"] == original
    with pytest.raises(ValueError, match="portable.*avx2.*avx512.*sse9"):
        lstmfast.set_simd_level("sse9")


def test_emulated_avx512_level_is_never_chosen_by_itself():
    # The testing level is chosen only on request; the default is a hardware level.
    code = "import lstmfast; print(lstmfast.build_info()['simd'], lstmfast.build_info()['simd_supported'])"
    env = {k: v for k, v in os.environ.items() if k != "LSTMFAST_SIMD"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    level, best = result.stdout.split()
    assert level == best and level in SIMD_LEVELS


def import_with_simd_env(value):
    code = "import lstmfast; print(lstmfast.build_info()['simd'])"
    env = dict(os.environ, LSTMFAST_SIMD=value)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("level", ALL_LEVELS)
def test_simd_environment_variable_forces_the_level(level):
    skip_unless_supported(level)
    result = import_with_simd_env(level.upper())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == level
    assert "LSTMFAST_SIMD" not in result.stderr


def test_simd_environment_variable_warns_when_unsupported():
    best = lstmfast.build_info()["simd_supported"]
    unsupported = SIMD_LEVELS[SIMD_LEVELS.index(best) + 1:]
    if not unsupported:
        pytest.skip(f"this CPU supports every SIMD level (best: {best!r})")
    result = import_with_simd_env(unsupported[-1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == best
    assert "RuntimeWarning" in result.stderr and "is not supported by this CPU" in result.stderr


# ---------------------------------------------------------------------------------------------
# torch.nn.LSTM as a second opinion.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 3, 4, 7), (4, 13, 9, 17)],
                         ids=lambda s: "T{}B{}X{}H{}".format(*s))
def test_matches_torch_lstm(shape, dtype):
    torch = peer("torch")
    T, B, X, H = shape
    config = dict(seed=77 + T, T=T, B=B, X=X, H=H, dtype=dtype, peephole=False, lengths="none",
                  state="both", activation="sigmoid", mask=False, bias=True, incoming="all")
    args, incoming = make_case(config)
    out, grads = run_engine(args, incoming)

    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    lstm = torch.nn.LSTM(X, H).to(torch_dtype)  # time-major (batch_first=False), like lstmfast
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(args["kernel"].T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(args["recurrent_kernel"].T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(args["bias"]))
        lstm.bias_hh_l0.zero_()
    x = torch.from_numpy(args["x"]).requires_grad_()
    h0 = torch.from_numpy(args["h0"][None]).requires_grad_()
    c0 = torch.from_numpy(args["c0"][None]).requires_grad_()
    y, (h, c) = lstm(x, (h0, c0))
    loss = ((y * torch.from_numpy(incoming["dy"])).sum() + (h[0] * torch.from_numpy(incoming["dh"])).sum()
            + (c[0] * torch.from_numpy(incoming["dc"])).sum())
    loss.backward()

    tol = TOLERANCES[dtype]
    pairs = [("y", out.y, y), ("h", out.h, h[0]), ("c", out.c, c[0]), ("dx", grads.dx, x.grad),
             ("dkernel", grads.dkernel, lstm.weight_ih_l0.grad.T),
             ("drecurrent_kernel", grads.drecurrent_kernel, lstm.weight_hh_l0.grad.T),
             ("dbias", grads.dbias, lstm.bias_ih_l0.grad), ("dbias (b_hh)", grads.dbias, lstm.bias_hh_l0.grad),
             ("dh0", grads.dh0, h0.grad[0]), ("dc0", grads.dc0, c0.grad[0])]
    for name, ours, theirs in pairs:
        assert_allclose(ours, theirs.detach().numpy(), **tol, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Behaviour at the edges.
# ---------------------------------------------------------------------------------------------

def small_case(dtype=np.float64, T=3, B=4, X=5, H=6, seed=1, **overrides):
    config = dict(seed=seed, T=T, B=B, X=X, H=H, dtype=dtype, peephole=True, lengths="none", state="both",
                  activation="sigmoid", mask=True, bias=True, incoming="all")
    config.update(overrides)
    return make_case(config)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_zero_time_steps_return_initial_state(dtype, engine):
    args, incoming = small_case(dtype, T=0)
    out, grads = run_on(engine, args, incoming)
    B, X, H = 4, 5, 6
    assert out.y.shape == (0, B, H) and out.y.dtype == dtype
    assert_array_equal(out.h, args["h0"], strict=True)
    assert_array_equal(out.c, args["c0"], strict=True)
    assert grads.dx.shape == (0, B, X)
    assert_array_equal(grads.dh0, incoming["dh"], strict=True)
    assert_array_equal(grads.dc0, incoming["dc"], strict=True)
    for name in ("dkernel", "drecurrent_kernel", "dbias", "dpeephole"):
        assert_array_equal(getattr(grads, name), np.zeros_like(getattr(grads, name)), err_msg=name)
    # Without an initial state the final state is zeros.
    device = engine.kwargs_to_device(args)
    bare = ops.lstm_forward(device["x"], device["kernel"], device["recurrent_kernel"], None)
    assert_array_equal(engine.to_host(bare.h), np.zeros((B, H), dtype), strict=True)
    assert_array_equal(engine.to_host(bare.c), np.zeros((B, H), dtype), strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_empty_batch(dtype, engine):
    args, incoming = small_case(dtype, B=0)
    out, grads = run_on(engine, args, incoming)
    T, X, H = 3, 5, 6
    assert out.y.shape == (T, 0, H) and out.h.shape == (0, H) and out.c.shape == (0, H)
    assert grads.dx.shape == (T, 0, X) and grads.dh0.shape == (0, H) and grads.dc0.shape == (0, H)
    for name in ("dkernel", "drecurrent_kernel", "dbias", "dpeephole"):
        value = getattr(grads, name)
        assert_array_equal(value, np.zeros_like(value), err_msg=name)


def test_lengths_all_zero_pass_state_and_gradients_through(engine):
    args, incoming = small_case(lengths="mixed", B=4)
    args["lengths"] = np.zeros(4, dtype=np.int32)
    out, grads = run_on(engine, args, incoming)
    assert_array_equal(out.y, np.zeros_like(out.y))
    assert_array_equal(out.h, args["h0"])
    assert_array_equal(out.c, args["c0"])
    assert_array_equal(grads.dh0, incoming["dh"])
    assert_array_equal(grads.dc0, incoming["dc"])
    for name in ("dx", "dkernel", "drecurrent_kernel", "dbias", "dpeephole"):
        value = getattr(grads, name)
        assert_array_equal(value, np.zeros_like(value), err_msg=name)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nan_in_x_reaches_only_its_batch_row(dtype, activation, engine):
    T, B, H, t_nan, b_nan = 4, 5, 19, 1, 3
    args, _ = small_case(dtype, T=T, B=B, H=H, activation=activation)
    args["x"][t_nan, b_nan, 2] = np.nan
    out = ops.lstm_forward(**engine.kwargs_to_device(args), training=False)
    y, h, c = (engine.to_host(v) for v in out[:3])
    assert np.all(np.isnan(y[t_nan:, b_nan])), "NaN swallowed on its way to y"
    assert np.all(np.isnan(h[b_nan])) and np.all(np.isnan(c[b_nan]))
    assert np.all(np.isfinite(y[:t_nan, b_nan]))
    others = [b for b in range(B) if b != b_nan]
    assert np.all(np.isfinite(y[:, others]))
    assert np.all(np.isfinite(h[others])) and np.all(np.isfinite(c[others]))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nan_in_initial_cell_state_is_not_swallowed(dtype, activation, engine):
    # c0 feeds the gates only through the peepholes and the cell update: no weight product to spread it.
    args, _ = small_case(dtype, T=2, B=3, H=9, activation=activation)
    args["c0"][1, 4] = np.nan
    out = ops.lstm_forward(**engine.kwargs_to_device(args), training=False)
    y, c = engine.to_host(out.y), engine.to_host(out.c)
    assert np.isnan(c[1, 4]) and np.isnan(y[0, 1, 4])
    assert np.all(np.isfinite(y[:, [0, 2]]))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_huge_inputs_saturate_without_overflow(dtype, activation, engine):
    args, incoming = small_case(dtype, T=5, B=7, H=17, activation=activation)
    args["x"] = (args["x"] * 1e4).astype(dtype)
    args["kernel"] = (args["kernel"] * 10).astype(dtype)
    out, grads = run_on(engine, args, incoming)
    assert np.all(np.isfinite(out.y)) and np.all(np.abs(out.y) <= 1.0)
    assert np.all(np.isfinite(out.h)) and np.all(np.isfinite(out.c))
    assert np.all(np.abs(out.c) <= np.abs(args["c0"]) + 5.001)  # |c_t| <= |c_{t-1}| + 1 per step
    for name, value in all_arrays(out, grads):
        assert np.all(np.isfinite(value)), name


def test_training_output_is_read_only():
    args, _ = small_case()
    out = ops.lstm_forward(**args)
    assert not out.y.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        out.y[0, 0, 0] = 1.0


def test_backward_consumes_the_cache(engine):
    args, incoming = small_case()
    args, incoming = engine.kwargs_to_device(args), engine.kwargs_to_device(incoming)
    out = ops.lstm_forward(**args)
    first = ops.lstm_backward(out.cache, **incoming)
    assert "consumed" in repr(out.cache)
    with pytest.raises(ValueError, match="cache.*already used"):
        ops.lstm_backward(out.cache, **incoming)
    # A fresh forward pass gives a usable cache with the same gradients.
    again = ops.lstm_backward(ops.lstm_forward(**args).cache, **incoming)
    for name in GRAD_FIELDS:
        assert_array_equal(engine.to_host(getattr(first, name)), engine.to_host(getattr(again, name)), err_msg=name)


def test_refused_backward_leaves_the_cache_usable():
    # NumPy arguments go to the C++ engine unchecked; when it refuses them (here a wrong shape, and
    # a Fortran-ordered dy that the Python checks then convert) it has not touched the cache.
    args, incoming = small_case()
    expected = ops.lstm_backward(ops.lstm_forward(**args).cache, **incoming)
    out = ops.lstm_forward(**args)
    with pytest.raises(ValueError, match="dy must have shape"):
        ops.lstm_backward(out.cache, **{**incoming, "dy": incoming["dy"][:, :2]})
    assert "ready" in repr(out.cache)
    grads = ops.lstm_backward(out.cache, **{**incoming, "dy": np.asfortranarray(incoming["dy"])})
    for name in GRAD_FIELDS:
        assert_array_equal(getattr(grads, name), getattr(expected, name), err_msg=name)


def strided_copy(a, rng, engine):
    """Same values as ``a`` on ``engine`` in a non-contiguous view (every other element of a bigger array)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    if a.dtype.kind == "f":
        big[...] = rng.standard_normal(big.shape)
    big = engine.to_device(big)
    view = big[..., ::2]
    view[...] = engine.to_device(a)
    assert not view.flags.c_contiguous or a.size <= 1
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_non_contiguous_inputs_equal_contiguous_copies(dtype, engine):
    args, incoming = small_case(dtype, T=4, B=5, X=6, H=7, lengths="random")
    rng = np.random.default_rng(3)
    want_out, want_grads = run_on(engine, args, incoming)

    strided = {name: strided_copy(args[name], rng, engine) for name in ("x", "bias", "h0", "c0", "peephole",
                                                                          "lengths", "recurrent_dropout_mask")}
    xp = engine.xp
    strided["kernel"] = xp.ascontiguousarray(engine.to_device(args["kernel"]).T).T  # transposed view, Fortran order
    strided["recurrent_kernel"] = xp.asfortranarray(engine.to_device(args["recurrent_kernel"]))
    strided["recurrent_activation"] = args["recurrent_activation"]
    strided_incoming = {name: strided_copy(value, rng, engine) for name, value in incoming.items()}
    assert not strided["x"].flags.c_contiguous and not strided["kernel"].flags.c_contiguous
    got_out, got_grads = run_on(engine, strided, strided_incoming)
    for (name, want), (_, got) in zip(all_arrays(want_out, want_grads), all_arrays(got_out, got_grads)):
        assert_array_equal(got, want, err_msg=name, strict=True)


def test_time_batch_transposed_view_as_x():
    # A batch-major array viewed time-major: x = xb.transpose(1, 0, 2).
    args, incoming = small_case(np.float32, T=3, B=4)
    xb = np.ascontiguousarray(args["x"].transpose(1, 0, 2))
    view = dict(args, x=xb.transpose(1, 0, 2))
    assert not view["x"].flags.c_contiguous
    want = ops.lstm_forward(**args, training=False)
    got = ops.lstm_forward(**view, training=False)
    for name in OUTPUT_FIELDS:
        assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_float64_lists_work():
    args, incoming = small_case(np.float64, lengths="random")
    want_out, want_grads = run_engine(args, incoming)
    as_lists = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    incoming_lists = {k: v.tolist() for k, v in incoming.items()}
    got_out, got_grads = run_engine(as_lists, incoming_lists)
    assert got_out.y.dtype == np.float64
    for (name, want), (_, got) in zip(all_arrays(want_out, want_grads), all_arrays(got_out, got_grads)):
        assert_array_equal(got, want, err_msg=name, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_inference_mode_equals_training_mode(dtype, engine):
    args, _ = small_case(dtype, lengths="mixed", H=17)
    args = engine.kwargs_to_device(args)
    train = ops.lstm_forward(**args, training=True)
    infer = ops.lstm_forward(**args, training=False)
    assert train.cache is not None and infer.cache is None
    for name in OUTPUT_FIELDS:
        assert_array_equal(engine.to_host(getattr(infer, name)), engine.to_host(getattr(train, name)), err_msg=name,
                           strict=True)


@pytest.mark.parametrize("T,B", [(300, 7), (3, 1500), (1025, 1)], ids=["chunks-146-146-8", "one-step-chunks",
                                                                     "B1-two-chunks"])
def test_inference_projects_in_chunks_with_the_same_bits(T, B, simd_level, restore_threads):
    """Inference projects at most 1024 rows of x at a time (memory independent of T); the chunk
    edges must not show in any output, for 1 or 2 threads, with lengths ending inside chunks."""
    args, _ = small_case(np.float32, T=T, B=B, X=3, H=9, lengths="mixed")
    train = ops.lstm_forward(**args, training=True)
    for threads in (1, 2):
        lstmfast.set_num_threads(threads)
        infer = ops.lstm_forward(**args, training=False)
        for name in OUTPUT_FIELDS:
            assert_array_equal(getattr(infer, name), getattr(train, name), err_msg=f"{name}, {threads} threads",
                               strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_same_inputs_give_identical_bits_and_inputs_are_untouched(dtype, engine):
    args, incoming = small_case(dtype, T=5, B=13, X=9, H=33, lengths="random")
    args, incoming = engine.kwargs_to_device(args), engine.kwargs_to_device(incoming)
    before = {k: engine.to_host(v).copy() for k, v in {**args, **incoming}.items() if hasattr(v, "shape")}
    first = all_arrays(*run_on(engine, args, incoming))
    second = all_arrays(*run_on(engine, args, incoming))
    for (name, a), (_, b) in zip(first, second):
        assert_array_equal(a, b, err_msg=name, strict=True)
    for name, value in before.items():
        current = args[name] if name in args else incoming[name]
        assert_array_equal(engine.to_host(current), value, err_msg=f"{name} was modified", strict=True)


def test_unpickled_arrays_are_accepted():
    args, _ = small_case(np.float32)
    want = ops.lstm_forward(**args, training=False)
    roundtrip = {k: pickle.loads(pickle.dumps(v)) for k, v in args.items()}
    got = ops.lstm_forward(**roundtrip, training=False)
    for name in OUTPUT_FIELDS:
        assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_byte_swapped_arrays_are_accepted():
    # Arrays read from a big-endian file: same values, converted to native order.
    args, _ = small_case(np.float32)
    want = ops.lstm_forward(**args, training=False)
    swapped = {k: (v.astype(v.dtype.newbyteorder(">")) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
               for k, v in args.items()}
    assert swapped["x"].dtype.str == ">f4"
    got = ops.lstm_forward(**swapped, training=False)
    for name in OUTPUT_FIELDS:
        assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
