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
up in lstmfast's own registry, and arrays are read with ``allow_pickle=False``. Files are
written to a temporary file in the target directory and renamed over the target, so a crash
leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any, Dict, List, Optional

import numpy as np

from ._atomic import atomic_file

FORMAT_MODEL = "lstmfast.model"
FORMAT_WEIGHTS = "lstmfast.weights"
FORMAT_VERSION = 1
_MANIFEST = "model.json"

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
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is not an lstmfast model file (not a zip archive: {e})") from None
    try:
        raw = z.read(_MANIFEST)
    except KeyError:
        z.close()
        raise ValueError(f"{path} is not an lstmfast model file (no {_MANIFEST} inside)") from None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        z.close()
        raise ValueError(f"{path} is damaged: cannot read {_MANIFEST} ({e})") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        z.close()
        raise ValueError(f"{path} is damaged: {_MANIFEST} is not valid JSON ({e})") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt not in (FORMAT_MODEL, FORMAT_WEIGHTS):
        z.close()
        raise ValueError(f"{path} is not an lstmfast model file (format tag {fmt!r})")
    if expected_format == FORMAT_MODEL and fmt != FORMAT_MODEL:
        z.close()
        raise ValueError(f"{path} holds only weights (saved with save_weights); load it with model.load_weights")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        z.close()
        raise ValueError(f"{path} was written by a newer lstmfast (format version {manifest.get('format_version')}, "
                         f"this one reads up to {FORMAT_VERSION})")
    return z, manifest


def _read_arrays(z: zipfile.ZipFile, folder: str, count: int, path: str) -> List[np.ndarray]:
    arrays = []
    for k in range(count):
        name = f"{folder}/{k:05d}.npy"
        try:
            data = z.read(name)
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except KeyError:
            raise ValueError(f"{path} is damaged: {name} is missing") from None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{path} is damaged: cannot read {name} ({e})") from None
        arrays.append(arr)
    return arrays


class ModelFile:
    """A model file opened for reading (``open_model``): its manifest, and its arrays, read when
    asked for. Close it, or use it in a ``with`` block."""

    def __init__(self, path: str, archive: zipfile.ZipFile, manifest: dict):
        self.path = path
        self.manifest = manifest
        self._archive = archive

    @property
    def config(self) -> dict:
        """The architecture: ``get_config()`` of the saved model (KeyError if the file has none)."""
        return self.manifest["model"]

    @property
    def compile_config(self) -> Optional[dict]:
        """``get_compile_config()`` of the saved model; None when it was not compiled."""
        return self.manifest.get("compile")

    @property
    def metadata(self) -> dict:
        """The ``metadata`` dict given to ``save_model`` ({} if none)."""
        meta = self.manifest.get("metadata")
        return dict(meta) if isinstance(meta, dict) else {}

    def load_weights_into(self, model) -> None:
        """Set ``model``'s weights to the file's, after checking their number and shapes."""
        entries = self.manifest.get("weights") or []
        _set_checked(model, _read_arrays(self._archive, "weights", len(entries), self.path), entries, self.path)

    def optimizer_state(self) -> Optional[dict]:
        """The saved optimizer state for ``optimizer.set_state`` (``{"iterations", "slots"}``), or
        None when the file has none (not compiled, or no slots yet: the optimizer never stepped)."""
        state = self.manifest.get("optimizer_state")
        if not state or int(state["slots"]) <= 0:
            return None
        slots = _read_arrays(self._archive, "optimizer", int(state["slots"]), self.path)
        return {"iterations": int(state["iterations"]), "slots": slots}

    def close(self) -> None:
        self._archive.close()

    def __enter__(self) -> "ModelFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_model(filepath) -> ModelFile:
    """Open a file written by ``save_model`` (ValueError, naming the file, for anything else)."""
    path = os.fspath(filepath)
    archive, manifest = _open(path, FORMAT_MODEL)
    return ModelFile(path, archive, manifest)


def _weights_manifest(model) -> list:
    return [{"name": f"{layer.name}/{key}", "shape": list(w.shape), "dtype": str(w.dtype)}
            for layer in model.layers for key, w in layer.weights.items()]


def check_savable(model, metadata: Optional[dict]) -> None:
    """What every model file needs, checked before anything is written: a built model and
    JSON-serialisable ``metadata``."""
    if metadata is not None:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata must be JSON-serialisable: {e}") from None
    if not model.built:
        raise ValueError("cannot save a model that is not built yet (give it an input shape or fit it once)")


def save_model(model, filepath, overwrite: bool = True, metadata: Optional[dict] = None) -> None:
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
        groups["optimizer"] = list(state["slots"])
    _write_atomically(filepath, manifest, groups, overwrite)


def read_metadata(filepath) -> dict:
    """The metadata dict saved with ``model.save(..., metadata=...)`` ({} if none); raises the same
    clear errors as ``load_model`` for files that are not lstmfast models. A Keras file lstmfast
    wrote keeps its metadata too (``interop.keras_format.read_metadata``)."""
    from .interop import keras_format  # a lazy import: keras_format builds models
    if os.path.isfile(filepath) and keras_format.is_keras_file(filepath):
        return keras_format.read_metadata(filepath)
    with open_model(filepath) as f:
        return f.metadata


def _set_checked(model, weights: List[np.ndarray], entries: list, path: str) -> None:
    expected = model.weights
    if len(expected) != len(weights):
        raise ValueError(f"{path}: the file has {len(weights)} weight arrays, the model needs {len(expected)}")
    for k, (want, got) in enumerate(zip(expected, weights)):
        if want.shape != got.shape:
            name = entries[k]["name"] if k < len(entries) else f"#{k}"
            raise ValueError(f"{path}: weight {name} has shape {got.shape}, the model needs {want.shape}")
    model.set_weights([w.astype(e.dtype, copy=False) for w, e in zip(weights, expected)])


def save_weights(model, filepath, overwrite: bool = True) -> None:
    """Write only ``model``'s weights (``model.load_weights`` reads them back)."""
    manifest = {"format": FORMAT_WEIGHTS, "format_version": FORMAT_VERSION, "lstmfast_version": _version(),
                "weights": _weights_manifest(model)}
    _write_atomically(filepath, manifest, {"weights": model.get_weights()}, overwrite)


def load_weights(model, filepath) -> None:
    """Set ``model``'s weights from a file of ``save_weights`` or ``save_model``."""
    path = os.fspath(filepath)
    archive, manifest = _open(path, None)
    with ModelFile(path, archive, manifest) as f:
        f.load_weights_into(model)


def _version() -> str:
    from . import __version__
    return __version__
