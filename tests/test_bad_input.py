"""Bad calls raise ValueError or TypeError whose message names the argument, what was expected and
what came, both through lstmfast.ops and directly into lstmfast._core; and none of them crashes."""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import lstmfast
from lstmfast import _core, ops, reference

T, B, X, H = 3, 4, 5, 6  # the good call every bad call is derived from
SUBPROCESS_TIMEOUT_S = 60


def good_args(dtype=np.float32):
    """Keyword arguments of a valid ops.lstm_forward call (every optional input present)."""
    rng = np.random.default_rng(0)
    args = dict(
        x=rng.standard_normal((T, B, X)),
        kernel=0.3 * rng.standard_normal((X, 4 * H)),
        recurrent_kernel=0.3 * rng.standard_normal((H, 4 * H)),
        bias=0.3 * rng.standard_normal(4 * H),
        h0=rng.standard_normal((B, H)),
        c0=rng.standard_normal((B, H)),
        peephole=0.3 * rng.standard_normal((3, H)),
        recurrent_dropout_mask=np.where(rng.random((B, H)) < 0.3, 0.0, 1.0 / 0.7),
    )
    args = {k: v.astype(dtype) for k, v in args.items()}
    args["lengths"] = np.array([3, 0, 2, 1], dtype=np.int32)
    return args


def good_incoming(dtype=np.float32):
    rng = np.random.default_rng(1)
    return dict(dy=rng.standard_normal((T, B, H)).astype(dtype), dh=rng.standard_normal((B, H)).astype(dtype),
                dc=rng.standard_normal((B, H)).astype(dtype))


def f64(a):
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Bad calls through ops: (id, exception, change to the good float32 arguments, message fragments).
# ---------------------------------------------------------------------------------------------

