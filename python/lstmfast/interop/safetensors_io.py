"""The safetensors format, read and written in pure NumPy (no torch, no ``safetensors`` package).

A file is::

    8 bytes     N, the header's length (unsigned 64-bit little-endian)
    N bytes     a JSON object {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
                               "__metadata__": {str: str} (optional)}
    the rest    the data: each tensor's little-endian, C-order bytes at [begin, end) of this part

Files we read may be hostile. Everything the header declares is checked against the file's real
size before anything is allocated: the header length, each tensor's offsets (inside the data), its
byte count (exactly ``prod(shape) * itemsize`` of its dtype, in Python integers, so no overflow),
and that no two tensors overlap; the header's JSON may nest at most ``_file_limits.MAX_JSON_DEPTH``
deep. A tensor is then read as the bytes it occupies, so reading never allocates more than the
file holds. Nothing in a file is executed.
"""
from __future__ import annotations

import json
import math
import os
import struct
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import _file_limits
from .._atomic import atomic_file
from .._typing import ArrayLike, PathLike

__all__ = ["load_file", "read_header", "save_file", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 100_000_000  # the limit the reference implementation sets on the JSON header
_MAX_RANK = 64

# safetensors dtype -> NumPy dtype of its little-endian bytes (BF16: the raw 16 bits, widened on read)
_DTYPES = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "U16": "<u2", "I16": "<i2", "F16": "<f2", "BF16": "<u2",
           "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8"}
_FROM_NUMPY = {"b": {1: "BOOL"}, "u": {1: "U8", 2: "U16", 4: "U32", 8: "U64"},
               "i": {1: "I8", 2: "I16", 4: "I32", 8: "I64"}, "f": {2: "F16", 4: "F32", 8: "F64"}}


def read_header(path: PathLike) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """``(tensors, metadata, data_start)`` of the safetensors file ``path``, checked against the
    file's size: ``tensors`` maps each name to ``{"dtype", "shape" (tuple), "begin", "end"}``
    (byte offsets into the file). ValueError, naming the file and what is wrong, otherwise."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < 8:
        raise ValueError(f"{path}: not a safetensors file: expected at least 8 bytes (the header length), "
                         f"the file has {size}")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: the header declares {n} bytes, more than the limit of {MAX_HEADER_BYTES}")
        if n > size - 8:
            raise ValueError(f"{path}: the header declares {n} bytes but only {size - 8} follow the length field "
                             f"(truncated file, or not safetensors)")
        raw = f.read(n)
    header = _file_limits.load_json(raw, f"{path}: the header", invalid="is not valid UTF-8 JSON")
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings, got {metadata!r:.100}")
    data_start, data_len = 8 + n, size - 8 - n
    tensors = {name: _check_entry(path, name, entry, data_len, data_start) for name, entry in header.items()}
    spans = sorted((t["begin"], t["end"], name) for name, t in tensors.items() if t["end"] > t["begin"])
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise ValueError(f"{path}: tensors {a!r} and {b!r} overlap in the data")
    return tensors, dict(metadata), data_start


def _check_entry(path, name, entry, data_len, data_start) -> dict:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise ValueError(f"{where}: expected an object with dtype, shape and data_offsets, got {entry!r:.100}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise ValueError(f"{where}: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r:.40}")
    if not isinstance(shape, list) or len(shape) > _MAX_RANK \
            or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"{where}: shape must be a list of at most {_MAX_RANK} non-negative integers, "
                         f"got {shape!r:.100}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets):
        raise ValueError(f"{where}: data_offsets must be [begin, end] (integers), got {offsets!r:.100}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise ValueError(f"{where}: data_offsets [{begin}, {end}] must satisfy 0 <= begin <= end <= {data_len} "
                         f"(the data's size): offsets past the end of the file")
    nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize  # Python ints: no overflow
    if nbytes != end - begin:
        raise ValueError(f"{where}: dtype {dtype} and shape {shape} need {nbytes} bytes, its data_offsets "
                         f"[{begin}, {end}] hold {end - begin}")
    return {"dtype": dtype, "shape": tuple(shape), "begin": data_start + begin, "end": data_start + end}


def load_file(path: PathLike, names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """The tensors of the safetensors file ``path`` as NumPy arrays in native byte order (BF16 is
    widened to float32, exactly). ``names``: read only these (KeyError naming the missing ones)."""
    tensors, _, _ = read_header(path)
    if names is not None:
        missing = sorted(set(names) - set(tensors))
        if missing:
            raise KeyError(f"{os.fspath(path)}: no tensor {', '.join(map(repr, missing))}; "
                           f"it has {', '.join(map(repr, sorted(tensors)))}")
        tensors = {name: tensors[name] for name in names}
    out = {}
    with open(path, "rb") as f:
        for name, t in tensors.items():
            f.seek(t["begin"])
            raw = f.read(t["end"] - t["begin"])
            if len(raw) != t["end"] - t["begin"]:  # the file shrank since read_header
                raise ValueError(f"{os.fspath(path)}: tensor {name!r} is truncated")
            array = np.frombuffer(raw, dtype=_DTYPES[t["dtype"]]).reshape(t["shape"])
            if t["dtype"] == "BF16":  # bfloat16 is the top half of a float32
                array = (array.astype(np.uint32) << 16).view(np.float32)
            out[name] = array.astype(array.dtype.newbyteorder("="), copy=True)
    return out


def save_file(tensors: Mapping[str, ArrayLike], path: PathLike, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``tensors`` (a mapping of names to arrays of bool, integer or float16/32/64 dtype) to
    ``path`` as safetensors, atomically. ``metadata``: strings to strings, kept in ``__metadata__``."""
    header: dict = {}
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in metadata.items()):
            raise TypeError(f"metadata must map strings to strings, got {metadata!r:.100}")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"tensors: names must be strings other than '__metadata__', got {name!r}")
        array = np.asarray(value)
        code = _FROM_NUMPY.get(array.dtype.kind, {}).get(array.dtype.itemsize)
        if code is None:
            raise TypeError(f"tensors[{name!r}]: dtype must be bool, an integer or float16/32/64, got {array.dtype}")
        blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-aligned, as the reference writer does
    with atomic_file(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
