"""Saving models: one file, a zip archive of JSON and ``.npy`` arrays.

    model.json          format tag, architecture, compile settings, the list of weight arrays
    weights/00000.npy   the model's weights in ``get_weights()`` order
    optimizer/00000.npy the optimizer's slots (so training resumes exactly), when compiled

This module reads and writes that archive. It knows a model only through its public methods
(``built``, ``get_config``, ``get_compile_config``, ``layers``, ``weights``, ``get_weights``,
``set_weights`` and the optimizer's ``get_state``) and imports no other part of lstmfast that
builds models: ``lstmfast.models.load_model`` (also ``lstmfast.load_model``) opens a file with
``open_model`` and rebuilds the model from what it reads.

Loading never unpickles and never imports anything named in the file: layer classes are looked
up in lstmfast's own registry, and an array is read only after its ``.npy`` header is checked: a
plain numeric dtype (an array of Python objects would need unpickling), the shape the manifest
lists, and exactly the bytes that shape needs. What the archive declares is checked against the
limits of ``lstmfast._file_limits`` before anything is decompressed or allocated. Files are
written to a temporary file in the target directory and renamed over the target, so a crash
leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np

from . import _file_limits
from ._atomic import atomic_file
from ._typing import PathLike

if TYPE_CHECKING:  # type names only: models imports this module
    from .models import Model


FORMAT_MODEL = "lstmfast.model"
FORMAT_WEIGHTS = "lstmfast.weights"
FORMAT_VERSION = 1
_MANIFEST = "model.json"
_NPY_HEADER_MAX = 10_000 + 12  # numpy's own limit on an .npy header (max_header_size), plus the magic and length
_NPY_KINDS = "biuf"  # the dtypes an array in a model file may have: bool, integers, floats

__all__ = ["save_model", "save_weights", "load_weights", "read_metadata", "open_model", "ModelFile"]


# ---- files ---------------------------------------------------------------------------------------

def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr, order="C"), allow_pickle=False)  # not ascontiguousarray: 0-d stays 0-d
    return buf.getvalue()


def _write_atomically(path, manifest: dict, groups: Dict[str, List[np.ndarray]], overwrite: bool) -> None:
    with atomic_file(path, "wb", overwrite=overwrite) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(_MANIFEST, json.dumps(manifest, indent=1))
            for folder, arrays in groups.items():
                for k, arr in enumerate(arrays):
                    z.writestr(f"{folder}/{k:05d}.npy", _npy_bytes(arr))


def _open(path, expected_format: Optional[str]):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        z = zipfile.ZipFile(path, "r")
    except _file_limits.ZIP_ERRORS + (ValueError,) as e:
        raise ValueError(f"{path} is not an lstmfast model file (not a zip archive: {e}); expected lstmfast's "
                         f"zip or a Keras .keras zip or .h5 HDF5 file") from None
    try:
        _file_limits.check_zip(z, path)
        manifest = _file_limits.load_json(read_member(z, _MANIFEST, _file_limits.MAX_JSON_BYTES, path,
                                                      missing="is not an lstmfast model file"),
                                          f"{path} is damaged: {_MANIFEST}")
        _check_manifest(manifest, expected_format, path)
    except BaseException:
        z.close()
        raise
    return z, manifest


def _check_manifest(manifest, expected_format: Optional[str], path: str) -> None:
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt not in (FORMAT_MODEL, FORMAT_WEIGHTS):
        raise ValueError(f"{path} is not an lstmfast model file (format tag {fmt!r:.100})")
    if expected_format == FORMAT_MODEL and fmt != FORMAT_MODEL:
        raise ValueError(f"{path} holds only weights (saved with save_weights); load it with model.load_weights")
    version = manifest.get("format_version", 0)
    if type(version) is not int:
        raise ValueError(f"{path} is damaged: format_version must be an integer, got {version!r:.100}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer lstmfast (format version {version}, "
                         f"this one reads up to {FORMAT_VERSION})")
    for key, kind in (("model", dict), ("weights", list), ("compile", dict), ("optimizer_state", dict)):
        if manifest.get(key) is not None and not isinstance(manifest[key], kind):
            raise ValueError(f"{path} is damaged: {_MANIFEST}'s {key!r} must be a {kind.__name__} (or null), "
                             f"got {manifest[key]!r:.100}")
    for k, entry in enumerate(manifest.get("weights") or []):
        _entry_nbytes(entry, f"{path} is damaged: {_MANIFEST}'s weight #{k}")


def _entry_nbytes(entry, where: str) -> int:
    """The bytes of the array a manifest entry ``{"name", "shape", "dtype"}`` lists (ValueError,
    starting with ``where``, for an entry that is not one)."""
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"{where} must be {{'name', 'shape': [non-negative integers], 'dtype'}}, got {entry!r:.100}")
    try:
        dtype = np.dtype(entry["dtype"]) if isinstance(entry.get("dtype"), str) else None
    except TypeError:  # a name NumPy does not know
        dtype = None
    if dtype is None or dtype.kind not in _NPY_KINDS:
        raise ValueError(f"{where} has dtype {entry.get('dtype')!r:.100}, expected a numeric dtype name ('float32')")
    return math.prod(shape) * dtype.itemsize  # Python integers: no overflow


def read_member(z: zipfile.ZipFile, name: str, limit: int, path: str, missing: str = "is damaged") -> bytes:
    """The bytes of the zip member ``name``, refused before it is decompressed when it declares more
    than ``limit`` bytes. ValueError naming ``path`` when it is missing (``f"{path} {missing}"``),
    too large or damaged."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise ValueError(f"{path} {missing}: it has no {name}") from None
    if info.file_size > limit:
        raise ValueError(f"{path}: {name} declares {info.file_size} bytes, more than the {limit} a model "
                         f"description can need; refusing to read it")
    try:
        return z.read(info)
    except _file_limits.ZIP_ERRORS + (ValueError,) as e:
        raise ValueError(f"{path} is damaged: cannot read {name} ({e})") from None


