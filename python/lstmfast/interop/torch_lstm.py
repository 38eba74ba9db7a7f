"""``torch.nn.LSTM`` weights in and out.

PyTorch's LSTM has the gate order of Keras and lstmfast (i, f, g=c, o) and stores each layer's
weights transposed, with two biases::

    weight_ih_l{k}[_reverse]  [4H, X_k]   = kernel.T            X_0 = X, X_k = D*H after layer 0
    weight_hh_l{k}[_reverse]  [4H, H]     = recurrent_kernel.T
    bias_ih_l{k}, bias_hh_l{k}  [4H]      bias = bias_ih + bias_hh (the way back: bias_hh = 0)

so a layer converts by transposing (``_keras_from_torch`` / ``_torch_from_keras``, the only two
places that know the layout). Layer ``k`` of ``num_layers`` becomes an ``LSTM(H, return_sequences=True)``
(the last one returns sequences when ``return_sequences``), wrapped in
``Bidirectional(merge_mode="concat")`` when the module is bidirectional: PyTorch's ``y`` is the
forward and backward outputs concatenated on the last axis, as that merge gives. Dropout between
layers acts only in training and is not carried over.

Reading never runs code: ``.pt``/``.pth``/``.bin`` files go through ``torch.load(weights_only=True)``
(torch needed), ``.safetensors`` files through :mod:`lstmfast.interop.safetensors_io` (no torch).
"""
from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from .. import _file_limits
from . import safetensors_io

if TYPE_CHECKING:  # type names only: models imports this module
    from ..models import Model


__all__ = ["from_torch_lstm", "to_torch_state_dict", "torch_lstm_kwargs"]

_KEY = re.compile(r"^(?P<prefix>.*?)(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(?P<layer>\d+)"
                  r"(?P<reverse>_reverse)?$")
_SAFETENSORS = (".safetensors",)


# ---- the layout, once ---------------------------------------------------------------------------

def _keras_from_torch(weight_ih, weight_hh, bias_ih, bias_hh) -> list:
    """lstmfast LSTM weights ``[kernel [X,4H], recurrent_kernel [H,4H], bias [4H]]`` (no bias when
    PyTorch's are None) from one PyTorch layer and direction. Summed in float64, rounded once."""
    weights = [np.ascontiguousarray(weight_ih.T), np.ascontiguousarray(weight_hh.T)]
    if bias_ih is not None:
        weights.append(bias_ih.astype(np.float64) + bias_hh.astype(np.float64))
    return weights


def _torch_from_keras(kernel, recurrent_kernel, bias) -> Dict[str, np.ndarray]:
    """PyTorch's ``weight_ih``, ``weight_hh`` (and ``bias_ih``, ``bias_hh = 0``) from lstmfast's."""
    out = {"weight_ih": np.ascontiguousarray(kernel.T), "weight_hh": np.ascontiguousarray(recurrent_kernel.T)}
    if bias is not None:
        out["bias_ih"] = np.array(bias)
        out["bias_hh"] = np.zeros_like(bias)
    return out


# ---- reading --------------------------------------------------------------------------------------

