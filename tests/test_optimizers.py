"""Optimizers and learning-rate schedules against the Keras 3 rules written out per variable in
float64, torch.optim where its rule is the same, and Keras 3 itself when installed."""
import json
import math
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import optimizers

from conftest import peer

F64 = dict(rtol=1e-12, atol=1e-13)           # the same float64 formula, different operation order
TORCH = dict(rtol=1e-12, atol=1e-14)         # torch.optim in float64, same rule
KERAS32 = dict(rtol=1e-5, atol=1e-6)         # Keras 3 (float32) versus lstmfast float32


SHAPES_OPT = [(3, 4), (4,), (2, 1, 3), (1,)]


def reference_steps(kind, cfg, params, grads_seq, lr_at=None):
    """The Keras 3 rules, written out per variable in float64."""
    params = [p.astype(np.float64).copy() for p in params]
    state = [dict() for _ in params]
    for step, grads in enumerate(grads_seq):
        lr = cfg.get("learning_rate") if lr_at is None else lr_at(step)
        t = step + 1
        for p, g, s in zip(params, grads, state):
            g = np.asarray(g, np.float64)
            if kind == "sgd":
                mu = cfg.get("momentum", 0.0)
                if mu:
                    s["m"] = mu * s.get("m", 0.0) - lr * g
                    p += (mu * s["m"] - lr * g) if cfg.get("nesterov") else s["m"]
                else:
                    p -= lr * g
            elif kind == "adam":
                b1, b2, eps = cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999), cfg.get("epsilon", 1e-7)
                s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - b1)
                s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - b2)
                v = s["v"]
                if cfg.get("amsgrad"):
                    s["vh"] = np.maximum(s.get("vh", 0.0), s["v"])
                    v = s["vh"]
                alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p -= alpha * s["m"] / (np.sqrt(v) + eps)
            elif kind == "rmsprop":
                rho, mu, eps = cfg.get("rho", 0.9), cfg.get("momentum", 0.0), cfg.get("epsilon", 1e-7)
                s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
                denom = s["v"] + eps
                if cfg.get("centered"):
                    s["mg"] = rho * s.get("mg", 0.0) + (1 - rho) * g
                    denom = s["v"] - s["mg"] ** 2 + eps
                inc = lr * g / np.sqrt(denom)
                if mu:
                    s["m"] = mu * s.get("m", 0.0) + inc
                    p -= s["m"]
                else:
                    p -= inc
            elif kind == "adagrad":
                s["acc"] = s.get("acc", cfg.get("initial_accumulator_value", 0.1)) + g * g
                p -= lr * g / np.sqrt(s["acc"] + cfg.get("epsilon", 1e-7))
    return params


OPT_CASES = [
    ("sgd", dict(learning_rate=0.1)),
    ("sgd", dict(learning_rate=0.1, momentum=0.9)),
    ("sgd", dict(learning_rate=0.05, momentum=0.5, nesterov=True)),
    ("adam", dict(learning_rate=0.01)),
    ("adam", dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-3, amsgrad=True)),
    ("rmsprop", dict(learning_rate=0.01)),
    ("rmsprop", dict(learning_rate=0.01, rho=0.8, momentum=0.7, centered=True, epsilon=1e-4)),
    ("adagrad", dict(learning_rate=0.1)),
    ("adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-3)),
]
OPT_CLASSES = {"sgd": optimizers.SGD, "adam": optimizers.Adam, "rmsprop": optimizers.RMSprop,
               "adagrad": optimizers.Adagrad}


