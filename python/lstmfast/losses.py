"""Losses for ``Model.compile``: the value and its gradient with respect to ``y_pred``, Keras 3 semantics.

Each loss first reduces the class (last) axis of ``y_pred [..., C]`` to one value per element
(``V = y_pred.shape[:-1]``: batch, and time for sequence outputs)::

    categorical_crossentropy         -sum_c t_c log(clip(p_c / sum_c p_c, eps, 1 - eps))
                     from_logits     -sum_c t_c log_softmax(x)_c
    sparse_categorical_crossentropy  the same with t = one_hot(label, C)
    binary_crossentropy              -mean_c [t log(clip(p)) + (1 - t) log(1 - clip(p))]
                     from_logits     mean_c [max(x, 0) - x t + log(1 + exp(-|x|))]
    mean_squared_error               mean_c (p - t)^2
    mean_absolute_error              mean_c |p - t|

with ``eps = 1e-7`` (Keras's ``backend.epsilon()``; the clipped probability gets no gradient where
the clip is active, as in Keras). The values are then reduced like Keras 3's default
``"sum_over_batch_size"``::

    loss = sum(w * values) / values.size

``w`` is 1, or ``sample_weight`` broadcast to ``V`` with its leading axes aligned (a ``(B,)`` weight
on ``(B, T)`` values weights every step of a sample; a trailing axis of size 1 is dropped first).
Keras 3 aligns trailing axes instead, so it rejects a ``(B,)`` weight on ``(B, T)`` values; the two
agree whenever the weight has the values' shape, is a scalar, or is ``(B,)``/``(B, 1)`` on ``(B,)``.
The denominator stays ``values.size`` whatever the weights (Keras 3). A mask of sequence steps passed
as ``sample_weight`` is used as given, so it only reproduces Keras's masked mean (the sum over valid
steps divided by their count) if it is pre-scaled by ``size / sum(mask)``, as ``models.py`` does.
``reduction="sum"`` drops the division. ``resolve`` adds Keras's shape-dependent "crossentropy".

``value_and_grad`` is the training hot path: a handful of in-place NumPy calls on per-instance scratch
buffers; the returned gradient is a fresh array of ``y_pred``'s shape and dtype. ``__call__`` computes
the value alone through the plain per-element formulas (``values``), which the metrics reuse.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["Loss", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "MeanAbsoluteError", "categorical_crossentropy",
           "sparse_categorical_crossentropy", "binary_crossentropy", "mean_squared_error",
           "mean_absolute_error", "get", "resolve", "serialize", "deserialize"]

EPSILON = 1e-7  # Keras backend.epsilon(): probability clip for the crossentropies
REDUCTIONS = ("sum_over_batch_size", "sum")
SMALL_SIZE = 16  # y_pred with at most this many entries takes the pure-Python gradient path

_add_reduce = np.add.reduce
_max_reduce = np.maximum.reduce
_min_reduce = np.minimum.reduce


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Loss:
    """Base class. A subclass sets ``name`` and implements ``_values(y_true, y_pred)`` (per-element
    values, shape ``y_pred.shape[:-1]``) and ``_grad(y_true, y_pred, scale, grad)`` (fills ``grad``
    with ``scale * d(values)/d(y_pred)``, returns ``sum(scale * values)``), optionally
    ``_grad_small`` (the same on Python lists, for tiny arrays) and ``_check_true``; each sees
    ``y_true`` already checked. ``_mean_over_classes = True`` folds ``1/C`` into ``scale``."""

    name = "loss"
    _mean_over_classes = False  # the element value averages (not sums) the last axis

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r} "
                             f"(reduction='none' is not supported: these losses return a float)")
        if name is not None:
            self.name = str(name)
        self.reduction = reduction
        self._scratch_key = None
        self._scratch = None
        self._scale_key = None
        self._scale = None

    # ---- public API --------------------------------------------------------------------------

    def __call__(self, y_true, y_pred, sample_weight=None) -> float:
        """The reduced loss (a Python float)."""
        y_pred = _check_pred(y_pred)
        y_true = self._check_true(y_true, y_pred)
        values = self._values(y_true, y_pred)
        if sample_weight is None:
            total = float(_add_reduce(values, axis=None))
            return total / values.size if self.reduction == "sum_over_batch_size" and values.size else total
        w = _weights(sample_weight, y_pred)
        total = float(_add_reduce(values * w, axis=None))
        return total / values.size if self.reduction == "sum_over_batch_size" and values.size else total

    def value_and_grad(self, y_true, y_pred, sample_weight=None):
        """``(loss, dloss/dy_pred)``; the gradient has ``y_pred``'s shape and dtype."""
        p = y_pred if type(y_pred) is np.ndarray else np.asarray(y_pred)
        if p.dtype.kind != "f" or p.ndim == 0:
            p = _check_pred(p)
        t = self._check_true(y_true, p)
        n = p.size
        if n == 0:
            return 0.0, np.zeros(p.shape, p.dtype)
        # scale = d(loss)/d(element value): 1/size (or 1), over C for the losses averaging the last axis
        key = (n, p.shape[-1], p.dtype)
        if key != self._scale_key:
            C = p.shape[-1]
            f = 1.0 / (n // C) if self.reduction == "sum_over_batch_size" else 1.0
            if self._mean_over_classes:
                f /= C
            self._scale_f, self._scale = f, np.array(f, p.dtype)
            self._scale_key = key
        if n <= SMALL_SIZE and type(self)._grad_small is not Loss._grad_small:
            # tiny arrays (single-sample steps): plain Python floats beat a dozen NumPy calls
            rows = n // p.shape[-1]
            if sample_weight is None:
                row_scale = [self._scale_f] * rows
            else:
                row_scale = (_weights(sample_weight, p).reshape(rows) * self._scale_f).tolist()
            k = _constants(p.dtype)
            try:
                loss, g = self._grad_small(t.reshape(-1).tolist(), p.reshape(-1).tolist(), p.shape[-1],
                                           row_scale, k.eps_f, k.one_minus_eps_f)
            except (ZeroDivisionError, ValueError, OverflowError):
                pass  # e.g. probabilities summing to 0: the NumPy path gives NaN/inf as Keras does
            else:
                return loss, np.array(g, p.dtype).reshape(p.shape)
        scale = self._scale
        if sample_weight is not None:
            scale = (_weights(sample_weight, p) * scale)[..., None]
        grad = np.empty(p.shape, p.dtype)
        return self._grad(t, p, scale, grad), grad

    def values(self, y_true, y_pred) -> np.ndarray:
        """Per-element loss values, shape ``y_pred.shape[:-1]`` (before weighting and reduction)."""
        y_pred = _check_pred(y_pred)
        return self._values(self._check_true(y_true, y_pred), y_pred)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        # keys Keras writes that carry nothing here when they hold their default
        if config.get("axis", -1) != -1:
            raise ValueError(f"{cls.__name__}: only axis=-1 is supported, got axis={config['axis']!r}")
        config.pop("axis", None)
        config.pop("dtype", None)
        if config.get("ignore_class") is not None:
            raise ValueError(f"{cls.__name__}: ignore_class is not supported, got {config['ignore_class']!r}")
        config.pop("ignore_class", None)
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ---- helpers for subclasses --------------------------------------------------------------

    def _buffers(self, like: np.ndarray):
        """Three float scratch arrays shaped like ``like`` and a bool one, reused while the shape and
        dtype stay the same."""
        if self._scratch_key != (like.shape, like.dtype):
            self._scratch = (np.empty(like.shape, like.dtype), np.empty(like.shape, like.dtype),
                             np.empty(like.shape, like.dtype), np.empty(like.shape, np.bool_))
            self._scratch_key = (like.shape, like.dtype)
        return self._scratch

    def _check_true(self, y_true, y_pred):
        return _dense_true(y_true, y_pred, self.name)

    def _values(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def _grad(self, y_true, y_pred, scale, grad):  # pragma: no cover - abstract
        """Loss value; fills ``grad``. ``scale`` is 0-d or shaped ``V + (1,)``."""
        raise NotImplementedError

    def _grad_small(self, t, p, C, row_scale, eps, one_minus_eps):  # pragma: no cover - optional
        """Optional: ``_grad`` on flat Python lists (rows of C entries, one scale per row), returning
        ``(loss, grad list)``; used for y_pred with at most SMALL_SIZE entries when overridden."""
        raise NotImplementedError


def _check_pred(y_pred) -> np.ndarray:
    p = y_pred if type(y_pred) is np.ndarray else np.asarray(y_pred)
    if p.dtype.kind != "f":
        raise TypeError(f"y_pred must be a float array, got dtype {p.dtype}")
    if p.ndim == 0:
        raise ValueError("y_pred must have at least one axis (the class/unit axis), got a scalar")
    return p


def _dense_true(y_true, y_pred, name):
    """y_true with y_pred's shape and dtype; a missing or extra trailing axis of size 1 is fixed as
    Keras's squeeze_or_expand_to_same_rank does."""
    t = y_true if type(y_true) is np.ndarray else np.asarray(y_true)
    if t.shape != y_pred.shape:
        if t.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1 and t.shape == y_pred.shape[:-1]:
            t = t[..., None]
        elif t.ndim == y_pred.ndim + 1 and t.shape[-1] == 1 and t.shape[:-1] == y_pred.shape:
            t = t[..., 0]
        else:
            raise ValueError(f"{name}: y_true shape {_shape(t.shape)} does not match y_pred shape "
                             f"{_shape(y_pred.shape)}{_class_hint(name, t, y_pred)}")
    if t.dtype != y_pred.dtype:
        if t.dtype.kind not in "biuf":
            raise TypeError(f"{name}: y_true must be numeric, got dtype {t.dtype}")
        t = t.astype(y_pred.dtype)
    return t


def _class_hint(name, t, p) -> str:
    if name != "categorical_crossentropy" and "categorical" not in name:
        return ""
    C = p.shape[-1]
    hint = f": y_true must be one-hot with {C} classes (the last axis of y_pred)"
    if t.shape == p.shape[:-1] or (t.shape[:-1] == p.shape[:-1] and t.shape[-1] == 1):
        hint += "; for integer labels use sparse_categorical_crossentropy (or utils.to_categorical)"
    return hint


def _weights(sample_weight, y_pred) -> np.ndarray:
    """sample_weight broadcast to V = y_pred.shape[:-1], leading axes aligned, in y_pred's dtype."""
    V = y_pred.shape[:-1]
    w = sample_weight if type(sample_weight) is np.ndarray else np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, got dtype {w.dtype}")
    if w.dtype != y_pred.dtype:
        w = w.astype(y_pred.dtype)
    if w.shape == V:
        return w
    if w.ndim == len(V) + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    if w.ndim <= len(V):
        w = w.reshape(w.shape + (1,) * (len(V) - w.ndim))
        try:
            return np.broadcast_to(w, V)
        except ValueError:
            pass
    raise ValueError(f"sample_weight shape {_shape(np.shape(sample_weight))} cannot be broadcast to the loss "
                     f"values shape {_shape(V)} (y_pred shape {_shape(y_pred.shape)} without its last axis; "
                     f"leading axes are aligned)")


class _Constants:
    """0-d arrays of one float dtype: NumPy handles them faster than Python floats in ufuncs."""

    def __init__(self, dtype):
        self.eps = np.array(EPSILON, dtype)
        self.one_minus_eps = np.array(1.0 - EPSILON, dtype)
        self.eps_f, self.one_minus_eps_f = float(self.eps), float(self.one_minus_eps)  # as rounded to dtype
        self.zero = np.array(0.0, dtype)
        self.one = np.array(1.0, dtype)
        self.two = np.array(2.0, dtype)


_CONSTANTS = {}


def _constants(dtype) -> _Constants:
    k = _CONSTANTS.get(dtype)
    if k is None:
        k = _CONSTANTS[dtype] = _Constants(dtype)
    return k


def _weighted_sum(x: np.ndarray, scale: np.ndarray) -> float:
    """sum(x * scale) as a float; x may be overwritten. scale is 0-d or broadcasts against x."""
    if scale.ndim == 0:
        return float(_add_reduce(x, None)) * float(scale)
    np.multiply(x, scale, x)
    return float(_add_reduce(x, None))


# ------------------------------------------------------------------------------------------------
# Categorical crossentropy (one-hot or soft targets).
# ------------------------------------------------------------------------------------------------

class CategoricalCrossentropy(Loss):
    """Crossentropy of one-hot (or soft) targets ``[..., C]``. Probabilities are renormalised to
    sum to 1 along the class axis and clipped to ``[eps, 1 - eps]`` (Keras); ``from_logits=True``
    uses ``log_softmax``. ``label_smoothing`` s replaces t by ``t (1 - s) + s / C``."""

    name = "categorical_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0, name=None, reduction="sum_over_batch_size"):
        super().__init__(name, reduction)
        self.from_logits = bool(from_logits)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}

    def _smooth(self, t, C):
        s = self.label_smoothing
        return t * (1.0 - s) + s / C if s else t

    def _grad_small(self, t, p, C, row_scale, eps, one_minus_eps):
        ls = self.label_smoothing
        if ls:
            t = [ti * (1.0 - ls) + ls / C for ti in t]
        g = [0.0] * len(p)
        loss = 0.0
        for r, w in enumerate(row_scale):
            o = r * C
            pr, tr = p[o:o + C], t[o:o + C]
            if self.from_logits:
                m = max(pr)
                e = [math.exp(x - m) for x in pr]
                se = sum(e)
                lse = math.log(se) + m
                loss -= w * sum(ti * (x - lse) for ti, x in zip(tr, pr) if ti)
                f = w * sum(tr) / se
                for j in range(C):
                    g[o + j] = f * e[j] - w * tr[j]
            else:
                s = sum(pr)
                rr = lsum = 0.0
                u = [0.0] * C
                for j in range(C):
                    tj = tr[j]
                    if tj:
                        q = pr[j] / s
                        qc = min(max(q, eps), one_minus_eps)
                        lsum += tj * math.log(qc)
                        if qc == q:
                            u[j] = tj / qc
                            rr += u[j] * q
                loss -= w * lsum
                f = w / s
                for j in range(C):
                    g[o + j] = f * (rr - u[j])
        return loss, g

    def _values(self, t, p):
        t = self._smooth(t, p.shape[-1])
        if self.from_logits:
            z = p - p.max(axis=-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        else:
            q = p / p.sum(axis=-1, keepdims=True)
            logp = np.log(np.clip(q, EPSILON, 1.0 - EPSILON))
        return -(t * logp).sum(axis=-1)

    def _grad(self, t, p, scale, grad):
        t = self._smooth(t, p.shape[-1])
        a, b, _, hit = self._buffers(p)
        if self.from_logits:
            # loss = -sum t log_softmax(x); dloss/dx = softmax(x) sum(t) - t
            np.subtract(p, _max_reduce(p, -1, None, None, True), a)
            np.exp(a, b)
            se = _add_reduce(b, -1, None, None, True)
            np.divide(b, se, grad)                            # softmax
            np.log(se, se)
            np.subtract(a, se, a)                             # log_softmax
            np.multiply(a, t, a)
            loss = -_weighted_sum(a, scale)
            np.multiply(grad, _add_reduce(t, -1, None, None, True), grad)
            np.subtract(grad, t, grad)
            np.multiply(grad, scale, grad)
            return loss
        # q = p / s, qc = clip(q); u = t / qc where not clipped, else 0 (= -dloss/dq);
        # dloss/dp = (sum_j u_j q_j - u) / s
        k = _constants(p.dtype)
        s = _add_reduce(p, -1, None, None, True)
        np.divide(p, s, a)                                    # q
        np.maximum(a, k.eps, out=b)
        np.minimum(b, k.one_minus_eps, out=b)                 # qc
        np.equal(a, b, hit)
        np.divide(t, b, grad)
        np.multiply(grad, hit, grad)                          # u
        np.log(b, b)
        np.multiply(b, t, b)
        loss = -_weighted_sum(b, scale)
        np.multiply(grad, a, b)
        r = _add_reduce(b, -1, None, None, True)
        np.subtract(r, grad, grad)
        np.divide(scale, s, s)
        np.multiply(grad, s, grad)
        return loss


def _check_smoothing(label_smoothing) -> float:
    s = float(label_smoothing)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return s


# ------------------------------------------------------------------------------------------------
# Sparse categorical crossentropy (integer labels).
# ------------------------------------------------------------------------------------------------

class SparseCategoricalCrossentropy(Loss):
    """Crossentropy of integer labels ``[...]`` (or ``[..., 1]``) in ``[0, C)`` against
    ``y_pred [..., C]``: the formulas of ``CategoricalCrossentropy`` with one-hot targets, computed
    at the label entries only."""

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False, name=None, reduction="sum_over_batch_size"):
        super().__init__(name, reduction)
        self.from_logits = bool(from_logits)
        self._rows_key = None
        self._rows = None

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}

    def _check_true(self, y_true, y_pred):
        t = y_true if type(y_true) is np.ndarray else np.asarray(y_true)
        V = y_pred.shape[:-1]
        if t.shape != V:
            if t.ndim and t.shape[-1] == 1 and t.shape[:-1] == V:
                t = t.reshape(V)
            else:
                raise ValueError(f"{self.name}: y_true shape {_shape(t.shape)} does not match y_pred shape "
                                 f"{_shape(y_pred.shape)}: expected integer labels of shape {_shape(V)} "
                                 f"(or {_shape(V + (1,))}) in [0, {y_pred.shape[-1]})"
                                 + ("; for one-hot targets use categorical_crossentropy"
                                    if t.shape == y_pred.shape else ""))
        if t.dtype.kind not in "iu":
            if t.dtype.kind not in "bf":
                raise TypeError(f"{self.name}: y_true must hold integer labels, got dtype {t.dtype}")
            labels = t.astype(np.intp)
            if not np.array_equal(labels, t):
                raise ValueError(f"{self.name}: y_true must hold integer class labels, got non-integer values "
                                 f"(one-hot targets need categorical_crossentropy)")
            t = labels
        if t.size:
            C = y_pred.shape[-1]
            if t.size <= SMALL_SIZE:
                labels = t.reshape(-1).tolist()
                lo, hi = min(labels), max(labels)
            else:
                lo, hi = _min_reduce(t, None), _max_reduce(t, None)
            if lo < 0 or hi >= C:
                bad = int(lo) if lo < 0 else int(hi)
                raise ValueError(f"{self.name}: label {bad} is out of range: y_pred shape {_shape(y_pred.shape)} "
                                 f"has {C} classes, so labels must lie in [0, {C - 1}]")
        return t

    def _label_index(self, t, C):
        """Flat indices of the label entries in y_pred.reshape(-1)."""
        N = t.size
        if self._rows_key != (N, C):
            self._rows = np.arange(0, N * C, C, dtype=np.intp)
            self._rows_key = (N, C)
        return np.add(self._rows, t.reshape(N))

    def _grad_small(self, t, p, C, row_scale, eps, one_minus_eps):
        g = [0.0] * len(p)
        loss = 0.0
        for r, w in enumerate(row_scale):
            o = r * C
            pr = p[o:o + C]
            lab = t[r]
            if self.from_logits:
                m = max(pr)
                e = [math.exp(x - m) for x in pr]
                se = sum(e)
                loss += w * (math.log(se) + m - pr[lab])
                f = w / se
                g[o:o + C] = [f * ej for ej in e]
                g[o + lab] -= w
            else:
                s = sum(pr)
                q = pr[lab] / s
                qc = min(max(q, eps), one_minus_eps)
                loss -= w * math.log(qc)
                u = w / (qc * s) if qc == q else 0.0
                g[o:o + C] = [u * q] * C
                g[o + lab] -= u
        return loss, g

    def _values(self, t, p):
        onehot = (t[..., None] == np.arange(p.shape[-1])).astype(p.dtype)
        return CategoricalCrossentropy(self.from_logits)._values(onehot, p)

    def _grad(self, t, p, scale, grad):
        C = p.shape[-1]
        N = t.size
        idx = self._label_index(t, C)
        pf = p.reshape(-1)
        gf = grad.reshape(-1)
        row_scale = scale if scale.ndim == 0 else scale.reshape(N)
        if self.from_logits:
            # loss = lse - z_label; dloss/dx = softmax(x) - onehot
            np.subtract(p, _max_reduce(p, -1, None, None, True), grad)
            lv = gf[idx]                                      # z at the label
            np.exp(grad, grad)
            se = _add_reduce(grad, -1, None, None, True)
            np.divide(grad, se, grad)
            np.subtract(np.log(se.reshape(N)), lv, lv)
            loss = _weighted_sum(lv, row_scale)
            gf[idx] -= 1.0
            np.multiply(grad, scale, grad)
            return loss
        # q_l = p_l / s, qc = clip(q_l); u = 1/qc where not clipped, else 0;
        # dloss/dp_k = (u q_l - [k == l] u) / s
        k = _constants(p.dtype)
        s = _add_reduce(p, -1, None, None, True).reshape(N)
        ql = pf[idx]
        np.divide(ql, s, ql)
        qc = np.maximum(ql, k.eps)
        np.minimum(qc, k.one_minus_eps, out=qc)
        u = np.divide(np.equal(ql, qc), qc)
        np.log(qc, qc)
        loss = -_weighted_sum(qc, row_scale)
        np.divide(u, s, u)
        np.multiply(u, row_scale, u)
        np.multiply(u, ql, ql)
        grad[...] = ql.reshape(p.shape[:-1] + (1,))
        gf[idx] -= u
        return loss


