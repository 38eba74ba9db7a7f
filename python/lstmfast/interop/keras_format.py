"""Keras model files in and out: Keras 3's ``.keras`` and the legacy HDF5 ``.h5``.

Reading (``lstmfast.load_model`` calls :func:`load` for these files, recognised by content):

* ``.keras`` (Keras 3): a zip of ``config.json`` (architecture and compile settings),
  ``metadata.json`` and ``model.weights.h5``, whose groups follow the layers' attributes
  (``layers/lstm/cell/vars/0``); a layer's group is found by the ``name`` attribute of its ``vars``.
* legacy ``.h5`` (Keras 1, Keras 2, tf.keras, Keras 3's legacy writer): root attributes
  ``model_config`` and ``training_config`` (JSON) and ``keras_version``; weights under
  ``model_weights/<layer>``, listed, in order, by the group's ``weight_names`` attribute.

The architecture becomes the equivalent lstmfast model, layer by layer, from lstmfast's own classes
only: nothing named in the file is imported or run, so a ``Lambda`` layer or a custom object is
refused. Weights are converted from the older layouts (Keras 1's per-gate LSTM arrays, Keras 2's
``CuDNNLSTM``; see :mod:`lstmfast.interop.keras_legacy`) and every array's shape is checked against
the built layer before it is read, so a hostile file cannot make us allocate more than the model
it describes. The compile settings come along when lstmfast has the optimizer, loss and metrics.

Writing (``model.save("x.keras")``, ``model.save("x.h5")``): the same two formats, as Keras 3
writes them, so ``keras.saving.load_model`` opens them and predicts what lstmfast predicts.

Keras and TensorFlow are never imported; h5py is needed (``pip install h5py``).
"""
from __future__ import annotations

import collections
import contextlib
import datetime
import inspect
import json
import math
import os
import shutil
import tempfile
import warnings
import zipfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from .. import _file_limits, mixed_precision, saving
from .. import layers as layers_module
from .._atomic import atomic_file
from .._naming import snake_case
from .._typing import PathLike
from . import keras_legacy

if TYPE_CHECKING:  # type names only: models imports this module
    from ..models import Model


__all__ = ["load", "save", "load_weights", "save_weights", "read_metadata", "is_keras_file"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_KERAS_CONFIG, _KERAS_METADATA, _KERAS_WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
_MAX_JSON_BYTES = _file_limits.MAX_JSON_BYTES  # an architecture is kilobytes; a larger config.json is not a model's
_KERAS_VERSION_WRITTEN = "3.0.0"  # the Keras whose formats we write (3.0 reads them, as do later ones)
# What lstmfast adds to a Keras file (Keras ignores it): metadata and the optimizer's state.
_EXTRAS_FORMAT, _EXTRAS_JSON, _EXTRAS_SLOTS = "lstmfast.keras_extras", "lstmfast_extras.json", "lstmfast_optimizer"

# Layers whose Keras class has an lstmfast equivalent of the same name, plus Keras 2's CuDNNLSTM.
_SUPPORTED = sorted(set(layers_module.LAYERS) - {"Lambda"}) + ["CuDNNLSTM"]


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading and writing Keras .keras/.h5 files needs h5py: pip install h5py "
                          "(or pip install 'lstmfast[h5]')") from None
    return h5py


