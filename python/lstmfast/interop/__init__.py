"""Model interchange: PyTorch's ``nn.LSTM`` weights in and out, safetensors files, ONNX export.

* :func:`from_torch_lstm` / :func:`to_torch_state_dict` / :func:`torch_lstm_kwargs`
  (``interop.torch_lstm``): an ``nn.LSTM`` (any ``num_layers``, ``bidirectional``) as an lstmfast
  model, and back.
* ``interop.safetensors_io``: ``load_file`` / ``save_file`` of the safetensors format in NumPy,
  with hostile-file checks before any allocation.
* :func:`export_onnx` (``interop.onnx_export``; also ``model.export(path, format="onnx")``): a
  standard ONNX graph with the ``LSTM`` operator; needs the ``onnx`` package (``pip install onnx``).
* ``interop.keras_format``: Keras 3 ``.keras`` and legacy HDF5 ``.h5`` files in
  (``lstmfast.load_model`` recognises them by content) and out (``model.save("x.keras")``,
  ``model.save("x.h5")``); ``interop.keras_legacy``: Keras 1's and Keras 2 CuDNNLSTM's weight
  layouts. Needs h5py.

Nothing here runs code from a file it reads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._typing import PathLike
from . import safetensors_io
from .torch_lstm import from_torch_lstm, to_torch_state_dict, torch_lstm_kwargs

if TYPE_CHECKING:  # type names only: models imports this module
    from ..models import Model


__all__ = ["from_torch_lstm", "to_torch_state_dict", "torch_lstm_kwargs", "export_onnx", "safetensors_io"]


def export_onnx(model: Model, filepath: PathLike, **kwargs: Any) -> None:
    """Write ``model`` as an ONNX file (see :func:`lstmfast.interop.onnx_export.export_onnx`)."""
    from .onnx_export import export_onnx as export
    export(model, filepath, **kwargs)