# ------------------------------------------------------------------------------------------------
# Binary crossentropy.
# ------------------------------------------------------------------------------------------------

class BinaryCrossentropy(Loss):
    """Elementwise binary crossentropy, averaged over the last axis. Probabilities are clipped to
    ``[eps, 1 - eps]``; ``from_logits=True`` uses ``max(x, 0) - x t + log(1 + exp(-|x|))``.
    ``label_smoothing`` s replaces t by ``t (1 - s) + s / 2``."""

    name = "binary_crossentropy"
    _mean_over_classes = True

    def __init__(self, from_logits=False, label_smoothing=0.0, name=None, reduction="sum_over_batch_size"):
        super().__init__(name, reduction)
        self.from_logits = bool(from_logits)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}

    def _smooth(self, t):
        s = self.label_smoothing
        return t * (1.0 - s) + 0.5 * s if s else t

    def _grad_small(self, t, p, C, row_scale, eps, one_minus_eps):
        ls = self.label_smoothing
        if ls:
            t = [ti * (1.0 - ls) + 0.5 * ls for ti in t]
        g = [0.0] * len(p)
        loss = 0.0
        for j, (x, ti) in enumerate(zip(p, t)):
            w = row_scale[j // C]
            if self.from_logits:
                e = math.exp(-abs(x))
                loss += w * (max(x, 0.0) - x * ti + math.log1p(e))
                g[j] = w * ((1.0 if x >= 0 else e) / (1.0 + e) - ti)
            else:
                pc = min(max(x, eps), one_minus_eps)
                loss -= w * (ti * math.log(pc) + (1.0 - ti) * math.log(1.0 - pc))
                if pc == x:
                    g[j] = w * (pc - ti) / (pc * (1.0 - pc))
        return loss, g

    def _values(self, t, p):
        t = self._smooth(t)
        if self.from_logits:
            e = np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))
        else:
            pc = np.clip(p, EPSILON, 1.0 - EPSILON)
            e = -(t * np.log(pc) + (1.0 - t) * np.log(1.0 - pc))
        return e.mean(axis=-1)

    def _grad(self, t, p, scale, grad):
        t = self._smooth(t)
        a, b, c, hit = self._buffers(p)
        k = _constants(p.dtype)
        if self.from_logits:
            # softplus(x) - x t with e = exp(-|x|); dloss/dx = sigmoid(x) - t,
            # sigmoid(x) = 1/(1+e) for x >= 0 and e/(1+e) otherwise
            np.abs(p, a)
            np.negative(a, a)
            np.exp(a, a)                                      # e
            np.maximum(p, k.zero, out=b)
            np.multiply(p, t, c)
            np.subtract(b, c, b)                              # max(x, 0) - x t first: no cancellation
            np.log1p(a, c)
            np.add(b, c, b)
            loss = _weighted_sum(b, scale)
            np.add(a, k.one, b)
            np.divide(a, b, grad)
            np.greater_equal(p, k.zero, hit)
            np.divide(k.one, b, out=grad, where=hit)
            np.subtract(grad, t, grad)
            np.multiply(grad, scale, grad)
            return loss
        # pc = clip(p); dloss/dp = (pc - t) / (pc (1 - pc)) where not clipped, else 0
        np.maximum(p, k.eps, out=a)
        np.minimum(a, k.one_minus_eps, out=a)                 # pc
        np.equal(a, p, hit)
        np.subtract(k.one, a, b)                              # 1 - pc
        np.subtract(a, t, grad)
        np.divide(grad, b, grad)
        np.divide(grad, a, grad)
        np.multiply(grad, hit, grad)
        np.multiply(grad, scale, grad)
        # t log pc + (1 - t) log(1 - pc), with (1 - t) log(1 - pc) as log(1 - pc) - t log(1 - pc)
        np.log(a, a)
        np.log(b, b)
        np.multiply(a, t, a)
        np.multiply(b, t, c)
        np.subtract(b, c, b)
        np.add(a, b, a)
        return -_weighted_sum(a, scale)


