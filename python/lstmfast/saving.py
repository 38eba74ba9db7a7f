"""Saving and loading models: one file, a zip archive of JSON and ``.npy`` arrays.

    model.json          format tag, architecture, compile settings, the list of weight arrays
    weights/00000.npy   the model's weights in ``get_weights()`` order
    optimizer/00000.npy the optimizer's slots (so training resumes exactly), when compiled

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

from . import layers as layers_module, losses as losses_module, optimizers as optimizers_module
from ._atomic import atomic_file

FORMAT_MODEL = "lstmfast.model"
FORMAT_WEIGHTS = "lstmfast.weights"
FORMAT_VERSION = 1
_MANIFEST = "model.json"

__all__ = ["save_model", "load_model", "read_metadata", "save_weights", "load_weights", "model_config",
           "model_from_config"]


# ---- architecture --------------------------------------------------------------------------------

def _layer_entry(layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def model_config(model) -> dict:
    """The architecture as a JSON-serialisable dict."""
    from .models import Sequential
    if isinstance(model, Sequential):
        spec = model._input_spec
        return {
            "class_name": "Sequential",
            "name": model.name,
            "input": None if spec is None else {"batch_shape": list(spec[0]), "dtype": spec[1]},
            "layers": [_layer_entry(layer) for layer in model._stack],
        }
    inputs = []
    for k, t in enumerate(model._input_tensors):
        inputs.append({"id": model._input_ids[k], "batch_shape": list(t.shape), "dtype": t.dtype,
                       "name": t._history[0].name})
    layer_entries, names = [], {}
    for layer in model._layers:
        names[id(layer)] = layer.name
        layer_entries.append(_layer_entry(layer))
    steps = []
    for step in model._steps:
        steps.append({"layer": step.layer.name, "inputs": list(step.inputs), "outputs": list(step.outputs),
                      "multi_in": step.multi_in, "training": step.training})
    return {"class_name": "Model", "name": model.name, "inputs": inputs, "layers": layer_entries,
            "steps": steps, "outputs": list(model._output_ids),
            "single_input": bool(getattr(model, "_single_input", True)),
            "single_output": bool(getattr(model, "_single_output", True))}


def _registry() -> Dict[str, type]:
    # Only lstmfast's own layer classes: a file can name a class, never make us import one.
    return dict(layers_module.LAYERS)


def _layer_from_entry(entry: dict, registry: Dict[str, type]):
    if not isinstance(entry, dict) or "class_name" not in entry or "config" not in entry:
        raise ValueError(f"bad layer entry in the model file: {entry!r:.200}")
    cls = registry.get(entry["class_name"])
    if cls is None:
        raise ValueError(f"unknown layer class {entry['class_name']!r} in the model file; "
                         f"known: {', '.join(sorted(registry))}")
    return cls.from_config(dict(entry["config"]))


def model_from_config(config: dict):
    """Rebuild a model (uncompiled, freshly initialised weights) from ``model_config`` output."""
    from .models import Model, Sequential
    registry = _registry()
    kind = config.get("class_name")
    if kind == "Sequential":
        model = Sequential(name=config.get("name"))
        spec = config.get("input")
        if spec is not None:
            model.add(layers_module.Input(batch_shape=tuple(spec["batch_shape"]), dtype=spec.get("dtype")))
        for entry in config.get("layers", []):
            model.add(_layer_from_entry(entry, registry))
        return model
    if kind == "Model":
        tensors: Dict[int, Any] = {}
        for spec in config["inputs"]:
            tensors[spec["id"]] = layers_module.Input(batch_shape=tuple(spec["batch_shape"]), dtype=spec.get("dtype"),
                                                      name=spec.get("name"))
        built = {}
        for entry in config["layers"]:
            layer = _layer_from_entry(entry, registry)
            built[layer.name] = layer
        for step in config["steps"]:
            layer = built.get(step["layer"])
            if layer is None:
                raise ValueError(f"the model file calls layer {step['layer']!r}, which it does not define")
            args = [tensors[i] for i in step["inputs"]]
            # A multi-input call (an LSTM's [x, h0, c0] included) replays as a list.
            out = layer(args if step["multi_in"] else args[0], training=step.get("training"))
            outs = out if isinstance(out, (list, tuple)) else [out]
            if len(outs) != len(step["outputs"]):
                raise ValueError(f"layer {layer.name!r} produced {len(outs)} outputs, the file expects "
                                 f"{len(step['outputs'])}")
            for i, t in zip(step["outputs"], outs):
                tensors[i] = t
        inputs = [tensors[s["id"]] for s in config["inputs"]]
        outputs = [tensors[i] for i in config["outputs"]]
        return Model(inputs[0] if config.get("single_input", True) and len(inputs) == 1 else inputs,
                     outputs[0] if config.get("single_output", True) and len(outputs) == 1 else outputs,
                     name=config.get("name"))
    raise ValueError(f"unknown model class {kind!r} in the model file (expected 'Sequential' or 'Model')")


# ---- files ---------------------------------------------------------------------------------------

def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
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


def _weights_manifest(model) -> list:
    entries = []
    for layer in model._layers:
        for key, w in layer.weights.items():
            entries.append({"name": f"{layer.name}/{key}", "shape": list(w.shape), "dtype": str(w.dtype)})
    return entries


def save_model(model, filepath, overwrite: bool = True, metadata: Optional[dict] = None) -> None:
    """``metadata``: a JSON-serialisable dict stored beside the model (the sample tasks keep their
    vocabulary and settings there); ``read_metadata`` returns it without building the model."""
    if metadata is not None:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata must be JSON-serialisable: {e}") from None
    if not model.built:
        raise ValueError("cannot save a model that is not built yet (give it an input shape or fit it once)")
    manifest: Dict[str, Any] = {
        "format": FORMAT_MODEL,
        "format_version": FORMAT_VERSION,
        "lstmfast_version": _version(),
        "model": model_config(model),
        "weights": _weights_manifest(model),
        "compile": None,
        "optimizer_state": None,
        "metadata": metadata,
    }
    groups = {"weights": model.get_weights()}
    if model.compiled:
        args = model._compile_args
        manifest["compile"] = {
            "optimizer": optimizers_module.serialize(model.optimizer),
            "loss": [losses_module.serialize(l) for l in model.loss] if isinstance(model.loss, list)
            else losses_module.serialize(model.loss),
            "metrics": _metric_names(args.get("metrics")),
            "loss_weights": args.get("loss_weights"),
        }
        state = model.optimizer.get_state()
        manifest["optimizer_state"] = {"iterations": int(state["iterations"]), "slots": len(state["slots"])}
        groups["optimizer"] = list(state["slots"])
    _write_atomically(filepath, manifest, groups, overwrite)


def _metric_names(metrics):
    if metrics is None:
        return None
    out = []
    for m in metrics:
        if isinstance(m, (list, tuple)):
            out.append(_metric_names(m))
        elif isinstance(m, str):
            out.append(m)
        else:
            out.append(getattr(m, "name", str(m)))
    return out


def read_metadata(filepath) -> dict:
    """The metadata dict saved with ``model.save(..., metadata=...)`` ({} if none); raises the same
    clear errors as ``load_model`` for files that are not lstmfast models."""
    z, manifest = _open(filepath, FORMAT_MODEL)
    z.close()
    meta = manifest.get("metadata")
    return dict(meta) if isinstance(meta, dict) else {}


def load_model(filepath, compile: bool = True):
    """Load a model saved with ``model.save``: architecture, weights and (if compiled) the optimizer
    with its state, so ``fit`` continues where it stopped."""
    path = os.fspath(filepath)
    z, manifest = _open(path, FORMAT_MODEL)
    with z:
        try:
            model = model_from_config(manifest["model"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path} is damaged: bad architecture ({e!r})") from None
        entries = manifest.get("weights") or []
        weights = _read_arrays(z, "weights", len(entries), path)
        _set_checked(model, weights, entries, path)
        comp = manifest.get("compile")
        if compile and comp:
            loss = comp["loss"]
            loss = [losses_module.deserialize(l) for l in loss] if isinstance(loss, list) else losses_module.deserialize(loss)
            model.compile(optimizer=optimizers_module.deserialize(comp["optimizer"]), loss=loss,
                          metrics=comp.get("metrics"), loss_weights=comp.get("loss_weights"))
            ostate = manifest.get("optimizer_state")
            if ostate and int(ostate["slots"]) > 0:  # an optimizer that never stepped has no slots yet
                slots = _read_arrays(z, "optimizer", int(ostate["slots"]), path)
                model.optimizer.build([w for _, w in model._trainable_pairs()])
                model.optimizer.set_state({"iterations": int(ostate["iterations"]), "slots": slots})
    return model


def _set_checked(model, weights: List[np.ndarray], entries: list, path: str) -> None:
    expected = [w for layer in model._layers for w in layer.weights.values()]
    if len(expected) != len(weights):
        raise ValueError(f"{path}: the file has {len(weights)} weight arrays, the model needs {len(expected)}")
    for k, (want, got) in enumerate(zip(expected, weights)):
        if want.shape != got.shape:
            name = entries[k]["name"] if k < len(entries) else f"#{k}"
            raise ValueError(f"{path}: weight {name} has shape {got.shape}, the model needs {want.shape}")
    model.set_weights([w.astype(e.dtype, copy=False) for w, e in zip(weights, expected)])


def save_weights(model, filepath, overwrite: bool = True) -> None:
    manifest = {"format": FORMAT_WEIGHTS, "format_version": FORMAT_VERSION, "lstmfast_version": _version(),
                "weights": _weights_manifest(model)}
    _write_atomically(filepath, manifest, {"weights": model.get_weights()}, overwrite)


def load_weights(model, filepath) -> None:
    path = os.fspath(filepath)
    z, manifest = _open(path, None)
    with z:
        entries = manifest.get("weights") or []
        _set_checked(model, _read_arrays(z, "weights", len(entries), path), entries, path)


def _version() -> str:
    from . import __version__
    return __version__
