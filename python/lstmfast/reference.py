"""NumPy float64 reference LSTM: the oracle the C++ and CUDA engines are tested against.

Written to be read, not to be fast: one Python loop over time steps, everything in float64.
Layout and equations are those of ``cpp/lstm.h``:

    x [T,B,X] time-major, y [T,B,H]; kernel [X,4H], recurrent_kernel [H,4H], bias [4H],
    peephole [3,H] (rows p_i, p_f, p_o); gate columns in the order i, f, g(=c), o.

Per step t and batch row b (sigma = recurrent activation, * = elementwise):

    hm   = h_{t-1} * recurrent_dropout_mask           (mask absent: hm = h_{t-1})
    z    = x_t kernel + hm recurrent_kernel + bias     split into z_i, z_f, z_g, z_o
    i    = sigma(z_i + p_i * c_{t-1})
    f    = sigma(z_f + p_f * c_{t-1})
    g    = tanh(z_g)
    c_t  = f * c_{t-1} + i * g
    o    = sigma(z_o + p_o * c_t)
    h_t  = o * tanh(c_t)
    sigma = sigmoid 1/(1+exp(-z)), or hard_sigmoid clip(0.2 z + 0.5, 0, 1)

With ``precision="bfloat16"`` every matrix product (x_t kernel, hm recurrent_kernel and the four of
the backward pass) first rounds both operands to bfloat16 (``bfloat16_round``) and then multiplies
in float64: what the engines' bfloat16 products compute, less their float32 accumulation.

Right-padded batches (lengths): a step t >= lengths[b] leaves row b's h and c unchanged and writes
y[t,b] = 0; the final h, c are the state after the row's last valid step. In the backward pass dy at
padded steps is ignored and dh, dc pass straight through them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
from numpy.typing import ArrayLike

from ._results import LSTMGradients, LSTMOutput

_ACTIVATIONS = ("sigmoid", "hard_sigmoid")


# ---------------------------------------------------------------------------------------------
# Activations. Derivatives take the activation's output, as the cached gates are outputs.
# ---------------------------------------------------------------------------------------------

def _sigmoid(z):
    # exp of -|z| only, so no overflow for any z.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _hard_sigmoid(z):
    return np.clip(0.2 * z + 0.5, 0.0, 1.0)


def _dsigmoid(y):
    return y * (1.0 - y)


def _dhard_sigmoid(y):
    # Slope 0.2 on the linear part; 0 where the output is clipped.
    return np.where((y > 0.0) & (y < 1.0), 0.2, 0.0)


def _dtanh(y):
    return 1.0 - y * y


def _recurrent_activation(name):
    """Return (sigma, dsigma_from_output) for the recurrent activation ``name``."""
    if name == "sigmoid":
        return _sigmoid, _dsigmoid
    if name == "hard_sigmoid":
        return _hard_sigmoid, _dhard_sigmoid
    raise ValueError(f"recurrent_activation must be one of {_ACTIVATIONS}, got {name!r}")


# ---------------------------------------------------------------------------------------------
# Argument checks.
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# bfloat16 products.
# ---------------------------------------------------------------------------------------------

_BF16_MAX = (2 - 2 ** -7) * 2.0 ** 127   # the largest finite bfloat16
_BF16_MIN_NORMAL = 2.0 ** -126
_BF16_SUBNORMAL_STEP = 2.0 ** -133       # 7 fraction bits below the smallest normal


def bfloat16_round(a: ArrayLike) -> np.ndarray:
    """``a`` rounded element by element to the nearest bfloat16 value (8 significant bits, float32's
    exponent range; ties to even; beyond the largest finite value infinity; NaN stays NaN), as float64."""
    with np.errstate(invalid="ignore", over="ignore"):  # signalling NaNs widen quietly
        a = np.asarray(a, dtype=np.float64)
        fraction, exponent = np.frexp(a)                        # a = fraction * 2**exponent, 0.5 <= |fraction| < 1
        rounded = np.ldexp(np.round(fraction * 256) / 256, exponent)  # np.round: ties to even
        rounded = np.where(np.abs(a) < _BF16_MIN_NORMAL, np.round(a / _BF16_SUBNORMAL_STEP) * _BF16_SUBNORMAL_STEP,
                           rounded)
        rounded = np.where(np.abs(rounded) > _BF16_MAX, np.copysign(np.inf, a), rounded)
    return np.where(np.isfinite(a), rounded, a)


def _product(a, b, precision):
    """``a @ b``, the operands rounded to bfloat16 first when ``precision == "bfloat16"``."""
    if precision == "bfloat16":
        return bfloat16_round(a) @ bfloat16_round(b)
    return a @ b


def _float64(name, value, shape):
    """``value`` as a float64 array of exactly ``shape``, or ValueError naming ``name``."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {array.shape}")
    return array


