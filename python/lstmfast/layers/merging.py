"""Element-wise merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum (Keras 3
semantics). Each takes a list of inputs with the same batch size; the other dims broadcast as
NumPy does after lower-rank inputs get axes inserted at 1 (``[B, C]`` with ``[B, T, C]`` is read as
``[B, 1, C]``). See ``lstmfast.layers`` for the protocol; ``Concatenate`` lives in ``core``."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import ops
from .._typing import Arrays, InputShape, Mask, OutputShape
from .base import Layer, _cast, _is_shape_list, register
from .graph import _shape_tuple

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]


def _broadcast_dims(a, b, layer: str, shapes) -> tuple:
    """Keras's element-wise output shape of two shapes without the batch dim (right-aligned)."""
    if len(a) < len(b):
        a, b = b, a
    out = list(a[:len(a) - len(b)])
    for i, j in zip(a[len(a) - len(b):], b):
        if i is None or j is None:
            out.append(None)
        elif i == 1 or j == 1 or i == j:
            out.append(j if i == 1 else i)
        else:
            raise ValueError(f"layer {layer!r}: inputs have incompatible shapes {shapes}")
    return tuple(out)


def _sum_to(grad, shape):
    """``grad`` summed over the axes it was broadcast along to come from ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class _Merge(Layer):
    """Base of the element-wise merges. The output mask is the OR of the input masks when every
    input has one, else None (Keras 3). Subclasses define ``_merge(xs, masks) -> (y, tape)`` and
    ``_merge_backward(tape, dy) -> dxs`` over inputs already raised to the same rank; ``masks``
    are bool arrays broadcast to each input's shape, or None."""

    supports_masking = True
    _min_inputs = 1
    _max_inputs = None

    def _check_shapes(self, input_shape):
        if not _is_shape_list(input_shape):
            raise ValueError(f"{type(self).__name__} {self.name!r} must be called on a list of inputs, got one "
                             f"input of shape {input_shape}")
        shapes = [_shape_tuple(s) for s in input_shape]
        n = len(shapes)
        if n < self._min_inputs or (self._max_inputs is not None and n > self._max_inputs):
            expected = (f"exactly {self._min_inputs}" if self._min_inputs == self._max_inputs
                        else f"at least {self._min_inputs}")
            raise ValueError(f"{type(self).__name__} {self.name!r} must be called on {expected} inputs, got {n}")
        if any(len(s) < 1 for s in shapes):
            raise ValueError(f"{type(self).__name__} {self.name!r}: every input needs a batch dim, got shapes "
                             f"{shapes}")
        batch = {s[0] for s in shapes} - {None}
        if len(batch) > 1:
            raise ValueError(f"{type(self).__name__} {self.name!r} cannot merge inputs with different batch "
                             f"sizes, got shapes {shapes}")
        out = shapes[0][1:]
        for s in shapes[1:]:
            out = _broadcast_dims(out, s[1:], self.name, shapes)
        return (batch.pop() if batch else None,) + out

    def build(self, input_shape: InputShape) -> None:
        self._check_shapes(input_shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        return self._check_shapes(input_shape)

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)):
            raise ValueError(f"{type(self).__name__} {self.name!r}: mask must be a list (one per input), got "
                             f"{type(mask).__name__}")
        if isinstance(inputs, (list, tuple)) and len(mask) != len(inputs):
            raise ValueError(f"{type(self).__name__} {self.name!r}: got {len(mask)} masks for {len(inputs)} inputs")
        if any(m is None for m in mask):
            return None
        out = mask[0]
        for m in mask[1:]:
            out = out | m
        return out

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"{type(self).__name__} {self.name!r} must be called on a list of inputs, got "
                             f"{type(inputs).__name__}")
        self._check_shapes([x.shape for x in inputs])
        xs = [_cast(x, self._np_dtype) for x in inputs]
        rank = max(x.ndim for x in xs)
        # Keras inserts axes at 1 into lower-rank inputs; those lose their mask on the way.
        raised = [x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:]) for x in xs]
        masks = [None] * len(xs)
        if mask is not None:
            if not isinstance(mask, (list, tuple)) or len(mask) != len(xs):
                raise ValueError(f"{type(self).__name__} {self.name!r}: mask must be a list of {len(xs)} masks "
                                 f"(or None), got {mask!r:.80}")
            for i, (x, m) in enumerate(zip(xs, mask)):
                if m is not None and x.ndim == rank:
                    m = ops.to_device_of(x, m)
                    if m.ndim != x.ndim - 1:
                        raise ValueError(f"{type(self).__name__} {self.name!r}: mask {i} must have one dimension "
                                         f"less than its input, got mask shape {m.shape} for input shape {x.shape}")
                    masks[i] = ops.array_module(x).broadcast_to(m.astype(bool)[..., None], x.shape)
        y, tape = self._merge(raised, masks)
        return y, (tape, [x.shape for x in xs], [x.shape for x in raised])

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self.forward(inputs, training, mask)[0]

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        tape, shapes, raised = cache
        if grad_outputs is None:
            return [None] * len(shapes)
        dxs = self._merge_backward(tape, _cast(grad_outputs, self._np_dtype))
        return [_sum_to(dx, r).reshape(s) for dx, r, s in zip(dxs, raised, shapes)]


