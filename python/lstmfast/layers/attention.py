"""Attention layers: Attention (Luong-style, dot or concat scores) and AdditiveAttention
(Bahdanau-style), with Keras 3's inputs, masks, call arguments and weights. See
``lstmfast.layers`` for the protocol.

Inputs ``[query, value]`` or ``[query, value, key]`` (key defaults to value): ``query [B, Tq, D]``,
``value [B, Tv, Dv]``, ``key [B, Tv, D]`` (any number of leading batch dims). The computation,
stated once here:

    scores  [B, Tq, Tv]   dot:      scale * query @ key^T                (scale: 1 without use_scale)
                          concat:   c * sum_d tanh(scale * (query_i + key_j))    (c: concat_score_weight)
                          additive: sum_d scale_d * tanh(query_i + key_j)        (scale [D], 1 without use_scale)
    allowed [B, Tq, Tv]   value_mask[j] (and j <= i with use_causal_mask); scores - 1e9 where not allowed
    weights               softmax(scores, over Tv), then dropout (training, rate ``dropout``)
    output  [B, Tq, Dv]   weights @ value, zeroed on masked query rows

``mask=[query_mask, value_mask]`` (``[B, Tq]``, ``[B, Tv]``; a third entry, the key's, is ignored as
in Keras); the output mask is the query mask. Call arguments ``return_attention_scores`` (the
output becomes ``[output, weights]``, the weights after masking, softmax and dropout, without a
mask of their own) and ``use_causal_mask`` work eagerly and in the functional API (kept in the
node, saved with the model).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import ops
from .._typing import Arrays, InputShape, Mask, OutputShape
from .base import Layer, _cast, _dropout_mask, _is_shape_list, _rate, register
from .graph import _shape_tuple

__all__ = ["Attention", "AdditiveAttention"]

_MASKED_SCORE_OFFSET = 1e9  # Keras subtracts this from disallowed scores before the softmax


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@register
class Attention(Layer):
    """Dot-product (``score_mode="dot"``) or concat (``"concat"``) attention; see the module docstring.

    Weights: ``scale`` (a scalar, ``use_scale``) then ``concat_score_weight`` (a scalar,
    ``score_mode="concat"``), both initialised to 1, in Keras's ``get_weights`` order.
    ``dropout`` drops attention weights in training (inverted dropout), from ``seed``'s own
    generator when given, else lstmfast's global one.
    """

    supports_masking = True
    _extra_call_kwargs = ("return_attention_scores", "use_causal_mask")

    def __init__(self, use_scale: bool = False, score_mode: str = "dot", dropout: float = 0.0,
                 seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(use_scale, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__} {self.name!r}: use_scale must be True or False, got {use_scale!r}")
        self.use_scale = bool(use_scale)
        if score_mode not in ("dot", "concat"):
            raise ValueError(f"{type(self).__name__} {self.name!r}: score_mode must be 'dot' or 'concat', "
                             f"got {score_mode!r}")
        self.score_mode = score_mode
        self.dropout = _rate(dropout, "dropout", self.name)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"{type(self).__name__} {self.name!r}: seed must be an int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._rng = None if seed is None else np.random.default_rng(seed)

    # -- shapes ---------------------------------------------------------------------------------

    def _check_shapes(self, input_shape, use_key=True):
        """``(query, value, key)`` shapes, checked; the key is the value's when not given."""
        kind = type(self).__name__
        if not _is_shape_list(input_shape) or not 2 <= len(input_shape) <= 3:
            got = f"{len(input_shape)} inputs" if _is_shape_list(input_shape) else f"one input of shape {input_shape}"
            raise ValueError(f"{kind} {self.name!r} must be called on a list [query, value] or [query, value, key], "
                             f"got {got}")
        shapes = [_shape_tuple(s) for s in input_shape]
        query, value = shapes[0], shapes[1]
        key = shapes[2] if len(shapes) == 3 else value
        for what, s in (("query", query), ("value", value), ("key", key)):
            if len(s) < 3:
                raise ValueError(f"{kind} {self.name!r}: {what} must have shape (batch, steps, dim), got {s}")
        if key[-2] is not None and value[-2] is not None and key[-2] != value[-2]:
            raise ValueError(f"{kind} {self.name!r}: key and value must have the same number of steps, got key "
                             f"{key} and value {value}")
        if query[-1] is not None and key[-1] is not None and query[-1] != key[-1]:
            raise ValueError(f"{kind} {self.name!r}: query and key must have the same last dim, got query {query} "
                             f"and key {key}")
        return query, value, key

    def build(self, input_shape: InputShape) -> None:
        self._check_shapes(input_shape)
        if self.use_scale:
            self.add_weight("scale", (), "ones")
        if self.score_mode == "concat":
            self.add_weight("concat_score_weight", (), "ones")
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape, return_attention_scores: bool = False,
                             use_causal_mask: bool = False) -> OutputShape:
        query, value, key = self._check_shapes(input_shape)
        out = query[:-1] + (value[-1],)
        if return_attention_scores:
            return [out, query[:-1] + (key[-2],)]
        return out

    def compute_mask(self, inputs: Arrays, mask: Mask = None, return_attention_scores: bool = False,
                     use_causal_mask: bool = False) -> Mask:
        query_mask = self._split_mask(mask, inputs)[0]
        return [query_mask, None] if return_attention_scores else query_mask

    def _split_mask(self, mask, inputs=None):
        if mask is None:
            return None, None
        if not isinstance(mask, (list, tuple)) or not 2 <= len(mask) <= 3:
            raise ValueError(f"{type(self).__name__} {self.name!r}: mask must be a list [query_mask, value_mask], "
                             f"got {mask!r:.100}")
        return mask[0], mask[1]

    # -- scores ---------------------------------------------------------------------------------

    def _scores(self, q, k):
        """(scores, tape) for the backward pass of ``_scores_backward``."""
        w = self.weights
        if self.score_mode == "dot":
            qk = ops.matmul(q, k, trans_b=True, precision=self._gemm_precision)
            if self.use_scale:
                return qk * w["scale"], qk
            return qk, qk
        pre = q[..., :, None, :] + k[..., None, :, :]                 # [B, Tq, Tv, D]
        if self.use_scale:
            pre_scaled = pre * w["scale"]
        else:
            pre_scaled = pre
        t = np.tanh(pre_scaled)
        summed = t.sum(axis=-1)
        return w["concat_score_weight"] * summed, (pre, t, summed)

    def _scores_backward(self, tape, q, k, dscores):
        """(dq, dk) from the gradient of the scores, adding the weight gradients."""
        w, g, train = self.weights, self.grads, self.trainable
        if self.score_mode == "dot":
            qk = tape
            if self.use_scale:
                if train:
                    g["scale"] += (dscores * qk).sum()
                dscores = dscores * w["scale"]
            precision = self._gemm_precision
            return (ops.matmul(dscores, k, precision=precision),
                    ops.matmul(dscores, q, trans_a=True, precision=precision))
        pre, t, summed = tape
        c = w["concat_score_weight"]
        if train:
            g["concat_score_weight"] += (dscores * summed).sum()
        dpre = (dscores * c)[..., None] * (1 - t * t)
        if self.use_scale:
            if train:
                g["scale"] += (dpre * pre).sum()
            dpre = dpre * w["scale"]
        return dpre.sum(axis=-2), dpre.sum(axis=-3)

    # -- computation ----------------------------------------------------------------------------

    def _inputs(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"{type(self).__name__} {self.name!r} must be called on a list [query, value] or "
                             f"[query, value, key], got {type(inputs).__name__}")
        self._check_shapes([np.shape(x) for x in inputs])
        xs = [_cast(x, self._np_dtype) for x in inputs]
        q, v = xs[0], xs[1]
        return q, v, (xs[2] if len(xs) == 3 else v), len(xs)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None, return_attention_scores: bool = False,
                use_causal_mask: bool = False) -> Tuple[Arrays, Any]:
        q, v, k, n_inputs = self._inputs(inputs)
        query_mask, value_mask = self._split_mask(mask)
        xp = ops.array_module(q)
        scores, tape = self._scores(q, k)
        allowed = None
        if value_mask is not None:
            value_mask = ops.to_device_of(q, value_mask).astype(bool)
            allowed = value_mask[..., None, :]                              # [B, 1, Tv]
        if use_causal_mask:
            tq, tv = scores.shape[-2:]
            causal = xp.arange(tv)[None, :] <= xp.arange(tq)[:, None]     # [Tq, Tv]: key j <= query i
            allowed = causal if allowed is None else allowed & causal
        if allowed is not None:
            scores = xp.where(allowed, scores, scores - scores.dtype.type(_MASKED_SCORE_OFFSET))
        probs = _softmax(scores)
        keep = None
        if training and self.dropout > 0:
            keep = _dropout_mask(self, probs, probs.shape, self.dropout, probs.dtype)
            weights = probs * keep
        else:
            weights = probs
        out = ops.matmul(weights, v, precision=self._gemm_precision)
        row_mask = None
        if query_mask is not None:
            row_mask = ops.to_device_of(q, query_mask).astype(bool)[..., None]     # [B, Tq, 1]
            out = xp.where(row_mask, out, out.dtype.type(0))
        cache = (q, v, k, n_inputs, tape, probs, keep, weights, row_mask, return_attention_scores)
        return ([out, weights] if return_attention_scores else out), cache

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None, return_attention_scores: bool = False,
             use_causal_mask: bool = False) -> Arrays:
        return self.forward(inputs, training, mask, return_attention_scores, use_causal_mask)[0]

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        q, v, k, n_inputs, tape, probs, keep, weights, row_mask, with_scores = cache
        if with_scores:
            dout, dweights = grad_outputs
        else:
            dout, dweights = grad_outputs, None
        if dout is None:
            dout = ops.array_module(q).zeros(q.shape[:-1] + v.shape[-1:], self._np_dtype)
        dout = _cast(dout, self._np_dtype)
        if row_mask is not None:
            dout = dout * row_mask
        dw = ops.matmul(dout, v, trans_b=True, precision=self._gemm_precision)
        if dweights is not None:
            dw = dw + _cast(dweights, self._np_dtype)
        dv = ops.matmul(weights, dout, trans_a=True, precision=self._gemm_precision)
        dprobs = dw if keep is None else dw * keep
        dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))
        dq, dk = self._scores_backward(tape, q, k, dscores)
        if n_inputs == 3:
            return [dq, dv, dk]
        return [dq, dv + dk]

    def get_config(self) -> dict:
        return {**super().get_config(), "use_scale": self.use_scale, "score_mode": self.score_mode,
                "dropout": self.dropout, "seed": self.seed}