def _lengths(value, T, B):
    """``lengths`` as an int64 array [B] with values in [0, T] (None: all T)."""
    if value is None:
        return np.full(B, T, dtype=np.int64)
    array = np.asarray(value)
    if array.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"lengths must hold integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() > T):
        raise ValueError(f"lengths must lie in [0, {T}], got min {array.min()}, max {array.max()}")
    return array


# ---------------------------------------------------------------------------------------------
# Forward and backward.
# ---------------------------------------------------------------------------------------------

def lstm_forward(x: ArrayLike, kernel: ArrayLike, recurrent_kernel: ArrayLike, bias: Optional[ArrayLike],
                 h0: Optional[ArrayLike] = None, c0: Optional[ArrayLike] = None,
                 peephole: Optional[ArrayLike] = None, lengths: Optional[ArrayLike] = None,
                 recurrent_activation: str = "sigmoid", training: bool = True,
                 recurrent_dropout_mask: Optional[ArrayLike] = None, precision: Optional[str] = None) -> LSTMOutput:
    """Run the LSTM over ``x [T,B,X]``; return ``LSTMOutput(y [T,B,H], h [B,H], c [B,H], cache)``.

    ``bias``, ``h0``, ``c0``, ``peephole``, ``lengths`` and ``recurrent_dropout_mask`` may be None
    (zeros, zeros, zeros, no peepholes, all T, no mask). ``cache`` is None when ``training`` is
    False; otherwise a dict for ``lstm_backward`` holding the float64 inputs and, per step,
    ``gates [T,B,4H]`` (activated i, f, g, o; zeros at padded steps), ``cells [T,B,H]`` (c_t,
    carried through padding), ``h_prev``/``c_prev [T,B,H]`` (the state each step started from).
    """
    sigma, _ = _recurrent_activation(recurrent_activation)
    if precision not in (None, "bfloat16"):
        raise ValueError(f"precision must be None or 'bfloat16', got {precision!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"x must have shape [T,B,X] (3 dimensions), got shape {x.shape}")
    T, B, X = x.shape
    recurrent_kernel = np.asarray(recurrent_kernel, dtype=np.float64)
    if recurrent_kernel.ndim != 2 or recurrent_kernel.shape[1] != 4 * recurrent_kernel.shape[0]:
        raise ValueError(f"recurrent_kernel must have shape [H,4H], got {recurrent_kernel.shape}")
    H = recurrent_kernel.shape[0]
    kernel = _float64("kernel", kernel, (X, 4 * H))
    has_bias, has_h0, has_c0 = bias is not None, h0 is not None, c0 is not None
    bias = _float64("bias", bias, (4 * H,)) if has_bias else np.zeros(4 * H)
    h0 = _float64("h0", h0, (B, H)) if has_h0 else np.zeros((B, H))
    c0 = _float64("c0", c0, (B, H)) if has_c0 else np.zeros((B, H))
    has_peephole = peephole is not None
    peephole = _float64("peephole", peephole, (3, H)) if has_peephole else np.zeros((3, H))
    p_i, p_f, p_o = peephole
    lengths = _lengths(lengths, T, B)
    has_mask = recurrent_dropout_mask is not None
    mask = (_float64("recurrent_dropout_mask", recurrent_dropout_mask, (B, H)) if has_mask
            else np.ones((B, H)))

    y = np.zeros((T, B, H))                 # [T,B,H] zero at padded steps
    gates = np.zeros((T, B, 4 * H))         # [T,B,4H] activated i, f, g, o
    cells = np.zeros((T, B, H))             # [T,B,H] c_t
    h_prev = np.zeros((T, B, H))            # [T,B,H] h_{t-1}
    c_prev = np.zeros((T, B, H))            # [T,B,H] c_{t-1}
    h, c = h0.copy(), c0.copy()             # [B,H] running state
    for t in range(T):
        valid = (t < lengths)[:, None]      # [B,1] rows still inside their sequence
        h_prev[t], c_prev[t] = h, c
        z = _product(x[t], kernel, precision) + _product(h * mask, recurrent_kernel, precision) + bias
        z_i, z_f, z_g, z_o = np.split(z, 4, axis=1)
        i = sigma(z_i + p_i * c)
        f = sigma(z_f + p_f * c)
        g = np.tanh(z_g)
        c_new = f * c + i * g
        o = sigma(z_o + p_o * c_new)
        h_new = o * np.tanh(c_new)

        gates[t] = np.where(valid, np.concatenate([i, f, g, o], axis=1), 0.0)
        h = np.where(valid, h_new, h)
        c = np.where(valid, c_new, c)
        y[t] = np.where(valid, h_new, 0.0)
        cells[t] = c

    cache = None
    if training:
        cache = dict(x=x, kernel=kernel, recurrent_kernel=recurrent_kernel, peephole=peephole,
                     lengths=lengths, mask=mask, recurrent_activation=recurrent_activation, precision=precision,
                     gates=gates, cells=cells, h_prev=h_prev, c_prev=c_prev,
                     has_bias=has_bias, has_h0=has_h0, has_c0=has_c0, has_peephole=has_peephole)
    return LSTMOutput(y, h, c, cache)


def lstm_backward(cache: Dict[str, Any], dy: Optional[ArrayLike], dh: Optional[ArrayLike] = None,
                  dc: Optional[ArrayLike] = None) -> LSTMGradients:
    """Gradients of a training-mode ``lstm_forward`` call.

    ``dy [T,B,H]`` (ignored at padded steps), ``dh``, ``dc [B,H]`` (gradients of the final h, c);
    each may be None (zeros). Returns ``LSTMGradients(dx, dkernel, drecurrent_kernel, dbias, dh0,
    dc0, dpeephole)``; ``dbias``, ``dh0``, ``dc0``, ``dpeephole`` are None where the forward call
    had no bias, h0, c0, peephole.
    """
    if cache is None:
        raise ValueError("cache is None: lstm_backward requires the cache of a training-mode "
                         "lstm_forward call (training=True)")
    _, dsigma = _recurrent_activation(cache["recurrent_activation"])
    x, kernel, recurrent_kernel = cache["x"], cache["kernel"], cache["recurrent_kernel"]
    p_i, p_f, p_o = cache["peephole"]
    lengths, mask, precision = cache["lengths"], cache["mask"], cache.get("precision")
    gates, cells, h_prev, c_prev = cache["gates"], cache["cells"], cache["h_prev"], cache["c_prev"]
    T, B, X = x.shape
    H = recurrent_kernel.shape[0]
    dy = np.zeros((T, B, H)) if dy is None else _float64("dy", dy, (T, B, H))
    dh_next = np.zeros((B, H)) if dh is None else _float64("dh", dh, (B, H)).copy()  # dL/dh_t
    dc_next = np.zeros((B, H)) if dc is None else _float64("dc", dc, (B, H)).copy()  # dL/dc_t

    dx = np.zeros((T, B, X))                # [T,B,X]
    dkernel = np.zeros((X, 4 * H))          # [X,4H]
    drecurrent_kernel = np.zeros((H, 4 * H))  # [H,4H]
    dbias = np.zeros(4 * H)                 # [4H]
    dpeephole = np.zeros((3, H))            # [3,H]
    for t in reversed(range(T)):
        valid = (t < lengths)[:, None]      # [B,1]
        i, f, g, o = np.split(gates[t], 4, axis=1)
        c, c_before = cells[t], c_prev[t]
        tanh_c = np.tanh(c)

        dh_t = dh_next + dy[t]              # h_t feeds y_t and the next step
        dz_o = dh_t * tanh_c * dsigma(o)
        dc_t = dc_next + dh_t * o * _dtanh(tanh_c) + dz_o * p_o  # o sees c_t through p_o
        dz_i = dc_t * g * dsigma(i)
        dz_f = dc_t * c_before * dsigma(f)
        dz_g = dc_t * i * _dtanh(g)
        dc_before = dc_t * f + dz_i * p_i + dz_f * p_f
        dz = np.where(valid, np.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1), 0.0)  # [B,4H]
        dz_i, dz_f, _, dz_o = np.split(dz, 4, axis=1)

        dx[t] = _product(dz, kernel.T, precision)
        dkernel += _product(x[t].T, dz, precision)
        drecurrent_kernel += _product((h_prev[t] * mask).T, dz, precision)
        dbias += dz.sum(axis=0)
        dpeephole += np.stack([(dz_i * c_before).sum(axis=0), (dz_f * c_before).sum(axis=0),
                               (dz_o * c).sum(axis=0)])
        # Padded rows: the state passed through unchanged, and so does its gradient.
        dh_next = np.where(valid, _product(dz, recurrent_kernel.T, precision) * mask, dh_next)
        dc_next = np.where(valid, dc_before, dc_next)

    return LSTMGradients(dx, dkernel, drecurrent_kernel,
                         dbias if cache["has_bias"] else None,
                         dh_next if cache["has_h0"] else None,
                         dc_next if cache["has_c0"] else None,
                         dpeephole if cache["has_peephole"] else None)
