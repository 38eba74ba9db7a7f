"""Lambda: a layer made from a Python function, for in-process use (Keras 3's arguments).

Gradients: lstmfast has no automatic differentiation, so a Lambda's backward pass is what the user
gives as ``backward=``; without it the forward pass works everywhere (``predict``, ``evaluate``,
and ``fit`` when no weight lies before the Lambda, e.g. preprocessing of the model's input) and a
backward pass that needs the Lambda's input gradient raises NotImplementedError saying so.

Serialisation: a Lambda's function is code, and lstmfast never saves or runs code from a file:
``get_config`` (hence ``model.save``) and ``from_config`` raise ValueError naming the layer.
``model.save_weights`` works: rebuild the model in code, then ``load_weights``.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .._typing import Array, Arrays, InputShape, Mask, OutputShape
from .base import Layer, _first_shape, _is_shape_list, register
from .graph import _shape_tuple

__all__ = ["Lambda"]

_PROBE_SIZES = (2, 3)  # unknown dims are probed with these sizes to infer the output shape


def _accepts(function, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


@register
class Lambda(Layer):
    """``y = function(inputs, **arguments)`` (also given ``mask=``/``training=`` when the function
    takes those arguments).

    * ``output_shape``: the output shape without the batch dim (a tuple, or a list of tuples for
      several outputs), or a callable ``input_shape -> output_shape`` (with the batch dim). When
      None, the shape is inferred by running ``function`` on arrays of ones with each unknown
      dim set to 2 and then 3: dims that follow are unknown (None) in the result.
    * ``mask``: None (the output has no mask), a callable ``(inputs, mask) -> output mask``, or a
      fixed mask array.
    * ``backward``: a callable ``backward(inputs, grad_outputs, **arguments) -> grad_inputs``
      (same structure as ``inputs``; None entries mean no gradient). Without it, a backward pass
      through this layer raises NotImplementedError.
    """

    def __init__(self, function: Callable[..., Any],
                 output_shape: Union[None, Sequence[Optional[int]], Sequence[Sequence[Optional[int]]],
                                     Callable[[Any], Any]] = None,
                 mask: Union[None, Array, Callable[[Any, Mask], Mask]] = None,
                 arguments: Optional[Dict[str, Any]] = None,
                 backward: Optional[Callable[..., Optional[Arrays]]] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"Lambda {self.name!r}: function must be callable, got {type(function).__name__}")
        if arguments is not None and not isinstance(arguments, dict):
            raise TypeError(f"Lambda {self.name!r}: arguments must be a dict of keyword arguments, got "
                            f"{type(arguments).__name__}")
        if backward is not None and not callable(backward):
            raise TypeError(f"Lambda {self.name!r}: backward must be callable (inputs, grad_outputs) -> grad_inputs, "
                            f"got {type(backward).__name__}")
        if output_shape is not None and not callable(output_shape):
            if _is_shape_list(output_shape):
                output_shape = [_shape_tuple(s) for s in output_shape]
            elif isinstance(output_shape, (list, tuple)):
                output_shape = _shape_tuple(output_shape)
            else:
                raise TypeError(f"Lambda {self.name!r}: output_shape must be a tuple (without the batch dim), a "
                                f"list of tuples or a callable, got {output_shape!r}")
        self.function = function
        self.arguments = dict(arguments or {})
        self.mask = mask
        self._output_shape = output_shape
        self._backward_function = backward
        self._takes_mask = _accepts(function, "mask")
        self._takes_training = _accepts(function, "training")

    @property
    def supports_masking(self) -> bool:
        return self.mask is not None

    # -- shapes ---------------------------------------------------------------------------------

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        if callable(self._output_shape):
            return self._output_shape(input_shape)
        if self._output_shape is not None:
            batch = _first_shape(input_shape)[0]
            if isinstance(self._output_shape, list):
                return [(batch,) + s for s in self._output_shape]
            return (batch,) + self._output_shape
        return self._infer_output_shape(input_shape)

    def _infer_output_shape(self, input_shape):
        shapes = [_shape_tuple(s) for s in input_shape] if _is_shape_list(input_shape) else _shape_tuple(input_shape)
        results = []
        for size in _PROBE_SIZES:
            def probe(shape):
                return np.ones(tuple(size if d is None else d for d in shape), self._np_dtype)
            inputs = [probe(s) for s in shapes] if isinstance(shapes, list) else probe(shapes)
            try:
                with np.errstate(all="ignore"):
                    out = self._apply(inputs, training=False, mask=None)
            except Exception as e:  # the function is the user's: any failure means "cannot infer"
                raise NotImplementedError(f"Lambda {self.name!r}: could not infer the output shape by running the "
                                          f"function on inputs of shape {shapes} ({type(e).__name__}: {e}); give "
                                          "output_shape=") from None
            results.append([np.shape(o) for o in out] if isinstance(out, (list, tuple)) else np.shape(out))

        def merge(a, b):
            if len(a) != len(b):
                raise NotImplementedError(f"Lambda {self.name!r}: could not infer the output shape (its rank depends "
                                          "on the unknown input dims); give output_shape=")
            return tuple(x if x == y else None for x, y in zip(a, b))

        first, second = results
        if isinstance(first, list):
            return [merge(a, b) for a, b in zip(first, second)]
        return merge(first, second)

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
        if callable(self.mask):
            return self.mask(inputs, mask)
        return self.mask

    # -- computation ----------------------------------------------------------------------------

    def _apply(self, inputs, training, mask):
        kwargs = dict(self.arguments)
        if self._takes_mask:
            kwargs["mask"] = mask
        if self._takes_training:
            kwargs["training"] = training
        return self.function(inputs, **kwargs)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self._apply(inputs, training, mask)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        return self._apply(inputs, training, mask), inputs

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        if self._backward_function is None:
            raise NotImplementedError(
                f"Lambda {self.name!r} has no backward pass: lstmfast cannot differentiate a Python function. "
                "Give Lambda(function, backward=lambda inputs, grad_outputs: grad_inputs), or use a built-in "
                "layer; without it a Lambda works in predict/evaluate, and in fit only where no weights lie "
                "before it")
        if grad_outputs is None:
            return [None] * len(cache) if isinstance(cache, (list, tuple)) else None
        return self._backward_function(cache, grad_outputs, **self.arguments)

    # -- config ---------------------------------------------------------------------------------

    def get_config(self) -> dict:
        raise ValueError(f"Lambda layer {self.name!r} cannot be serialised: its function is Python code, and "
                         "lstmfast never saves or loads code. Save the weights (model.save_weights) and rebuild "
                         "the model in code, or replace the Lambda with a built-in layer")

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> Lambda:
        name = config.get("name") if isinstance(config, dict) else None
        raise ValueError(f"Lambda layer {name!r} cannot be loaded from a config: lstmfast never runs code from a "
                         "file (rebuild the model in code and load its weights with load_weights)")
