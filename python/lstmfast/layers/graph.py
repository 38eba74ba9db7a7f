"""Symbols of the functional API: a :class:`KerasTensor` is a shape and dtype made by a layer call, a
:class:`Node` is that call. Layers make them (``Layer.__call__`` on KerasTensors); ``lstmfast.models``
walks them backwards from the outputs to run the graph."""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

if TYPE_CHECKING:
    from .base import Layer

__all__ = ["KerasTensor", "Node"]

_TENSOR_IDS = itertools.count()


def _shape_tuple(shape) -> tuple:
    """``shape`` as a tuple of ints and Nones."""
    return tuple(None if d is None else int(d) for d in shape)


class KerasTensor:
    """A symbolic tensor: a shape (batch dim None), a dtype, and the layer call that made it.

    ``_history = (layer, node_index, tensor_index)``: ``layer._inbound_nodes[node_index]
    .outputs[tensor_index]`` is this tensor.
    """

    __slots__ = ("shape", "dtype", "name", "_history")

    def __init__(self, shape: Sequence[Optional[int]], dtype: DTypeLike = "float32", name: Optional[str] = None,
                 history: Optional[Tuple[Layer, int, int]] = None) -> None:
        self.shape = _shape_tuple(shape)
        self.dtype = np.dtype(dtype).name
        self.name = name if name is not None else f"keras_tensor_{next(_TENSOR_IDS)}"
        self._history = history

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        origin = f", from {self._history[0].name!r}" if self._history else ""
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}{origin}>"


class Node:
    """One call of ``layer`` on symbolic ``inputs`` giving ``outputs`` (all lists of KerasTensors)."""

    __slots__ = ("layer", "inputs", "outputs", "call_kwargs")

    def __init__(self, layer: Layer, inputs: List[KerasTensor], outputs: List[KerasTensor],
                 call_kwargs: Dict[str, Any]) -> None:
        self.layer, self.inputs, self.outputs, self.call_kwargs = layer, inputs, outputs, call_kwargs

    @property
    def layer_kwargs(self) -> dict:
        """The layer's own call-time arguments of this call (``call_kwargs`` less ``n_inputs`` and
        ``training``), to pass as keywords to its forward, call and compute_mask."""
        return {k: v for k, v in self.call_kwargs.items() if k not in ("n_inputs", "training")}

    def __repr__(self) -> str:
        return (f"<Node {self.layer.name}: {[t.name for t in self.inputs]} -> "
                f"{[t.name for t in self.outputs]}>")