@register
class Add(_Merge):
    """``y = x_1 + x_2 + ...``; masks only set the output mask."""

    def _merge(self, xs, masks):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y, len(xs)

    def _merge_backward(self, n, dy):
        return [dy] * n


@register
class Subtract(_Merge):
    """``y = x_1 - x_2`` (exactly two inputs); masks only set the output mask."""

    _min_inputs = _max_inputs = 2

    def _merge(self, xs, masks):
        return xs[0] - xs[1], None

    def _merge_backward(self, tape, dy):
        return [dy, -dy]


@register
class Average(_Merge):
    """``y = (x_1 + ... + x_n) / n``; masks only set the output mask."""

    def _merge(self, xs, masks):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y / y.dtype.type(len(xs)), len(xs)

    def _merge_backward(self, n, dy):
        return [dy / dy.dtype.type(n)] * n


@register
class Multiply(_Merge):
    """``y = x_1 * x_2 * ...``. With masks (Keras 3): a masked entry of an input counts as 1; when
    every input has a mask, entries masked in all of them are 0."""

    def _merge(self, xs, masks):
        xp = ops.array_module(xs[0])
        factors = [x if m is None else xp.where(m, x, x.dtype.type(1)) for x, m in zip(xs, masks)]
        y = factors[0]
        for f in factors[1:]:
            y = y * f
        keep = None
        if all(m is not None for m in masks):
            keep = masks[0]
            for m in masks[1:]:
                keep = keep | m
            y = xp.where(keep, y, y.dtype.type(0))
        return y, (factors, masks, keep)

    def _merge_backward(self, tape, dy):
        factors, masks, keep = tape
        if keep is not None:
            dy = dy * keep
        dxs = []
        for i, m in enumerate(masks):
            others = None
            for j, f in enumerate(factors):
                if j != i:
                    others = f if others is None else others * f
            d = dy if others is None else dy * others
            dxs.append(d if m is None else d * m)
        return dxs


class _Extremum(_Merge):
    """Maximum and Minimum, folded left over the inputs as Keras 3 does with masks: at each step
    a masked entry of the next input takes the running result's value and a masked entry of the
    running result takes the input's, so masked entries never win over unmasked ones. Ties split
    the gradient evenly (as torch's maximum/minimum)."""

    _greater = None  # np.greater for Maximum, np.less for Minimum

    def _merge(self, xs, masks):
        xp = ops.array_module(xs[0])
        y, y_mask = xs[0], masks[0]
        steps = []
        for x, m in zip(xs[1:], masks[1:]):
            if m is not None:
                x = xp.where(m, x, y)
            if y_mask is not None:
                y = xp.where(y_mask, y, x)
            first = self._greater(y, x).astype(y.dtype) + (y == x).astype(y.dtype) * y.dtype.type(0.5)
            steps.append((m, y_mask, first))
            y = xp.maximum(y, x) if self._greater is np.greater else xp.minimum(y, x)
            y_mask = y_mask | m if (m is not None and y_mask is not None) else None
        return y, steps

    def _merge_backward(self, steps, dy):
        dxs = [None] * (len(steps) + 1)
        for k in range(len(steps) - 1, -1, -1):
            m, y_mask, first = steps[k]
            dy_prev, dx = dy * first, dy * (1 - first)
            if y_mask is not None:       # y = where(y_mask, y, x)
                dx = dx + dy_prev * ~y_mask
                dy_prev = dy_prev * y_mask
            if m is not None:            # x = where(m, x, y)
                dy_prev = dy_prev + dx * ~m
                dx = dx * m
            dxs[k + 1] = dx
            dy = dy_prev
        dxs[0] = dy
        return dxs


@register
class Maximum(_Extremum):
    """``y = max(x_1, x_2, ...)`` element-wise (masked entries as in ``_Extremum``)."""

    _greater = np.greater


@register
class Minimum(_Extremum):
    """``y = min(x_1, x_2, ...)`` element-wise (masked entries as in ``_Extremum``)."""

    _greater = np.less