FORWARD_CASES = [
    # Rank and sizes.
    ("x-rank-2", ValueError, dict(x=lambda a: a["x"][0]), ["x", "[T, B, X]", "(4, 5)"]),
    ("x-rank-4", ValueError, dict(x=lambda a: a["x"][None]), ["x", "[T, B, X]", "(1, 3, 4, 5)"]),
    ("h0-batch", ValueError, dict(h0=lambda a: np.zeros((5, 6), np.float32)), ["h0", "[B, H]", "(4, 6)", "(5, 6)"]),
    ("c0-batch", ValueError, dict(c0=lambda a: np.zeros((3, 6), np.float32)), ["c0", "[B, H]", "(4, 6)", "(3, 6)"]),
    ("lengths-count", ValueError, dict(lengths=lambda a: np.array([1, 2, 3, 3, 0], np.int32)),
     ["lengths", "[B]", "(4,)", "(5,)"]),
    ("lengths-rank-2", ValueError, dict(lengths=lambda a: a["lengths"][:, None]), ["lengths", "(4,)", "(4, 1)"]),
    ("mask-batch", ValueError, dict(recurrent_dropout_mask=lambda a: np.ones((5, 6), np.float32)),
     ["recurrent_dropout_mask", "[B, H]", "(4, 6)", "(5, 6)"]),
    ("h0-units", ValueError, dict(h0=lambda a: np.zeros((4, 7), np.float32)), ["h0", "[B, H]", "(4, 6)", "(4, 7)"]),
    ("c0-units", ValueError, dict(c0=lambda a: np.zeros((4, 5), np.float32)), ["c0", "(4, 6)", "(4, 5)"]),
    ("mask-units", ValueError, dict(recurrent_dropout_mask=lambda a: np.ones((4, 7), np.float32)),
     ["recurrent_dropout_mask", "(4, 6)", "(4, 7)"]),
    ("bias-units", ValueError, dict(bias=lambda a: np.zeros(28, np.float32)), ["bias", "[4H]", "(24,)", "(28,)"]),
    ("bias-rank-2", ValueError, dict(bias=lambda a: a["bias"][None]), ["bias", "[4H]", "(24,)", "(1, 24)"]),
    ("peephole-units", ValueError, dict(peephole=lambda a: np.zeros((3, 7), np.float32)),
     ["peephole", "[3, H]", "(3, 6)", "(3, 7)"]),
    ("peephole-flat", ValueError, dict(peephole=lambda a: a["peephole"].ravel()), ["peephole", "(3, 6)", "(18,)"]),
    ("kernel-rows", ValueError, dict(kernel=lambda a: np.zeros((6, 24), np.float32)),
     ["kernel", "[X, 4H]", "(5, 24)", "(6, 24)", "X=5"]),
    ("kernel-units", ValueError, dict(kernel=lambda a: np.zeros((5, 28), np.float32)),
     ["kernel", "[X, 4H]", "(5, 24)", "(5, 28)", "H=6"]),
    ("kernel-transposed", ValueError, dict(kernel=lambda a: np.ascontiguousarray(a["kernel"].T)),
     ["kernel", "[X, 4H]", "(5, 24)", "(24, 5)", "transposed"]),
    ("recurrent-kernel-transposed", ValueError,
     dict(recurrent_kernel=lambda a: np.ascontiguousarray(a["recurrent_kernel"].T)),
     ["recurrent_kernel", "[H, 4H]", "(24, 6)", "transposed"]),
    ("recurrent-kernel-not-4H", ValueError, dict(recurrent_kernel=lambda a: np.zeros((6, 20), np.float32)),
     ["recurrent_kernel", "[H, 4H]", "(6, 20)"]),
    ("recurrent-kernel-rank-1", ValueError, dict(recurrent_kernel=lambda a: a["recurrent_kernel"].ravel()),
     ["recurrent_kernel", "[H, 4H]", "(144,)"]),
    # lengths values and type.
    ("lengths-above-T", ValueError, dict(lengths=lambda a: np.array([0, 4, 1, 2], np.int32)),
     ["lengths", "[0, T=3]", "lengths[1] = 4"]),
    ("lengths-negative", ValueError, dict(lengths=lambda a: np.array([0, 1, 2, -1], np.int64)),
     ["lengths", "[0, T=3]", "lengths[3] = -1"]),
    ("lengths-huge-unsigned", ValueError, dict(lengths=lambda a: np.array([0, 1, 2, 2**40], np.uint64)),
     ["lengths", "[0, T=3]", f"lengths[3] = {2**40}"]),
    ("lengths-float", TypeError, dict(lengths=lambda a: a["lengths"].astype(np.float64)),
     ["lengths", "integers", "float64"]),
    ("lengths-bool", TypeError, dict(lengths=lambda a: np.ones(4, bool)), ["lengths", "integers", "bool"]),
    ("lengths-python-floats", TypeError, dict(lengths=lambda a: [3.0, 0.0, 2.0, 1.0]),
     ["lengths", "integers", "float64"]),
    # x dtype.
    ("x-int", TypeError, dict(x=lambda a: np.ones((T, B, X), np.int64)), ["x", "float32 or float64", "int64"]),
    ("x-object", TypeError, dict(x=lambda a: a["x"].astype(object)), ["x", "float32 or float64", "object"]),
    ("x-complex", TypeError, dict(x=lambda a: a["x"].astype(np.complex128)),
     ["x", "float32 or float64", "complex128"]),
    ("x-bool", TypeError, dict(x=lambda a: a["x"] > 0), ["x", "float32 or float64", "bool"]),
    ("x-float16", TypeError, dict(x=lambda a: a["x"].astype(np.float16)), ["x", "float32 or float64", "float16"]),
    ("x-string", TypeError, dict(x=lambda a: "abc"), ["x", "float32 or float64", "<U3"]),
    # Mixed float dtypes (x is float32) and non-float arrays.
    ("kernel-float64", TypeError, dict(kernel=lambda a: f64(a["kernel"])), ["kernel", "float64", "float32"]),
    ("recurrent-kernel-float64", TypeError, dict(recurrent_kernel=lambda a: f64(a["recurrent_kernel"])),
     ["recurrent_kernel", "float64", "float32"]),
    ("bias-float64", TypeError, dict(bias=lambda a: f64(a["bias"])), ["bias", "float64", "float32"]),
    ("h0-float64", TypeError, dict(h0=lambda a: f64(a["h0"])), ["h0", "float64", "float32"]),
    ("c0-float64-list", TypeError, dict(c0=lambda a: a["c0"].tolist()), ["c0", "float64", "float32"]),
    ("peephole-float64", TypeError, dict(peephole=lambda a: f64(a["peephole"])), ["peephole", "float64", "float32"]),
    ("mask-float64", TypeError, dict(recurrent_dropout_mask=lambda a: f64(a["recurrent_dropout_mask"])),
     ["recurrent_dropout_mask", "float64", "float32"]),
    ("h0-int", TypeError, dict(h0=lambda a: np.zeros((B, H), np.int32)), ["h0", "float32", "int32"]),
    ("mask-bool", TypeError, dict(recurrent_dropout_mask=lambda a: np.ones((B, H), bool)),
     ["recurrent_dropout_mask", "float32", "bool"]),
    ("kernel-int", TypeError, dict(kernel=lambda a: np.zeros((X, 4 * H), np.int64)), ["kernel", "float32", "int64"]),
    # Activation and mode.
    ("activation-unknown", ValueError, dict(recurrent_activation=lambda a: "relu"),
     ["recurrent_activation", "'hard_sigmoid'", "'sigmoid'", "'relu'"]),
    ("activation-case", ValueError, dict(recurrent_activation=lambda a: "Sigmoid"),
     ["recurrent_activation", "'hard_sigmoid'", "'sigmoid'", "'Sigmoid'"]),
    ("activation-code", ValueError, dict(recurrent_activation=lambda a: 0),
     ["recurrent_activation", "'hard_sigmoid'", "'sigmoid'", "got 0"]),
    ("activation-none", ValueError, dict(recurrent_activation=lambda a: None),
     ["recurrent_activation", "'sigmoid'", "got None"]),
    ("training-int", TypeError, dict(training=lambda a: 1), ["training", "bool", "int"]),
    ("training-str", TypeError, dict(training=lambda a: "yes"), ["training", "bool", "str"]),
    ("training-none", TypeError, dict(training=lambda a: None), ["training", "bool", "NoneType"]),
]


