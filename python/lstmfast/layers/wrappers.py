"""Layers that wrap other layers: TimeDistributed (one layer applied at every time step) and
Bidirectional (a recurrent layer run forwards and backwards). Their ``weights`` and ``grads`` are
their sublayers' own dicts (``_sublayers()`` lists the sublayers)."""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .._typing import Arrays, InputShape, Mask, OutputShape
from .base import Layer, _as_array, _contiguous, _first_shape, deserialize, register, serialize

__all__ = ["TimeDistributed", "Bidirectional"]


class _JoinedDict(MutableMapping):
    """Several layers' ``weights`` (or ``grads``) dicts seen as one: keys "<layer name>/<key>",
    in the order of the parts; setting an item sets it in the owning layer's dict."""

    def __init__(self, parts):
        self._parts = parts                     # list of (prefix, dict)

    def _locate(self, key):
        prefix, _, rest = key.partition("/")
        for p, d in self._parts:
            if p == prefix and rest in d:
                return d, rest
        raise KeyError(key)

    def __getitem__(self, key):
        d, rest = self._locate(key)
        return d[rest]

    def __setitem__(self, key, value):
        d, rest = self._locate(key)
        d[rest] = value

    def __delitem__(self, key):
        raise TypeError("weights of a wrapper layer cannot be deleted")

    def __iter__(self):
        for prefix, d in self._parts:
            for key in d:
                yield f"{prefix}/{key}"

    def __len__(self):
        return sum(len(d) for _, d in self._parts)

    def __repr__(self):
        return f"{{{', '.join(f'{k!r}: array{self[k].shape}' for k in self)}}}"


def _layer_from(value):
    if isinstance(value, Layer):
        return value
    if isinstance(value, dict):
        return deserialize(value)
    raise TypeError(f"expected a Layer (or its serialized config), got {type(value).__name__}")


class _Wrapper(Layer):
    """Base of layers that own sublayers; ``trainable`` propagates to them."""

    def _sublayers(self):
        return []

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        if self.__dict__.get("_sublayers_ready"):  # not during construction: sublayers keep their own flag
            for layer in self._sublayers():
                layer.trainable = value

    def _finish_init(self):
        self._sublayers_ready = True
        if not self._trainable:
            self.trainable = False

    @property
    def trainable_weights(self) -> list:
        return [w for layer in self._sublayers() for w in layer.trainable_weights] if self._trainable else []

    @property
    def non_trainable_weights(self) -> list:
        if not self._trainable:
            return list(self.weights.values())
        return [w for layer in self._sublayers() for w in layer.non_trainable_weights]


@register
class TimeDistributed(_Wrapper):
    """Applies ``layer`` to every time step: ``[B, T, ...] -> [B*T, ...] -> layer -> [B, T, ...]``.
    Its weights (and grads) are the inner layer's, the same dict objects."""

    supports_masking = True

    def __init__(self, layer: Union[Layer, Dict[str, Any]], **kwargs: Any) -> None:
        self.layer = _layer_from(layer)
        super().__init__(**kwargs)
        self.weights = self.layer.weights
        self.grads = self.layer.grads
        self._finish_init()

    def _sublayers(self):
        return [self.layer]

    def build(self, input_shape: InputShape) -> None:
        shape = _first_shape(input_shape)
        if len(shape) < 3:
            raise ValueError(f"TimeDistributed {self.name!r} needs inputs of shape (batch, timesteps, ...), "
                             f"got {shape}")
        if not self.layer.built:
            self.layer.build((None,) + shape[2:])
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _first_shape(input_shape)
        inner = self.layer.compute_output_shape((None,) + shape[2:])
        return shape[:2] + tuple(inner[1:])

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        x = _as_array(inputs)
        B, T = x.shape[:2]
        y = self.layer.call(x.reshape((B * T,) + x.shape[2:]), training)
        return y.reshape((B, T) + y.shape[1:])

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _as_array(inputs)
        B, T = x.shape[:2]
        y, inner = self.layer.forward(x.reshape((B * T,) + x.shape[2:]), training)
        return y.reshape((B, T) + y.shape[1:]), (inner, x.shape)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        inner, shape = cache
        if grad_outputs is not None:
            grad_outputs = grad_outputs.reshape((shape[0] * shape[1],) + grad_outputs.shape[2:])
        dx = self.layer.backward(inner, grad_outputs)
        return None if dx is None else dx.reshape(shape[:2] + dx.shape[1:])

    def get_config(self) -> dict:
        return {**super().get_config(), "layer": serialize(self.layer)}