def _to_numpy(key: str, value, where: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor: bfloat16 has no NumPy dtype, widen it (exactly)
        value = _dense_tensor(key, value, where).detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        try:
            value = value.numpy()
        except (TypeError, RuntimeError) as e:  # a dtype NumPy lacks
            raise ValueError(f"{where}: {key!r} must hold floating-point weights, got {value.dtype} ({e})") from None
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise ValueError(f"{where}: {key!r} must hold floating-point weights, got dtype {array.dtype}")
    return array


def _dense_tensor(key: str, tensor, where: str):
    """``tensor``, checked to be a plain dense tensor whose storage holds all its elements: a file can
    also declare a sparse or quantized tensor, or a view that repeats a few stored values over a
    huge shape (stride 0), and converting those would allocate what the file does not hold."""
    import torch
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        raise ValueError(f"{where}: {key!r} must be a dense tensor, got layout {tensor.layout}"
                         + (" (quantized)" if tensor.is_quantized else ""))
    stored = tensor.untyped_storage().nbytes()
    if tensor.numel() * tensor.element_size() > stored:
        raise ValueError(f"{where}: {key!r} has shape {list(tensor.shape)} over {stored} stored bytes (a view "
                         f"that repeats them); expected a tensor that holds its {tensor.numel()} values")
    return tensor


def _load_path(path: str) -> Tuple[Mapping, str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"from_torch_lstm: source {path!r} is not a file")
    if path.lower().endswith(_SAFETENSORS):
        return safetensors_io.load_file(path), path
    try:
        import torch
    except ImportError:
        raise ImportError(f"from_torch_lstm: reading {path!r} (a PyTorch pickle file) needs torch: pip install torch; "
                          f"a .safetensors file is read without it") from None
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # torch.save's format (torch tells it so), not the legacy pickle
    if zipped:  # a zip bomb is refused before torch reads it
        try:
            archive = zipfile.ZipFile(path)
        except _file_limits.ZIP_ERRORS + (ValueError,) as e:
            raise ValueError(f"from_torch_lstm: {path!r} starts as torch.save's zip archive but cannot be read as "
                             f"one ({e}): a truncated or damaged file") from None
        with archive:
            _file_limits.check_zip(archive, f"from_torch_lstm: {path!r}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler's errors come in many types; none may run code
        raise ValueError(f"from_torch_lstm: {path!r} could not be read with torch.load(weights_only=True), which "
                         f"loads tensors only and never runs code: {type(e).__name__}: {str(e)[:300]}. "
                         f"Save lstm.state_dict(), not the module") from None
    if isinstance(loaded, Mapping) and not any(hasattr(v, "shape") for v in loaded.values()) \
            and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]  # a training checkpoint {"state_dict": ..., "epoch": ...}
    if not isinstance(loaded, Mapping):
        raise ValueError(f"from_torch_lstm: {path!r} holds a {type(loaded).__name__}, expected a state dict "
                         f"(a mapping of names to tensors)")
    return loaded, path


def _read_source(source) -> Tuple[Mapping, str]:
    """``(state dict, description)`` from a path, a mapping or an ``nn.LSTM`` module."""
    if isinstance(source, (str, os.PathLike)):
        return _load_path(os.fspath(source))
    if isinstance(source, Mapping):
        return source, "the state dict"
    if hasattr(source, "state_dict") and hasattr(source, "hidden_size"):  # an nn.LSTM (or nn.RNNBase) module
        mode = getattr(source, "mode", "LSTM")
        if mode != "LSTM":
            raise ValueError(f"from_torch_lstm: source must be an nn.LSTM, got a module of mode {mode!r}")
        if getattr(source, "proj_size", 0):
            raise ValueError(f"from_torch_lstm: proj_size must be 0 (lstmfast's LSTM has no projection of h), "
                             f"the module has proj_size={source.proj_size}")
        return source.state_dict(), "the module's state dict"
    raise TypeError(f"from_torch_lstm: source must be a state dict, a path to a .pt/.pth or .safetensors file, "
                    f"or an nn.LSTM, got {type(source).__name__}")


class _Spec:
    """What a state dict says about an nn.LSTM: sizes, and per (layer, direction) its arrays."""

    def __init__(self, num_layers, directions, input_size, hidden_size, bias, arrays):
        self.num_layers, self.directions = num_layers, directions
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.arrays = arrays  # {(layer, reverse): {kind: array}}


def _parse(state: Mapping, where: str, prefix: Optional[str]) -> _Spec:
    found: Dict[str, Dict[Tuple[int, bool], Dict[str, object]]] = {}
    for key, value in state.items():
        m = _KEY.match(str(key))
        if m:
            slot = found.setdefault(m["prefix"], {}).setdefault((int(m["layer"]), bool(m["reverse"])), {})
            slot[m["kind"]] = (key, value)
    if prefix is not None:
        if prefix not in found:
            raise ValueError(f"from_torch_lstm: prefix {prefix!r} names no LSTM in {where}; it has "
                             f"{sorted(found) or 'none'}")
    elif len(found) == 1:
        prefix = next(iter(found))
    elif not found:
        keys = ", ".join(repr(k) for k in list(state)[:8])
        raise ValueError(f"from_torch_lstm: {where} has no nn.LSTM weights (weight_ih_l0, weight_hh_l0, ...); "
                         f"its keys: {keys or 'none'}")
    else:
        raise ValueError(f"from_torch_lstm: {where} holds several LSTMs, prefixes {sorted(found)}; choose one with "
                         f"prefix=")
    slots = found[prefix]
    label = f"{where}" + (f" (prefix {prefix!r})" if prefix else "")
    if any("weight_hr" in kinds for kinds in slots.values()):
        raise ValueError(f"from_torch_lstm: proj_size must be 0 (lstmfast's LSTM has no projection of h), {label} "
                         f"has weight_hr_l* weights: an nn.LSTM with proj_size > 0")
    layers = sorted({layer for layer, _ in slots})
    if layers != list(range(len(layers))):
        raise ValueError(f"from_torch_lstm: {label} must have layers 0..{len(layers) - 1}, got layers {layers}")
    reverse = {rev for _, rev in slots}
    directions = 2 if True in reverse else 1
    arrays: Dict[Tuple[int, bool], Dict[str, Optional[np.ndarray]]] = {}
    has_bias = None
    for layer in layers:
        for rev in ([False, True] if directions == 2 else [False]):
            kinds = slots.get((layer, rev))
            suffix = f"_l{layer}" + ("_reverse" if rev else "")
            if kinds is None:
                raise ValueError(f"from_torch_lstm: {label} is bidirectional but has no weights for layer {layer} "
                                 f"{'reverse' if rev else 'forward'} (weight_ih{suffix})")
            for needed in ("weight_ih", "weight_hh"):
                if needed not in kinds:
                    raise ValueError(f"from_torch_lstm: {label} has no {prefix}{needed}{suffix}")
            bias_here = "bias_ih" in kinds or "bias_hh" in kinds
            if bias_here and not ("bias_ih" in kinds and "bias_hh" in kinds):
                raise ValueError(f"from_torch_lstm: {label} has only one of {prefix}bias_ih{suffix} and "
                                 f"{prefix}bias_hh{suffix}; an nn.LSTM has both or neither")
            if has_bias is None:
                has_bias = bias_here
            elif has_bias != bias_here:
                raise ValueError(f"from_torch_lstm: {label} has biases for some layers and not others (layer "
                                 f"{layer}{' reverse' if rev else ''}); an nn.LSTM has them everywhere or nowhere")
            arrays[(layer, rev)] = {kind: _to_numpy(key, value, label) for kind, (key, value) in kinds.items()}
    first = arrays[(0, False)]
    hh = first["weight_hh"]
    if hh.ndim != 2 or hh.shape[0] != 4 * hh.shape[1] or hh.shape[1] == 0:
        raise ValueError(f"from_torch_lstm: {label}: {prefix}weight_hh_l0 must have shape [4H, H], "
                         f"got {list(hh.shape)}")
    H = hh.shape[1]
    ih = first["weight_ih"]
    if ih.ndim != 2 or ih.shape[0] != 4 * H or ih.shape[1] == 0:
        raise ValueError(f"from_torch_lstm: {label}: {prefix}weight_ih_l0 must have shape [4H, X] = "
                         f"[{4 * H}, X], got {list(ih.shape)}")
    X = ih.shape[1]
    for (layer, rev), kinds in arrays.items():
        suffix = f"_l{layer}" + ("_reverse" if rev else "")
        want = {"weight_ih": (4 * H, X if layer == 0 else directions * H), "weight_hh": (4 * H, H),
                "bias_ih": (4 * H,), "bias_hh": (4 * H,)}
        for kind, array in kinds.items():
            if array.shape != want[kind]:
                raise ValueError(f"from_torch_lstm: {label}: {prefix}{kind}{suffix} must have shape "
                                 f"{list(want[kind])} (H={H}, X={X}, {directions} direction(s)), "
                                 f"got {list(array.shape)}")
    return _Spec(len(layers), directions, X, H, bool(has_bias), arrays)


# ---- building -------------------------------------------------------------------------------------

def _model(spec: "_Spec", return_sequences: bool, return_state: bool, name: Optional[str]) -> tuple:
    """``(model, its LSTM or Bidirectional layers)`` of ``spec``'s LSTM stack, weights not set yet."""
    from .. import layers as L
    from ..models import Model, Sequential

    H, D = spec.hidden_size, spec.directions
    recurrent = []
    for k in range(spec.num_layers):
        sequences = return_sequences or k < spec.num_layers - 1
        cell = L.LSTM(H, return_sequences=sequences, return_state=return_state, use_bias=spec.bias)
        recurrent.append(L.Bidirectional(cell, merge_mode="concat") if D == 2 else cell)
    inp = L.Input(shape=(None, spec.input_size))
    if return_state:
        t, states = inp, []
        for layer in recurrent:
            out = layer(t)
            t = out[0]
            states += out[1:]  # LSTM: h, c; Bidirectional: h_fw, c_fw, h_bw, c_bw
        return Model(inp, [t] + states, name=name), recurrent
    model = Sequential(name=name)
    model._extend([inp] + recurrent)  # the graph built once, not after each layer
    return model, recurrent


def from_torch_lstm(source: Any, *, return_sequences: bool = True, return_state: bool = False,
                    prefix: Optional[str] = None, name: Optional[str] = None) -> Model:
    """An lstmfast model computing ``torch.nn.LSTM``'s output from its weights.

    ``source``: a state dict (names to tensors or arrays), a path to a ``.pt``/``.pth`` file of one
    (read with ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` checkpoint works too) or
    to a ``.safetensors`` file (read without torch), or the ``nn.LSTM`` itself. The number of layers,
    the directions, the sizes and whether there are biases come from the weights; an LSTM with
    ``proj_size > 0`` is refused. ``prefix``: the keys' prefix when the state dict holds more than
    the LSTM (``"encoder.lstm."``); found by itself when there is one LSTM.

    The model takes ``x [B, T, X]`` (batch first, Keras's layout; for a module with
    ``batch_first=False`` pass ``x.transpose(1, 0, 2)`` and transpose ``y`` back) and returns
    PyTorch's ``y [B, T, D*H]``; with ``return_sequences=False`` the last layer's final ``h`` per
    direction, concatenated ``[B, D*H]`` (``y[:, -1]`` one way; bidirectional, the backward half is
    ``y[:, 0, H:]``, where that direction ends). ``return_state=True``:
    the outputs are ``[y, h, c, h, c, ...]``, one ``h, c [B, H]`` per layer and direction in
    PyTorch's order, so ``h_n = np.stack(out[1::2])`` and ``c_n = np.stack(out[2::2])`` are
    PyTorch's ``[num_layers * D, B, H]``. Zero initial states, as nn.LSTM without ``(h_0, c_0)``.
    """
    state, where = _read_source(source)
    spec = _parse(state, where, prefix)
    D = spec.directions
    values = sum(a.size for arrays in spec.arrays.values() for a in arrays.values())
    try:  # the weights come from the file: no initializers, and no more values than it holds
        with _file_limits.weights_from_file(values, where):
            model, recurrent = _model(spec, return_sequences, return_state, name)
    except _file_limits.CONFIG_ERRORS as e:  # a stack too deep to build (RecursionError)
        raise _file_limits.file_error(where, e, f"its {spec.num_layers}-layer LSTM cannot be built") from None
    for k, layer in enumerate(recurrent):
        weights = []
        for rev in ([False, True] if D == 2 else [False]):
            a = spec.arrays[(k, rev)]
            weights += _keras_from_torch(a["weight_ih"], a["weight_hh"], a.get("bias_ih"), a.get("bias_hh"))
        layer.set_weights([w.astype(layer.weights[key].dtype) for w, key in zip(weights, layer.weights)])
    return model


# ---- the way back ---------------------------------------------------------------------------------

def _recurrent_stack(model) -> list:
    """The LSTM / Bidirectional layers of ``model`` (a model, a layer or a list of layers), checked
    to be what an nn.LSTM computes: a chain, same units, concat merge, sigmoid, no peepholes."""
    from .. import layers as L
    from ..models import Model

    if isinstance(model, Model):
        steps = model._steps
        for prev, step in zip(steps, steps[1:]):
            if step.multi_in or step.inputs[0] != prev.outputs[0]:
                raise ValueError(f"to_torch_state_dict: model {model.name!r} must be a chain of layers (each "
                                 f"taking the previous one's output); layer {step.layer.name!r} is not")
        if steps and (steps[0].multi_in or steps[0].inputs[0] != model._input_ids[0]):
            raise ValueError(f"to_torch_state_dict: model {model.name!r} must start at its input")
        layers = [step.layer for step in steps]
    elif isinstance(model, (list, tuple)):
        layers = list(model)
    else:
        layers = [model]
    stack = []
    for layer in layers:
        if isinstance(layer, (L.InputLayer, L.Dropout)):
            continue  # identity at inference, as nn.LSTM's dropout between layers
        if isinstance(layer, L.Bidirectional):
            fw, bw = layer.forward_layer, layer.backward_layer
            if layer.merge_mode != "concat" or fw.go_backwards or not bw.go_backwards:
                raise ValueError(f"to_torch_state_dict: Bidirectional {layer.name!r} must merge with "
                                 f"merge_mode='concat' (nn.LSTM concatenates), got {layer.merge_mode!r}")
            cells = [fw, bw]
        elif isinstance(layer, L.LSTM):
            if layer.go_backwards:
                raise ValueError(f"to_torch_state_dict: LSTM {layer.name!r} has go_backwards=True; nn.LSTM runs "
                                 "forwards (or both ways, as a Bidirectional)")
            cells = [layer]
        else:
            raise ValueError(f"to_torch_state_dict: layer {layer.name!r} ({type(layer).__name__}) has no nn.LSTM "
                             f"counterpart; expected a stack of LSTM or Bidirectional(LSTM) layers (Dropout between "
                             f"them is fine)")
        for cell in cells:
            if not cell.built:
                raise ValueError(f"to_torch_state_dict: LSTM {cell.name!r} is not built yet (no weights)")
            if cell.recurrent_activation != "sigmoid" or cell.peephole:
                raise ValueError(f"to_torch_state_dict: LSTM {cell.name!r} must have recurrent_activation='sigmoid'"
                                 f" and no peepholes (nn.LSTM's cell), got {cell.recurrent_activation!r}, "
                                 f"peephole={cell.peephole}")
        stack.append(cells)
    if not stack:
        raise ValueError("to_torch_state_dict: no LSTM or Bidirectional layer found")
    first = stack[0][0]
    for cells in stack:
        for cell in cells:
            for attr in ("units", "use_bias"):
                if getattr(cell, attr) != getattr(first, attr):
                    raise ValueError(f"to_torch_state_dict: all LSTMs must agree on {attr} (nn.LSTM has one), "
                                     f"{first.name!r} has {getattr(first, attr)!r}, {cell.name!r} has "
                                     f"{getattr(cell, attr)!r}")
        if len(cells) != len(stack[0]):
            raise ValueError("to_torch_state_dict: the layers must be all Bidirectional or all LSTM (nn.LSTM's "
                             "bidirectional applies to every layer)")
    return stack


def torch_lstm_kwargs(model: Model) -> dict:
    """The ``nn.LSTM(**kwargs)`` whose ``load_state_dict`` takes ``to_torch_state_dict(model)``
    (``batch_first=True``: lstmfast's layout)."""
    stack = _recurrent_stack(model)
    first = stack[0][0]
    return {"input_size": int(first.weights["kernel"].shape[0]), "hidden_size": first.units,
            "num_layers": len(stack), "bias": first.use_bias, "batch_first": True,
            "bidirectional": len(stack[0]) == 2}


def to_torch_state_dict(model: Model, *, numpy: bool = False) -> dict:
    """The ``nn.LSTM`` state dict of ``model``: a stack of ``LSTM`` or ``Bidirectional(LSTM,
    merge_mode="concat")`` layers (what :func:`from_torch_lstm` builds; Dropout between them is
    dropped), with sigmoid gates, no peepholes and one ``units``. ``bias_ih`` is the bias and
    ``bias_hh`` zeros. ``torch_lstm_kwargs(model)`` gives the matching ``nn.LSTM`` arguments.
    Values are torch tensors, or NumPy arrays with ``numpy=True`` (no torch needed; write them with
    ``safetensors_io.save_file``)."""
    stack = _recurrent_stack(model)
    out: Dict[str, object] = {}
    for k, cells in enumerate(stack):
        for cell, suffix in zip(cells, ("", "_reverse")):
            w = {key: np.asarray(value) for key, value in zip(cell.weights, cell.get_weights())}
            for kind, array in _torch_from_keras(w["kernel"], w["recurrent_kernel"], w.get("bias")).items():
                out[f"{kind}_l{k}{suffix}"] = array
    if numpy:
        return out
    try:
        import torch
    except ImportError:
        raise ImportError("to_torch_state_dict: torch tensors need torch (pip install torch); "
                          "numpy=True gives NumPy arrays") from None
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in out.items()}