def _read_arrays(z: zipfile.ZipFile, folder: str, count: int, path: str, entries: Optional[list] = None,
                 max_values: Optional[int] = None) -> List[np.ndarray]:
    """The arrays ``folder/00000.npy``, ... (``count`` of them). With ``entries`` (the manifest's
    list), each must have the shape and bytes its entry lists; with ``max_values``, they may hold
    that many values in all. Both are checked against what the archive declares before anything
    is decompressed."""
    infos = []
    for k in range(count):
        name = f"{folder}/{k:05d}.npy"
        try:
            infos.append(z.getinfo(name))
        except KeyError:
            raise ValueError(f"{path} is damaged: {name} is missing") from None
        if entries is not None:
            nbytes = _entry_nbytes(entries[k], f"{path} is damaged: {_MANIFEST}'s weight #{k}")
            if not nbytes <= infos[-1].file_size <= nbytes + _NPY_HEADER_MAX:
                raise ValueError(f"{path} is damaged: cannot read {name}: it declares {infos[-1].file_size} bytes; "
                                 f"the manifest's shape {entries[k]['shape']} of {entries[k]['dtype']} needs {nbytes} "
                                 f"and a header")
    if max_values is not None:
        declared = sum(info.file_size for info in infos)
        if declared > 8 * max_values + _NPY_HEADER_MAX * count:  # 8: the widest dtype a value may have
            raise ValueError(f"{path}: {folder}/ declares {declared} bytes in {count} arrays, more than {max_values} "
                             f"values can take; refusing to read them")
    arrays = []
    for k, info in enumerate(infos):
        arrays.append(_read_npy(z, info, path, None if entries is None else tuple(entries[k]["shape"])))
    if max_values is not None and sum(a.size for a in arrays) > max_values:
        raise ValueError(f"{path}: {folder}/ holds {sum(a.size for a in arrays)} values, more than the "
                         f"{max_values} it can have")
    return arrays


def _read_npy(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, shape: Optional[tuple]) -> np.ndarray:
    """The array of the ``.npy`` member ``info``, read only after its header is checked: a numeric
    dtype, the ``shape`` expected (None: any), and the member's declared size exactly what the
    header's shape needs."""
    name = info.filename
    damaged = f"{path} is damaged: cannot read {name}"
    try:
        member = z.open(info)
    except _file_limits.ZIP_ERRORS + (ValueError,) as e:  # ValueError: a name that is not UTF-8
        raise ValueError(f"{damaged} ({e})") from None
    try:
        with member as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    file_shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    file_shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
            except (ValueError, SyntaxError, TypeError, OverflowError) as e:
                raise ValueError(f"{damaged} (not a valid .npy header: {e})") from None
            if any(d < 0 for d in file_shape):
                raise ValueError(f"{damaged}: its header declares shape {tuple(file_shape)}, a dimension negative")
            if dtype.hasobject or dtype.kind not in _NPY_KINDS:
                raise ValueError(f"{damaged}: it holds an array of dtype {dtype}, expected a numeric one (bool, "
                                 f"integer or float); arrays of Python objects would need unpickling, which "
                                 f"loading never does")
            if shape is not None and tuple(file_shape) != shape:
                raise ValueError(f"{damaged}: it holds shape {tuple(file_shape)}, the manifest lists {shape}")
            nbytes = math.prod(file_shape) * dtype.itemsize
            if info.file_size != f.tell() + nbytes:
                raise ValueError(f"{damaged}: it declares {info.file_size} bytes; its header's shape "
                                 f"{tuple(file_shape)} of {dtype} needs {f.tell() + nbytes}")
            data = bytearray(nbytes)
            if f.readinto(data) != nbytes:
                raise ValueError(f"{damaged} (truncated)")
    except _file_limits.ZIP_ERRORS as e:
        raise ValueError(f"{damaged} ({e})") from None
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(file_shape[::-1]).T if fortran_order else array.reshape(file_shape)