def _problem(seed, steps=6, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s).astype(dtype) for s in SHAPES_OPT]
    grads = [[rng.normal(size=s).astype(dtype) for s in SHAPES_OPT] for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("kind,cfg", OPT_CASES, ids=lambda c: str(c) if isinstance(c, str) else
                         "-".join(f"{k}={v}" for k, v in c.items()))
def test_optimizer_matches_hand_reference(kind, cfg):
    params, grads = _problem(1)
    expected = reference_steps(kind, cfg, params, grads)
    opt = OPT_CLASSES[kind](**cfg)
    for g in grads:
        opt.apply_gradients(zip(g, params))
    assert opt.iterations == len(grads)
    for p, e in zip(params, expected):
        assert_allclose(p, e, **F64)
    # float32 variables: float32 arithmetic, same rule
    params32, grads32 = _problem(1, dtype=np.float32)
    opt = OPT_CLASSES[kind](**cfg)
    for g in grads32:
        opt.apply_gradients(zip(g, params32))
    for p, e in zip(params32, expected):
        assert p.dtype == np.float32
        assert_allclose(p, e, rtol=2e-5, atol=2e-6)


def _torch_run(torch_cls, params, grads, **kwargs):
    torch = peer("torch")
    tp = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    opt = torch_cls(tp, **kwargs)
    for g in grads:
        for p, gg in zip(tp, g):
            p.grad = torch.tensor(gg, dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for p in tp]


@pytest.mark.parametrize("ours,theirs", [
    (dict(cls="SGD", learning_rate=0.1), dict(cls="SGD", lr=0.1)),
    (dict(cls="SGD", learning_rate=0.1, momentum=0.9), dict(cls="SGD", lr=0.1, momentum=0.9)),
    (dict(cls="SGD", learning_rate=0.1, momentum=0.9, nesterov=True),
     dict(cls="SGD", lr=0.1, momentum=0.9, nesterov=True)),
    # epsilon 0 makes Keras's sqrt(v) + eps and torch's sqrt(v_hat) + eps the same rule
    (dict(cls="Adam", learning_rate=0.01, epsilon=0.0), dict(cls="Adam", lr=0.01, eps=0.0)),
    (dict(cls="Adam", learning_rate=0.01, epsilon=0.0, amsgrad=True), dict(cls="Adam", lr=0.01, eps=0.0, amsgrad=True)),
    (dict(cls="AdamW", learning_rate=0.01, epsilon=0.0, weight_decay=0.1),
     dict(cls="AdamW", lr=0.01, eps=0.0, weight_decay=0.1)),
    # torch puts eps outside the sqrt: equal with eps 0
    (dict(cls="RMSprop", learning_rate=0.01, epsilon=0.0), dict(cls="RMSprop", lr=0.01, alpha=0.9, eps=0.0)),
    (dict(cls="RMSprop", learning_rate=0.01, epsilon=0.0, momentum=0.5, centered=True),
     dict(cls="RMSprop", lr=0.01, alpha=0.9, eps=0.0, momentum=0.5, centered=True)),
    (dict(cls="Adagrad", learning_rate=0.1, epsilon=0.0, initial_accumulator_value=0.1),
     dict(cls="Adagrad", lr=0.1, eps=0.0, initial_accumulator_value=0.1)),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_optimizer_matches_torch(ours, theirs):
    torch = peer("torch")
    params, grads = _problem(2, steps=8)
    expected = _torch_run(getattr(torch.optim, theirs.pop("cls")), params, grads, **theirs)
    opt = getattr(optimizers, ours.pop("cls"))(**ours)
    for g in grads:
        opt.apply_gradients(zip(g, params))
    for p, e in zip(params, expected):
        assert_allclose(p, e, **TORCH)


def test_adam_epsilon_placement_versus_torch():
    """Keras: alpha m / (sqrt(v) + eps); torch: lr m_hat / (sqrt(v_hat) + eps). With a large eps
    they differ, and agree once torch's eps is eps / sqrt(1 - beta_2^t) (one step)."""
    torch = peer("torch")
    params, grads = _problem(3, steps=1)
    eps = 1e-2
    ours = [p.copy() for p in params]
    optimizers.Adam(learning_rate=0.1, epsilon=eps).apply_gradients(zip(grads[0], ours))
    same = _torch_run(torch.optim.Adam, params, grads, lr=0.1, eps=eps / math.sqrt(1 - 0.999))
    differs = _torch_run(torch.optim.Adam, params, grads, lr=0.1, eps=eps)
    for a, b, c in zip(ours, same, differs):
        assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        assert np.abs(a - c).max() > 1e-4


def test_gradient_clipping():
    g = [np.array([3.0, 4.0]), np.array([[0.0, 12.0]]), np.array([-0.5])]

    def step(**clip):
        params = [np.zeros_like(x) for x in g]
        optimizers.SGD(learning_rate=1.0, **clip).apply_gradients(zip(g, params))
        return [-p for p in params]                                 # the clipped gradients

    out = step(clipnorm=1.0)
    assert_allclose(out[0], [0.6, 0.8])
    assert_allclose(out[1], [[0.0, 1.0]])
    assert_allclose(out[2], [-0.5])                                 # norm 0.5 <= 1: untouched
    out = step(global_clipnorm=6.5)                                 # global norm sqrt(25 + 144 + 0.25) = 13.0096
    norm = math.sqrt(25 + 144 + 0.25)
    for o, x in zip(out, g):
        assert_allclose(o, x * 6.5 / norm)
    out = step(global_clipnorm=100.0)
    for o, x in zip(out, g):
        assert_allclose(o, x)
    out = step(clipvalue=2.0)
    assert_allclose(out[0], [2.0, 2.0])
    assert_allclose(out[1], [[0.0, 2.0]])
    assert_allclose(out[2], [-0.5])
    out = step(clipnorm=0.0)                                        # 0 disables, as in Keras
    assert_allclose(out[0], [3.0, 4.0])
    assert_allclose(g[0], [3.0, 4.0])                               # the caller's gradients are untouched
    for clip in (dict(clipnorm=1.0, global_clipnorm=1.0), dict(clipnorm=1.0, clipvalue=0.1),
                 dict(clipvalue=1.0, global_clipnorm=1.0)):
        with pytest.raises(ValueError, match="only one of clipnorm, clipvalue and global_clipnorm"):
            optimizers.Adam(**clip)


def test_learning_rate_schedules():
    d = optimizers.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    s = optimizers.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    for step in (0, 5, 10, 15, 20, 25):
        assert d(step) == pytest.approx(0.1 * 0.5 ** (step / 10))
        assert s(step) == pytest.approx(0.1 * 0.5 ** (step // 10))
    pw = optimizers.PiecewiseConstantDecay([2, 5], [1.0, 0.5, 0.1])
    assert [pw(i) for i in (0, 2, 3, 5, 6)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    cos = optimizers.CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(10) == pytest.approx(0.1) and cos(50) == pytest.approx(0.1)
    assert cos(5) == pytest.approx(0.55)
    warm = optimizers.CosineDecay(0.0, decay_steps=10, warmup_target=1.0, warmup_steps=4)
    assert warm(2) == pytest.approx(0.5) and warm(4) == pytest.approx(1.0) and warm(14) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="decay_steps"):
        optimizers.ExponentialDecay(0.1, decay_steps=0, decay_rate=0.5)
    # the optimizer evaluates the schedule at `iterations` before each step
    params, grads = _problem(4, steps=25)
    opt = optimizers.SGD(learning_rate=s)
    for k, g in enumerate(grads):
        assert opt.current_learning_rate() == pytest.approx(s(k))
        opt.apply_gradients(zip(g, params))
    expected = reference_steps("sgd", {}, _problem(4, steps=25)[0], grads, lr_at=s)
    for p, e in zip(params, expected):
        assert_allclose(p, e, **F64)
    assert optimizers.SGD(learning_rate=lambda step: 0.5 / (step + 1)).current_learning_rate() == 0.5
    assert optimizers.SGD(learning_rate=lambda: 0.25).current_learning_rate() == 0.25   # Keras's no-arg form


def test_learning_rate_setter():
    opt = optimizers.Adam()
    assert opt.learning_rate == 0.001 and opt.current_learning_rate() == 0.001
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5 and opt.get_config()["learning_rate"] == 0.5
    opt.learning_rate = optimizers.ExponentialDecay(1.0, 1, 0.5)
    opt.iterations = 2
    assert opt.current_learning_rate() == 0.25
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate = -1.0
    with pytest.raises(TypeError, match="learning_rate"):
        opt.learning_rate = "fast"


@pytest.mark.parametrize("kind,cfg", OPT_CASES, ids=lambda c: str(c) if isinstance(c, str) else
                         "-".join(f"{k}={v}" for k, v in c.items()))
def test_state_round_trip_resumes_exactly(kind, cfg):
    params, grads = _problem(5, steps=6)
    opt = OPT_CLASSES[kind](**cfg)
    for g in grads[:3]:
        opt.apply_gradients(zip(g, params))
    state = opt.get_state()
    assert state["iterations"] == 3 and len(state["slots"]) == len(params) * len(opt.slot_names)
    saved = [p.copy() for p in params]
    config = json.loads(json.dumps(optimizers.serialize(opt)))
    for g in grads[3:]:
        opt.apply_gradients(zip(g, params))
    for build_first in (True, False):
        resumed = [p.copy() for p in saved]
        other = optimizers.deserialize(config)
        if build_first:
            other.build(resumed)
        other.set_state(state)
        for g in grads[3:]:
            other.apply_gradients(zip(g, resumed))
        for a, b in zip(resumed, params):
            assert_array_equal(a, b)


def test_set_state_errors():
    params, grads = _problem(6, steps=1)
    opt = optimizers.Adam()
    opt.build(params)
    with pytest.raises(ValueError, match=r"has 2 slot arrays, expected 8"):
        opt.set_state({"iterations": 1, "slots": [np.zeros(1)] * 2})
    slots = opt.get_state()["slots"]
    slots[3] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"slot 3 \(variable 1, 'velocity'\): expected shape \(4,\), got \(5, 5\)"):
        opt.set_state({"iterations": 1, "slots": slots})
    with pytest.raises(ValueError, match="iterations"):
        opt.set_state({"iterations": -1, "slots": []})
    pending = optimizers.Adam()
    pending.set_state({"iterations": 2, "slots": [np.zeros(1)] * 3})
    with pytest.raises(ValueError, match="has 3 slot arrays, expected 8"):
        pending.apply_gradients(zip(grads[0], params))


def test_optimizer_lookup_defaults_and_errors():
    adam = optimizers.get("Adam")
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon, adam.amsgrad) == \
        (0.001, 0.9, 0.999, 1e-7, False)
    sgd = optimizers.get("sgd")
    assert (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.01, 0.0, False)
    rms = optimizers.get("RMSPROP")
    assert (rms.learning_rate, rms.rho, rms.momentum, rms.epsilon, rms.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    ada = optimizers.get("adagrad")
    assert (ada.learning_rate, ada.initial_accumulator_value, ada.epsilon) == (0.001, 0.1, 1e-7)
    assert optimizers.get(adam) is adam
    with pytest.raises(ValueError, match="valid names: adagrad, adam, adamw, rmsprop, sgd"):
        optimizers.get("adamax")
    with pytest.raises(TypeError):
        optimizers.get(3)
    sched = optimizers.Adam(learning_rate=optimizers.ExponentialDecay(0.1, 100, 0.9, staircase=True), clipnorm=1.0)
    back = optimizers.deserialize(json.loads(json.dumps(optimizers.serialize(sched))))
    assert isinstance(back.learning_rate, optimizers.ExponentialDecay)
    assert back.learning_rate.get_config() == sched.learning_rate.get_config() and back.clipnorm == 1.0
    keras_cfg = {"class_name": "Adam", "config": {"name": "adam", "learning_rate": 0.01, "weight_decay": None,
                                                  "clipnorm": None, "global_clipnorm": None, "clipvalue": None,
                                                  "use_ema": False, "ema_momentum": 0.99,
                                                  "ema_overwrite_frequency": None, "loss_scale_factor": None,
                                                  "gradient_accumulation_steps": None, "beta_1": 0.9,
                                                  "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False}}
    assert optimizers.deserialize(keras_cfg).learning_rate == 0.01
    keras_cfg["config"]["use_ema"] = True
    with pytest.raises(ValueError, match="use_ema"):
        optimizers.deserialize(keras_cfg)


def test_apply_checks_and_mixed_dtypes():
    params = [np.zeros((2, 2), np.float32), np.zeros(3, np.float64)]
    grads = [np.ones((2, 2), np.float32), np.ones(3)]
    opt = optimizers.SGD(0.5)
    opt.apply_gradients(zip(grads, params))
    assert params[0].dtype == np.float32 and params[1].dtype == np.float64
    assert_allclose(params[0], -0.5) and assert_allclose(params[1], -0.5)
    with pytest.raises(ValueError, match=r"variable 1 must have shape \(3,\).*gradient \(4,\)"):
        opt.apply_gradients(zip([grads[0], np.ones(4)], params))
    with pytest.raises(ValueError, match="built for 2 variables"):
        opt.apply_gradients(zip(grads[:1], params[:1]))
    with pytest.raises(ValueError, match="gradient 0 is None"):
        opt.apply_gradients(zip([None, grads[1]], params))
    with pytest.raises(TypeError, match="variable 0 must be a float NumPy array"):
        optimizers.SGD().build([np.zeros(2, np.int32)])
    frozen = np.zeros(2)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        optimizers.SGD().build([frozen])


@pytest.mark.parametrize("name,cfg", [
    ("SGD", dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(learning_rate=0.01)),
    ("Adam", dict(learning_rate=0.01, amsgrad=True, clipnorm=0.5)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True)),
    ("Adagrad", dict(learning_rate=0.1, global_clipnorm=1.0)),
    ("AdamW", dict(learning_rate=0.01, weight_decay=0.1, clipvalue=0.3)),
])
def test_optimizer_matches_keras(name, cfg):
    keras = peer("keras")
    params, grads = _problem(7, steps=5, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kvars = [keras.Variable(p.copy()) for p in params]
        kopt = getattr(keras.optimizers, name)(**cfg)
        for g in grads:
            kopt.apply_gradients(zip([keras.ops.convert_to_tensor(x) for x in g], kvars))
        expected = [keras.ops.convert_to_numpy(v) for v in kvars]
    opt = getattr(optimizers, name)(**cfg)
    for g in grads:
        opt.apply_gradients(zip(g, params))
    for p, e in zip(params, expected):
        assert_allclose(p, e, **KERAS32)


def test_keras2_lr_attribute_reads_and_sets_learning_rate():
    """Keras 2 tutorials read and set ``model.optimizer.lr``; it is ``learning_rate`` with a warning."""
    opt = optimizers.Adam(learning_rate=0.01)
    with pytest.warns(DeprecationWarning, match="learning_rate"):
        assert opt.lr == 0.01
    with pytest.warns(DeprecationWarning, match="learning_rate"):
        opt.lr = 0.002
    assert opt.learning_rate == 0.002 and opt.current_learning_rate() == 0.002
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="learning_rate"):
        opt.lr = -1.0
