"""Optimizers with Keras 3's update rules, updating NumPy parameter arrays in place.

One step (``apply_gradients``), with ``lr`` the learning rate at ``iterations`` (a schedule is
evaluated there) and ``t = iterations + 1``:

1. the gradients are copied into one flat buffer per dtype (the caller's arrays are not modified);
2. clipping (at most one kind, as Keras): ``clipnorm`` scales each gradient to L2 norm
   <= clipnorm; ``global_clipnorm`` scales all by ``min(1, global_clipnorm / global_norm)``;
   ``clipvalue`` clips each entry to ``[-clipvalue, clipvalue]``;
3. weight decay, if set: ``var *= 1 - lr * weight_decay`` (decoupled, before the update, as Keras);
4. the rule of the class (equations in each docstring) runs once over the flat buffer, and each
   variable gets its slice: ``var -= delta`` (or ``+=``);
5. ``iterations += 1``.

Steps 1-4 run fused in C++ (``_core.optim_step_*``, one pass over each variable, threads as
``lstmfast.set_num_threads``) for float32/float64 variables and C-contiguous arrays; the NumPy
code of each rule (``_update``) is the reference it equals bitwise (the C++ rounds every multiply
and add separately), and the path for anything else: other dtypes, non-contiguous variables, and
subclasses that override ``_update``. The fused step flushes subnormal numbers to zero (values
below 1.2e-38 in float32): the moments of embedding rows that get no gradient decay into that
range, where each operation is several times slower.

Slots (moments, accumulators) are kept per variable, keyed by position in the list given to
``build`` (or to the first ``apply_gradients``): the model must always pass the same ordered list.
``get_state`` returns them variable-major: for variable 0 every slot in ``slot_names`` order, then
variable 1, and so on.
"""
from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

from . import cuda as _cuda

try:
    from . import _core
except ImportError:  # pragma: no cover - a source tree without the built extension
    _core = None

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LearningRateSchedule",
           "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay", "get", "serialize", "deserialize"]


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _real(value, name, low=None, high=None, allow_none=False, low_open=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) \
            or (high is not None and value > high):
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        raise ValueError(f"{name} must be a finite number {' and '.join(x for x in (lo, hi) if x)}, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------
# Learning-rate schedules.
# ------------------------------------------------------------------------------------------------

class LearningRateSchedule:
    """A learning rate as a function of the step (``optimizer.iterations``)."""

    def __call__(self, step) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; with ``staircase`` the
    exponent is ``floor(step / decay_steps)``."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        self.initial_learning_rate = _real(initial_learning_rate, "initial_learning_rate", 0.0)
        self.decay_steps = _real(decay_steps, "decay_steps", 0.0, low_open=True)
        self.decay_rate = _real(decay_rate, "decay_rate", 0.0)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step) -> float:
        p = float(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        boundaries, values = list(boundaries), list(values)
        if len(boundaries) != len(values) - 1:
            raise ValueError(f"PiecewiseConstantDecay needs len(values) == len(boundaries) + 1, got "
                             f"{len(boundaries)} boundaries and {len(values)} values")
        if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must be increasing, got {boundaries}")
        self.boundaries = [float(b) for b in boundaries]
        self.values = [_real(v, "values[]", 0.0) for v in values]
        self.name = name

    def __call__(self, step) -> float:
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]

    def get_config(self) -> dict:
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Optional linear warmup from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps``, then cosine decay over ``decay_steps`` from the peak ``p`` to ``alpha * p``:
    ``p * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)``."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        self.initial_learning_rate = _real(initial_learning_rate, "initial_learning_rate", 0.0)
        self.decay_steps = _real(decay_steps, "decay_steps", 0.0, low_open=True)
        self.alpha = _real(alpha, "alpha", 0.0, 1.0)
        self.warmup_target = _real(warmup_target, "warmup_target", 0.0, allow_none=True)
        self.warmup_steps = _real(warmup_steps, "warmup_steps", 0.0)
        self.name = name

    def _decay(self, step, peak):
        frac = min(step, self.decay_steps) / self.decay_steps
        return peak * ((1.0 - self.alpha) * 0.5 * (1.0 + math.cos(math.pi * frac)) + self.alpha)

    def __call__(self, step) -> float:
        step = float(step)
        if self.warmup_target is None:
            return self._decay(step, self.initial_learning_rate)
        if step < self.warmup_steps:
            return (self.warmup_target - self.initial_learning_rate) * step / self.warmup_steps \
                + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


_SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay)}


def _accepts_step(fn) -> bool:
    """Whether a learning-rate callable takes the step (Keras 3 also allows one taking nothing)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(0)
        return True
    except TypeError:
        return False


# ------------------------------------------------------------------------------------------------
# Optimizer base.
# ------------------------------------------------------------------------------------------------

class _Group:
    """The variables of one dtype: flat gradient, scratch and slot buffers with per-variable views."""

    def __init__(self, index, variables, dtype, slot_init, xp=np):
        self.index = index                                   # positions in the variable list
        self.dtype = dtype
        self.xp = xp                                         # numpy, or cupy for variables on the GPU
        self.shapes = [variables[i].shape for i in index]
        sizes = [variables[i].size for i in index]
        self.bounds = []
        o = 0
        for n in sizes:
            self.bounds.append((o, o + n))
            o += n
        self.size = o
        self.buffers = {"grad": xp.empty(o, dtype), "scratch": xp.empty(o, dtype)}
        for name, init in slot_init:
            self.buffers[name] = xp.full(o, init, dtype)
        self.views = {k: [b[lo:hi].reshape(s) for (lo, hi), s in zip(self.bounds, self.shapes)]
                      for k, b in self.buffers.items()}
        # per-step loops over precomputed tuples: (position, gradient view, shape), (position, delta view)
        self.gather = list(zip(self.index, self.views["grad"], self.shapes))
        self.scatter = {k: list(zip(self.index, v)) for k, v in self.views.items()}
        self._scalars = {}

    def scalar(self, x: float) -> np.ndarray:
        """``x`` as a 0-d array of the group dtype (NumPy is faster with these than with floats)."""
        a = self._scalars.get(x)
        if a is None:
            if len(self._scalars) > 64:
                self._scalars.clear()
            # CuPy's ufuncs take NumPy scalars, not 0-d NumPy arrays.
            a = self._scalars[x] = np.array(x, self.dtype) if self.xp is np else self.dtype.type(x)
        return a


_KERAS_DEFAULTS = {"use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                   "loss_scale_factor": None, "gradient_accumulation_steps": None, "is_legacy_optimizer": False,
                   "jit_compile": None, "decay": 0.0}


class Optimizer:
    """Base class. Subclasses set ``_default_name``, list their slots in ``slot_names`` (a property:
    it may depend on hyperparameters) with ``_slot_initial_value`` and implement ``_update``."""

    _default_name = "optimizer"

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 name=None):
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(f"only one of clipnorm, clipvalue and global_clipnorm can be set, got "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        # 0 disables a clip, as in Keras
        self.clipnorm = _real(clipnorm, "clipnorm", 0.0, allow_none=True) or None
        self.clipvalue = _real(clipvalue, "clipvalue", 0.0, allow_none=True) or None
        self.global_clipnorm = _real(global_clipnorm, "global_clipnorm", 0.0, allow_none=True) or None
        self.weight_decay = _real(weight_decay, "weight_decay", 0.0, allow_none=True)
        self.name = self._default_name if name is None else str(name)
        self.learning_rate = learning_rate
        self.iterations = 0
        self._groups = None
        self._shapes = None
        self._pending_slots = None
        # False: the NumPy reference path (tests compare the two). A subclass that overrides
        # _update without its own _fused_rule keeps its rule: the NumPy path runs.
        owner = {name: next(c for c in type(self).__mro__ if name in c.__dict__)
                 for name in ("_update", "_fused_rule")}
        self._fused = _core is not None and owner["_update"] is owner["_fused_rule"]

    # ---- learning rate -----------------------------------------------------------------------

    @property
    def learning_rate(self):
        """A float, a LearningRateSchedule, or a callable of the step; settable (e.g. by ReduceLROnPlateau)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, LearningRateSchedule):
            self._lr_const, self._lr_takes_step = None, True
        elif callable(value):
            self._lr_const, self._lr_takes_step = None, _accepts_step(value)
        else:
            value = _real(value, "learning_rate", 0.0)
            self._lr_const = value
        self._learning_rate = value

    def current_learning_rate(self) -> float:
        """The learning rate the next step uses (a schedule evaluated at ``iterations``)."""
        if self._lr_const is not None:
            return self._lr_const
        lr = self._learning_rate(self.iterations) if self._lr_takes_step else self._learning_rate()
        return float(lr)

    # ---- slots -------------------------------------------------------------------------------

    @property
    def slot_names(self) -> tuple:
        """Names of the per-variable slots, in ``get_state`` order."""
        return ()

    def _slot_initial_value(self, name) -> float:
        return 0.0

    @property
    def built(self) -> bool:
        return self._groups is not None

    def build(self, variables) -> None:
        """Create the slots for ``variables`` (float arrays, updated in place later), in order."""
        variables = list(variables)
        xp = _cuda.device_module(variables[0]) if variables else None
        for i, v in enumerate(variables):
            if xp is not None:  # all on the GPU (CuPy arrays), or all on the host
                if _cuda.device_module(v) is not xp or v.dtype.kind != "f":
                    what = f"dtype {v.dtype}" if _cuda.device_module(v) is xp else type(v).__name__
                    raise TypeError(f"variable {i} must be a float CuPy array like variable 0, got {what}")
                continue
            if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
                what = f"dtype {v.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
                raise TypeError(f"variable {i} must be a float NumPy array (updated in place), got {what}")
            if not v.flags.writeable:
                raise ValueError(f"variable {i} (shape {_shape(v.shape)}) is read-only; the optimizer updates "
                                 f"variables in place")
        by_dtype = {}
        for i, v in enumerate(variables):
            by_dtype.setdefault(v.dtype, []).append(i)
        slot_init = [(n, self._slot_initial_value(n)) for n in self.slot_names]
        self._groups = [_Group(index, variables, dtype, slot_init, xp or np) for dtype, index in by_dtype.items()]
        self._shapes = [v.shape for v in variables]
        self._group_of = [None] * len(variables)
        for g in self._groups:
            for j, i in enumerate(g.index):
                self._group_of[i] = (g, j)
        # The fused step: one C++ call per dtype over that dtype's variables, when every variable
        # is a C-contiguous float32/float64 array (else the NumPy rules run).
        kernels = {np.dtype(np.float32): getattr(_core, "optim_step_f32", None),
                   np.dtype(np.float64): getattr(_core, "optim_step_f64", None)}
        self._fused_vars = None
        if xp is None and all(type(v) is np.ndarray and kernels.get(v.dtype) is not None and v.flags.c_contiguous
                              for v in variables):
            self._fused_vars = [(kernels[grp.dtype], grp.index,
                                 [tuple(grp.views[n][j] for n in self.slot_names) for j in range(len(grp.index))])
                                for grp in self._groups]
        if self._pending_slots is not None:
            slots, self._pending_slots = self._pending_slots, None
            self._load_slots(slots)

    # ---- the step ----------------------------------------------------------------------------

    def apply_gradients(self, grads_and_vars) -> None:
        """One step over ``(gradient, variable)`` pairs; variables are updated in place."""
        pairs = grads_and_vars if isinstance(grads_and_vars, (list, tuple)) else list(grads_and_vars)
        if pairs:
            grads, variables = zip(*pairs)
        else:
            grads = variables = ()
        self.apply(grads, variables)

    def apply(self, grads, variables) -> None:
        """One step: ``grads[i]`` updates ``variables[i]`` in place (Keras 3's ``optimizer.apply``)."""
        if self._groups is None:
            self.build(variables)
        n = len(self._shapes)
        if len(variables) != n or len(grads) != n:
            raise ValueError(f"the optimizer was built for {n} variables, got {len(variables)} variables "
                             f"and {len(grads)} gradients (pass the same ordered list every step)")
        lr = self._lr_const if self._lr_const is not None else self.current_learning_rate()
        if self._fused and self._fused_vars is not None:
            plan = self._fused_rule(lr, self.iterations + 1)
            if plan is not None:
                self._apply_fused(grads, variables, lr, *plan)
                return
        for grp in self._groups:
            for i, view, shape in grp.gather:
                g = grads[i]
                if getattr(g, "shape", None) != shape or variables[i].shape != shape:
                    self._bad_pair(i, g, variables[i])
                view[...] = g
        if self.clipnorm is not None or self.global_clipnorm is not None or self.clipvalue is not None:
            self._clip()
        if self.weight_decay:
            keep = 1.0 - lr * self.weight_decay
            for v in variables:
                np.multiply(v, keep, out=v)
        t = self.iterations + 1
        for grp in self._groups:
            name, sign = self._update(grp.buffers, grp.scalar, lr, t)
            op = np.subtract if sign < 0 else np.add
            for i, delta in grp.scatter[name]:
                v = variables[i]
                op(v, delta, v)
        self.iterations = t

    def _apply_fused(self, grads, variables, lr, rule, hyper) -> None:
        scales = None
        if self.clipnorm is not None or self.global_clipnorm is not None:
            grads = self._checked_grads(grads, variables)
            sq = [float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads]
            if self.clipnorm is not None:
                c = self.clipnorm
                scales = [c / math.sqrt(s) if math.sqrt(s) > c else 1.0 for s in sq]
            else:
                c, norm = self.global_clipnorm, math.sqrt(sum(sq))
                if norm > c or not math.isfinite(norm):
                    scales = [c / norm if math.isfinite(norm) else math.nan] * len(grads)
        keep = 1.0 - lr * self.weight_decay if self.weight_decay else 1.0
        single = len(self._fused_vars) == 1
        if not single and scales is None:   # several dtypes: check all first, so no step is half done
            grads = self._checked_grads(grads, variables)
        for kernel, index, slots in self._fused_vars:
            vs = variables if single else [variables[i] for i in index]
            gs = grads if single else [grads[i] for i in index]
            sc = scales if (single or scales is None) else [scales[i] for i in index]
            try:
                kernel(rule, vs, gs, slots, *hyper, sc, self.clipvalue, keep)
            except (TypeError, ValueError):
                # Lists, other dtypes, strided or wrongly shaped gradients: convert, or explain.
                checked = self._checked_grads(grads, variables)
                kernel(rule, vs, checked if single else [checked[i] for i in index], slots, *hyper, sc,
                       self.clipvalue, keep)
        self.iterations += 1

    def _checked_grads(self, grads, variables) -> list:
        """The gradients as C-contiguous arrays of their variable's dtype, shapes checked."""
        out = []
        for i, (g, v) in enumerate(zip(grads, variables)):
            shape = self._shapes[i]
            if getattr(g, "shape", None) != shape or v.shape != shape:
                self._bad_pair(i, g, v)
            if not (isinstance(g, np.ndarray) and g.dtype == v.dtype and g.flags.c_contiguous):
                g = np.ascontiguousarray(g, dtype=v.dtype)
            out.append(g)
        return out

    def _fused_rule(self, lr, t):
        """``(rule code of cpp/optim.h, (lr, momentum, 1 - beta_1, 1 - beta_2, rho, 1 - rho, epsilon))``
        for step ``t``, or None where the rule has no fused kernel (subclasses): ``_update`` runs."""
        return None

    def _bad_pair(self, i, g, v):
        shape = self._shapes[i]
        if g is None:
            raise ValueError(f"gradient {i} is None (variable shape {_shape(shape)})")
        gshape = np.shape(g)
        if gshape == shape and v.shape == shape:  # a list or other array-like of the right shape
            return
        raise ValueError(f"step {self.iterations}: variable {i} must have shape {_shape(shape)} (as when the "
                         f"optimizer was built) and so must its gradient; got variable {_shape(v.shape)}, "
                         f"gradient {_shape(gshape)}")

    def _clip(self) -> None:
        if self.clipnorm is not None:
            c = self.clipnorm
            for grp in self._groups:
                flat = grp.buffers["grad"]
                for lo, hi in grp.bounds:
                    seg = flat[lo:hi]
                    norm = math.sqrt(float(np.dot(seg, seg)))
                    if norm > c:
                        seg *= c / norm
        elif self.global_clipnorm is not None:
            c = self.global_clipnorm
            norm = math.sqrt(sum(float(np.dot(g.buffers["grad"], g.buffers["grad"])) for g in self._groups))
            if norm > c or not math.isfinite(norm):
                scale = c / norm if math.isfinite(norm) else math.nan   # Keras turns a non-finite norm into NaN
                for grp in self._groups:
                    grp.buffers["grad"] *= scale
        else:
            c = self.clipvalue
            for grp in self._groups:
                g = grp.buffers["grad"]
                np.minimum(g, c, out=g)
                np.maximum(g, -c, out=g)

    def _update(self, buffers, c, lr, t):  # pragma: no cover - abstract
        """Run the rule on the flat buffers of one dtype group: 'grad' holds the clipped gradient
        and may be overwritten, 'scratch' is free, the slots are updated in place; ``c(x)`` gives a
        constant as a 0-d array. Returns (name of the buffer holding the delta, -1 for
        ``var -= delta`` or +1 for ``var += delta``)."""
        raise NotImplementedError

    # ---- state -------------------------------------------------------------------------------

    def get_state(self) -> dict:
        """``{"iterations": int, "slots": [arrays]}``: what resuming training exactly needs (with the
        config, which holds the learning rate). Slots are copies, variable-major."""
        slots = []
        if self._groups is not None:
            for i in range(len(self._shapes)):
                grp, j = self._group_of[i]
                slots.extend(_cuda.to_host(grp.views[n][j]).copy() for n in self.slot_names)
        elif self._pending_slots is not None:
            slots = [s.copy() for s in self._pending_slots]
        return {"iterations": int(self.iterations), "slots": slots}

    def set_state(self, state) -> None:
        """Restore ``get_state``'s result. Before ``build`` the slots are kept and checked at build."""
        if not isinstance(state, dict) or "iterations" not in state or "slots" not in state:
            raise ValueError("optimizer state must be a dict with 'iterations' and 'slots' (from get_state())")
        it = state["iterations"]
        if isinstance(it, bool) or not isinstance(it, numbers.Integral) or it < 0:
            raise ValueError(f"optimizer state 'iterations' must be an int >= 0, got {it!r}")
        slots = [np.asarray(s) for s in state["slots"]]
        if self._groups is not None:
            self._load_slots(slots)
        else:
            self._pending_slots = [s.copy() for s in slots]
        self.iterations = int(it)

    def _load_slots(self, slots) -> None:
        names = self.slot_names
        expected = len(self._shapes) * len(names)
        if len(slots) != expected:
            raise ValueError(f"optimizer state has {len(slots)} slot arrays, expected {expected} "
                             f"({len(self._shapes)} variables x {len(names)} slots {list(names)})")
        for k, s in enumerate(slots):
            i, n = divmod(k, len(names)) if names else (k, 0)
            if s.shape != self._shapes[i]:
                raise ValueError(f"optimizer state slot {k} (variable {i}, {names[n]!r}): expected shape "
                                 f"{_shape(self._shapes[i])}, got {_shape(s.shape)}")
            if s.dtype.kind not in "fiu":
                raise TypeError(f"optimizer state slot {k} (variable {i}, {names[n]!r}) must be numeric, "
                                f"got dtype {s.dtype}")
        for k, s in enumerate(slots):
            i, n = divmod(k, len(names))
            grp, j = self._group_of[i]
            if grp.xp is np:
                np.copyto(grp.views[names[n]][j], s, casting="unsafe")
            else:
                grp.views[names[n]][j][...] = grp.xp.asarray(s).astype(grp.dtype, copy=False)

    def _relocate(self) -> None:
        """Forget where the slots live (keeping their values): the next step builds them beside
        its variables, e.g. on the GPU after a model moved there (``Model`` calls this)."""
        if self._groups is not None:
            self._pending_slots = self.get_state()["slots"]
            self._groups = None

    # ---- config ------------------------------------------------------------------------------

    def get_config(self) -> dict:
        lr = self._learning_rate
        if isinstance(lr, LearningRateSchedule):
            lr = {"class_name": type(lr).__name__, "config": lr.get_config()}
        elif callable(lr):
            lr = self.current_learning_rate()  # a plain callable cannot be saved: its current value is
        return {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        for key, default in _KERAS_DEFAULTS.items():
            if key in config:
                value = config.pop(key)
                if value != default and not (key == "decay" and value is None):
                    raise ValueError(f"{cls.__name__}: {key}={value!r} is not supported by lstmfast")
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            config["learning_rate"] = _deserialize_schedule(lr)
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} learning_rate={self._learning_rate!r} " \
               f"iterations={self.iterations}>"