class ModelFile:
    """A model file opened for reading (``open_model``): its manifest, and its arrays, read when
    asked for. Close it, or use it in a ``with`` block."""

    def __init__(self, path: str, archive: zipfile.ZipFile, manifest: dict) -> None:
        self.path = path
        self.manifest = manifest
        self._archive = archive

    @property
    def config(self) -> dict:
        """The architecture: ``get_config()`` of the saved model (ValueError if the file has none)."""
        config = self.manifest.get("model")
        if config is None:
            raise ValueError(f"{self.path} is damaged: {_MANIFEST} has no model architecture ('model')")
        return config

    @property
    def compile_config(self) -> Optional[dict]:
        """``get_compile_config()`` of the saved model; None when it was not compiled."""
        return self.manifest.get("compile")

    @property
    def metadata(self) -> dict:
        """The ``metadata`` dict given to ``save_model`` ({} if none)."""
        meta = self.manifest.get("metadata")
        return dict(meta) if isinstance(meta, dict) else {}

    def weight_values(self) -> int:
        """How many weight values the file holds, as its manifest lists them, each list entry
        checked against the bytes its array declares in the archive (``weights_from_file`` builds
        the model within that)."""
        entries = self.manifest.get("weights") or []
        for k, entry in enumerate(entries):
            name = f"weights/{k:05d}.npy"
            try:
                declared = self._archive.getinfo(name).file_size
            except KeyError:
                raise ValueError(f"{self.path} is damaged: {name} is missing") from None
            nbytes = _entry_nbytes(entry, f"{self.path} is damaged: {_MANIFEST}'s weight #{k}")
            if not nbytes <= declared <= nbytes + _NPY_HEADER_MAX:
                raise ValueError(f"{self.path} is damaged: cannot read {name}: it declares {declared} bytes; the "
                                 f"manifest's shape {entry['shape']} of {entry['dtype']} needs {nbytes} and a header")
        return sum(math.prod(entry["shape"]) for entry in entries)

    def load_weights_into(self, model: Model) -> None:
        """Set ``model``'s weights to the file's, after checking their number and shapes against
        the manifest (before any is read) and against the arrays."""
        entries = self.manifest.get("weights") or []
        _check_entries(model, entries, self.path)
        _set_checked(model, _read_arrays(self._archive, "weights", len(entries), self.path, entries),
                     entries, self.path)

    def optimizer_state(self, model: Optional[Model] = None) -> Optional[dict]:
        """The saved optimizer state for ``optimizer.set_state`` (``{"iterations", "slots"}``, and a
        LossScaleOptimizer's ``"loss_scale"``, which its ``set_state`` checks), or None when the file
        has none (not compiled, or the optimizer never stepped). Given the ``model`` it belongs to,
        no more arrays and values than its optimizer can have."""
        state = self.manifest.get("optimizer_state")
        if not state:
            return None
        count, iterations = state.get("slots"), state.get("iterations")
        limit = _file_limits.optimizer_slots_limit(len(model.weights)) if model is not None else None
        if type(count) is not int or count < 0 or (limit is not None and count > limit) \
                or type(iterations) is not int or iterations < 0:
            raise ValueError(f"{self.path} is damaged: optimizer_state must be {{'iterations': n >= 0, 'slots': "
                             f"0..{limit if limit is not None else 'n'}}}, got {state!r:.100}")
        if count == 0 and iterations == 0:
            return None
        max_values = None if model is None else \
            _file_limits.optimizer_values_limit(sum(int(w.size) for w in model.weights))
        slots = _read_arrays(self._archive, "optimizer", count, self.path, max_values=max_values) if count else []
        restored = {"iterations": iterations, "slots": slots}  # an optimizer without slots (SGD) keeps its step
        if "loss_scale" in state:
            restored["loss_scale"] = state["loss_scale"]
        return restored

    def close(self) -> None:
        self._archive.close()

    def __enter__(self) -> "ModelFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_model(filepath: PathLike) -> ModelFile:
    """Open a file written by ``save_model`` (ValueError, naming the file, for anything else)."""
    path = os.fspath(filepath)
    archive, manifest = _open(path, FORMAT_MODEL)
    return ModelFile(path, archive, manifest)