def bad_forward_call(changes):
    """A no-argument callable making the good forward call with ``changes`` applied."""
    def call():
        args = good_args()
        for name, make in changes.items():
            args[name] = make(args)
        return ops.lstm_forward(**args)
    return call


def training_cache(dtype=np.float32):
    return ops.lstm_forward(**good_args(dtype)).cache


def bad_backward_call(changes, dtype=np.float32):
    def call():
        incoming = good_incoming(dtype)
        for name, make in changes.items():
            incoming[name] = make(incoming)
        return ops.lstm_backward(training_cache(dtype), **incoming)
    return call


BACKWARD_CASES = [
    ("dy-time", ValueError, dict(dy=lambda g: np.zeros((4, 4, 6), np.float32)),
     ["dy", "[T, B, H]", "(3, 4, 6)", "(4, 4, 6)"]),
    ("dy-batch-major", ValueError, dict(dy=lambda g: np.zeros((4, 3, 6), np.float32)),
     ["dy", "[T, B, H]", "(3, 4, 6)", "(4, 3, 6)"]),
    ("dy-rank-2", ValueError, dict(dy=lambda g: g["dy"][0]), ["dy", "(3, 4, 6)", "(4, 6)"]),
    ("dh-units", ValueError, dict(dh=lambda g: np.zeros((4, 7), np.float32)), ["dh", "[B, H]", "(4, 6)", "(4, 7)"]),
    ("dc-batch", ValueError, dict(dc=lambda g: np.zeros((5, 6), np.float32)), ["dc", "[B, H]", "(4, 6)", "(5, 6)"]),
    ("dy-float64", TypeError, dict(dy=lambda g: f64(g["dy"])), ["dy", "float64", "float32"]),
    ("dh-float64", TypeError, dict(dh=lambda g: f64(g["dh"])), ["dh", "float64", "float32"]),
    ("dc-int", TypeError, dict(dc=lambda g: np.zeros((B, H), np.int64)), ["dc", "float32", "int64"]),
    ("dy-complex", TypeError, dict(dy=lambda g: g["dy"].astype(np.complex64)), ["dy", "float32", "complex64"]),
]