def _deserialize_schedule(config: dict) -> LearningRateSchedule:
    name = config.get("class_name")
    cls = _SCHEDULES.get(name)
    if cls is None:
        raise ValueError(f"unknown learning-rate schedule {name!r}; valid: {', '.join(sorted(_SCHEDULES))}")
    return cls.from_config(config.get("config") or {})


# ------------------------------------------------------------------------------------------------
# The rules.
# ------------------------------------------------------------------------------------------------

class SGD(Optimizer):
    """Without momentum: ``var -= lr g``. With momentum mu: ``m = mu m - lr g``, then
    ``var += m`` or, with ``nesterov``, ``var += mu m - lr g``."""

    _default_name = "SGD"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, name=None):
        self.momentum = _real(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)

    @property
    def slot_names(self):
        return ("momentum",) if self.momentum else ()

    def _update(self, b, c, lr, t):
        g = b["grad"]
        np.multiply(g, lr, g)                                   # lr g
        if not self.momentum:
            return "grad", -1
        m = b["momentum"]
        np.multiply(m, c(self.momentum), m)
        np.subtract(m, g, m)                                    # m = mu m - lr g
        if not self.nesterov:
            return "momentum", +1
        s = b["scratch"]
        np.multiply(m, c(self.momentum), s)
        np.subtract(s, g, s)
        return "scratch", +1

    def _fused_rule(self, lr, t):
        rule = 0 if not self.momentum else (2 if self.nesterov else 1)
        return rule, (lr, self.momentum, 0.0, 0.0, 0.0, 0.0, 0.0)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """``m += (g - m)(1 - beta_1)``; ``v += (g^2 - v)(1 - beta_2)``;
    ``alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``; ``var -= alpha m / (sqrt(v) + epsilon)``
    (amsgrad: ``v_hat = max(v_hat, v)`` replaces v in the last step). epsilon is added to the
    uncorrected ``sqrt(v)``: torch.optim.Adam matches with ``eps = epsilon / sqrt(1 - beta_2^t)``."""

    _default_name = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None):
        self.beta_1 = _real(beta_1, "beta_1", 0.0, 1.0)
        self.beta_2 = _real(beta_2, "beta_2", 0.0, 1.0)
        self.epsilon = _real(epsilon, "epsilon", 0.0)
        self.amsgrad = bool(amsgrad)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)

    @property
    def slot_names(self):
        return ("momentum", "velocity", "velocity_hat") if self.amsgrad else ("momentum", "velocity")

    def _update(self, b, c, lr, t):
        g, s, m, v = b["grad"], b["scratch"], b["momentum"], b["velocity"]
        alpha = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        np.subtract(g, m, s)
        np.multiply(s, c(1.0 - self.beta_1), s)
        np.add(m, s, m)                                         # m += (g - m)(1 - beta_1)
        np.multiply(g, g, g)
        np.subtract(g, v, g)
        np.multiply(g, c(1.0 - self.beta_2), g)
        np.add(v, g, v)                                         # v += (g^2 - v)(1 - beta_2)
        if self.amsgrad:
            vh = b["velocity_hat"]
            np.maximum(vh, v, out=vh)
            v = vh
        np.sqrt(v, s)
        np.add(s, c(self.epsilon), s)
        np.multiply(m, alpha, g)
        np.divide(g, s, g)
        return "grad", -1

    def _fused_rule(self, lr, t):
        alpha = lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        return (4 if self.amsgrad else 3), (alpha, 0.0, 1.0 - self.beta_1, 1.0 - self.beta_2, 0.0, 0.0,
                                            self.epsilon)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.004): ``var *= 1 - lr weight_decay`` before the
    Adam step (torch.optim.AdamW's rule)."""

    _default_name = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None):
        if weight_decay is None:
            raise ValueError("AdamW needs a weight_decay (a float >= 0)")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, name)