def _weights_manifest(model) -> list:
    return [{"name": f"{layer.name}/{key}", "shape": list(w.shape), "dtype": str(w.dtype)}
            for layer in model.layers for key, w in layer.weights.items()]


def check_savable(model: Model, metadata: Optional[dict]) -> None:
    """What every model file needs, checked before anything is written: a built model and
    JSON-serialisable ``metadata``."""
    if metadata is not None:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata must be JSON-serialisable: {e}") from None
    if not model.built:
        raise ValueError("cannot save a model that is not built yet (give it an input shape or fit it once)")


def save_model(model: Model, filepath: PathLike, overwrite: bool = True, metadata: Optional[dict] = None) -> None:
    """Write ``model`` (architecture, weights, compile settings and optimizer state) to ``filepath``.
    ``metadata``: a JSON-serialisable dict stored beside the model (the sample tasks keep their
    vocabulary and settings there); ``read_metadata`` returns it without building the model."""
    check_savable(model, metadata)
    manifest: Dict[str, Any] = {
        "format": FORMAT_MODEL,
        "format_version": FORMAT_VERSION,
        "lstmfast_version": _version(),
        "model": model.get_config(),
        "weights": _weights_manifest(model),
        "compile": None,
        "optimizer_state": None,
        "metadata": metadata,
    }
    groups = {"weights": model.get_weights()}
    compile_config = model.get_compile_config()
    if compile_config is not None:
        manifest["compile"] = compile_config
        state = model.optimizer.get_state()
        manifest["optimizer_state"] = {"iterations": int(state["iterations"]), "slots": len(state["slots"])}
        if "loss_scale" in state:  # a LossScaleOptimizer's [scale, finite steps]
            manifest["optimizer_state"]["loss_scale"] = list(state["loss_scale"])
        groups["optimizer"] = list(state["slots"])
    _write_atomically(filepath, manifest, groups, overwrite)


def read_metadata(filepath: PathLike) -> dict:
    """The metadata dict saved with ``model.save(..., metadata=...)`` ({} if none); raises the same
    clear errors as ``load_model`` for files that are not lstmfast models. A Keras file lstmfast
    wrote keeps its metadata too (``interop.keras_format.read_metadata``)."""
    from .interop import keras_format  # a lazy import: keras_format builds models
    if os.path.isfile(filepath) and keras_format.is_keras_file(filepath):
        return keras_format.read_metadata(filepath)
    with open_model(filepath) as f:
        return f.metadata


def _check_entries(model, entries: list, path: str) -> None:
    """The manifest's list of arrays against ``model``'s weights: their number and shapes."""
    expected = model.weights
    if len(expected) != len(entries):
        raise ValueError(f"{path}: the file has {len(entries)} weight arrays, the model needs {len(expected)}")
    for k, (want, entry) in enumerate(zip(expected, entries)):
        if tuple(entry["shape"]) != want.shape:
            raise ValueError(f"{path}: weight {entry.get('name', f'#{k}')!r:.100} has shape {tuple(entry['shape'])}, "
                             f"the model needs {want.shape}")


def _set_checked(model, weights: List[np.ndarray], entries: list, path: str) -> None:
    expected = model.weights
    if len(expected) != len(weights):
        raise ValueError(f"{path}: the file has {len(weights)} weight arrays, the model needs {len(expected)}")
    for k, (want, got) in enumerate(zip(expected, weights)):
        if want.shape != got.shape:
            name = entries[k]["name"] if k < len(entries) else f"#{k}"
            raise ValueError(f"{path}: weight {name} has shape {got.shape}, the model needs {want.shape}")
    model.set_weights([w.astype(e.dtype, copy=False) for w, e in zip(weights, expected)])


def save_weights(model: Model, filepath: PathLike, overwrite: bool = True) -> None:
    """Write only ``model``'s weights (``model.load_weights`` reads them back)."""
    manifest = {"format": FORMAT_WEIGHTS, "format_version": FORMAT_VERSION, "lstmfast_version": _version(),
                "weights": _weights_manifest(model)}
    _write_atomically(filepath, manifest, {"weights": model.get_weights()}, overwrite)


def load_weights(model: Model, filepath: PathLike) -> None:
    """Set ``model``'s weights from a file of ``save_weights`` or ``save_model``."""
    path = os.fspath(filepath)
    archive, manifest = _open(path, None)
    with ModelFile(path, archive, manifest) as f:
        f.load_weights_into(model)


def _version() -> str:
    from . import __version__
    return __version__