def expect_error(exception, call, fragments):
    with pytest.raises(exception) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from the message {message!r}"


# ---------------------------------------------------------------------------------------------
# Bad calls straight into _core: (id, exception, change to the good positional arguments, fragments).
# ---------------------------------------------------------------------------------------------

# The engines' arguments, in order (lstm.h's ForwardArgs / BackwardArgs; _core.pyi).
FORWARD_SLOTS = ("x", "kernel", "recurrent_kernel", "bias", "h0", "c0", "peephole", "lengths",
                 "recurrent_dropout_mask", "recurrent_activation", "y", "h", "c", "gates", "cells", "precision")
BACKWARD_SLOTS = ("x", "kernel", "recurrent_kernel", "h0", "c0", "peephole", "lengths", "recurrent_dropout_mask",
                  "recurrent_activation", "y", "gates", "cells", "dy", "dh", "dc", "dx", "dkernel", "drecurrent_kernel",
                  "dbias", "dh0", "dc0", "dpeephole", "precision")


def core_forward_args(dtype=np.float32):
    """Keyword arguments of a valid _core.forward call."""
    args = good_args(dtype)
    return dict(x=args["x"], kernel=args["kernel"], recurrent_kernel=args["recurrent_kernel"], bias=args["bias"],
                h0=args["h0"], c0=args["c0"], peephole=args["peephole"], lengths=args["lengths"],
                recurrent_dropout_mask=args["recurrent_dropout_mask"], recurrent_activation=0,
                y=np.empty((T, B, H), dtype), h=np.empty((B, H), dtype), c=np.empty((B, H), dtype),
                gates=np.empty((T, B, 4 * H), dtype), cells=np.empty((T, B, H), dtype), precision=0)


def core_backward_args(dtype=np.float32):
    """Keyword arguments of a valid _core.backward call, after a forward call filled the cache."""
    fw = core_forward_args(dtype)
    _core.forward(**fw)
    incoming = good_incoming(dtype)
    return dict({s: fw[s] for s in BACKWARD_SLOTS if s in fw}, **incoming,
                dx=np.empty((T, B, X), dtype), dkernel=np.empty((X, 4 * H), dtype),
                drecurrent_kernel=np.empty((H, 4 * H), dtype), dbias=np.empty(4 * H, dtype),
                dh0=np.empty((B, H), dtype), dc0=np.empty((B, H), dtype), dpeephole=np.empty((3, H), dtype))


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def misaligned(a):
    """A C-contiguous copy of ``a`` whose data starts one byte past an aligned address (NumPy calls
    an empty one aligned all the same)."""
    raw = np.zeros(a.nbytes + a.itemsize, np.uint8)
    out = np.ndarray(a.shape, a.dtype, raw.data, offset=1)
    out[...] = a
    return out


def strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