def is_keras_file(path: PathLike) -> Optional[str]:
    """"keras" (a Keras 3 ``.keras`` zip), "h5" (an HDF5 file) or None, from the file's first bytes
    and, for a zip, its member names."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_SIGNATURE:
        return "h5"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except _file_limits.ZIP_ERRORS + (ValueError,):
            return None  # not a zip lstmfast can read: saving.open_model says why
        if _KERAS_CONFIG in names:
            return "keras"
    return None


# =================================================================================================
# Reading
# =================================================================================================

def load(path: PathLike, compile: bool = True) -> Model:
    """The lstmfast model of the Keras file ``path`` (``.keras`` or legacy ``.h5``), its weights set
    and, with ``compile``, compiled as the file says where lstmfast has the equivalent."""
    path = os.fspath(path)
    kind = is_keras_file(path)
    if kind not in ("keras", "h5"):
        raise ValueError(f"{path} is not a Keras model file (neither a .keras zip nor HDF5)")
    with _reading(path):
        return _load_keras_zip(path, compile) if kind == "keras" else _load_h5(path, compile)


@contextlib.contextmanager
def _reading(path: str):
    """Whatever reading the file ``path`` raises, as a ValueError naming it: h5py's errors for a
    damaged HDF5 file (OSError, KeyError, RuntimeError) and those of a config lstmfast cannot read."""
    try:
        yield
    except ValueError as e:
        raise _file_limits.file_error(path, e, "cannot be read") from None
    except _file_limits.CONFIG_ERRORS + (OSError, RuntimeError) as e:
        raise ValueError(f"{path} is damaged or not a Keras file lstmfast reads ({type(e).__name__}: "
                         f"{str(e)[:500]})") from None


def _load_keras_zip(path: str, compile: bool):
    _h5py()  # before any work: without h5py the message says how to install it
    with _open_zip(path) as z:
        config = _json(_read_member(z, _KERAS_CONFIG, _MAX_JSON_BYTES, path), f"{path}: {_KERAS_CONFIG}")
        builder = _Builder(path, "keras3")
        with _weights_of_zip(z, path) as f:
            with _file_limits.weights_from_file(_stored_values(f, path), path):
                model = builder.model(config)
            builder.set_weights(model, _Keras3Weights(f, path))
            optimizer_group = f.get("optimizer/vars")
            keras_state = _optimizer_arrays(
                model, [optimizer_group[k] for k in sorted(optimizer_group, key=_int_key)]
                if optimizer_group is not None else [], path)
        extras, slots = _zip_extras(z, model, path)
    if compile:
        _compile(model, config.get("compile_config"), "keras3", path)
        _restore_optimizer(model, extras, slots, keras_state)
    return model


@contextlib.contextmanager
def _open_zip(path: str):
    """The ``.keras`` zip ``path``, opened, after ``_file_limits.check_zip`` (no zip bomb)."""
    try:
        z = zipfile.ZipFile(path)
    except _file_limits.ZIP_ERRORS + (ValueError,) as e:
        raise ValueError(f"{path} is not a Keras .keras file (not a readable zip archive: {e})") from None
    with z:
        _file_limits.check_zip(z, path)
        yield z


@contextlib.contextmanager
def _weights_of_zip(z: zipfile.ZipFile, path: str, model=None):
    """The ``model.weights.h5`` of a ``.keras`` zip, extracted to a temporary file and opened.

    It holds the model's arrays, an optimizer's (up to three slots per weight) and HDF5's
    bookkeeping: a member that declares more bytes than that (given the ``model``) or more than
    ``_file_limits.expansion_limit`` of what it occupies in the zip is refused before anything is
    extracted (a zip bomb stops here), and extraction stops at the declared size."""
    h5py = _h5py()
    try:
        info = z.getinfo(_KERAS_WEIGHTS)
    except KeyError:
        raise ValueError(f"{path} is damaged: it has no {_KERAS_WEIGHTS}") from None
    limit = _file_limits.expansion_limit(info.compress_size)
    if model is not None:
        limit = min(limit, 5 * sum(int(w.nbytes) for w in model.weights) + (16 << 20))
    if info.file_size > limit:
        raise ValueError(f"{path}: {_KERAS_WEIGHTS} declares {info.file_size} bytes; "
                         + (f"the model it describes needs at most {limit}" if model is not None and
                            limit < _file_limits.expansion_limit(info.compress_size) else
                            f"stored in {info.compress_size}, it may expand to at most {limit}")
                         + "; refusing to extract it")
    with tempfile.TemporaryDirectory(prefix="lstmfast-keras-") as tmp:
        local = os.path.join(tmp, _KERAS_WEIGHTS)
        try:
            with z.open(info) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except _file_limits.ZIP_ERRORS + (ValueError,) as e:
            raise ValueError(f"{path} is damaged: cannot extract {_KERAS_WEIGHTS} ({e})") from None
        try:
            f = h5py.File(local, "r")
        except OSError as e:
            raise ValueError(f"{path} is damaged: {_KERAS_WEIGHTS} is not a readable HDF5 file ({e})") from None
        with f:
            yield f


def load_weights(model: Model, path: PathLike) -> None:
    """Set ``model``'s weights from a Keras file: a ``.weights.h5`` of Keras 3's ``save_weights``
    (layers matched by Keras's attribute paths, as Keras does), a legacy ``.h5`` of weights or of a
    whole model (layers with weights matched in order, as Keras 2 did), or a ``.keras`` zip."""
    path = os.fspath(path)
    kind = is_keras_file(path)
    if kind not in ("keras", "h5"):
        raise ValueError(f"{path} is not a Keras weights file (neither HDF5 nor a .keras zip)")
    with _reading(path):
        _load_weights(model, path, kind)


def _load_weights(model, path: str, kind: str) -> None:
    if kind == "keras":
        with _open_zip(path) as z, _weights_of_zip(z, path, model) as f:
            _Builder(path, "keras3").set_weights(model, _Keras3Weights(f, path, model))
        return
    try:
        f = _h5py().File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e})") from None
    with f:
        if "layers" in f and "layer_names" not in f.attrs:
            _Builder(path, "keras3").set_weights(model, _Keras3Weights(f, path, model))
            return
        group = f["model_weights"] if "model_weights" in f else f
        version = _attr_text(group, "keras_version", path) or _attr_text(f, "keras_version", path)
        dialect = "keras1" if keras_legacy.is_keras1(version) else \
            "keras3" if version is not None and version.startswith("3") else "keras2"
        _Builder(path, dialect).set_weights(model, _LegacyWeights(group, path, model))


def _load_h5(path: str, compile: bool):
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e})") from None
    with f:
        if "model_config" not in f.attrs:
            if "layer_names" in f.attrs or "model_weights" in f:
                raise ValueError(f"{path} holds only weights (Keras save_weights); build the model and call "
                                 f"model.load_weights")
            raise ValueError(f"{path} is an HDF5 file but not a Keras model (no model_config attribute)")
        group = f["model_weights"] if "model_weights" in f else f
        version = _attr_text(group, "keras_version", path) or _attr_text(f, "keras_version", path)
        dialect = "keras1" if keras_legacy.is_keras1(version) else \
            "keras3" if version is not None and version.startswith("3") else "keras2"
        config = _json(_attr_text(f, "model_config", path), f"{path}: model_config")
        builder = _Builder(path, dialect)
        with _file_limits.weights_from_file(_stored_values(group, path), path):
            model = builder.model(config)
        builder.set_weights(model, _LegacyWeights(group, path))
        training = _attr_text(f, "training_config", path)
        extras, slots = _h5_extras(f, model, path)
        keras_state = []
        if dialect == "keras3" and "optimizer_weights" in f:  # Keras 2 ordered its slots differently
            group = f["optimizer_weights"]
            names = _attr_names(group, "weight_names", path)
            keras_state = _optimizer_arrays(model, [group[n] for n in names if n in group], path)
    if compile and training:
        training = _json(training, f"{path}: training_config")
        _compile(model, _compile_config_of_training(training), dialect, path)
        _restore_optimizer(model, extras, slots, keras_state)
    return model


def read_metadata(path: PathLike) -> dict:
    """The ``metadata`` lstmfast saved in a Keras file ({} if none, as for a file Keras wrote)."""
    path = os.fspath(path)
    kind = is_keras_file(path)
    if kind not in ("keras", "h5"):
        raise ValueError(f"{path} is not a Keras model file")
    with _reading(path):
        if kind == "keras":
            with _open_zip(path) as z:
                extras = _zip_extras_manifest(z, path)
        else:
            with _h5py().File(path, "r") as f:
                extras = _extras_manifest(_attr_text(f, _EXTRAS_JSON, path), path)
    meta = extras.get("metadata") if extras else None
    return dict(meta) if isinstance(meta, dict) else {}


def _extras_manifest(raw, path: str) -> Optional[dict]:
    if raw is None:
        return None
    extras = _json(raw, f"{path}: {_EXTRAS_JSON}")
    if extras.get("format") != _EXTRAS_FORMAT:
        raise ValueError(f"{path}: {_EXTRAS_JSON} has format tag {extras.get('format')!r}")
    return extras


def _zip_extras_manifest(z: zipfile.ZipFile, path: str) -> Optional[dict]:
    if _EXTRAS_JSON not in z.namelist():
        return None
    return _extras_manifest(_read_member(z, _EXTRAS_JSON, _MAX_JSON_BYTES, path), path)


def _slot_count(extras: Optional[dict], model, path: str) -> int:
    state = (extras or {}).get("optimizer_state")
    if not state:
        return 0
    count = state.get("slots") if isinstance(state, dict) else None
    if type(count) is not int or not 0 <= count <= _file_limits.optimizer_slots_limit(len(model.weights)):
        raise ValueError(f"{path}: {_EXTRAS_JSON} declares {count!r:.100} optimizer arrays for a model of "
                         f"{len(model.weights)} weights")
    iterations = state.get("iterations", 0)
    if type(iterations) is not int or iterations < 0:
        raise ValueError(f"{path}: {_EXTRAS_JSON} declares {iterations!r:.100} optimizer iterations, "
                         f"expected an integer >= 0")
    return count


def _zip_extras(z: zipfile.ZipFile, model, path: str) -> Tuple[Optional[dict], list]:
    extras = _zip_extras_manifest(z, path)
    count = _slot_count(extras, model, path)
    limit = _file_limits.optimizer_values_limit(sum(int(w.size) for w in model.weights))
    return extras, saving._read_arrays(z, _EXTRAS_SLOTS, count, path, max_values=limit)


def _h5_extras(f, model, path: str) -> Tuple[Optional[dict], list]:
    extras = _extras_manifest(_attr_text(f, _EXTRAS_JSON, path), path)
    count = _slot_count(extras, model, path)
    group = f.get(_EXTRAS_SLOTS)
    limit = _file_limits.optimizer_values_limit(sum(int(w.size) for w in model.weights))
    datasets = []
    for k in range(count):
        d = group.get(f"{k:05d}") if group is not None else None
        if d is None or not hasattr(d, "shape"):
            raise ValueError(f"{path}: optimizer array {k} is missing")
        datasets.append(d)
    return extras, _read_datasets(datasets, limit, f"{path}: the optimizer state", path)


def _optimizer_arrays(model, datasets: list, path: str) -> list:
    """Keras's optimizer variables read from ``datasets``, after checking they hold no more values
    than an optimizer of this model can ([] when there are none)."""
    limit = _file_limits.optimizer_values_limit(sum(int(w.size) for w in model.weights))
    return _read_datasets(datasets, limit, f"{path}: the optimizer variables", path)


def _read_datasets(datasets: list, limit: int, what: str, path: str) -> list:
    """The arrays of HDF5 ``datasets`` (``what`` names them), read only after checking that they are
    numeric, stored in the file itself and hold at most ``limit`` values in all."""
    for d in datasets:
        _check_dataset(d, what, path)
    total = sum(math.prod(d.shape) for d in datasets)
    if total > limit:
        raise ValueError(f"{what} holds {total} values, more than the {limit} a model of this size can have")
    try:
        return [np.asarray(d[()]) for d in datasets]
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is damaged: cannot read {what.split(': ', 1)[-1]} ({e})") from None


def _check_dataset(d, what: str, path: str) -> None:
    """An HDF5 object that must be a numeric dataset whose data lies in the file (not a group, not
    a virtual or external dataset that reads other files)."""
    if not hasattr(d, "shape") or getattr(d, "dtype", None) is None:
        raise ValueError(f"{what}: {getattr(d, 'name', d)!r} is not an array")
    if d.dtype.kind not in "fiu":
        raise ValueError(f"{what}: {d.name!r} has dtype {d.dtype}, not a number")
    if d.is_virtual or d.external:
        raise ValueError(f"{what}: {d.name!r} reads its data from outside {path}; refusing to read it")


def _stored_values(group, path: str) -> int:
    """How many weight values the HDF5 ``group`` can hold: each dataset's size, up to what
    its stored bytes can expand to (``_file_limits.expansion_limit``), so a dataset that declares a
    huge shape over a few stored bytes counts for little. ``weights_from_file`` builds within this."""
    datasets = []

    def visit(name, obj):
        if hasattr(obj, "shape") and getattr(obj, "dtype", None) is not None:
            datasets.append(obj)
    try:
        group.visititems(visit)
        return sum(min(math.prod(d.shape or ()),
                       _file_limits.expansion_limit(d.id.get_storage_size()) // max(1, d.dtype.itemsize))
                   for d in datasets)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is damaged: cannot list its weights ({e})") from None


def _restore_optimizer(model, extras: Optional[dict], slots: list, keras_arrays: list) -> None:
    """The optimizer's state: lstmfast's own when the file has it, else Keras's variables when
    they fit (so ``fit`` continues as it would have in Keras), else a fresh optimizer."""
    if model.optimizer is None:
        return
    state = (extras or {}).get("optimizer_state")
    if state and (slots or state.get("iterations") or "loss_scale" in state):  # _slot_count checked them
        restored = {"iterations": int(state.get("iterations", 0)), "slots": slots}
        if "loss_scale" in state:
            restored["loss_scale"] = state["loss_scale"]  # checked by LossScaleOptimizer.set_state
    elif keras_arrays:
        restored = _state_from_keras(model, keras_arrays)
        if restored is None:
            return
    else:
        return
    model.optimizer.build(model.trainable_weights)
    model.optimizer.set_state(restored)


_read_member = saving.read_member


def _json(raw, what: str):
    value = _file_limits.load_json(raw, what)
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _check_attr_size(obj, key: str, path: str) -> None:
    """Refuse an attribute larger than any model description before reading it. A fixed-size
    attribute says its size; a variable-length string's bytes sit in the file's heap, so what
    reading it can allocate is bounded by the file's size, and it is measured after reading."""
    size = obj.attrs.get_id(key).get_storage_size()
    if size > _MAX_JSON_BYTES:
        raise ValueError(f"{path}: attribute {key!r} holds {size} bytes; refusing to read it")


def _attr_text(obj, key: str, path: str) -> Optional[str]:
    """A string attribute of an HDF5 object (None when absent), its size checked."""
    if key not in obj.attrs:
        return None
    _check_attr_size(obj, key, path)
    value = obj.attrs[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise ValueError(f"{path}: attribute {key!r} is not text")
    if len(value) > _MAX_JSON_BYTES:
        raise ValueError(f"{path}: attribute {key!r} holds {len(value)} bytes; refusing to read it")
    return value


def _attr_names(obj, key: str, path: str) -> List[str]:
    """A list-of-names attribute (``layer_names``, ``weight_names``); [] when absent."""
    if key not in obj.attrs:
        return []
    _check_attr_size(obj, key, path)
    values = np.asarray(obj.attrs[key]).reshape(-1)
    if values.dtype.kind == "f" and values.size == 0:  # how h5py stores an empty list
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]


# ---- weights in the file ------------------------------------------------------------------------

class _Keras3Weights:
    """The arrays of each layer in a Keras 3 ``model.weights.h5``: the layer's own ``vars/<k>``,
    then those of the objects it holds (``cell``, ``layer``, ``forward_layer``, ``backward_layer``)."""

    def __init__(self, f, path: str, model=None):
        """Layers are found by their name (the ``name`` attribute of each ``vars``); given
        ``model``, by Keras's path for each of its layers instead (a weights file written for a
        model whose layers may be named otherwise)."""
        self.path = path
        self.groups = {}
        root = f.get("layers")
        if model is not None:
            for layer, base in _keras_paths(model):
                if base in f:
                    self.groups[layer.name] = f[base]
            return
        for key in (root.keys() if root is not None else []):
            group = root[key]
            name = _attr_text(group["vars"], "name", path) if "vars" in group else None
            self.groups[name or key] = group

    def datasets(self, layer_name: str) -> list:
        group = self.groups.get(layer_name)
        if group is None:
            raise ValueError(f"{self.path}: the weights file has no group for layer {layer_name!r}")
        return _vars_of(group)


def _vars_of(group) -> list:
    out = []
    if "vars" in group:
        own = group["vars"]
        out += [own[k] for k in sorted(own.keys(), key=_int_key)]
    children = [k for k in group.keys() if k != "vars"]
    order = {"forward_layer": 0, "backward_layer": 1}
    for key in sorted(children, key=lambda k: (order.get(k, 2), k)):
        out += _vars_of(group[key])
    return out


def _int_key(text: str):
    return (0, int(text)) if text.isdigit() else (1, text)


class _LegacyWeights:
    """The arrays of each layer in a legacy HDF5 file, in the order of its ``weight_names``."""

    def __init__(self, group, path: str, model=None):
        """Layers are found by name; given ``model``, in order: the file's layers that have weights
        go to the model's layers that have weights (as Keras 2's ``load_weights`` matched them)."""
        self.group, self.path = group, path
        names = _attr_names(group, "layer_names", path)
        self.names = {name: name for name in names}
        if model is not None:
            with_weights = [n for n in names if n in group and _attr_names(group[n], "weight_names", path)]
            layers = [layer for layer in model.layers if layer.weights]
            if len(with_weights) != len(layers):
                raise ValueError(f"{path} has weights for {len(with_weights)} layers, the model has "
                                 f"{len(layers)} layers with weights")
            self.names = {layer.name: name for layer, name in zip(layers, with_weights)}

    def datasets(self, layer_name: str) -> list:
        name = self.names.get(layer_name)
        if name is None or name not in self.group:
            raise ValueError(f"{self.path}: the file has no weights for layer {layer_name!r}")
        layer_group = self.group[name]
        out = []
        for name in _attr_names(layer_group, "weight_names", self.path):
            if name not in layer_group:
                raise ValueError(f"{self.path}: weight {name!r} of layer {layer_name!r} is listed but missing")
            out.append(layer_group[name])
        return out


# ---- the architecture ---------------------------------------------------------------------------

class _Builder:
    """Builds the lstmfast model a Keras config describes and sets its weights from the file.
    ``dialect``: "keras1", "keras2" or "keras3" (what the config's names and defaults mean)."""

    def __init__(self, path: str, dialect: str):
        self.path, self.dialect = path, dialect
        self.file_class: Dict[str, str] = {}  # layer name -> its class in the file ("CuDNNLSTM")
        self.masking = False

    # -- models --

    def model(self, config: dict):
        """The lstmfast model of a Keras model config. A config that is not what Keras writes (a
        damaged or hostile file) gets a ValueError naming the file, whatever part of it is wrong."""
        try:
            return self._model(config)
        except ValueError as e:
            raise _file_limits.file_error(self.path, e, "its model cannot be built") from None
        except _file_limits.CONFIG_ERRORS as e:
            raise ValueError(f"{self.path}: the model config is not one lstmfast can read "
                             f"({type(e).__name__}: {str(e)[:500]})") from None

    def _model(self, config: dict):
        from ..models import Model, Sequential
        kind = config.get("class_name")
        body = config.get("config")
        if kind == "Sequential":
            layer_entries = body if isinstance(body, list) else (body or {}).get("layers")
            if not isinstance(layer_entries, list):
                raise ValueError(f"{self.path}: the Sequential model has no layer list")
            name = None if isinstance(body, list) else body.get("name")
            model = Sequential(name=name)
            stack = []
            for entry in layer_entries:
                if self._class_of(entry) == "InputLayer":
                    cfg = self._layer_config(entry)
                    stack.append(layers_module.Input(batch_shape=_input_shape(cfg, self.path),
                                                     dtype=_dtype_name(cfg.get("dtype"), input=True),
                                                     name=cfg.get("name")))
                    continue
                stack.append(self.layer(entry))
            model._extend(stack)  # the graph built once, not after each layer
            if not model.built and isinstance(body, dict) and body.get("build_input_shape"):
                shape = tuple(body["build_input_shape"])
                first = model.layers[0]
                dtype = getattr(first, "_input_dtype_hint", None)
                model._input_spec = (shape, dtype)
                model._rebuild()
            if not model.built:
                raise ValueError(f"{self.path}: the Sequential model's input shape is not in the file")
            return model
        if kind in ("Functional", "Model"):
            return self._functional(body or {}, Model)
        if kind is None:
            raise ValueError(f"{self.path}: the model config has no class_name")
        raise ValueError(f"{self.path}: model class {kind!r} is not supported (lstmfast reads Sequential and "
                         f"functional models)")

    def _functional(self, body: dict, Model):
        entries = body.get("layers")
        if not isinstance(entries, list):
            raise ValueError(f"{self.path}: the functional model has no layer list")
        masks = _mask_only(entries, body.get("output_layers"))
        produced: Dict[Tuple[str, int], list] = {}
        mask_only: set = set()
        pending = []
        built = {}
        # Whether any layer makes a mask (Embedding(mask_zero=True), Masking).
        self.masking = any(self._class_of(e) == "Masking" or (self._class_of(e) == "Embedding"
                                                               and (e.get("config") or {}).get("mask_zero"))
                           for e in entries)
        for entry in entries:
            cls = self._class_of(entry)
            name = entry.get("name") or (entry.get("config") or {}).get("name")
            if cls == "InputLayer":
                cfg = self._layer_config(entry)
                produced[(name, 0)] = [layers_module.Input(batch_shape=_input_shape(cfg, self.path),
                                                           dtype=_dtype_name(cfg.get("dtype"), input=True),
                                                           name=name)]
                continue
            if name in masks:  # computes a mask only: lstmfast's layers compute their masks themselves
                for k, _ in enumerate(entry.get("inbound_nodes") or []):
                    mask_only.add((name, k))
                continue
            if self._is_op(entry):
                raise ValueError(f"{self.path}: the model uses the operation {cls!r} ({entry.get('module')}); "
                                 f"lstmfast reads models made of layers: {', '.join(_SUPPORTED)}")
            built[name] = self.layer(entry)
            for k, node in enumerate(entry.get("inbound_nodes") or []):
                pending.append((name, k, node))
        # Each call runs once its inputs exist; one that misses an input waits for that tensor's call
        # (so the work is linear in the number of calls, whatever order the file lists them in).
        produced = _Produced(produced)
        queue = collections.deque(pending)
        waiting: Dict[Tuple[str, int], list] = {}
        while queue:
            name, k, node = queue.popleft()
            produced.missed = None
            call = self._node_call(node, name, produced, mask_only)
            if call is None:
                waiting.setdefault(produced.missed, []).append((name, k, node))
                continue
            inputs, kwargs = call
            out = built[name](inputs, **kwargs)
            produced[(name, k)] = list(out) if isinstance(out, (list, tuple)) else [out]
            queue.extend(waiting.pop((name, k), ()))
        if waiting:
            names = ", ".join(sorted({n for calls in waiting.values() for n, _, _ in calls}))
            raise ValueError(f"{self.path}: the calls of layer(s) {names} use tensors no layer produces")
        inputs = self._endpoints(body.get("input_layers"), produced, "input")
        outputs = self._endpoints(body.get("output_layers"), produced, "output")
        return Model(inputs, outputs, name=body.get("name"))

    def _endpoints(self, spec, produced, what: str):
        if not isinstance(spec, list) or not spec:
            raise ValueError(f"{self.path}: the functional model names no {what}s")
        single = isinstance(spec[0], str)
        refs = [spec] if single else spec
        tensors = [self._tensor(ref, produced, set()) for ref in refs]
        if any(t is None for t in tensors):
            raise ValueError(f"{self.path}: a model {what} refers to a tensor no layer produces")
        # Keras 2 lists even a single input; a bare array goes in either way, as Keras accepts.
        return tensors[0] if len(tensors) == 1 and (single or self.dialect != "keras3") else tensors

    def _tensor(self, ref, produced, mask_only):
        """The tensor a reference names, None while its layer has not been called."""
        if isinstance(ref, dict) and ref.get("class_name") == "__keras_tensor__":
            ref = (ref.get("config") or {}).get("keras_history")
        if not (isinstance(ref, (list, tuple)) and len(ref) >= 3 and isinstance(ref[0], str)):
            raise ValueError(f"{self.path}: bad tensor reference {ref!r:.200}")
        key = (ref[0], int(ref[1]))
        if key in mask_only:
            raise ValueError(f"{self.path}: the output of {ref[0]!r}, an operation lstmfast does not have, "
                             f"feeds a layer")
        outs = produced.get(key)
        if outs is None:
            return None
        if not 0 <= int(ref[2]) < len(outs):
            raise ValueError(f"{self.path}: layer {ref[0]!r} has no output #{ref[2]}")
        return outs[int(ref[2])]

    def _node_call(self, node, name: str, produced, mask_only):
        """``(inputs, kwargs)`` of one call in the file, or None while an input is not produced yet."""
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            args, kwargs = list(node.get("args") or []), dict(node.get("kwargs") or {})
            if not args:
                raise ValueError(f"{self.path}: a call of layer {name!r} has no inputs")
            if len(args) > 1:
                raise ValueError(f"{self.path}: layer {name!r} is called with extra positional arguments "
                                 f"{args[1:]!r:.200}")
            first = args[0]
            refs, multi = (first, True) if isinstance(first, list) else ([first], False)
        elif isinstance(node, list):  # Keras 1/2: [[name, node_index, tensor_index, kwargs], ...]
            refs = [ref[:3] for ref in node]
            kwargs = dict(node[0][3]) if node and len(node[0]) > 3 and isinstance(node[0][3], dict) else {}
            multi = len(refs) > 1
        else:
            raise ValueError(f"{self.path}: bad call record of layer {name!r}: {node!r:.200}")
        tensors = [self._tensor(ref, produced, mask_only) for ref in refs]
        call_kwargs = {}
        for key, value in kwargs.items():
            if key == "mask":
                continue  # the model computes masks from Embedding(mask_zero) and Masking, as Keras did
            if key == "training":
                if value is not None:
                    call_kwargs["training"] = bool(value)
            elif key == "initial_state":
                states = value if isinstance(value, list) and value and not isinstance(value[0], str) else [value]
                tensors += [self._tensor(ref, produced, mask_only) for ref in states]
                multi = True
            else:
                call_kwargs[key] = value
        if any(t is None for t in tensors):
            return None
        if isinstance(node, dict) and "initial_state" in kwargs and not kwargs.get("mask") and self.masking:
            warnings.warn(f"{self.path}: Keras 3 ran layer {name!r} without a mask (it drops the mask of a call "
                          f"given an initial_state); lstmfast applies the mask, so predictions can differ at "
                          f"padded steps", stacklevel=4)
        return (tensors if multi else tensors[0]), call_kwargs

    # -- layers --

    def _class_of(self, entry) -> str:
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            raise ValueError(f"{self.path}: bad layer entry {entry!r:.200}")
        return entry["class_name"]

    def _is_op(self, entry) -> bool:
        return (entry.get("module") or "").startswith(("keras.src.ops", "keras.ops"))

    def _layer_config(self, entry) -> dict:
        cls = self._class_of(entry)
        config = entry.get("config")
        if not isinstance(config, dict):
            raise ValueError(f"{self.path}: layer entry {cls!r} has no config")
        if self.dialect == "keras1":
            cls, config = keras_legacy.keras1_config(cls, config)
        return dict(config)

    def layer(self, entry):
        """The lstmfast layer of one Keras layer entry (wrappers with their inner layers)."""
        cls = self._class_of(entry)
        config = entry.get("config")
        if self.dialect == "keras1" and isinstance(config, dict):
            cls, config = keras_legacy.keras1_config(cls, config)
        where = f"{self.path}: layer {(config or {}).get('name') or entry.get('name')!r} ({cls})"
        if cls == "Lambda" or cls == "TFOpLambda" or cls == "SlicingOpLambda":
            raise ValueError(f"{where}: a Lambda layer holds Python code, and loading never runs code from a "
                             f"file; rebuild that part of the model in Python and load the weights with "
                             f"model.load_weights")
        registered = entry.get("registered_name")
        module = entry.get("module") or "keras"
        if (registered not in (None, cls)) or not module.startswith("keras"):
            raise ValueError(f"{where}: a custom object ({registered or module}); loading never imports or "
                             f"runs code named in a file. lstmfast reads these layers: {', '.join(_SUPPORTED)}")
        if cls in ("Sequential", "Functional", "Model"):
            raise ValueError(f"{where}: a model nested inside a model is not supported; flatten it into one model")
        target = "LSTM" if cls == "CuDNNLSTM" else cls
        layer_class = layers_module.LAYERS.get(target)
        if layer_class is None or cls == "Lambda":
            raise ValueError(f"{where}: lstmfast has no {cls} layer. It reads: {', '.join(_SUPPORTED)}")
        if not isinstance(config, dict):
            raise ValueError(f"{where}: the layer has no config")
        kwargs = self._kwargs(layer_class, cls, config, where)
        for key in ("layer", "backward_layer"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = self.layer(kwargs[key])
        layer = layer_class(**kwargs)
        self.file_class[layer.name] = cls
        if cls in ("Bidirectional", "TimeDistributed"):
            inner = (config.get("layer") or {}).get("class_name")
            for sub in layer._sublayers():
                self.file_class[sub.name] = inner
        return layer

    def _kwargs(self, layer_class, cls: str, config: dict, where: str) -> dict:
        accepted = _accepted_arguments(layer_class)
        out = {}
        for key, value in config.items():
            if key == "dtype":
                value = _dtype_name(value, input=cls == "InputLayer")
            elif key.endswith("_initializer"):
                value = _initializer(value)
            elif key.endswith(("_regularizer", "_constraint")):
                if value is not None:
                    warnings.warn(f"{where}: {key} is not applied by lstmfast (predictions are the same; "
                                  f"training does without it)", stacklevel=4)
                continue
            elif key in ("activation", "recurrent_activation"):
                value = self._activation(value, key, cls, where)
            elif key == "batch_shape" and cls != "InputLayer":
                key = "batch_input_shape"
            if cls == "CuDNNLSTM" and key in ("activation", "recurrent_activation"):
                continue
            if key in accepted:
                out[key] = value
            elif _is_off(value):
                continue  # an option Keras has and lstmfast lacks, left at its "off" value
            else:
                raise ValueError(f"{where}: option {key}={value!r:.80} is not supported by lstmfast")
        return out

    def _activation(self, value, key: str, cls: str, where: str):
        if isinstance(value, dict):  # Keras 3 may serialise a built-in function as a dict
            value = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
        if not isinstance(value, str):
            raise ValueError(f"{where}: {key} {value!r:.80} is not a built-in activation")
        value = value.lower()
        if value == "hard_sigmoid" and cls in ("LSTM", "CuDNNLSTM") and self.dialect == "keras3":
            raise ValueError(f"{where}: recurrent_activation='hard_sigmoid' in a Keras 3 file is relu6(x + 3) / 6; "
                             f"the engine's hard_sigmoid is Keras 2's clip(0.2 x + 0.5, 0, 1)")
        if value == "hard_sigmoid" and cls not in ("LSTM", "CuDNNLSTM") and self.dialect != "keras3":
            raise ValueError(f"{where}: activation='hard_sigmoid' in a Keras {self.dialect[-1]} file is "
                             f"clip(0.2 x + 0.5, 0, 1); lstmfast's activation is Keras 3's relu6(x + 3) / 6")
        return value

    # -- weights --

    def set_weights(self, model, source) -> None:
        """Set every layer's weights from ``source`` (per-layer datasets), converting old layouts;
        shapes are checked before an array is read."""
        for layer in model.layers:
            if not layer.weights:
                continue
            datasets = source.datasets(layer.name)
            arrays = self._layer_arrays(layer, self.file_class.get(layer.name, type(layer).__name__), datasets)
            want = list(layer.weights.values())
            if len(arrays) != len(want):
                raise ValueError(f"{self.path}: layer {layer.name!r} has {len(arrays)} weight arrays in the file, "
                                 f"the layer needs {len(want)}")
            for (key, w), a in zip(layer.weights.items(), arrays):
                if tuple(a.shape) != w.shape:
                    raise ValueError(f"{self.path}: weight {key!r} of layer {layer.name!r} has shape "
                                     f"{tuple(a.shape)} in the file, the layer needs {w.shape}")
            layer.set_weights([np.asarray(a, dtype=w.dtype) for a, w in zip(arrays, want)])

    def _layer_arrays(self, layer, file_class: str, datasets: list) -> list:
        """The file's arrays of ``layer`` in lstmfast's layout (read only after a size check)."""
        budget = 2 * sum(int(w.size) for w in layer.weights.values()) + 1024
        total = 0
        for d in datasets:
            if not hasattr(d, "shape") or getattr(d, "dtype", None) is None:
                raise ValueError(f"{self.path}: a weight of layer {layer.name!r} is not an array")
            _check_dataset(d, f"{self.path}: a weight of layer {layer.name!r}", self.path)
            total += math.prod(d.shape)
        if total > budget:
            raise ValueError(f"{self.path}: layer {layer.name!r} has {total} weight values in the file, more than "
                             f"its {sum(int(w.size) for w in layer.weights.values())}; refusing to read them")
        try:
            arrays = [np.asarray(d[()]) for d in datasets]
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{self.path} is damaged: cannot read the weights of layer {layer.name!r} ({e})") from None
        return self._convert(layer, file_class, arrays)

    def _convert(self, layer, file_class: str, arrays: list) -> list:
        if isinstance(layer, layers_module.Bidirectional):
            half = len(arrays) // 2
            inner = self.file_class.get(layer.forward_layer.name, file_class)
            return (self._convert(layer.forward_layer, inner, arrays[:half])
                    + self._convert(layer.backward_layer, inner, arrays[half:]))
        if isinstance(layer, layers_module.TimeDistributed):
            return self._convert(layer.layer, self.file_class.get(layer.layer.name, file_class), arrays)
        if isinstance(layer, layers_module.LSTM):
            units = layer.units
            if file_class == "CuDNNLSTM" or (len(arrays) == 3 and arrays[2].shape == (8 * units,)):
                return keras_legacy.lstm_weights_from_cudnn(arrays, units)
            if self.dialect == "keras1":
                return keras_legacy.lstm_weights_from_keras1(arrays, units)
        return arrays


class _Produced(dict):
    """The tensors each layer call produced, ``(layer name, node index) -> outputs``; ``missed``: the
    last key looked up with ``get`` and not found (the tensor a call waits for)."""
    missed = None

    def get(self, key, default=None):
        if key not in self:
            self.missed = key
        return super().get(key, default)


def _mask_only(entries: list, outputs) -> set:
    """Names of the entries whose results reach no layer's data, only ``mask=`` arguments.

    Keras 3 records the masks layers receive as ``keras.ops`` nodes (``not_equal(x, 0)`` for
    Embedding(mask_zero=True), ``any(...)`` for Masking, ``expand_dims``/``concatenate`` for a
    Concatenate of masked inputs); lstmfast's layers compute the same masks themselves, so those
    nodes are left out, whatever operations they use."""
    feeds: Dict[str, set] = {}  # name -> the names whose results it reads as data
    for entry in entries:
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        used = feeds.setdefault(name, set())
        for node in entry.get("inbound_nodes") or []:
            if isinstance(node, dict):
                used |= _referenced(node.get("args"))
                used |= _referenced({k: v for k, v in (node.get("kwargs") or {}).items() if k != "mask"})
            elif isinstance(node, list):
                for ref in node:
                    if isinstance(ref, list) and ref:
                        used |= _referenced(ref[:3])
                        if len(ref) > 3 and isinstance(ref[3], dict):
                            used |= _referenced({k: v for k, v in ref[3].items() if k != "mask"})
    needed = _referenced(outputs)
    frontier = list(needed)
    while frontier:
        for used in feeds.get(frontier.pop(), ()):
            if used not in needed:
                needed.add(used)
                frontier.append(used)
    return set(feeds) - needed


def _referenced(value) -> set:
    """The layer names a config value refers to (``__keras_tensor__`` dicts, ``[name, node, index]``)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history") or []
            return {history[0]} if history and isinstance(history[0], str) else set()
        return set().union(*(_referenced(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
            return {value[0]}
        return set().union(*(_referenced(v) for v in value)) if value else set()
    return set()


def _accepted_arguments(layer_class) -> set:
    names = set()
    for klass in layer_class.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)}
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            break
    names.discard("self")
    return names


def _is_off(value) -> bool:
    """None, False, 0 or empty: how Keras writes an option that is not in use."""
    if value is None or value is False:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, (str, list, tuple, dict)) and len(value) == 0


def _dtype_name(value, input: bool = False) -> Optional[str]:
    """A layer's dtype from Keras's string or DTypePolicy dict: the mixed policies are kept (see
    ``lstmfast.mixed_precision``), Keras's bfloat16 one (16-bit variables) becomes mixed_bfloat16
    (the variables widened to float32), other types float32; an input layer keeps its data's type."""
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("name")
    if value is None:
        return None
    value = str(value)
    if input:
        return "float32" if value.startswith("mixed_") or value in ("float16", "bfloat16") else value
    if value == "bfloat16":
        return "mixed_bfloat16"
    return value if value in mixed_precision.NAMES else "float32"


def _input_shape(config: dict, path: str) -> tuple:
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    if not isinstance(shape, list):
        raise ValueError(f"{path}: input layer {config.get('name')!r} has no shape")
    return tuple(shape)


def _initializer(value):
    """An initializer lstmfast knows (name or ``{"class_name", "config"}``), else its class name, else
    the layer's default (the file's weights replace it anyway)."""
    from .. import initializers
    if isinstance(value, dict):
        plain = {"class_name": value.get("class_name"), "config": value.get("config") or {}}
        try:
            initializers.get(plain)
            return plain
        except (ValueError, TypeError):
            value = value.get("class_name")
    try:
        initializers.get(value)
        return value
    except (ValueError, TypeError):
        return "zeros"


# ---- optimizer state ------------------------------------------------------------------------------

# Keras 3 keeps an optimizer's variables as [iteration, learning_rate (absent for a schedule), then
# its slots]: each ``add_optimizer_variables`` call below adds, for every trainable variable in
# turn, one slot per name. lstmfast's slots have Keras's names; ``get_state`` lists them variable-major.
_KERAS_SLOT_GROUPS = {"Adam": (("momentum", "velocity"), ("velocity_hat",)),
                      "AdamW": (("momentum", "velocity"), ("velocity_hat",)),
                      "RMSprop": (("velocity",), ("momentum",), ("average_gradient",)),
                      "SGD": (("momentum",),), "Adagrad": (("accumulator",),)}


def _keras_slot_order(optimizer, n_variables: int) -> Optional[List[int]]:
    """For each Keras slot variable in order, its index in lstmfast's ``get_state()["slots"]``
    (None for an optimizer whose Keras layout is not known here)."""
    groups = _KERAS_SLOT_GROUPS.get(type(optimizer).__name__)
    if groups is None:
        return None
    names = list(optimizer.slot_names)
    order = []
    for group in groups:
        present = [n for n in group if n in names]
        order += [j * len(names) + names.index(n) for j in range(n_variables) for n in present]
    return order if len(order) == n_variables * len(names) else None


def _state_from_keras(model, arrays: list) -> Optional[dict]:
    """lstmfast's optimizer state from Keras 3's optimizer variables; None (nothing restored) when
    they do not fit this model and optimizer."""
    variables = model.trainable_weights
    order = _keras_slot_order(model.optimizer, len(variables))
    if order is None or not order:
        return None
    head = len(arrays) - len(order)
    if head not in (1, 2) or any(np.shape(a) != () for a in arrays[:head]):
        return None
    slots: list = [None] * len(order)
    per_variable = len(order) // len(variables)
    for k, position in zip(range(head, len(arrays)), order):
        want = variables[position // per_variable]
        if tuple(arrays[k].shape) != want.shape:
            return None
        slots[position] = np.asarray(arrays[k], dtype=want.dtype)
    return {"iterations": int(arrays[0]), "slots": slots}


def _state_to_keras(model) -> list:
    """``[(name, array)]``: the optimizer's state as Keras 3's optimizer variables, for ``.keras``
    files ([] when there is no state yet or Keras's layout for this optimizer is not known here)."""
    optimizer = model.optimizer
    state = optimizer.get_state()
    order = _keras_slot_order(optimizer, len(model.trainable_weights))
    if order is None or len(state["slots"]) != len(order) or not order:
        return []
    out = [("iteration", np.asarray(state["iterations"], dtype=np.int64))]
    rate = optimizer.get_config().get("learning_rate")
    if not isinstance(rate, dict):  # a schedule has no variable
        out.append(("learning_rate", np.asarray(rate, dtype=np.float32)))
    names = list(optimizer.slot_names)
    return out + [(f"slot_{k}_{names[position % len(names)]}", np.asarray(state["slots"][position]))
                  for k, position in enumerate(order)]


# ---- compile settings ---------------------------------------------------------------------------

def _compile_config_of_training(training: dict) -> dict:
    """A legacy ``training_config`` in the shape of Keras 3's ``compile_config``."""
    return {"optimizer": training.get("optimizer_config"), "loss": training.get("loss"),
            "metrics": training.get("metrics"), "loss_weights": training.get("loss_weights")}


def _compile(model, compile_config, dialect: str, path: str) -> None:
    """Compile ``model`` as the file says; a setting lstmfast lacks leaves it uncompiled, with a warning."""
    if not compile_config:
        return
    try:
        optimizer = _optimizer(compile_config.get("optimizer"))
        loss = _loss(compile_config.get("loss"))
        metrics = _metrics(compile_config.get("metrics"))
        if metrics and len(model._output_ids) == 1 and len(metrics) == 1 and isinstance(metrics[0], list):
            metrics = metrics[0]  # tf.keras nests a single output's metrics in a list of their own
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                      loss_weights=compile_config.get("loss_weights"))
    except (ValueError,) + _file_limits.CONFIG_ERRORS as e:
        warnings.warn(f"{path}: the model is loaded uncompiled; its compile settings have no lstmfast "
                      f"equivalent ({e}). Call model.compile(...) before fit.", stacklevel=3)


def _optimizer(spec):
    from .. import optimizers
    from ..optimizers import schedules
    if isinstance(spec, str):
        return optimizers.get(spec)
    if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str):
        raise ValueError(f"optimizer {spec!r:.100}")
    name = spec["class_name"]
    if name == "LossScaleOptimizer":  # Keras's: the inner optimizer nested in the same form
        config = dict(spec.get("config") or {})
        config.pop("name", None)
        inner = _optimizer(config.pop("inner_optimizer", None))
        return optimizers.LossScaleOptimizer(inner, **config)
    cls = optimizers.get(name.lower()).__class__
    config = dict(spec.get("config") or {})
    if "lr" in config:  # Keras 2
        config.setdefault("learning_rate", config.pop("lr"))
    decay = config.pop("decay", 0.0)
    rate = config.get("learning_rate")
    if isinstance(rate, dict):
        rate_cls = getattr(schedules, str(rate.get("class_name")), None)
        if rate_cls is None or not isinstance(rate_cls, type):
            raise ValueError(f"learning-rate schedule {rate.get('class_name')!r}")
        config["learning_rate"] = rate_cls(**{k: v for k, v in (rate.get("config") or {}).items() if k != "name"})
    elif decay:
        config["learning_rate"] = schedules.InverseTimeDecay(float(rate), decay_steps=1, decay_rate=float(decay))
    accepted = _accepted_arguments(cls)
    kwargs = {}
    for key, value in config.items():
        if key in accepted:
            kwargs[key] = value
        elif value in (None, False) or (key == "ema_momentum" and not config.get("use_ema")) \
                or (key == "epsilon" and value is None):
            continue
        else:
            raise ValueError(f"{name} option {key}={value!r}")
    return cls(**kwargs)


def _loss(spec):
    from .. import losses
    if isinstance(spec, list):
        return [_loss(s) for s in spec]
    if isinstance(spec, dict) and "class_name" in spec:
        config = {k: v for k, v in (spec.get("config") or {}).items() if k not in ("dtype",)}
        return losses.deserialize({"class_name": spec["class_name"], "config": config})
    if isinstance(spec, dict):
        raise ValueError("losses given per output name")
    return losses.get(spec)


def _metrics(spec):
    if spec is None:
        return None
    if isinstance(spec, list):
        out = [_metrics(s) if isinstance(s, list) else _metric_name(s) for s in spec]
        return [m for m in out if m is not None]
    raise ValueError(f"metrics {spec!r:.100}")


def _metric_name(spec):
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        name = (spec.get("config") or {}).get("name") or spec.get("class_name")
        return snake_case(name) if name and name[0].isupper() else name
    raise ValueError(f"metric {spec!r:.100}")


# =================================================================================================
# Writing
# =================================================================================================

def save(model: Model, path: PathLike, overwrite: bool = True, metadata: Optional[dict] = None) -> None:
    """Write ``model`` as a Keras file: ``.h5``/``.hdf5`` legacy HDF5, anything else a ``.keras`` zip.
    lstmfast's ``metadata`` and optimizer state go in beside Keras's content (Keras ignores them;
    ``load`` restores them, so ``fit`` continues exactly)."""
    path = os.fspath(path)
    saving.check_savable(model, metadata)
    writer = _KerasWriter(model, metadata)
    if path.lower().endswith((".h5", ".hdf5")):
        writer.write_h5(path, overwrite)
    else:
        writer.write_keras(path, overwrite)


class _KerasWriter:
    """Keras 3's description of an lstmfast model: the config, and where each weight goes."""

    def __init__(self, model, metadata: Optional[dict] = None):
        from ..models import Sequential
        self.model, self.metadata = model, metadata
        self.sequential = isinstance(model, Sequential)
        for layer in model.layers:
            _check_writable_layer(layer)
        self.config = self._model_config()

    # -- config --

    def _model_config(self) -> dict:
        model = self.model
        cfg = model.get_config()
        if self.sequential:
            spec = cfg["input"]
            entries = [_input_entry(spec["batch_shape"], spec.get("dtype"), "input_layer")]
            entries += [self._layer_entry(layer) for layer in model.layers]
            body = {"name": model.name, "trainable": True, "layers": entries}
            return {"module": "keras", "class_name": "Sequential", "config": body, "registered_name": None,
                    "build_config": {"input_shape": spec["batch_shape"]}}
        tensors: Dict[int, dict] = {}
        entries = []
        for spec in cfg["inputs"]:
            entries.append({**_input_entry(spec["batch_shape"], spec.get("dtype"), spec["name"]),
                            "name": spec["name"], "inbound_nodes": []})
            tensors[spec["id"]] = _keras_tensor(spec["batch_shape"], spec.get("dtype") or "float32", spec["name"], 0, 0)
        calls: Dict[str, list] = {}
        node_count: Dict[str, int] = {}
        for step, run in zip(cfg["steps"], model._steps):
            name = step["layer"]
            k = node_count.get(name, 0)
            node_count[name] = k + 1
            args = [tensors[i] for i in step["inputs"]]
            layer = run.layer
            kwargs = dict(step.get("kwargs") or {})
            n_states = len(args) - 1 if step["multi_in"] and getattr(layer, "_accepts_initial_state", False) else 0
            if n_states:
                first, kwargs["initial_state"] = args[0], args[1:]
            else:
                first = args if step["multi_in"] else args[0]
            if step.get("training") is not None:
                kwargs["training"] = bool(step["training"])
            calls.setdefault(name, []).append({"args": [first], "kwargs": kwargs})
            for j, (i, t) in enumerate(zip(step["outputs"], run.node.outputs)):
                tensors[i] = _keras_tensor(list(t.shape), t.dtype, name, k, j)
        for layer in model.layers:
            if not isinstance(layer, layers_module.InputLayer):
                entries.append({**self._layer_entry(layer), "name": layer.name,
                                "inbound_nodes": calls.get(layer.name, [])})
        history = [tensors[i]["config"]["keras_history"] for i in cfg["outputs"]]
        inputs = [tensors[s["id"]]["config"]["keras_history"] for s in cfg["inputs"]]
        body = {"name": model.name, "trainable": True, "layers": entries,
                "input_layers": inputs[0] if cfg["single_input"] and len(inputs) == 1 else inputs,
                "output_layers": history[0] if cfg["single_output"] and len(history) == 1 else history}
        return {"module": "keras.src.models.functional", "class_name": "Functional", "config": body,
                "registered_name": "Functional", "build_config": {"input_shape": None}}

    def _layer_entry(self, layer) -> dict:
        return _keras_inner_entry(layer)

    def compile_config(self) -> Optional[dict]:
        compiled = self.model.get_compile_config()
        if compiled is None:
            return None
        loss = compiled["loss"]
        return {"optimizer": _keras_optimizer(compiled["optimizer"]),
                "loss": [_keras_loss(each) for each in loss] if isinstance(loss, list) else _keras_loss(loss),
                "loss_weights": compiled.get("loss_weights"), "metrics": compiled.get("metrics"),
                "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}

    def extras(self) -> Tuple[dict, list]:
        """lstmfast's own additions, Keras ignores them: the metadata, and the optimizer's state."""
        manifest = {"format": _EXTRAS_FORMAT, "metadata": self.metadata, "optimizer_state": None}
        slots: list = []
        if self.model.get_compile_config() is not None:
            state = self.model.optimizer.get_state()
            slots = [np.asarray(a) for a in state["slots"]]
            manifest["optimizer_state"] = {"iterations": int(state["iterations"]), "slots": len(slots)}
            if "loss_scale" in state:  # a LossScaleOptimizer's [scale, finite steps]
                manifest["optimizer_state"]["loss_scale"] = list(state["loss_scale"])
        return manifest, slots

    # -- weights --

    def layer_weights(self) -> List[Tuple[Any, str, list]]:
        """``(layer, path in model.weights.h5, [(weight path, array)])`` for each layer in Keras's
        ``model.layers`` order, with Keras's attribute-path names (``layers/lstm/cell/vars/0``)."""
        return [(layer, base, _variables(layer, base)) for layer, base in _keras_paths(self.model)]

    def write_weights(self, f, optimizer: bool) -> None:
        """The content of Keras 3's ``model.weights.h5`` (also its ``save_weights`` file) into ``f``."""
        f.create_group("vars").attrs["name"] = self.model.name
        f.create_group("layers")
        for layer, base, variables in self.layer_weights():
            f.require_group(base).create_group("vars").attrs["name"] = layer.name
            for var_path, array in variables:
                f.create_dataset(var_path, data=array)
            for sub_path, sub_name in _sublayer_groups(layer, base):
                f.require_group(sub_path + "/vars").attrs["name"] = sub_name
        if optimizer:
            group = f.create_group("optimizer/vars")
            group.attrs["name"] = self.model.optimizer.name
            for k, (_, array) in enumerate(_state_to_keras(self.model)):
                group.create_dataset(str(k), data=array)

    def write_keras(self, path: str, overwrite: bool) -> None:
        h5py = _h5py()
        config = dict(self.config)
        compiled = self.compile_config()
        if compiled is not None:
            config["compile_config"] = compiled
        metadata = {"keras_version": _KERAS_VERSION_WRITTEN, "date_saved": _now(), "written_by": _writer()}
        with tempfile.TemporaryDirectory(prefix="lstmfast-keras-") as tmp:
            local = os.path.join(tmp, _KERAS_WEIGHTS)
            with h5py.File(local, "w") as f:
                self.write_weights(f, optimizer=compiled is not None)
            with atomic_file(path, "wb", overwrite=overwrite) as out:
                with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
                    z.writestr(_KERAS_METADATA, json.dumps(metadata))
                    z.writestr(_KERAS_CONFIG, json.dumps(config))
                    z.write(local, _KERAS_WEIGHTS)
                    manifest, slots = self.extras()
                    z.writestr(_EXTRAS_JSON, json.dumps(manifest))
                    for k, slot in enumerate(slots):
                        z.writestr(f"{_EXTRAS_SLOTS}/{k:05d}.npy", saving._npy_bytes(slot))

    def write_h5(self, path: str, overwrite: bool) -> None:
        h5py = _h5py()
        config = {k: v for k, v in self.config.items() if k in ("class_name", "config")}
        compiled = self.compile_config()
        directory = os.path.dirname(os.path.abspath(path))
        with tempfile.TemporaryDirectory(prefix="lstmfast-h5-", dir=directory) as tmp:
            local = os.path.join(tmp, "model.h5")
            with h5py.File(local, "w") as f:
                f.attrs["keras_version"] = _KERAS_VERSION_WRITTEN
                f.attrs["backend"] = "lstmfast"
                f.attrs["model_config"] = json.dumps(config)
                if compiled is not None:
                    training = {"loss": compiled["loss"], "metrics": compiled["metrics"],
                                "loss_weights": compiled["loss_weights"], "weighted_metrics": None,
                                "optimizer_config": {k: compiled["optimizer"][k] for k in ("class_name", "config")}}
                    f.attrs["training_config"] = json.dumps(training)
                group = f.create_group("model_weights")
                group.attrs["keras_version"] = _KERAS_VERSION_WRITTEN
                group.attrs["backend"] = "lstmfast"
                names = []
                for layer, _, _ in self.layer_weights():
                    name = layer.name
                    names.append(name)
                    layer_group = group.create_group(name)
                    keys = list(layer.weights)
                    weight_names = [f"{name}/{key}" for key in keys]
                    layer_group.attrs["weight_names"] = np.array([w.encode() for w in weight_names], dtype="S")
                    for weight_name, key in zip(weight_names, keys):
                        layer_group.create_dataset(weight_name, data=np.asarray(layer.weights[key]))
                group.attrs["layer_names"] = np.array([n.encode() for n in names], dtype="S")
                group.create_group("top_level_model_weights").attrs["weight_names"] = np.array([], dtype="S")
                # No "optimizer_weights": Keras 3.15 loads them into an optimizer that then refuses to
                # step ("Unknown variable"), for its own .h5 files too; a fresh optimizer trains.
                manifest, slots = self.extras()
                f.attrs[_EXTRAS_JSON] = json.dumps(manifest)
                extras = f.create_group(_EXTRAS_SLOTS)
                for k, slot in enumerate(slots):
                    extras.create_dataset(f"{k:05d}", data=slot)
            if not overwrite and os.path.exists(path):
                raise FileExistsError(f"{path} exists and overwrite=False")
            with open(local, "rb") as src, atomic_file(path, "wb", overwrite=overwrite) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def save_weights(model: Model, path: PathLike, overwrite: bool = True) -> None:
    """Write ``model``'s weights as Keras 3's ``save_weights`` does (an HDF5 file that Keras's
    ``model.load_weights`` reads, for a Keras model with the same layers)."""
    path = os.fspath(path)
    if not model.built:
        raise ValueError("cannot save the weights of a model that is not built yet")
    writer = _KerasWriter(model)
    with tempfile.TemporaryDirectory(prefix="lstmfast-h5-", dir=os.path.dirname(os.path.abspath(path))) as tmp:
        local = os.path.join(tmp, "weights.h5")
        with _h5py().File(local, "w") as f:
            writer.write_weights(f, optimizer=False)
        with open(local, "rb") as src, atomic_file(path, "wb", overwrite=overwrite) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _keras_paths(model) -> list:
    """``[(layer, path)]``: where Keras 3 keeps each layer of ``model`` in a weights file, by class
    (the second LSTM is ``layers/lstm_1``), in ``model.layers`` order (a functional model's input
    layers first, as in Keras)."""
    used: Dict[str, int] = {}
    return [(layer, _unique("layers/" + snake_case(type(layer).__name__), used)) for layer in model.layers]


def _check_writable_layer(layer) -> None:
    """Refuse what a Keras file cannot say with the same meaning."""
    name = type(layer).__name__
    if name == "Lambda":
        raise ValueError(f"layer {layer.name!r} is a Lambda (Python code); Keras files from lstmfast hold no code")
    for sub in [layer] + list(layer._sublayers()):
        if isinstance(sub, layers_module.LSTM):
            if sub.peephole:
                raise ValueError(f"layer {sub.name!r} has peepholes, which Keras's LSTM does not have")
            if sub.recurrent_activation == "hard_sigmoid":
                raise ValueError(f"layer {sub.name!r}: recurrent_activation='hard_sigmoid' is Keras 2's "
                                 f"clip(0.2 x + 0.5, 0, 1); Keras 3 reads that name as relu6(x + 3) / 6")


def _keras_layer_config(layer) -> dict:
    config = dict(layer.get_config())
    config.pop("batch_input_shape", None)
    if isinstance(layer, layers_module.LSTM):
        config.pop("peephole", None)
        config.pop("peephole_initializer", None)
    if isinstance(layer, layers_module.Bidirectional):
        config["layer"] = _keras_inner_entry(layer.forward_layer)
        config["backward_layer"] = _keras_inner_entry(layer.backward_layer)
    elif isinstance(layer, layers_module.TimeDistributed):
        config["layer"] = _keras_inner_entry(layer.layer)
    for key, value in list(config.items()):
        if key.endswith("_initializer") and isinstance(value, dict):
            config[key] = {"module": "keras.initializers", "class_name": value["class_name"],
                           "config": value.get("config") or {}, "registered_name": None}
    return config


def _keras_optimizer(serialized: dict) -> dict:
    """An optimizer's ``{"class_name", "config"}`` in Keras 3's serialized form (a schedule's and a
    LossScaleOptimizer's inner optimizer nested the same way)."""
    config = dict(serialized.get("config") or {})
    rate = config.get("learning_rate")
    if isinstance(rate, dict):  # a schedule: Keras 3's own, same names and arguments
        config["learning_rate"] = {"module": "keras.optimizers.schedules", **rate, "registered_name": None}
    if isinstance(config.get("inner_optimizer"), dict):
        config["inner_optimizer"] = _keras_optimizer(config["inner_optimizer"])
    return {"module": "keras.optimizers", "class_name": serialized["class_name"], "config": config,
            "registered_name": None}


def _keras_inner_entry(layer) -> dict:
    return {"module": "keras.layers", "class_name": type(layer).__name__, "config": _keras_layer_config(layer),
            "registered_name": None}


def _keras_loss(serialized: dict):
    config = {k: v for k, v in (serialized.get("config") or {}).items()}
    return {"module": "keras.losses", "class_name": serialized["class_name"], "config": config,
            "registered_name": None}


def _input_entry(batch_shape, dtype, name: str) -> dict:
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": list(batch_shape), "dtype": dtype or "float32", "sparse": False,
                       "name": name}, "registered_name": None}