@register
class AdditiveAttention(Attention):
    """Additive (Bahdanau-style) attention; see the module docstring. Weight: ``scale [D]``
    (``use_scale``, glorot_uniform as Keras). ``dropout`` and ``seed`` as in Attention."""

    def __init__(self, use_scale: bool = True, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(use_scale=use_scale, dropout=dropout, **kwargs)

    def build(self, input_shape: InputShape) -> None:
        query, _, _ = self._check_shapes(input_shape)
        if query[-1] is None:
            raise ValueError(f"AdditiveAttention {self.name!r}: the query's last dim must be known to build the "
                             f"layer, got {query}")
        if self.use_scale:
            self.add_weight("scale", (query[-1],), "glorot_uniform")
        Layer.build(self, input_shape)

    def _scores(self, q, k):
        pre = q[..., :, None, :] + k[..., None, :, :]                 # [B, Tq, Tv, D]
        t = np.tanh(pre)
        if self.use_scale:
            return (t * self.weights["scale"]).sum(axis=-1), t
        return t.sum(axis=-1), t

    def _scores_backward(self, t, q, k, dscores):
        dt = dscores[..., None]
        if self.use_scale:
            if self.trainable:
                self.grads["scale"] += (dt * t).reshape(-1, t.shape[-1]).sum(axis=0)
            dt = dt * self.weights["scale"]
        dpre = dt * (1 - t * t)
        return dpre.sum(axis=-2), dpre.sum(axis=-3)

    def get_config(self) -> dict:
        config = super().get_config()
        del config["score_mode"]
        return config