CORE_FORWARD_CASES = [
    ("precision-2", ValueError, dict(precision=lambda a: 2), ["precision code", "0 (native) or 1 (bfloat16)", "got 2"]),
    ("y-shape", ValueError, dict(y=lambda a: np.empty((T, B, H + 1), np.float32)), ["y", "(3, 4, 6)", "(3, 4, 7)"]),
    ("h-shape", ValueError, dict(h=lambda a: np.empty((B + 1, H), np.float32)), ["h", "(4, 6)", "(5, 6)"]),
    ("gates-shape", ValueError, dict(gates=lambda a: np.empty((T, B, H), np.float32)),
     ["gates", "(3, 4, 24)", "(3, 4, 6)"]),
    ("kernel-shape", ValueError, dict(kernel=lambda a: np.zeros((X + 1, 4 * H), np.float32)),
     ["kernel", "(5, 24)", "(6, 24)"]),
    ("h0-shape", ValueError, dict(h0=lambda a: np.zeros((B, H + 2), np.float32)), ["h0", "(4, 6)", "(4, 8)"]),
    ("x-rank-2", ValueError, dict(x=lambda a: a["x"][0]), ["x", "3 dims", "got 2"]),
    ("recurrent-kernel-rank-1", ValueError, dict(recurrent_kernel=lambda a: a["recurrent_kernel"].ravel()),
     ["recurrent_kernel", "2 dims"]),
    ("x-non-contiguous", ValueError, dict(x=lambda a: strided(a["x"])), ["x", "C-contiguous"]),
    ("x-broadcast", ValueError, dict(x=lambda a: np.broadcast_to(a["x"][:1], a["x"].shape)), ["x", "C-contiguous"]),
    ("kernel-fortran", ValueError, dict(kernel=lambda a: np.asfortranarray(a["kernel"])), ["kernel", "C-contiguous"]),
    ("recurrent-kernel-misaligned", ValueError, dict(recurrent_kernel=lambda a: misaligned(a["recurrent_kernel"])),
     ["recurrent_kernel", "aligned"]),
    ("y-misaligned", ValueError, dict(y=lambda a: misaligned(a["y"])), ["y", "aligned"]),
    ("y-read-only", ValueError, dict(y=lambda a: read_only(a["y"])), ["y", "writable"]),
    ("c-read-only", ValueError, dict(c=lambda a: read_only(a["c"])), ["c", "writable"]),
    ("cells-read-only", ValueError, dict(cells=lambda a: read_only(a["cells"])), ["cells", "writable"]),
    ("x-float64", TypeError, dict(x=lambda a: f64(a["x"])), ["kernel", "float64", "float32"]),
    ("x-float16", TypeError, dict(x=lambda a: a["x"].astype(np.float16)), ["x", "float32 or float64", "float16"]),
    ("y-float64", TypeError, dict(y=lambda a: np.empty((T, B, H))), ["y", "float32", "float64"]),
    ("lengths-int64", TypeError, dict(lengths=lambda a: a["lengths"].astype(np.int64)), ["lengths", "int32", "int64"]),
    ("lengths-above-T", ValueError, dict(lengths=lambda a: np.array([0, 1, 9, 2], np.int32)),
     ["lengths", "[0, 3]", "lengths[2] = 9"]),
    ("lengths-negative", ValueError, dict(lengths=lambda a: np.array([-5, 1, 2, 2], np.int32)),
     ["lengths", "[0, 3]", "lengths[0] = -5"]),
    ("activation-2", ValueError, dict(recurrent_activation=lambda a: 2),
     ["recurrent_activation", "0 (sigmoid)", "1 (hard_sigmoid)", "got 2"]),
    ("activation-negative", ValueError, dict(recurrent_activation=lambda a: -1), ["recurrent_activation", "got -1"]),
    ("activation-str", TypeError, dict(recurrent_activation=lambda a: "sigmoid"), ["forward", "incompatible"]),
    ("gates-without-cells", ValueError, dict(cells=lambda a: None), ["gates", "cells"]),
    ("x-list", TypeError, dict(x=lambda a: a["x"].tolist()), ["x", "numpy array"]),
    ("bias-list", TypeError, dict(bias=lambda a: a["bias"].tolist()), ["bias", "numpy array"]),
    ("y-none", ValueError, dict(y=lambda a: None), ["y", "required", "None"]),
]

CORE_BACKWARD_CASES = [
    ("dx-shape", ValueError, dict(dx=lambda a: np.empty((T, B, X + 1), np.float32)), ["dx", "(3, 4, 5)", "(3, 4, 6)"]),
    ("dbias-shape", ValueError, dict(dbias=lambda a: np.empty(4 * H - 1, np.float32)), ["dbias", "(24,)", "(23,)"]),
    ("dy-shape", ValueError, dict(dy=lambda a: np.zeros((T, B, H + 1), np.float32)), ["dy", "(3, 4, 6)", "(3, 4, 7)"]),
    ("dpeephole-without-peephole", ValueError, dict(peephole=lambda a: None), ["dpeephole", "peephole"]),
    ("peephole-without-dpeephole", ValueError, dict(dpeephole=lambda a: None), ["dpeephole", "peephole"]),
    ("gates-read-only", ValueError, dict(gates=lambda a: read_only(a["gates"])), ["gates", "writable"]),
    ("dkernel-read-only", ValueError, dict(dkernel=lambda a: read_only(a["dkernel"])), ["dkernel", "writable"]),
    ("cells-non-contiguous", ValueError, dict(cells=lambda a: strided(a["cells"])), ["cells", "C-contiguous"]),
    ("dh-float64", TypeError, dict(dh=lambda a: f64(a["dh"])), ["dh", "float32", "float64"]),
    ("lengths-above-T", ValueError, dict(lengths=lambda a: np.array([4, 0, 0, 0], np.int32)),
     ["lengths", "[0, 3]", "lengths[0] = 4"]),
    ("activation-7", ValueError, dict(recurrent_activation=lambda a: 7), ["recurrent_activation", "got 7"]),
    ("dh0-none", ValueError, dict(dh0=lambda a: None), ["dh0", "required", "None"]),
]