_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@register
class Bidirectional(_Wrapper):
    """Runs a recurrent layer forwards and a ``go_backwards`` copy, and merges the outputs.

    The forward layer is rebuilt from ``layer``'s config as "forward_<name>", the backward one
    (unless ``backward_layer`` is given) as "backward_<name>" with ``go_backwards`` flipped (True
    for the usual forwards layer; Keras 2 flipped it too, Keras 3 refuses a backwards ``layer``). With
    ``return_sequences`` both get ``zero_output_for_mask=True`` (Keras), and the backward outputs
    are reversed back in time before merging. Weights: the forward layer's, then the backward
    layer's (keys "forward_lstm/kernel", ...). ``return_state`` gives ``[out, h_fw, c_fw, h_bw,
    c_bw]`` (``[out_fw, out_bw, ...]`` with ``merge_mode=None``); an initial state is
    ``[h_fw, c_fw, h_bw, c_bw]``.
    """

    supports_masking = True
    _accepts_initial_state = True

    def __init__(self, layer: Union[Layer, Dict[str, Any]], merge_mode: Optional[str] = "concat",
                 backward_layer: Union[None, Layer, Dict[str, Any]] = None, **kwargs: Any) -> None:
        layer = _layer_from(layer)
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Bidirectional merge_mode must be one of {_MERGE_MODES}, got {merge_mode!r}")
        if kwargs.get("input_shape") is None and kwargs.get("batch_input_shape") is None \
                and layer._input_shape_hint is not None:
            kwargs["batch_input_shape"] = layer._input_shape_hint
        super().__init__(**kwargs)
        self.merge_mode = merge_mode
        config = layer.get_config()
        config.pop("batch_input_shape", None)
        config["name"] = "forward_" + _remove_prefix(layer.name, "forward_")
        self.forward_layer = type(layer).from_config(config)
        if backward_layer is None:
            config = layer.get_config()
            config.pop("batch_input_shape", None)
            config["name"] = "backward_" + _remove_prefix(layer.name, "backward_")
            config["go_backwards"] = not layer.go_backwards  # Keras 2 flips it (Keras 3 refuses a backwards layer)
            self.backward_layer = type(layer).from_config(config)
        else:
            self.backward_layer = _layer_from(backward_layer)
        fw, bw = self.forward_layer, self.backward_layer
        if fw.go_backwards == bw.go_backwards:
            raise ValueError("Bidirectional: forward and backward layers must have different go_backwards, got "
                             f"{fw.go_backwards} for both")
        for attr in ("stateful", "return_sequences", "return_state"):
            if getattr(fw, attr) != getattr(bw, attr):
                raise ValueError(f"Bidirectional: forward and backward layers must agree on {attr}, got "
                                 f"{getattr(fw, attr)} and {getattr(bw, attr)}")
        if fw.name == bw.name:
            raise ValueError(f"Bidirectional: forward and backward layers need different names, both are {fw.name!r}")
        fw.zero_output_for_mask = fw.return_sequences
        bw.zero_output_for_mask = bw.return_sequences
        self.return_sequences = fw.return_sequences
        self.return_state = fw.return_state
        self.stateful = fw.stateful
        self.weights = _JoinedDict([(fw.name, fw.weights), (bw.name, bw.weights)])
        self.grads = _JoinedDict([(fw.name, fw.grads), (bw.name, bw.grads)])
        self._finish_init()

    def _sublayers(self):
        return [self.forward_layer, self.backward_layer]

    def build(self, input_shape: InputShape) -> None:
        shape = _first_shape(input_shape)
        for layer in self._sublayers():
            if not layer.built:
                layer.build(shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _first_shape(input_shape)
        out = self.forward_layer.compute_output_shape(shape)
        states = []
        if self.return_state:
            out, states = out[0], out[1:]
        if self.merge_mode == "concat":
            out = out[:-1] + (None if out[-1] is None else 2 * out[-1],)
        outs = [out, out] if self.merge_mode is None else [out]
        if self.return_state:
            return outs + list(states) + list(states)
        return outs if self.merge_mode is None else out

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        outs = [out, out] if self.merge_mode is None else [out]
        if self.return_state:
            return outs + [None] * 4
        return outs if self.merge_mode is None else out

    def reset_states(self) -> None:
        for layer in self._sublayers():
            layer.reset_states()

    def _split_inputs(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 5:
                raise ValueError(f"Bidirectional {self.name!r}: a list input must be [x, h_fw, c_fw, h_bw, c_bw], "
                                 f"got {len(inputs)} arrays")
            return inputs[0], list(inputs[1:3]), list(inputs[3:5])
        return inputs, None, None

    def _run(self, inputs, training, mask, keep):
        x, fw_state, bw_state = self._split_inputs(inputs)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        fw_in = x if fw_state is None else [x] + fw_state
        bw_in = x if bw_state is None else [x] + bw_state
        if keep:
            yf, fw_cache = self.forward_layer.forward(fw_in, training, mask)
            yb, bw_cache = self.backward_layer.forward(bw_in, training, mask)
        else:
            yf = self.forward_layer.call(fw_in, training, mask)
            yb = self.backward_layer.call(bw_in, training, mask)
            fw_cache = bw_cache = None
        states = []
        if self.return_state:
            states = list(yf[1:]) + list(yb[1:])
            yf, yb = yf[0], yb[0]
        if self.return_sequences:
            yb = yb[:, ::-1]
        mode = self.merge_mode
        if mode == "concat":
            outs = [np.concatenate([yf, yb], axis=-1)]
        elif mode == "sum":
            outs = [yf + yb]
        elif mode == "ave":
            outs = [(yf + yb) * yf.dtype.type(0.5)]
        elif mode == "mul":
            outs = [yf * yb]
        else:
            outs = [yf, _contiguous(yb)]
        outputs = outs + states if (self.return_state or mode is None) else outs[0]
        if not keep:
            return outputs, None
        return outputs, (fw_cache, bw_cache, yf, yb, fw_state is not None)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self._run(inputs, training, mask, False)[0]

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        return self._run(inputs, training, mask, True)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        fw_cache, bw_cache, yf, yb, has_state = cache
        mode = self.merge_mode
        grads = list(grad_outputs) if (self.return_state or mode is None) else [grad_outputs]
        n_out = 2 if mode is None else 1
        g_out, g_states = grads[:n_out], grads[n_out:]
        g = g_out[0]
        if mode is None:
            gf, gb = g_out
        elif g is None:
            gf = gb = None
        elif mode == "concat":
            H = yf.shape[-1]
            gf, gb = g[..., :H], g[..., H:]
        elif mode == "sum":
            gf = gb = g
        elif mode == "ave":
            gf = gb = g * g.dtype.type(0.5)
        else:  # mul
            gf, gb = g * yb, g * yf
        if self.return_sequences and gb is not None:
            gb = gb[:, ::-1]
        if self.return_state:
            gf = [gf] + list(g_states[:2])
            gb = [gb] + list(g_states[2:])
        dxf = self.forward_layer.backward(fw_cache, gf)
        dxb = self.backward_layer.backward(bw_cache, gb)
        if has_state:
            return [dxf[0] + dxb[0]] + list(dxf[1:]) + list(dxb[1:])
        return dxf + dxb

    def get_config(self) -> dict:
        config = {**super().get_config(), "layer": serialize(self.forward_layer), "merge_mode": self.merge_mode,
                  "backward_layer": serialize(self.backward_layer)}
        return config


def _remove_prefix(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name