def _keras_tensor(shape, dtype, layer: str, node: int, index: int) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(shape), "dtype": dtype, "keras_history": [layer, node, index]}}


def _unique(name: str, used: Dict[str, int]) -> str:
    """Keras's naming of sibling objects in a weights file: the second "lstm" is "lstm_1"."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _variables(layer, base: str) -> list:
    """``[(path, array)]`` of ``layer``'s weights where Keras 3 keeps them under ``base``."""
    if isinstance(layer, layers_module.Bidirectional):
        return (_variables(layer.forward_layer, base + "/forward_layer")
                + _variables(layer.backward_layer, base + "/backward_layer"))
    if isinstance(layer, layers_module.TimeDistributed):
        return _variables(layer.layer, base + "/layer")
    values = [np.asarray(w) for w in layer.weights.values()]
    own = base + "/cell/vars" if isinstance(layer, layers_module.LSTM) else base + "/vars"
    return [(f"{own}/{k}", v) for k, v in enumerate(values)]


def _sublayer_groups(layer, base: str) -> list:
    """``[(group path, name)]`` of the objects Keras keeps inside ``layer`` (each has a ``vars``)."""
    if isinstance(layer, layers_module.Bidirectional):
        return ([(base + "/forward_layer", layer.forward_layer.name)]
                + _sublayer_groups(layer.forward_layer, base + "/forward_layer")
                + [(base + "/backward_layer", layer.backward_layer.name)]
                + _sublayer_groups(layer.backward_layer, base + "/backward_layer"))
    if isinstance(layer, layers_module.TimeDistributed):
        return [(base + "/layer", layer.layer.name)] + _sublayer_groups(layer.layer, base + "/layer")
    if isinstance(layer, layers_module.LSTM):
        return [(base + "/cell", "lstm_cell")]
    return []


def _now() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")


def _writer() -> str:
    from .. import __version__
    return f"lstmfast {__version__}"