def bad_core_call(function, make_args, changes, positional=False):
    """The good call with ``changes``, by keyword, or positionally in FORWARD_SLOTS/BACKWARD_SLOTS order."""
    def call():
        args = make_args()
        for name, make in changes.items():
            args[name] = make(args)
        if positional:
            return function(*[args[s] for s in (FORWARD_SLOTS if function is _core.forward else BACKWARD_SLOTS)])
        return function(**args)
    return call


def battery():
    """Every bad call of this module as (name, callable)."""
    calls = [(f"ops.forward:{name}", bad_forward_call(changes)) for name, _, changes, _ in FORWARD_CASES]
    calls += [(f"ops.backward:{name}", bad_backward_call(changes)) for name, _, changes, _ in BACKWARD_CASES]
    calls += [(f"core.forward:{name}", bad_core_call(_core.forward, core_forward_args, changes))
              for name, _, changes, _ in CORE_FORWARD_CASES]
    calls += [(f"core.backward:{name}", bad_core_call(_core.backward, core_backward_args, changes))
              for name, _, changes, _ in CORE_BACKWARD_CASES]
    calls += [
        ("ops.backward:cache-none", lambda: ops.lstm_backward(None, None)),
        ("ops.backward:cache-dict", lambda: ops.lstm_backward(
            reference.lstm_forward(**good_args(np.float64)).cache, None)),
        ("ops.backward:inference-cache", lambda: ops.lstm_backward(
            ops.lstm_forward(**good_args(), training=False).cache, None)),
        ("core.forward:float64-x-float32-arrays", bad_core_call(_core.forward, core_forward_args,
                                                                dict(x=lambda a: f64(a["x"])), positional=True)),
        ("core.forward:too-few-arguments", lambda: _core.forward(np.zeros((1, 1, 1), np.float32))),
        ("core.forward:unknown-keyword", lambda: _core.forward(**core_forward_args(), activation=0)),
        ("core.backward:float64-x-float32-arrays", bad_core_call(_core.backward, core_backward_args,
                                                                 dict(x=lambda a: f64(a["x"])), positional=True)),
        ("core.gemm_f32:inner-dims", lambda: _core.gemm_f32(False, False, np.zeros((2, 3), np.float32),
                                                           np.zeros((4, 5), np.float32), np.zeros((2, 5), np.float32))),
        ("core.gemm_f32:C-shape", lambda: _core.gemm_f32(False, False, np.zeros((2, 3), np.float32),
                                                        np.zeros((3, 5), np.float32), np.zeros((2, 4), np.float32))),
        ("core.set_num_threads:negative", lambda: _core.set_num_threads(-1)),
        ("set_num_threads:float", lambda: lstmfast.set_num_threads(1.5)),
        ("set_simd_level:unknown", lambda: lstmfast.set_simd_level("sse9")),
    ]
    return calls


def run_battery():
    """Make every bad call, expecting ValueError or TypeError; print each surprise and the count."""
    caught, calls = 0, battery()
    for name, call in calls:
        try:
            call()
        except (ValueError, TypeError):
            caught += 1
        except Exception as error:  # noqa: BLE001 -- reported, and the count will not match
            print(f"UNEXPECTED {name}: {type(error).__name__}: {error}")
        else:
            print(f"NO ERROR {name}")
    print(f"caught {caught} of {len(calls)}")


# ---------------------------------------------------------------------------------------------
# Never a crash. First in the file, so a segfault is reported here before an in-process test hits it.
# ---------------------------------------------------------------------------------------------