# ------------------------------------------------------------------------------------------------
# Regression losses.
# ------------------------------------------------------------------------------------------------

class MeanSquaredError(Loss):
    """``mean_c (p - t)^2``."""

    name = "mean_squared_error"
    _mean_over_classes = True

    def _grad_small(self, t, p, C, row_scale, eps, one_minus_eps):
        g = [0.0] * len(p)
        loss = 0.0
        for j, (x, ti) in enumerate(zip(p, t)):
            w = row_scale[j // C]
            d = x - ti
            loss += w * d * d
            g[j] = 2.0 * w * d
        return loss, g

    def _values(self, t, p):
        return np.square(p - t).mean(axis=-1)

    def _grad(self, t, p, scale, grad):
        np.subtract(p, t, grad)                               # d
        if scale.ndim == 0:
            d = grad.reshape(-1)
            loss = float(np.dot(d, d)) * float(scale)
        else:
            a = self._buffers(p)[0]
            np.multiply(grad, scale, a)
            np.multiply(a, grad, a)
            loss = float(_add_reduce(a, None))
        np.multiply(grad, scale, grad)
        np.multiply(grad, _constants(p.dtype).two, grad)
        return loss


class MeanAbsoluteError(Loss):
    """``mean_c |p - t|``; the gradient at p == t is 0 (``sign``), as in Keras's backends."""

    name = "mean_absolute_error"
    _mean_over_classes = True

    def _grad_small(self, t, p, C, row_scale, eps, one_minus_eps):
        g = [0.0] * len(p)
        loss = 0.0
        for j, (x, ti) in enumerate(zip(p, t)):
            w = row_scale[j // C]
            d = x - ti
            loss += w * abs(d)
            g[j] = w * ((d > 0) - (d < 0))
        return loss, g

    def _values(self, t, p):
        return np.abs(p - t).mean(axis=-1)

    def _grad(self, t, p, scale, grad):
        a = self._buffers(p)[0]
        np.subtract(p, t, grad)
        np.abs(grad, a)
        loss = _weighted_sum(a, scale)
        np.sign(grad, grad)
        np.multiply(grad, scale, grad)
        return loss


# ------------------------------------------------------------------------------------------------
# Functional forms (per-element values, like keras.losses.<name>) and lookup.
# ------------------------------------------------------------------------------------------------

def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0) -> np.ndarray:
    return CategoricalCrossentropy(from_logits, label_smoothing).values(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False) -> np.ndarray:
    return SparseCategoricalCrossentropy(from_logits).values(y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0) -> np.ndarray:
    return BinaryCrossentropy(from_logits, label_smoothing).values(y_true, y_pred)


def mean_squared_error(y_true, y_pred) -> np.ndarray:
    return MeanSquaredError().values(y_true, y_pred)


def mean_absolute_error(y_true, y_pred) -> np.ndarray:
    return MeanAbsoluteError().values(y_true, y_pred)


_CLASSES = {cls.__name__: cls for cls in (CategoricalCrossentropy, SparseCategoricalCrossentropy,
                                           BinaryCrossentropy, MeanSquaredError, MeanAbsoluteError)}
_CANONICAL = {cls.name: cls for cls in _CLASSES.values()}
# every accepted string (lower case) -> canonical name
_ALIASES = {name: name for name in _CANONICAL}
_ALIASES.update({cls.__name__.lower(): cls.name for cls in _CLASSES.values()})
_ALIASES.update({"mse": "mean_squared_error", "mae": "mean_absolute_error", "bce": "binary_crossentropy"})


def canonical_name(identifier) -> str:
    """The canonical Keras function name for a loss string or instance ('mse' -> 'mean_squared_error')."""
    if isinstance(identifier, Loss):
        return type(identifier).name
    key = str(identifier).lower()
    if key in ("crossentropy", "ce"):
        raise ValueError(f"loss {identifier!r} depends on the targets' shape: use "
                         f"lstmfast.losses.resolve({identifier!r}, y_true, y_pred)")
    if key not in _ALIASES:
        raise ValueError(f"unknown loss {identifier!r}; valid names: {', '.join(sorted(_ALIASES))}")
    return _ALIASES[key]


def get(identifier) -> Loss:
    """A Loss from a name (case-insensitive: Keras names, class names and aliases such as 'mse'),
    a ``{"class_name", "config"}`` dict, or a Loss instance (returned as is)."""
    if isinstance(identifier, Loss):
        return identifier
    if identifier is None:
        raise ValueError("loss is None; pass a loss name (e.g. 'mse', 'categorical_crossentropy') or a Loss")
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        return _CANONICAL[canonical_name(identifier)]()
    if callable(identifier):
        raise TypeError(f"loss {identifier!r} is a plain function; lstmfast needs the gradient too: subclass "
                        f"lstmfast.losses.Loss and implement _values and _grad, or use a built-in loss "
                        f"({', '.join(sorted(_CANONICAL))})")
    raise TypeError(f"loss must be a string, a dict or a Loss, got {type(identifier).__name__}")


def resolve(identifier, y_true, y_pred) -> Loss:
    """``get``, plus Keras 3's "crossentropy"/"ce": binary if y_pred's last axis is 1, sparse if
    y_true has fewer axes than y_pred or a last axis of 1, else categorical."""
    if isinstance(identifier, str) and identifier.lower() in ("crossentropy", "ce"):
        pshape, tshape = np.shape(y_pred), np.shape(y_true)
        if pshape and pshape[-1] == 1:
            return BinaryCrossentropy()
        if len(tshape) < len(pshape) or (tshape and tshape[-1] == 1 and pshape and pshape[-1] > 1):
            return SparseCategoricalCrossentropy()
        return CategoricalCrossentropy()
    return get(identifier)


def serialize(loss):
    """JSON-ready form: ``{"class_name": ..., "config": {...}}``."""
    loss = get(loss)
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(config) -> Loss:
    """Inverse of ``serialize``; also accepts a loss name."""
    if isinstance(config, str):
        return get(config)
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"cannot deserialize a loss from {config!r}: expected a name or a dict with "
                         f"'class_name' and 'config'")
    name = config["class_name"]
    cls = _CLASSES.get(name) or _CANONICAL.get(_ALIASES.get(str(name).lower(), ""))
    if cls is None:
        raise ValueError(f"unknown loss class {name!r}; valid: {', '.join(sorted(_CLASSES))}")
    return cls.from_config(config.get("config") or {})
