"""The fused C++ optimizer step and embedding-gradient scatter against their NumPy references.

optimizers.py runs each rule in C++ (one pass per variable) and keeps the NumPy code of the rule
as the reference; with every multiply and add rounded separately the two must agree bit for bit,
at every SIMD level and thread count, NaN and inf included. Clipping by norm computes the norm in
a different order, so those cases compare to a tolerance.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast
from lstmfast import _core, optimizers

# (0, 3) is empty; 70001 elements crosses the size where the kernel splits the work over threads.
SHAPES = [(3, 4), (1,), (0, 3), (70001,), (5, 1, 7)]
RULES = [
    ("SGD", dict(learning_rate=0.1)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9)),
    ("SGD", dict(learning_rate=0.05, momentum=0.5, nesterov=True)),
    ("Adam", dict(learning_rate=0.01)),
    ("Adam", dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-3, amsgrad=True)),
    ("AdamW", dict(learning_rate=0.01, weight_decay=0.1)),
    ("RMSprop", dict(learning_rate=0.01)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.7)),
    ("RMSprop", dict(learning_rate=0.01, rho=0.8, centered=True, epsilon=1e-4)),
    ("RMSprop", dict(learning_rate=0.01, rho=0.8, momentum=0.7, centered=True, epsilon=1e-4)),
    ("Adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-3)),
]
EXTRAS = {"plain": {}, "clipvalue": dict(clipvalue=0.5), "weight_decay": dict(weight_decay=0.05),
          "clipnorm": dict(clipnorm=1.0), "global_clipnorm": dict(global_clipnorm=2.0)}


def _run(cls, cfg, dtype, fused, seed=3, steps=4, nan=False):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    opt = getattr(optimizers, cls)(**cfg)
    opt._fused = fused
    for step in range(steps):
        grads = [(rng.normal(size=s) * 3).astype(dtype) for s in SHAPES]
        if nan and step == 1:
            grads[0][0, 0], grads[0][1, 2], grads[3][5] = np.nan, np.inf, -np.inf
        opt.apply_gradients(zip(grads, params))
    assert (opt._fused_vars is not None) if fused else not opt._fused   # the path under test ran
    state = opt.get_state()
    return params, state["slots"], opt.iterations


CASES = [(cls, cfg, extra) for cls, cfg in RULES for extra in EXTRAS
         if not (cls == "AdamW" and extra == "weight_decay")]     # AdamW has its own weight decay


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,cfg,extra", CASES, ids=[f"{c}-{RULES.index((c, k))}-{e}" for c, k, e in CASES])
def test_fused_step_equals_numpy_reference(cls, cfg, extra, dtype, simd):
    cfg = {**cfg, **EXTRAS[extra]}
    want_p, want_s, want_it = _run(cls, cfg, dtype, fused=False)
    threads = lstmfast.get_num_threads()
    try:
        for nt in (1, 2):
            lstmfast.set_num_threads(nt)
            got_p, got_s, got_it = _run(cls, cfg, dtype, fused=True)
            assert got_it == want_it
            for got, want in zip(got_p + got_s, want_p + want_s):
                assert got.dtype == want.dtype and got.shape == want.shape
                if extra in ("clipnorm", "global_clipnorm"):   # the norm is summed in another order
                    assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-7)
                else:
                    assert_array_equal(got, want)
    finally:
        lstmfast.set_num_threads(threads)


@pytest.mark.parametrize("cls,cfg", RULES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(RULES)])
def test_fused_step_propagates_nan_and_inf_like_numpy(cls, cfg, simd):
    want_p, want_s, _ = _run(cls, {**cfg, "clipvalue": 2.0}, np.float32, fused=False, nan=True)
    got_p, got_s, _ = _run(cls, {**cfg, "clipvalue": 2.0}, np.float32, fused=True, nan=True)
    assert np.isnan(want_p[0]).any()          # the case is live: NaN reached the variable
    for got, want in zip(got_p + got_s, want_p + want_s):
        assert_array_equal(got, want)         # NaN positions equal too


def test_fused_path_is_the_default_and_numpy_path_handles_the_rest():
    v = np.ones((4, 3), np.float32)
    opt = optimizers.Adam()
    opt.apply_gradients([(np.ones((4, 3), np.float32), v)])
    assert opt._fused and opt._fused_vars is not None
    # a non-contiguous variable sends the whole step through NumPy, with the same result
    base = np.ones((4, 6), np.float32)
    w = base[:, ::2]
    opt2 = optimizers.Adam()
    opt2.apply_gradients([(np.ones((4, 3), np.float32), w)])
    assert opt2._fused_vars is None
    assert_array_equal(w, v)
    # float16 variables too
    h = np.ones((4, 3), np.float16)
    opt3 = optimizers.Adam()
    opt3.apply_gradients([(np.ones((4, 3), np.float16), h)])
    assert opt3._fused_vars is None and h.dtype == np.float16
    assert_allclose(h, v, rtol=1e-3)


def test_subclass_overriding_the_rule_keeps_it():
    """A user's subclass that overrides _update (and not _fused_rule) must run its own rule."""
    class HalfStepSGD(optimizers.SGD):
        def _update(self, b, c, lr, t):
            np.multiply(b["grad"], lr / 2, b["grad"])
            return "grad", -1

    v = np.ones(4, np.float32)
    opt = HalfStepSGD(learning_rate=1.0)
    assert not opt._fused
    opt.apply_gradients([(np.ones(4, np.float32), v)])
    assert_array_equal(v, 0.5)
    assert optimizers.AdamW()._fused        # built-in subclasses inherit both together