class RMSprop(Optimizer):
    """``v = rho v + (1 - rho) g^2``; ``denominator = v + epsilon``, or centered
    (``mg = rho mg + (1 - rho) g``) ``v - mg^2 + epsilon``; ``increment = lr g / sqrt(denominator)``
    (epsilon inside the square root, as Keras 3); with momentum ``m = momentum m + increment`` and
    ``var -= m``, else ``var -= increment``."""

    _default_name = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None):
        self.rho = _real(rho, "rho", 0.0, 1.0)
        self.momentum = _real(momentum, "momentum", 0.0, 1.0)
        self.epsilon = _real(epsilon, "epsilon", 0.0)
        self.centered = bool(centered)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)

    @property
    def slot_names(self):
        return ("velocity",) + (("momentum",) if self.momentum > 0 else ()) \
            + (("average_gradient",) if self.centered else ())

    def _update(self, b, c, lr, t):
        g, s, v = b["grad"], b["scratch"], b["velocity"]
        rho = self.rho
        np.multiply(v, c(rho), v)
        np.multiply(g, g, s)
        np.multiply(s, c(1.0 - rho), s)
        np.add(v, s, v)                                         # v = rho v + (1 - rho) g^2
        if self.centered:
            mg = b["average_gradient"]
            np.multiply(mg, c(rho), mg)
            np.multiply(g, c(1.0 - rho), s)
            np.add(mg, s, mg)                                   # mg = rho mg + (1 - rho) g
            np.multiply(mg, mg, s)
            np.subtract(v, s, s)
            np.add(s, c(self.epsilon), s)
        else:
            np.add(v, c(self.epsilon), s)
        np.sqrt(s, s)
        np.multiply(g, lr, g)
        np.divide(g, s, g)                                      # increment
        if self.momentum > 0:
            m = b["momentum"]
            np.multiply(m, c(self.momentum), m)
            np.add(m, g, m)
            return "momentum", -1
        return "grad", -1

    def _fused_rule(self, lr, t):
        rule = (8 if self.momentum > 0 else 7) if self.centered else (6 if self.momentum > 0 else 5)
        return rule, (lr, self.momentum, 0.0, 0.0, self.rho, 1.0 - self.rho, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adagrad(Optimizer):
    """``acc += g^2`` (acc starts at ``initial_accumulator_value``);
    ``var -= lr g / sqrt(acc + epsilon)``."""

    _default_name = "adagrad"

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, name=None):
        self.initial_accumulator_value = _real(initial_accumulator_value, "initial_accumulator_value", 0.0)
        self.epsilon = _real(epsilon, "epsilon", 0.0)
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name)

    @property
    def slot_names(self):
        return ("accumulator",)

    def _slot_initial_value(self, name):
        return self.initial_accumulator_value

    def _update(self, b, c, lr, t):
        g, s, acc = b["grad"], b["scratch"], b["accumulator"]
        np.multiply(g, g, s)
        np.add(acc, s, acc)
        np.add(acc, c(self.epsilon), s)
        np.sqrt(s, s)
        np.multiply(g, lr, g)
        np.divide(g, s, g)
        return "grad", -1

    def _fused_rule(self, lr, t):
        return 9, (lr, 0.0, 0.0, 0.0, 0.0, 0.0, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


# ------------------------------------------------------------------------------------------------
# Lookup and serialization.
# ------------------------------------------------------------------------------------------------

_CLASSES = {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad)}
_BY_NAME = {k.lower(): c for k, c in _CLASSES.items()}


def get(identifier) -> Optimizer:
    """An optimizer from a name ('sgd', 'adam', 'adamw', 'rmsprop', 'adagrad'; case-insensitive;
    Keras defaults), a ``{"class_name", "config"}`` dict, or an Optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")
        return cls()
    raise TypeError(f"optimizer must be a name, a dict or an Optimizer, got {type(identifier).__name__}")


def serialize(optimizer) -> dict:
    """JSON-ready ``{"class_name": ..., "config": {...}}`` (a schedule nests the same way)."""
    optimizer = get(optimizer)
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config) -> Optimizer:
    """Inverse of ``serialize``; also accepts a name."""
    if isinstance(config, str):
        return get(config)
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"cannot deserialize an optimizer from {config!r}: expected a name or a dict with "
                         f"'class_name' and 'config'")
    cls = _BY_NAME.get(str(config["class_name"]).lower())
    if cls is None:
        raise ValueError(f"unknown optimizer class {config['class_name']!r}; valid: {', '.join(sorted(_CLASSES))}")
    return cls.from_config(config.get("config") or {})