def run_python(code):
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=SUBPROCESS_TIMEOUT_S, cwd=os.path.dirname(os.path.abspath(__file__)))


def test_bad_call_battery_never_crashes():
    expected = len(battery())
    assert expected >= 30
    result = run_python("import test_bad_input as t; t.run_battery()")
    report = f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    assert result.stdout.strip().splitlines()[-1] == f"caught {expected} of {expected}", report
    assert "UNEXPECTED" not in result.stdout and "NO ERROR" not in result.stdout, report


def test_absurd_thread_count_does_not_crash():
    code = (
        "import numpy as np, lstmfast\n"
        "from lstmfast import ops\n"
        "x, k, r = np.ones((7, 19, 37)), np.ones((37, 280)) / 100, np.ones((70, 280)) / 100\n"
        "want = ops.lstm_forward(x, k, r, None, training=False).y\n"
        "try:\n"
        "    lstmfast.set_num_threads(100000)\n"
        "except (ValueError, TypeError):\n"
        "    print('refused')\n"
        "else:\n"
        "    got = ops.lstm_forward(x, k, r, None, training=False).y\n"
        "    print('same' if np.array_equal(got, want) else 'different')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, f"exit code {result.returncode}\n{result.stderr[-2000:]}"
    assert result.stdout.strip() in ("refused", "same"), result.stdout


# ---------------------------------------------------------------------------------------------
# The messages, case by case.
# ---------------------------------------------------------------------------------------------

def test_good_calls_work():
    # The bad calls below are one change away from these, which must succeed.
    out = ops.lstm_forward(**good_args())
    ops.lstm_backward(out.cache, **good_incoming())
    _core.forward(**core_forward_args())
    args = core_backward_args()
    _core.backward(**args)
    assert np.all(np.isfinite(args["dkernel"]))
    # Positionally too, in the order of lstm.h's ForwardArgs / BackwardArgs.
    args = core_forward_args(np.float64)
    _core.forward(*[args[s] for s in FORWARD_SLOTS])
    args = core_backward_args(np.float64)
    _core.backward(*[args[s] for s in BACKWARD_SLOTS])
    assert np.all(np.isfinite(args["dkernel"]))


def test_bfloat16_precision_needs_float32_in_the_engine():
    # lstm.h's Precision: the C++ engine takes code 1 for float32 (and computes in float32: the
    # native numbers), refuses it for float64, in both passes.
    native, bfloat16 = core_forward_args(), dict(core_forward_args(), precision=1)
    _core.forward(**native)
    _core.forward(**bfloat16)
    for name in ("y", "h", "c", "gates", "cells"):
        np.testing.assert_array_equal(bfloat16[name], native[name], err_msg=name)
    for function, args in ((_core.forward, core_forward_args(np.float64)),
                           (_core.backward, core_backward_args(np.float64))):
        with pytest.raises(ValueError, match=r"precision code 1 \(bfloat16\) needs float32 arrays, got float64"):
            function(**dict(args, precision=1))


def test_both_engines_take_the_same_arguments():
    # The C++ binding and the GPU engine: one signature, by the same names (the docstring's first line
    # is pybind11's signature, which names the arguments).
    from lstmfast.cuda import ops as gpu
    for name, slots in (("forward", FORWARD_SLOTS), ("backward", BACKWARD_SLOTS)):
        assert list(inspect.signature(getattr(gpu, name)).parameters) == list(slots), name
        signature = getattr(_core, name).__doc__.splitlines()[0]  # "forward(x: object, kernel: object, ...) -> None"
        assert signature.startswith(f"{name}("), signature
        assert [p.split(":")[0].strip() for p in signature.split("(", 1)[1].split(")", 1)[0].split(",")] == list(slots)


@pytest.mark.parametrize("exception, changes, fragments", [c[1:] for c in FORWARD_CASES],
                         ids=[c[0] for c in FORWARD_CASES])
def test_bad_forward_argument(exception, changes, fragments):
    expect_error(exception, bad_forward_call(changes), fragments)


@pytest.mark.parametrize("exception, changes, fragments", [c[1:] for c in BACKWARD_CASES],
                         ids=[c[0] for c in BACKWARD_CASES])
def test_bad_backward_argument(exception, changes, fragments):
    expect_error(exception, bad_backward_call(changes), fragments)


def test_rejected_backward_arguments_leave_the_cache_usable():
    out = ops.lstm_forward(**good_args())
    incoming = good_incoming()
    with pytest.raises(ValueError, match="dy"):
        ops.lstm_backward(out.cache, np.zeros((1, 1, 1), np.float32))
    grads = ops.lstm_backward(out.cache, **incoming)
    want = ops.lstm_backward(ops.lstm_forward(**good_args()).cache, **incoming)
    for got, expected in zip(grads, want):
        np.testing.assert_array_equal(got, expected)


def test_backward_with_none_cache():
    expect_error(ValueError, lambda: ops.lstm_backward(None, good_incoming()["dy"]),
                 ["cache", "None", "training=False"])


def test_backward_after_inference_mode():
    out = ops.lstm_forward(**good_args(), training=False)
    assert out.cache is None
    expect_error(ValueError, lambda: ops.lstm_backward(out.cache, good_incoming()["dy"]),
                 ["cache", "None", "training=False"])


def test_backward_with_reference_cache():
    cache = reference.lstm_forward(**good_args(np.float64)).cache
    assert isinstance(cache, dict)
    expect_error(TypeError, lambda: ops.lstm_backward(cache, None), ["cache", "LSTMCache", "dict"])


def test_backward_twice():
    out = ops.lstm_forward(**good_args())
    ops.lstm_backward(out.cache, None)
    expect_error(ValueError, lambda: ops.lstm_backward(out.cache, None), ["cache", "already used", "lstm_forward"])


@pytest.mark.parametrize("exception, changes, fragments", [c[1:] for c in CORE_FORWARD_CASES],
                         ids=[c[0] for c in CORE_FORWARD_CASES])
def test_bad_core_forward_argument(exception, changes, fragments):
    expect_error(exception, bad_core_call(_core.forward, core_forward_args, changes), fragments)


@pytest.mark.parametrize("exception, changes, fragments", [c[1:] for c in CORE_BACKWARD_CASES],
                         ids=[c[0] for c in CORE_BACKWARD_CASES])
def test_bad_core_backward_argument(exception, changes, fragments):
    expect_error(exception, bad_core_call(_core.backward, core_backward_args, changes), fragments)


def test_core_arrays_must_have_the_dtype_of_x():
    expect_error(TypeError, bad_core_call(_core.forward, core_forward_args, dict(x=lambda a: f64(a["x"])),
                                          positional=True), ["kernel", "float64", "float32"])
    expect_error(TypeError, bad_core_call(_core.backward, core_backward_args, dict(dh=lambda a: f64(a["dh"]))),
                 ["dh", "float32", "float64"])
    expect_error(TypeError, lambda: _core.forward(**dict(core_forward_args(), x=np.zeros((T, B, X), np.int32))),
                 ["x", "float32 or float64", "int32"])


def test_core_gemm_shapes():
    a, b = np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)
    expect_error(ValueError, lambda: _core.gemm_f32(False, False, a, b, np.zeros((2, 5), np.float32)),
                 ["inner dimensions", "3", "4"])
    expect_error(ValueError, lambda: _core.gemm_f32(False, False, a, np.zeros((3, 5), np.float32),
                                                    np.zeros((2, 4), np.float32)), ["C", "(2, 5)", "(2, 4)"])


def test_thread_and_simd_settings_are_checked():
    original = lstmfast.get_num_threads()
    expect_error(TypeError, lambda: lstmfast.set_num_threads(1.5), ["n", "int", "float"])
    expect_error(TypeError, lambda: lstmfast.set_num_threads(True), ["n", "int", "bool"])
    expect_error(ValueError, lambda: _core.set_num_threads(-1), ["threads", "[0, 1024]", "-1"])
    expect_error(ValueError, lambda: lstmfast.set_num_threads(100000), ["threads", "[0, 1024]", "100000"])
    assert lstmfast.get_num_threads() == original
    expect_error(ValueError, lambda: lstmfast.set_simd_level("sse9"), ["simd level", "portable", "avx512", "sse9"])
