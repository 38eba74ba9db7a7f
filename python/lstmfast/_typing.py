"""Names the public API's type hints share. They are for readers and type checkers: nothing checks
them at run time, and each says what the code accepts today."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from numpy.typing import ArrayLike

if TYPE_CHECKING:  # utils imports this module
    from .utils import PyDataset

__all__ = ["Array", "Arrays", "Mask", "Shape", "InputShape", "OutputShape", "PathLike", "Logs", "Config",
           "ArrayLike", "ArrayData", "ModelData"]

# An array the layers and ops compute with: a NumPy array, or a CuPy array when the model runs on the
# GPU. CuPy is optional and carries no type information, so the name stands for both (Any).
Array = Any
# One array, or a list of them (a layer called on several inputs; several outputs).
Arrays = Union[Array, List[Array]]
# A layer's mask: None, a bool [B, T] array, or for a call on several inputs a list (None entries allowed).
Mask = Union[None, Array, Sequence[Optional[Array]]]
# A shape, batch dimension first; None where a size is not known.
Shape = Tuple[Optional[int], ...]
# What build and compute_output_shape take: one shape (tuple or list), or a list of shapes (several inputs).
InputShape = Union[Sequence[Optional[int]], Sequence[Sequence[Optional[int]]]]
# What compute_output_shape returns: one shape, or a list of shapes (several outputs).
OutputShape = Union[Shape, List[Shape]]
# A file system path.
PathLike = Union[str, "os.PathLike[str]"]
# A callback's logs: name -> value ("loss", "val_accuracy", ...); None where a hook has none.
Logs = Optional[Dict[str, Any]]
# A JSON-ready config dict (get_config, serialize).
Config = Dict[str, Any]
# A model's x or y as arrays: an array or anything np.asarray takes, or a list of them (several inputs or outputs).
ArrayData = Union[ArrayLike, Sequence[ArrayLike]]
# What fit/evaluate/predict take as x: ArrayData, or data that brings its own batches (a generator or
# iterator, a utils.PyDataset; see data_adapters).
ModelData = Union[ArrayData, Iterator[Any], "PyDataset"]
