"""A model from one file format to another (``lstmfast convert IN OUT``).

The input's format comes from its content, never its name::

    safetensors   8-byte little-endian header length, then '{'    nn.LSTM weights: from_torch_lstm
    pytorch       a zip holding */data.pkl (torch.save), or a      nn.LSTM weights: from_torch_lstm
                  pickle (torch.save's legacy format)
    lstmfast      a zip holding model.json                         load_model
    keras         a zip holding config.json (Keras 3 .keras)       load_model
    keras .h5     an HDF5 file (Keras's legacy format)             load_model

The output's format comes from its extension (``OUTPUT_FORMATS``): ``.keras``, ``.h5``, ``.hdf5``,
``.lstmfast`` and ``.zip`` through ``model.save``, ``.onnx`` through ``model.export``, and
``.pt``/``.pth`` and ``.safetensors`` as the state dict of the ``nn.LSTM`` the model computes
(``to_torch_state_dict``).
Everything that can be checked without reading the input is checked first, so a bad output name
fails at once and nothing is ever left half-written.
"""
from __future__ import annotations

import os
import struct
import zipfile
from typing import Callable, Dict, Optional, Tuple

from . import _file_limits
from ._atomic import atomic_file, check_writable
from ._typing import PathLike
from .interop.keras_format import HDF5_SIGNATURE

__all__ = ["convert", "OUTPUT_FORMATS"]

_TORCH_FORMATS = ("pytorch", "safetensors")  # inputs read with from_torch_lstm


# ---- writing --------------------------------------------------------------------------------------

def _save(model, dst: str) -> None:
    model.save(dst)  # Model.save picks lstmfast's zip or a Keras format by the extension


def _export_onnx(model, dst: str) -> None:
    model.export(dst, format="onnx")


def _save_torch(model, dst: str) -> None:
    from .interop import to_torch_state_dict
    state = to_torch_state_dict(model)  # ImportError, saying so, without torch
    import torch
    with atomic_file(dst, "wb") as f:
        torch.save(state, f)


def _save_safetensors(model, dst: str) -> None:
    from .interop import safetensors_io, to_torch_state_dict
    safetensors_io.save_file(to_torch_state_dict(model, numpy=True), dst)


# output extension -> (format name, writer)
OUTPUT_FORMATS: Dict[str, Tuple[str, Callable]] = {
    ".keras": ("keras", _save),
    ".h5": ("keras .h5", _save),
    ".hdf5": ("keras .h5", _save),
    ".lstmfast": ("lstmfast", _save),
    ".zip": ("lstmfast", _save),
    ".onnx": ("onnx", _export_onnx),
    ".pt": ("pytorch", _save_torch),
    ".pth": ("pytorch", _save_torch),
    ".safetensors": ("safetensors", _save_safetensors),
}


# ---- reading --------------------------------------------------------------------------------------

def _zip_format(src: str) -> str:
    try:
        with zipfile.ZipFile(src) as z:
            names = z.namelist()
    except _file_limits.ZIP_ERRORS + (ValueError,) as e:
        raise ValueError(f"{src} is damaged: not a readable zip archive ({e})") from None
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "pytorch"
    if "config.json" in names:
        return "keras"
    return "lstmfast"  # or no model: load_model says which


def _input_format(src: str) -> str:
    """The format of the file ``src`` from its first bytes (see the module's table); ValueError,
    naming the file, when it is none of them."""
    with open(src, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:] == b"{" and struct.unpack("<Q", head[:8])[0] <= os.path.getsize(src) - 8:
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # pickle protocol 2..5
        return "pytorch"
    if head.startswith(HDF5_SIGNATURE):
        return "keras .h5"
    try:
        zipped = zipfile.is_zipfile(src)
    except zipfile.BadZipFile:  # is_zipfile raises for some damaged archives: _zip_format says what is wrong
        zipped = True
    if zipped:
        return _zip_format(src)
    raise ValueError(f"{src} is not a model file: expected an lstmfast or Keras model (a zip or HDF5 file), "
                     f"PyTorch nn.LSTM weights (torch.save's zip or pickle) or a safetensors file; "
                     f"its first bytes are {head!r}")


def _read(src: str, fmt: str, return_sequences: bool, prefix: Optional[str]):
    if fmt not in _TORCH_FORMATS:
        from .models import load_model
        return load_model(src)
    from .interop import from_torch_lstm, safetensors_io
    if fmt == "pytorch":
        if src.lower().endswith(".safetensors"):  # from_torch_lstm would read it as safetensors
            raise ValueError(f"{src} holds a PyTorch (torch.save) file but is named .safetensors; rename it .pt")
        return from_torch_lstm(src, return_sequences=return_sequences, prefix=prefix)
    state = safetensors_io.load_file(src)  # by content: from_torch_lstm(path) decides by the name
    try:
        return from_torch_lstm(state, return_sequences=return_sequences, prefix=prefix)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None


# ---- the command ----------------------------------------------------------------------------------

def convert(src: PathLike, dst: PathLike, *, overwrite: bool = False, return_sequences: Optional[bool] = None,
            prefix: Optional[str] = None) -> dict:
    """Convert the model file ``src`` to ``dst``, in the format ``dst``'s extension names.

    ``overwrite``: replace an existing ``dst`` (refused otherwise). For an ``nn.LSTM`` input
    (pytorch or safetensors), ``return_sequences`` (default True: PyTorch's ``y [B, T, D*H]``;
    False: the last step ``[B, D*H]``) and ``prefix`` (the keys' prefix when the state dict holds
    more than one LSTM) go to :func:`lstmfast.interop.from_torch_lstm`; for other inputs they must
    stay None. Returns ``{"source", "source_format", "destination", "destination_format", "layers",
    "params"}``; ``layers`` counts the model's layers, input layers aside (one per nn.LSTM layer)."""
    from .layers import InputLayer

    src, dst = os.fspath(src), os.fspath(dst)
    extension = os.path.splitext(dst)[1].lower()
    if extension not in OUTPUT_FORMATS:
        raise ValueError(f"output {dst!r}: unknown extension {extension or '(none)'!r}; supported: "
                         f"{', '.join(OUTPUT_FORMATS)}")
    dst_format, write = OUTPUT_FORMATS[extension]
    if not os.path.exists(src):
        raise FileNotFoundError(f"input {src!r} does not exist")
    if os.path.isdir(src):
        raise IsADirectoryError(f"input {src!r} is a directory, expected a model file")
    check_writable(dst, "output", not_same_as=src)
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f"output {dst!r} exists; pass overwrite=True (--overwrite) to replace it")
    src_format = _input_format(src)
    if src_format not in _TORCH_FORMATS:
        for name, value in (("return_sequences", return_sequences), ("prefix", prefix)):
            if value is not None:
                raise ValueError(f"{name} applies to nn.LSTM weights (pytorch, safetensors) only; {src} is a "
                                 f"{src_format} model, got {name}={value!r}")
    model = _read(src, src_format, True if return_sequences is None else return_sequences, prefix)
    write(model, dst)
    return {"source": src, "source_format": src_format, "destination": dst, "destination_format": dst_format,
            "layers": sum(not isinstance(layer, InputLayer) for layer in model.layers),
            "params": model.count_params()}
