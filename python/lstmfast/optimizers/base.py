"""The optimizer base class: the step every rule shares, its slots, state and config.

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
variable 1, and so on. Variables on the GPU (CuPy arrays) keep their slots beside them, and
``get_state`` gives NumPy copies. There steps 2-4 run fused too (``lstmfast.cuda.optim``: the same
per-element operations, one kernel launch per dtype for all its variables, and one more computing
the scales of clipping by norm on the device: the step reads nothing back); the NumPy rules run
there through CuPy's ufuncs where the fused step does not apply.

Keras 2's keywords, which Keras 3 rejects, are accepted by every optimizer class with a
DeprecationWarning naming the new spelling (``_keras2_arguments``, applied to each subclass's
``__init__``): ``lr`` -> ``learning_rate``; ``epsilon=None`` -> the default epsilon; ``decay=d``
-> Keras 2's time-based decay ``lr_t = lr / (1 + d * iterations)`` (iterations before the step,
so the first step uses ``lr``), kept as ``schedules.InverseTimeDecay(lr, 1, d)``.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np

from .. import ops
from .._typing import Array
from ._checks import real, shape_str
from .schedules import InverseTimeDecay, LearningRateSchedule
from .schedules import deserialize as deserialize_schedule

__all__ = ["Optimizer"]


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


_KERAS2_KEYWORDS = frozenset({"lr", "decay", "epsilon"})


def _keras2_arguments(cls, init, kwargs):
    """``(kwargs in Keras 3's spelling, decay or None)`` from ``kwargs`` that may use Keras 2's
    (rules in the module docstring), warning once per keyword mapped."""
    kwargs = dict(kwargs)
    name = cls.__name__
    if "lr" in kwargs:
        if "learning_rate" in kwargs:
            raise TypeError(f"{name}: give learning_rate or Keras 2's lr, not both (got lr={kwargs['lr']!r}, "
                            f"learning_rate={kwargs['learning_rate']!r})")
        warnings.warn(f"{name}(lr=...) is Keras 2's spelling; use {name}(learning_rate=...)", DeprecationWarning,
                      stacklevel=3)
        kwargs["learning_rate"] = kwargs.pop("lr")
    params = inspect.signature(init).parameters
    if "epsilon" in kwargs and kwargs["epsilon"] is None and "epsilon" in params:
        warnings.warn(f"{name}(epsilon=None) is Keras 2's spelling of the default; leave epsilon out (default "
                      f"{params['epsilon'].default!r})", DeprecationWarning, stacklevel=3)
        del kwargs["epsilon"]
    decay = None
    if "decay" in kwargs and "decay" not in params:
        decay = real(kwargs.pop("decay"), "decay", 0.0)
        warnings.warn(f"{name}(decay=...) is Keras 2's spelling; use learning_rate=keras.optimizers.schedules."
                      f"InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay), which is what it now "
                      f"builds", DeprecationWarning, stacklevel=3)
    return kwargs, decay


def _accepting_keras2(init):
    """``init`` taking Keras 2's keywords too (see ``_keras2_arguments``)."""
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if _KERAS2_KEYWORDS.isdisjoint(kwargs):
            init(self, *args, **kwargs)
            return
        kwargs, decay = _keras2_arguments(type(self), init, kwargs)
        init(self, *args, **kwargs)
        if decay:
            if self._lr_const is None:
                raise ValueError(f"{type(self).__name__}: Keras 2's decay= needs a constant learning rate, got "
                                 f"{self._learning_rate!r}; put the decay in the schedule")
            self.learning_rate = InverseTimeDecay(self._lr_const, 1, decay)
    return __init__


# ------------------------------------------------------------------------------------------------
# Optimizer base.


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


_O = TypeVar("_O", bound="Optimizer")
# What ``learning_rate`` takes: a float, a LearningRateSchedule, or a callable of the step (or of nothing).
LearningRate = Union[float, LearningRateSchedule, Callable[..., float]]


class Optimizer:
    """Base class. Subclasses set ``_default_name``, list their slots in ``slot_names`` (a property:
    it may depend on hyperparameters) with ``_slot_initial_value`` and implement ``_update``."""

    _default_name = "optimizer"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _accepting_keras2(cls.__dict__["__init__"])

    def __init__(self, learning_rate: LearningRate, weight_decay: Optional[float] = None,
                 clipnorm: Optional[float] = None, clipvalue: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, name: Optional[str] = None) -> None:
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(f"only one of clipnorm, clipvalue and global_clipnorm can be set, got "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        # 0 disables a clip, as in Keras
        self.clipnorm = real(clipnorm, "clipnorm", 0.0, allow_none=True) or None
        self.clipvalue = real(clipvalue, "clipvalue", 0.0, allow_none=True) or None
        self.global_clipnorm = real(global_clipnorm, "global_clipnorm", 0.0, allow_none=True) or None
        self.weight_decay = real(weight_decay, "weight_decay", 0.0, allow_none=True)
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
        self._fused = owner["_update"] is owner["_fused_rule"]

    # ---- learning rate -----------------------------------------------------------------------

    @property
    def learning_rate(self) -> LearningRate:
        """A float, a LearningRateSchedule, or a callable of the step; settable (e.g. by ReduceLROnPlateau)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: LearningRate) -> None:
        if isinstance(value, LearningRateSchedule):
            self._lr_const, self._lr_takes_step = None, True
        elif callable(value):
            self._lr_const, self._lr_takes_step = None, _accepts_step(value)
        else:
            value = real(value, "learning_rate", 0.0)
            self._lr_const = value
        self._learning_rate = value

    @property
    def lr(self) -> LearningRate:
        """Keras 2's name for ``learning_rate`` (``model.optimizer.lr = 1e-4``), with a DeprecationWarning."""
        warnings.warn("optimizer.lr is Keras 2's spelling; use optimizer.learning_rate", DeprecationWarning,
                      stacklevel=2)
        return self.learning_rate

    @lr.setter
    def lr(self, value: LearningRate) -> None:
        warnings.warn("optimizer.lr is Keras 2's spelling; use optimizer.learning_rate", DeprecationWarning,
                      stacklevel=2)
        self.learning_rate = value

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

    def build(self, variables: Sequence[Array]) -> None:
        """Create the slots for ``variables`` (float arrays, updated in place later), in order."""
        variables = list(variables)
        xp = ops.array_module(variables[0]) if variables else np
        for i, v in enumerate(variables):
            if xp is not np:  # all on the device of variable 0 (CuPy arrays), or all on the host
                if ops.array_module(v) is not xp or v.dtype.kind != "f":
                    what = f"dtype {v.dtype}" if ops.array_module(v) is xp else type(v).__name__
                    raise TypeError(f"variable {i} must be a float CuPy array like variable 0, got {what}")
                continue
            if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
                what = f"dtype {v.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
                raise TypeError(f"variable {i} must be a float NumPy array (updated in place), got {what}")
            if not v.flags.writeable:
                raise ValueError(f"variable {i} (shape {shape_str(v.shape)}) is read-only; the optimizer updates "
                                 f"variables in place")
        by_dtype = {}
        for i, v in enumerate(variables):
            by_dtype.setdefault(v.dtype, []).append(i)
        slot_init = [(n, self._slot_initial_value(n)) for n in self.slot_names]
        self._groups = [_Group(index, variables, dtype, slot_init, xp) for dtype, index in by_dtype.items()]
        self._shapes = [v.shape for v in variables]
        self._group_of = [None] * len(variables)
        for g in self._groups:
            for j, i in enumerate(g.index):
                self._group_of[i] = (g, j)
        # The fused step: one C++ call per dtype over that dtype's variables, when every variable
        # is a C-contiguous float32/float64 array (else the NumPy rules run).
        kernels = [ops.optimizer_step_kernel([variables[i] for i in grp.index], grp.dtype) for grp in self._groups]
        self._fused_vars = None
        if all(k is not None for k in kernels):
            self._fused_vars = [(kernel, grp.index,
                                 [tuple(grp.views[n][j] for n in self.slot_names) for j in range(len(grp.index))])
                                for kernel, grp in zip(kernels, self._groups)]
        if self._pending_slots is not None:
            slots, self._pending_slots = self._pending_slots, None
            self._load_slots(slots)

    def _slot_arrays(self) -> list:
        """The slots' flat arrays, per dtype group (what a step writes besides the variables)."""
        return [grp.buffers[name] for grp in self._groups or () for name in self.slot_names]

    def _captured_step_key(self) -> Optional[tuple]:
        """What a CUDA graph of a training step holds of this optimizer's step (the fused rule, and
        which gradient scales it takes), or None when its step cannot be captured: without a fused
        kernel its rules take the step's scalars from the host (``lstmfast.cuda.graphs``)."""
        if not (self.built and self._fused and self._fused_vars is not None):
            return None
        lr = self._lr_const if self._lr_const is not None else self.current_learning_rate()
        plan = self._fused_rule(lr, self.iterations + 1)
        return None if plan is None else (plan[0], self.clipnorm is None, self.global_clipnorm is None)

    # ---- the step ----------------------------------------------------------------------------

    def scale_loss(self, loss: Any) -> Any:
        """``loss`` as the step's gradients are of it (Keras's name): itself, except under a
        ``LossScaleOptimizer``."""
        return loss

    def _loss_scale(self) -> float:
        """What the training step multiplies the loss's gradient by (``scale_loss``'s factor)."""
        return 1.0

    def apply_gradients(self, grads_and_vars: Iterable[Tuple[Array, Array]]) -> None:
        """One step over ``(gradient, variable)`` pairs; variables are updated in place."""
        pairs = grads_and_vars if isinstance(grads_and_vars, (list, tuple)) else list(grads_and_vars)
        if pairs:
            grads, variables = zip(*pairs)
        else:
            grads = variables = ()
        self.apply(grads, variables)

    def apply(self, grads: Sequence[Array], variables: Sequence[Array]) -> None:
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
            scales = ops.clip_scales(grads, self.clipnorm, self.global_clipnorm)  # on the device of the grads
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
                # Lists, other dtypes, strided or wrongly shaped gradients: convert, or explain. A
                # gradient that is a variable's memory is copied, as the NumPy rules gather it first.
                checked = [g.copy() if any(np.may_share_memory(g, v) for v in variables) else g
                           for g in self._checked_grads(grads, variables)]
                kernel(rule, vs, checked if single else [checked[i] for i in index], slots, *hyper, sc,
                       self.clipvalue, keep)
        self.iterations += 1

    def _checked_grads(self, grads, variables) -> list:
        """The gradients as C-contiguous arrays of their variable's dtype, shapes checked, where
        the variables are (host or device)."""
        out = []
        xp = ops.array_module(variables[0]) if variables else np
        for i, (g, v) in enumerate(zip(grads, variables)):
            shape = self._shapes[i]
            if getattr(g, "shape", None) != shape or v.shape != shape:
                self._bad_pair(i, g, v)
            if xp is not np:
                g = xp.ascontiguousarray(xp.asarray(g, dtype=v.dtype))
            elif not (isinstance(g, np.ndarray) and g.dtype == v.dtype and g.flags.c_contiguous and g.flags.aligned):
                g = np.array(g, dtype=v.dtype, order="C")  # the fused kernel's layout (aligned too)
            out.append(g)
        return out

    def _fused_rule(self, lr, t):
        """``(rule code of cpp/optim.h, (lr, momentum, 1 - beta_1, 1 - beta_2, rho, 1 - rho, epsilon))``
        for step ``t``, or None where the rule has no fused kernel (subclasses): ``_update`` runs."""
        return None

    def _bad_pair(self, i, g, v):
        shape = self._shapes[i]
        if g is None:
            raise ValueError(f"gradient {i} is None (variable shape {shape_str(shape)})")
        gshape = np.shape(g)
        if gshape == shape and v.shape == shape:  # a list or other array-like of the right shape
            return
        raise ValueError(f"step {self.iterations}: variable {i} must have shape {shape_str(shape)} (as when the "
                         f"optimizer was built) and so must its gradient; got variable {shape_str(v.shape)}, "
                         f"gradient {shape_str(gshape)}")

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
                slots.extend(ops.to_numpy(grp.views[n][j]).copy() for n in self.slot_names)
        elif self._pending_slots is not None:
            slots = [s.copy() for s in self._pending_slots]
        return {"iterations": int(self.iterations), "slots": slots}

    def set_state(self, state: Dict[str, Any]) -> None:
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
                                 f"{shape_str(self._shapes[i])}, got {shape_str(s.shape)}")
            if s.dtype.kind not in "fiu":
                raise TypeError(f"optimizer state slot {k} (variable {i}, {names[n]!r}) must be numeric, "
                                f"got dtype {s.dtype}")
        for k, s in enumerate(slots):
            i, n = divmod(k, len(names))
            grp, j = self._group_of[i]
            view = grp.views[names[n]][j]
            view[...] = ops.to_device_of(view, s.astype(grp.dtype, copy=False))

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
    def from_config(cls: Type[_O], config: dict) -> _O:
        config = dict(config)
        for key, default in _KERAS_DEFAULTS.items():
            if key in config:
                value = config.pop(key)
                if value != default and not (key == "decay" and value is None):
                    raise ValueError(f"{cls.__name__}: {key}={value!r} is not supported by lstmfast")
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            config["learning_rate"] = deserialize_schedule(lr)
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} learning_rate={self._learning_rate!r} " \
               f"iterations={self.iterations}>"