def test_fused_step_gradient_kinds():
    """Gradients as lists, float64 for a float32 variable, or non-contiguous arrays are converted."""
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4, 6)).astype(np.float32)
    outs = []
    for grad in (g.tolist(), g.astype(np.float64), np.asfortranarray(g), g):
        v = np.zeros((4, 6), np.float32)
        optimizers.SGD(0.5).apply_gradients([(grad, v)])
        outs.append(v)
    for v in outs:
        assert_array_equal(v, outs[-1])
    with pytest.raises(ValueError, match="shape"):
        optimizers.SGD(0.5).apply_gradients([(np.zeros((3, 6), np.float32), np.zeros((4, 6), np.float32))])


@pytest.mark.parametrize("kernel", ["optim_step_f32", "optim_step_f64"])
def test_core_optim_step_rejects_bad_arguments(kernel):
    f = getattr(_core, kernel)
    dt = np.float32 if kernel.endswith("32") else np.float64
    other = np.float64 if dt == np.float32 else np.float32
    v, g, m, s = (np.zeros(8, dt) for _ in range(4))
    w, gw, mw, sw = (np.zeros(3, dt) for _ in range(4))
    hyper = (0.1, 0.0, 0.1, 0.001, 0.0, 0.0, 1e-7)
    tail = (None, None, 1.0)

    def step(vars_, grads, slots, rule=3, scales=None):
        f(rule, vars_, grads, slots, *hyper, scales, *tail[1:])

    step([v, w], [g, gw], [[m, s], [mw, sw]])          # fine
    step((v,), (g,), ([m, s],))                         # tuples too
    before = w.copy()
    cases = [
        (ValueError, "rule", lambda: step([v], [g], [[]], rule=10)),
        (ValueError, "2 slot arrays", lambda: step([v], [g], [[m]])),
        (TypeError, "dtype", lambda: step([v], [g.astype(other)], [[m, s]])),
        (ValueError, "shape", lambda: step([v], [np.zeros(7, dt)], [[m, s]])),
        (ValueError, "share memory", lambda: step([v], [g], [[m, m]])),
        (ValueError, "share memory", lambda: step([v], [v], [[m, s]])),
        (ValueError, "contiguous", lambda: step([np.zeros(16, dt)[::2]], [g], [[m, s]])),
        (TypeError, "numpy array", lambda: step([[0.0] * 8], [g], [[m, s]])),
        (ValueError, "same length", lambda: step([v, w], [g], [[m, s], [mw, sw]])),
        (ValueError, "one entry per variable", lambda: step([v], [g], [[m, s]], scales=[1.0, 1.0])),
        (TypeError, r"scales\[0\] must be a real number", lambda: step([v], [g], [[m, s]], scales=["x"])),
        (TypeError, "scales must be None or a list", lambda: step([v], [g], [[m, s]], scales=1.0)),
        (TypeError, "clipvalue must be a real number", lambda: f(3, [v], [g], [[m, s]], *hyper, None, "1", 1.0)),
        (TypeError, "var must be a numpy array", lambda: step([None], [g], [[m, s]])),
        (TypeError, "slots must be a list", lambda: step([v], [g], [None])),
        (ValueError, "variables 0 and 1 share memory", lambda: step([v, v], [g, g.copy()],
                                                                     [[m, s], [m.copy(), s.copy()]])),
        # the second variable is bad: the first must not have been updated
        (ValueError, "variable 1: grad must have shape", lambda: step([w, v], [np.ones(3, dt), g[:5].copy()],
                                                                       [[mw, sw], [m, s]])),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros(8, dt)
        ro.flags.writeable = False
        step([ro], [g], [[m, s]])
    assert_array_equal(w, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_scatter_add_rows_equals_add_at(dtype, index_dtype, simd):
    rng = np.random.default_rng(1)
    for rows, D, n in [(1, 1, 1), (5, 3, 40), (20000, 128, 2560), (7, 4, 0)]:
        base = rng.normal(size=(rows, D)).astype(dtype)
        index = rng.integers(0, rows, size=n).astype(index_dtype)   # many repeats
        src = rng.normal(size=(n, D)).astype(dtype)
        want = base.copy()
        np.add.at(want, index, src)
        got = base.copy()
        getattr(_core, "scatter_add_rows_f32" if dtype == np.float32 else "scatter_add_rows_f64")(got, index, src)
        assert_array_equal(got, want)


def test_scatter_add_rows_rejects_bad_arguments():
    out, src = np.zeros((4, 3), np.float32), np.ones((2, 3), np.float32)
    f = _core.scatter_add_rows_f32
    with pytest.raises(ValueError, match=r"index\[1\] = 4 is out of range for 4 rows"):
        f(out, np.array([0, 4], np.int64), src)
    with pytest.raises(ValueError, match="out of range"):
        f(out, np.array([-1, 0], np.int32), src)
    with pytest.raises(TypeError, match="int32 or int64"):
        f(out, np.array([0, 1], np.int16), src)
    with pytest.raises(ValueError, match="src must have shape"):
        f(out, np.array([0, 1, 2], np.int64), src)
    with pytest.raises(TypeError, match="dtype"):
        f(out, np.array([0, 1], np.int64), src.astype(np.float64))
    assert_array_equal(out, 0)   # nothing was written by a refused call


@pytest.mark.parametrize("dtype,tiny", [(np.float32, 1e-39), (np.float64, 1e-310)])
def test_fused_step_flushes_subnormal_moments_to_zero(dtype, tiny):
    """Adam moments of rows without gradient decay into subnormals; the fused step flushes them
    (FTZ/DAZ) instead of crawling through microcode assists. The NumPy path keeps them: the two
    differ only below the smallest normal number."""
    assert 0 < tiny < np.finfo(dtype).tiny
    n = 70001                                   # threaded path too
    results = {}
    for fused in (True, False):
        v = np.ones(n, dtype)
        opt = optimizers.Adam(learning_rate=0.01)
        opt._fused = fused
        opt.build([v])
        opt.set_state({"iterations": 5, "slots": [np.full(n, tiny, dtype), np.full(n, tiny, dtype)]})
        opt.apply_gradients([(np.zeros(n, dtype), v)])
        m, vel = opt.get_state()["slots"]
        results[fused] = (v.copy(), m, vel)
    v_f, m_f, vel_f = results[True]
    v_n, m_n, vel_n = results[False]
    assert_array_equal(m_f, 0)
    assert_array_equal(vel_f, 0)
    assert (m_n > 0).all() and (m_n < np.finfo(dtype).tiny).all()   # NumPy: still subnormal
    assert_array_equal(v_f, 1)                                        # no update from a zero moment
    assert_allclose(v_n, v_f, rtol=0, atol=1e-6)
