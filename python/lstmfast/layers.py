"""Keras-style layers on NumPy arrays, with explicit forward and backward passes.

``from lstmfast.layers import LSTM, Dense`` is meant to be a drop-in for the Keras layers of the
same names (Keras 3 semantics unless stated). Shapes are batch-major as in Keras: sequences are
``[B, T, X]``; the LSTM engine (``lstmfast.ops``, time-major ``[T, B, X]``) is called inside.

Layers: Input, InputLayer, Dense, Embedding, Dropout, RepeatVector, TimeDistributed, Activation,
Flatten, Concatenate, Masking, LSTM, Bidirectional.

The layer protocol (what ``lstmfast.models`` relies on)
-------------------------------------------------------
``weights`` and ``grads`` are ordered dicts of arrays with the same keys (Keras ``get_weights``
order). ``forward(inputs, training, mask) -> (outputs, cache)`` and ``backward(cache,
grad_outputs) -> grad_inputs`` are pure in the cache, so one layer may appear at several places
in a graph; ``backward`` ADDS the weight gradients into ``grads`` (call ``zero_grads()`` before
a step) and leaves them alone when ``layer.trainable`` is False. ``call`` is the inference path
(no cache). A cache may be used by one ``backward`` only (the LSTM engine consumes it).

* ``inputs``: one array, or a list for a multi-input call (``LSTM``: ``[x, h0, c0]`` when an
  initial state is given; ``Bidirectional``: ``[x, h_fw, c_fw, h_bw, c_bw]``; ``Concatenate``: the
  list of its inputs). ``outputs`` is one array or a list (``return_state``); ``grad_outputs``
  mirrors ``outputs`` and any entry may be None (zero gradient); ``grad_inputs`` mirrors
  ``inputs``, with None where an input is not differentiable (Embedding's integer indices).
* ``mask``: a bool ``[B, T]`` array or None for a single-input call; for a multi-input call either
  None or a list mirroring ``inputs`` (only the first entry of an LSTM's list is used).
  ``compute_mask(inputs, mask)`` gives the output mask (a list for multi-output layers).
* Outputs may share memory with caches or other outputs (``LSTM(return_state=True)`` without
  ``return_sequences`` returns the same array as ``y`` and ``h``): treat them as read-only.
* Arrays of another dtype are cast to the layer's dtype (``backend.floatx()`` at construction).

Functional API
--------------
``Input(shape)`` returns a :class:`KerasTensor` whose ``_history`` is ``(input_layer, 0, 0)``.
Calling a layer on KerasTensors builds it from their shapes, appends a :class:`Node` to
``layer._inbound_nodes`` and returns KerasTensors with ``_history = (layer, node_index,
tensor_index)``. To run a node: pass ``node.inputs[0]``'s value alone when ``len(node.inputs) ==
1`` and the list of values otherwise, i.e. ``layer.forward(v[0] if len(v) == 1 else v, ...)``;
``node.call_kwargs`` holds ``n_inputs`` and, when the user gave it at call time, ``training``
(a forced training flag, e.g. Monte-Carlo dropout: ``Dropout(0.5)(x, training=True)``).
An InputLayer's node has no inputs; its ``forward`` is the identity.

Masks follow Keras: Embedding(mask_zero=True) and Masking make one; layers with
``supports_masking`` pass it on (Dense, Dropout, Activation, Masking, TimeDistributed);
LSTM/Bidirectional consume it (and pass it on with ``return_sequences``); others drop it.
As in Keras, an LSTM with ``go_backwards=True, return_sequences=True`` passes the input mask on
unreversed although its output sequence is reversed.

Serialisation: ``serialize(layer) -> {"class_name", "config"}``, ``deserialize(dict)``; every
``get_config()`` is JSON-serialisable and ``cls.from_config(config)`` rebuilds the layer (unbuilt;
``get_build_config()`` gives the shape to build it with).
"""
from __future__ import annotations

import itertools
import math
import re
from collections.abc import MutableMapping

import numpy as np

from . import activations, backend, initializers, ops
from . import cuda as _cuda

__all__ = ["Layer", "KerasTensor", "Node", "Input", "InputLayer", "Dense", "Embedding", "Dropout",
           "RepeatVector", "TimeDistributed", "Activation", "Flatten", "Concatenate", "Masking", "LSTM",
           "Bidirectional", "serialize", "deserialize", "get", "reset_uids", "LAYERS"]


# ---------------------------------------------------------------------------------------------
# Names, shapes and small helpers.
# ---------------------------------------------------------------------------------------------

_UIDS: dict = {}
_TENSOR_IDS = itertools.count()


def _unique_name(prefix: str) -> str:
    """"lstm", "lstm_1", ... one counter per prefix (as Keras)."""
    n = _UIDS.get(prefix, 0)
    _UIDS[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def reset_uids() -> None:
    """Restart automatic layer names ("dense", "dense_1", ...) from scratch (Keras ``clear_session``)."""
    _UIDS.clear()


def _snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _float_dtype(dtype) -> np.dtype:
    dt = np.dtype(backend.floatx() if dtype is None else dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"layer dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt


def _is_shape_list(shape) -> bool:
    """True for a list of shapes (multi-input), False for one shape."""
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and all(
        isinstance(s, (list, tuple)) for s in shape)


def _shape_tuple(shape):
    return tuple(None if d is None else int(d) for d in shape)


def _first_shape(shape):
    return _shape_tuple(shape[0] if _is_shape_list(shape) else shape)


def _as_array(value, dtype=None):
    if type(value) is np.ndarray and (dtype is None or value.dtype == dtype):
        return value
    if _cuda.device_module(value) is not None:  # a CuPy array stays on its device
        return value if dtype is None or value.dtype == dtype else value.astype(dtype)
    return np.asarray(value, dtype=dtype)


def _xp(a):
    """The array module of ``a``: ``cupy`` for a CuPy array, else ``numpy``."""
    return _cuda.device_module(a) or np


def _index_on(xp, a):
    """A host array (index bookkeeping) where ``xp`` computes: copied to the GPU for CuPy."""
    return a if xp is np else xp.asarray(a)


def _contiguous(a, xp=np):
    return a if a.flags.c_contiguous else xp.ascontiguousarray(a)


_SCATTER_ADD = {np.dtype(np.float32): ops._core.scatter_add_rows_f32,
                np.dtype(np.float64): ops._core.scatter_add_rows_f64}


def _cast(a, dt):
    """``a`` in dtype ``dt`` (no copy when it already is); None stays None."""
    if a is None or (type(a) is np.ndarray and a.dtype == dt):
        return a
    return _as_array(a, dt)


def _serialize_initializer(init):
    if isinstance(init, (str, dict)):
        return init
    if isinstance(init, initializers.Initializer):
        return initializers.serialize(init)
    raise TypeError(f"cannot serialize initializer {init!r}: use a name or an lstmfast Initializer")


def _refuse(layer_name: str, **options) -> None:
    """Keras options lstmfast does not implement: accepted only at their 'off' value."""
    for key, value in options.items():
        if value is not None:
            raise NotImplementedError(f"layer {layer_name!r}: {key} is not supported by lstmfast (got {value!r})")


def _positive_int(value, what: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"layer {layer!r}: {what} must be a positive int, got {value!r}")
    return int(value)


def _rate(value, what: str, layer: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0 <= value < 1:
        raise ValueError(f"layer {layer!r}: {what} must be a float in [0, 1), got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# Symbolic tensors (functional API).
# ---------------------------------------------------------------------------------------------

class KerasTensor:
    """A symbolic tensor: a shape (batch dim None), a dtype, and the layer call that made it.

    ``_history = (layer, node_index, tensor_index)``: ``layer._inbound_nodes[node_index]
    .outputs[tensor_index]`` is this tensor.
    """

    __slots__ = ("shape", "dtype", "name", "_history")

    def __init__(self, shape, dtype="float32", name=None, history=None):
        self.shape = _shape_tuple(shape)
        self.dtype = np.dtype(dtype).name
        self.name = name if name is not None else f"keras_tensor_{next(_TENSOR_IDS)}"
        self._history = history

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        origin = f", from {self._history[0].name!r}" if self._history else ""
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}{origin}>"


class Node:
    """One call of ``layer`` on symbolic ``inputs`` giving ``outputs`` (all lists of KerasTensors)."""

    __slots__ = ("layer", "inputs", "outputs", "call_kwargs")

    def __init__(self, layer, inputs, outputs, call_kwargs):
        self.layer, self.inputs, self.outputs, self.call_kwargs = layer, inputs, outputs, call_kwargs

    def __repr__(self) -> str:
        return (f"<Node {self.layer.name}: {[t.name for t in self.inputs]} -> "
                f"{[t.name for t in self.outputs]}>")


# ---------------------------------------------------------------------------------------------
# Base layer.
# ---------------------------------------------------------------------------------------------

class Layer:
    """Base class; see the module docstring for the protocol."""

    supports_masking = False
    _accepts_initial_state = False
    _input_dtype_hint = None  # dtype of the data this layer expects first in a Sequential (None: floatx)

    def __init__(self, name=None, trainable=True, dtype=None, input_shape=None, input_dim=None,
                 batch_input_shape=None, batch_size=None, weights=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s): "
                            f"{', '.join(sorted(kwargs))}")
        if name is None:
            name = _unique_name(_snake_case(type(self).__name__))
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"layer name must be a non-empty string without '/', got {name!r}")
        self.name = name
        self.trainable = bool(trainable)
        self._np_dtype = _float_dtype(dtype)
        self.dtype = self._np_dtype.name
        if batch_input_shape is not None:
            hint = _shape_tuple(batch_input_shape)
        elif input_shape is not None:
            shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else input_shape
            hint = (batch_size,) + _shape_tuple(shape)
        elif input_dim is not None:
            hint = (batch_size, int(input_dim))
        else:
            hint = None
        self._input_shape_hint = hint
        self._initial_weights = weights
        self.built = False
        self._build_input_shape = None
        self.weights = {}
        self.grads = {}
        self._inbound_nodes = []

    # -- weights --------------------------------------------------------------------------------

    def add_weight(self, name, shape, initializer):
        """Create weight ``name`` (and its zero gradient) from ``initializer``."""
        shape = tuple(int(d) for d in shape)
        value = initializers.get(initializer)(shape, self._np_dtype)
        value = np.ascontiguousarray(value, dtype=self._np_dtype)
        if value.shape != shape:
            raise ValueError(f"layer {self.name!r}: initializer for {name!r} returned shape {value.shape}, "
                             f"expected {shape}")
        self.weights[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (batch dim included, may be None)."""
        self._build_input_shape = input_shape
        self.built = True
        if self._initial_weights is not None:
            initial, self._initial_weights = self._initial_weights, None
            self.set_weights(initial)

    def get_build_config(self) -> dict:
        shape = self._build_input_shape
        if shape is None:
            return {}
        if _is_shape_list(shape):
            return {"input_shape": [list(s) for s in shape]}
        return {"input_shape": list(shape)}

    def build_from_config(self, config: dict) -> None:
        shape = config.get("input_shape")
        if shape is not None and not self.built:
            self.build([tuple(s) for s in shape] if _is_shape_list(shape) else tuple(shape))

    def zero_grads(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def get_weights(self) -> list:
        """Copies of the weights as NumPy arrays (also when they live on the GPU)."""
        return [w.copy() if type(w) is np.ndarray else _cuda.to_host(w) for w in self.weights.values()]

    def _move_to(self, xp) -> None:
        """Put the weights and gradients on the GPU (``xp`` = cupy) or the host (``xp`` None)."""
        for arrays in (self.weights, self.grads):
            for key, value in list(arrays.items()):
                arrays[key] = xp.asarray(value) if xp is not None else _cuda.to_host(value)

    def set_weights(self, weights) -> None:
        """Copy ``weights`` (Keras order) into this layer's arrays, in place."""
        weights = list(weights)
        params = list(self.weights.items())
        if len(weights) != len(params):
            if not self.built and weights:
                raise ValueError(f"layer {self.name!r} is not built yet, so it has no weights to set: build it "
                                 "(call it on data, or give input_shape) before set_weights")
            raise ValueError(f"layer {self.name!r} expects {len(params)} weight arrays "
                             f"({', '.join(k for k, _ in params) or 'none'}), got {len(weights)}")
        checked = []
        for index, ((key, current), new) in enumerate(zip(params, weights)):
            new = np.asarray(_cuda.to_host(new))
            if new.shape != current.shape:
                raise ValueError(f"layer {self.name!r}: weight {index} ({key!r}) expects shape "
                                 f"{current.shape}, got {new.shape}")
            checked.append(new)
        for (_, current), new in zip(params, checked):
            xp = _cuda.device_module(current)
            current[...] = new if xp is None else xp.asarray(new)

    def count_params(self) -> int:
        return int(sum(w.size for w in self.weights.values()))

    @property
    def trainable_weights(self) -> list:
        return list(self.weights.values()) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        return [] if self.trainable else list(self.weights.values())

    # -- computation ----------------------------------------------------------------------------

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs, training=False, mask=None):
        return self.forward(inputs, training, mask)[0]

    def forward(self, inputs, training=False, mask=None):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, cache, grad_outputs):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def compute_mask(self, inputs, mask=None):
        return mask if self.supports_masking else None

    def reset_states(self) -> None:
        """No-op except for stateful layers."""

    # -- config ---------------------------------------------------------------------------------

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._input_shape_hint is not None:
            config["batch_input_shape"] = list(self._input_shape_hint)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- calling --------------------------------------------------------------------------------

    def __call__(self, inputs, *, training=None, mask=None, initial_state=None, **kwargs):
        if kwargs:
            raise TypeError(f"layer {self.name!r} got unexpected call argument(s): {', '.join(sorted(kwargs))}")
        if initial_state is not None:
            if not self._accepts_initial_state:
                raise TypeError(f"layer {self.name!r} ({type(self).__name__}) takes no initial_state")
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            inputs = [inputs] + states
        flat = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if any(isinstance(t, KerasTensor) for t in flat):
            if mask is not None:
                raise ValueError(f"layer {self.name!r}: masks of symbolic calls are computed by the model "
                                 "(compute_mask); do not pass mask= with KerasTensors")
            return self._symbolic_call(list(flat), training)
        if isinstance(inputs, (list, tuple)):
            inputs = [_as_array(t) for t in inputs]
            shape = [t.shape for t in inputs]
        else:
            inputs = _as_array(inputs)
            shape = inputs.shape
        if not self.built:
            self.build(shape)
        return self.call(inputs, training=bool(training), mask=mask)

    def _symbolic_call(self, tensors, training):
        for t in tensors:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"layer {self.name!r}: cannot mix KerasTensors and arrays in one call, got "
                                f"{type(t).__name__}")
        shapes = tensors[0].shape if len(tensors) == 1 else [t.shape for t in tensors]
        if not self.built:
            self.build(shapes)
        out_shapes = self.compute_output_shape(shapes)
        multi = _is_shape_list(out_shapes) and isinstance(out_shapes, list)
        call_kwargs = {"n_inputs": len(tensors)}
        if training is not None:
            call_kwargs["training"] = bool(training)
        node_index = len(self._inbound_nodes)
        node = Node(self, tensors, [], call_kwargs)
        shapes_out = out_shapes if multi else [out_shapes]
        node.outputs = [KerasTensor(s, self.dtype, history=(self, node_index, i)) for i, s in enumerate(shapes_out)]
        self._inbound_nodes.append(node)
        return list(node.outputs) if multi else node.outputs[0]

    @property
    def input(self):
        """The symbolic input(s) of this layer's first call."""
        if not self._inbound_nodes:
            raise AttributeError(f"layer {self.name!r} has not been called on a KerasTensor")
        ins = self._inbound_nodes[0].inputs
        return ins[0] if len(ins) == 1 else list(ins)

    @property
    def output(self):
        """The symbolic output(s) of this layer's first call."""
        if not self._inbound_nodes:
            raise AttributeError(f"layer {self.name!r} has not been called on a KerasTensor")
        outs = self._inbound_nodes[0].outputs
        return outs[0] if len(outs) == 1 else list(outs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}, built={self.built}>"


# ---------------------------------------------------------------------------------------------
# Input.
# ---------------------------------------------------------------------------------------------

class InputLayer(Layer):
    """The source of a functional graph: no weights; forward/backward are the identity."""

    def __init__(self, shape=None, batch_size=None, dtype=None, batch_shape=None, name=None, sparse=None,
                 input_shape=None, batch_input_shape=None, **kwargs):
        if sparse:
            raise NotImplementedError("sparse inputs are not supported by lstmfast")
        for key in ("trainable", "input_dim", "weights"):
            kwargs.pop(key, None)
        super().__init__(name=name, **kwargs)
        batch_shape = batch_shape if batch_shape is not None else batch_input_shape
        shape = shape if shape is not None else input_shape
        if batch_shape is not None:
            batch_shape = _shape_tuple(batch_shape)
        elif shape is not None:
            shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
            batch_shape = (batch_size,) + _shape_tuple(shape)
        else:
            raise ValueError(f"InputLayer {self.name!r} needs shape= or batch_shape=")
        self.batch_shape = batch_shape
        self._input_shape_hint = batch_shape
        self.dtype = np.dtype(backend.floatx() if dtype is None else dtype).name  # may be an int type
        tensor = KerasTensor(batch_shape, self.dtype, name=self.name, history=(self, 0, 0))
        self._inbound_nodes.append(Node(self, [], [tensor], {"n_inputs": 0}))
        self.built = True
        self._build_input_shape = batch_shape

    def call(self, inputs, training=False, mask=None):
        return inputs

    def forward(self, inputs, training=False, mask=None):
        return inputs, None

    def backward(self, cache, grad_outputs):
        return grad_outputs

    def get_config(self):
        return {"batch_shape": list(self.batch_shape), "dtype": self.dtype, "sparse": False, "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):
    """A symbolic input tensor (Keras ``keras.Input``): ``shape`` excludes the batch dim."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, batch_shape=batch_shape,
                      name=name).output


# ---------------------------------------------------------------------------------------------
# Dense, Activation, Dropout, Masking.
# ---------------------------------------------------------------------------------------------

class Dense(Layer):
    """``y = activation(x @ kernel + bias)`` on the last axis; ``kernel [in, units]``, ``bias [units]``."""

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units", self.name)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        _refuse(self.name, kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                bias_constraint=bias_constraint)

    def build(self, input_shape):
        shape = _first_shape(input_shape)
        if len(shape) < 2 or shape[-1] is None:
            raise ValueError(f"Dense {self.name!r} needs inputs of shape (batch, ..., features) with known "
                             f"features, got {shape}")
        self.add_weight("kernel", (shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return _first_shape(input_shape)[:-1] + (self.units,)

    def _affine(self, x):
        kernel = self.weights["kernel"]
        if x.shape[-1] != kernel.shape[0]:
            raise ValueError(f"Dense {self.name!r} was built for {kernel.shape[0]} input features, "
                             f"got input of shape {x.shape}")
        if x.ndim > 2:
            # One [N, X] @ [X, units] product: numpy's batched matmul of 3-D input runs many small ones.
            z = (_contiguous(x, _xp(x)).reshape(-1, kernel.shape[0]) @ kernel).reshape(x.shape[:-1] + (self.units,))
        else:
            z = x @ kernel
        if self.use_bias:
            z += self.weights["bias"]
        return z

    def call(self, inputs, training=False, mask=None):
        x = _cast(inputs, self._np_dtype)
        return self.activation(self._affine(x))

    def forward(self, inputs, training=False, mask=None):
        x = _cast(inputs, self._np_dtype)
        z = self._affine(x)
        y = self.activation(z)
        return y, (x, z, y)

    def backward(self, cache, grad_outputs):
        x, z, y = cache
        dy = np.zeros_like(y) if grad_outputs is None else _cast(grad_outputs, self._np_dtype)
        dz = self.activation.backward(z, y, dy)
        kernel = self.weights["kernel"]
        if self.trainable:
            g = self.grads
            if x.ndim == 2:
                g["kernel"] += x.T @ dz
                if self.use_bias:
                    g["bias"] += dz.sum(axis=0)
            else:
                dz2 = dz.reshape(-1, self.units)
                g["kernel"] += x.reshape(-1, kernel.shape[0]).T @ dz2
                if self.use_bias:
                    g["bias"] += dz2.sum(axis=0)
        if dz.ndim > 2:
            return (dz.reshape(-1, self.units) @ kernel.T).reshape(dz.shape[:-1] + (kernel.shape[0],))
        return dz @ kernel.T

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation.name,
                "use_bias": self.use_bias, "kernel_initializer": _serialize_initializer(self.kernel_initializer),
                "bias_initializer": _serialize_initializer(self.bias_initializer)}


class Activation(Layer):
    """Applies an activation function (see ``lstmfast.activations``)."""

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def forward(self, inputs, training=False, mask=None):
        x = _cast(inputs, self._np_dtype)
        y = self.activation(x)
        return y, (x, y)

    def call(self, inputs, training=False, mask=None):
        return self.activation(_cast(inputs, self._np_dtype))

    def backward(self, cache, grad_outputs):
        x, y = cache
        dy = np.zeros_like(y) if grad_outputs is None else _cast(grad_outputs, self._np_dtype)
        return self.activation.backward(x, y, dy)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name}


class Dropout(Layer):
    """Inverted dropout in training: keep each entry with probability ``1 - rate``, scaled by
    ``1 / (1 - rate)``; the identity otherwise. ``noise_shape`` (None entries = the input's) shares
    one draw over broadcast axes. Draws from ``backend.get_rng()``, or its own generator if ``seed``."""

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _rate(rate, "rate", self.name)
        self.noise_shape = None if noise_shape is None else _shape_tuple(noise_shape)
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def _keep_mask(self, shape):
        noise_shape = shape
        if self.noise_shape is not None:
            if len(self.noise_shape) != len(shape):
                raise ValueError(f"Dropout {self.name!r}: noise_shape {self.noise_shape} does not match input "
                                 f"rank {len(shape)}")
            noise_shape = tuple(s if n is None else n for n, s in zip(self.noise_shape, shape))
        rng = self._rng if self._rng is not None else backend.get_rng()
        keep = rng.random(noise_shape) >= self.rate  # drawn on the host: the same masks as on the CPU
        return keep.astype(self._np_dtype) * self._np_dtype.type(1 / (1 - self.rate))

    def call(self, inputs, training=False, mask=None):
        x = _cast(inputs, self._np_dtype)
        if not training or self.rate == 0:
            return x
        keep = self._keep_mask(x.shape)
        return x * (keep if _xp(x) is np else _xp(x).asarray(keep))

    def forward(self, inputs, training=False, mask=None):
        x = _cast(inputs, self._np_dtype)
        if not training or self.rate == 0:
            return x, None
        keep = self._keep_mask(x.shape)
        if _xp(x) is not np:
            keep = _xp(x).asarray(keep)
        return x * keep, keep

    def backward(self, cache, grad_outputs):
        if grad_outputs is None:
            return None
        return grad_outputs if cache is None else grad_outputs * cache

    def get_config(self):
        return {**super().get_config(), "rate": self.rate,
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape), "seed": self.seed}


class Masking(Layer):
    """Masks time steps whose features all equal ``mask_value``: the mask is
    ``any(x != mask_value, axis=-1)`` and masked steps' outputs are zeroed (Keras)."""

    supports_masking = True

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def compute_mask(self, inputs, mask=None):
        return np.any(inputs != self.mask_value, axis=-1)

    def forward(self, inputs, training=False, mask=None):
        x = _cast(inputs, self._np_dtype)
        keep = np.any(x != self.mask_value, axis=-1, keepdims=True)
        return x * keep, keep

    def backward(self, cache, grad_outputs):
        return None if grad_outputs is None else grad_outputs * cache

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}


# ---------------------------------------------------------------------------------------------
# Embedding.
# ---------------------------------------------------------------------------------------------

class Embedding(Layer):
    """Looks up rows of ``embeddings [input_dim, output_dim]`` for integer indices ``[B, ...]``.

    Float inputs are cast to integers (as Keras does). ``mask_zero``: index 0 is padding and the
    output mask is ``x != 0``. ``input_length`` (Keras 2) only sets the input-shape hint.
    The gradient w.r.t. the indices is None.
    """

    _input_dtype_hint = "int32"

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 activity_regularizer=None, embeddings_constraint=None, mask_zero=False, input_length=None,
                 **kwargs):
        if input_length is not None and not any(k in kwargs for k in ("input_shape", "batch_input_shape")):
            kwargs["input_shape"] = (input_length,)
        super().__init__(**kwargs)
        self.input_dim = _positive_int(input_dim, "input_dim", self.name)
        self.output_dim = _positive_int(output_dim, "output_dim", self.name)
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)
        self.input_length = input_length
        _refuse(self.name, embeddings_regularizer=embeddings_regularizer, activity_regularizer=activity_regularizer,
                embeddings_constraint=embeddings_constraint)
        if self._initial_weights is not None:  # Keras: Embedding(..., weights=[matrix]) builds at once
            self.build(self._input_shape_hint or (None, None))

    @property
    def supports_masking(self):
        return self.mask_zero

    def build(self, input_shape):
        self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return _first_shape(input_shape) + (self.output_dim,)

    def _indices(self, inputs):
        x = _as_array(inputs)
        if x.dtype.kind not in "iu":
            if x.dtype.kind not in "fb":
                raise TypeError(f"Embedding {self.name!r} needs integer indices, got dtype {x.dtype}")
            x = x.astype(np.intp)
        if x.size:
            lo, hi = x.min(), x.max()
            if lo < 0 or hi >= self.input_dim:
                bad = lo if lo < 0 else hi
                where = tuple(int(i) for i in np.argwhere(x == bad)[0])
                raise ValueError(f"Embedding {self.name!r}: index {int(bad)} at position {where} is out of range "
                                 f"for input_dim={self.input_dim} (valid: 0..{self.input_dim - 1})")
        return x

    def call(self, inputs, training=False, mask=None):
        return self.weights["embeddings"].take(self._indices(inputs), axis=0)

    def forward(self, inputs, training=False, mask=None):
        idx = self._indices(inputs)
        return self.weights["embeddings"].take(idx, axis=0), idx

    def backward(self, cache, grad_outputs):
        if self.trainable and grad_outputs is not None:
            out = self.grads["embeddings"]
            xp = _xp(out)
            rows = _contiguous(_cast(grad_outputs, self._np_dtype), xp).reshape(-1, self.output_dim)
            index = cache.reshape(-1)
            add = _SCATTER_ADD.get(out.dtype)
            if xp is not np:
                _cuda.scatter_add(out, index, rows)
            elif add is not None and out.flags.c_contiguous and index.dtype in (np.int32, np.int64):
                add(out, np.ascontiguousarray(index), rows)   # one pass in C++, same order as np.add.at
            else:
                np.add.at(out, index, rows)
        return None

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return _as_array(inputs) != 0

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": _serialize_initializer(self.embeddings_initializer),
                "mask_zero": self.mask_zero, "input_length": self.input_length}


# ---------------------------------------------------------------------------------------------
# Reshaping and merging.
# ---------------------------------------------------------------------------------------------

class RepeatVector(Layer):
    """``[B, X] -> [B, n, X]``."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = _positive_int(n, "n", self.name)

    def build(self, input_shape):
        if len(_first_shape(input_shape)) != 2:
            raise ValueError(f"RepeatVector {self.name!r} needs inputs of shape (batch, features), "
                             f"got {input_shape}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        b, x = _first_shape(input_shape)
        return (b, self.n, x)

    def forward(self, inputs, training=False, mask=None):
        x = _cast(inputs, self._np_dtype)
        return np.repeat(x[:, None, :], self.n, axis=1), None

    def backward(self, cache, grad_outputs):
        return None if grad_outputs is None else grad_outputs.sum(axis=1)

    def get_config(self):
        return {**super().get_config(), "n": self.n}


class Flatten(Layer):
    """``[B, d1, d2, ...] -> [B, d1 * d2 * ...]``."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format

    def compute_output_shape(self, input_shape):
        shape = _first_shape(input_shape)
        rest = shape[1:]
        return (shape[0], None if any(d is None for d in rest) else math.prod(rest))

    def forward(self, inputs, training=False, mask=None):
        x = _cast(inputs, self._np_dtype)
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, cache, grad_outputs):
        return None if grad_outputs is None else grad_outputs.reshape(cache)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Concatenate(Layer):
    """Concatenates a list of inputs along ``axis`` (counted with the batch dim, as Keras)."""

    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def build(self, input_shape):
        if not _is_shape_list(input_shape):
            raise ValueError(f"Concatenate {self.name!r} must be called on a list of inputs, got shape "
                             f"{input_shape}")
        ranks = {len(s) for s in input_shape}
        if len(ranks) != 1:
            raise ValueError(f"Concatenate {self.name!r}: inputs must have the same rank, got shapes {input_shape}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        shapes = [_shape_tuple(s) for s in input_shape] if _is_shape_list(input_shape) else [_shape_tuple(input_shape)]
        axis = self.axis % len(shapes[0])
        sizes = [s[axis] for s in shapes]
        out = list(shapes[0])
        out[axis] = None if any(d is None for d in sizes) else sum(sizes)
        return tuple(out)

    def forward(self, inputs, training=False, mask=None):
        listed = isinstance(inputs, (list, tuple))
        xs = [_cast(x, self._np_dtype) for x in (inputs if listed else [inputs])]
        sizes = [x.shape[self.axis] for x in xs]
        return np.concatenate(xs, axis=self.axis), (np.cumsum(sizes)[:-1], listed)

    def backward(self, cache, grad_outputs):
        splits, listed = cache
        if grad_outputs is None:
            grads = [None] * (len(splits) + 1)
        else:
            grads = np.split(grad_outputs, splits, axis=self.axis)
        return grads if listed else grads[0]

    def compute_mask(self, inputs, mask=None):
        # Keras: a missing mask counts as all-True; the output mask is any() over the last axis
        # of the concatenated per-entry masks.
        if mask is None or not isinstance(mask, (list, tuple)) or all(m is None for m in mask):
            return None
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        full = []
        for x, m in zip(inputs, mask):
            if m is None:
                full.append(np.ones(x.shape, bool))
            else:
                m = np.asarray(m, bool)
                full.append(np.broadcast_to(m.reshape(m.shape + (1,) * (x.ndim - m.ndim)), x.shape))
        return np.concatenate(full, axis=self.axis).any(axis=-1)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


# ---------------------------------------------------------------------------------------------
# LSTM.
# ---------------------------------------------------------------------------------------------

class _MaskPlan:
    """Index maps for a masked batch: each row's unmasked steps are gathered to the front (in
    processing order), the engine runs on the right-padded result with ``lengths``, and outputs
    are scattered back. Depends on the mask only."""

    __slots__ = ("processed", "lengths", "order", "gather_x", "scatter_x", "rows", "cum", "fill", "last_valid")

    def __init__(self, mask, go_backwards, zero_output):
        B, T = mask.shape
        processed = mask[:, ::-1] if go_backwards else mask            # [B,T] processing order
        self.processed = processed
        self.lengths = processed.sum(axis=1, dtype=np.int32)           # [B]
        self.order = np.argsort(~processed, axis=1, kind="stable")     # [B,T] valid steps first
        src = (T - 1) - self.order if go_backwards else self.order     # [B,T] input time of compact step
        self.rows = np.arange(B)[:, None]                              # [B,1]
        self.gather_x = (self.rows.T, src.T)                           # x[b, src[b,j]] -> [T,B,.]
        scatter = np.empty_like(src)
        scatter[self.rows, src] = np.arange(T)                         # inverse of src per row
        self.scatter_x = scatter                                       # dx[b,t] = dxc[scatter[b,t], b]
        self.cum = None
        self.fill = None
        if zero_output:
            self.last_valid = processed[:, -1]                         # output of the last step kept
        else:
            self.last_valid = self.lengths > 0                         # output = last valid step's
        if self.last_valid.all():
            self.last_valid = None

    def sequence_index(self, go_backwards, zero_output):
        """[B,T] index into the zero-prefixed compact outputs giving each output step."""
        if zero_output:
            # Masked steps map to compact slots >= length, which the engine left at zero.
            inverse = self.scatter_x[:, ::-1] if go_backwards else self.scatter_x
            return inverse
        if self.cum is None:
            self.cum = np.cumsum(self.processed, axis=1)                # [B,T] valid steps so far (0..len)
        return self.cum

    def fill_segments(self, T):
        """For the forward-fill backward pass: segment starts in the flattened [B*T] gradient and the
        compact (step, row) each kept segment belongs to."""
        if self.fill is None:
            B = self.cum.shape[0]
            key = (self.rows * (T + 1) + self.cum).ravel()             # nondecreasing in (b, t) order
            starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
            step = key[starts] % (T + 1) - 1
            keep = step >= 0                                           # drop steps before the first valid
            self.fill = (starts, keep, step[keep], key[starts][keep] // (T + 1), B)
        return self.fill


def _recurrent_activation_name(value, layer):
    if isinstance(value, activations.Activation):
        value = value.name
    if value not in ops.RECURRENT_ACTIVATIONS:
        raise ValueError(f"LSTM {layer!r}: recurrent_activation must be 'sigmoid' or 'hard_sigmoid', got {value!r}")
    return value


class LSTM(Layer):
    """Long short-term memory layer (Keras ``LSTM``), backed by the C++ engine.

    Equations and weight layout: ``cpp/lstm.h`` (gate order i, f, c, o; ``kernel [X, 4H]``,
    ``recurrent_kernel [H, 4H]``, ``bias [4H]``, optional ``peephole [3, H]``).

    * ``activation`` must be "tanh" (the engine's cell activation). ``recurrent_activation`` is
      "sigmoid" or "hard_sigmoid", the latter with Keras 2's definition ``clip(0.2 z + 0.5, 0, 1)``
      (Keras 3's hard_sigmoid is ``relu6(z + 3) / 6``: results differ from Keras 3 there).
    * ``peephole=True`` adds ``peephole [3, H]`` (rows i, f, o), initialised with
      ``peephole_initializer`` applied to each row as a ``(H,)`` weight (the default
      "glorot_uniform" then draws U(-sqrt(3/H), sqrt(3/H)), as tf.keras's PeepholeLSTMCell did).
    * ``dropout``: one ``[B, X]`` mask per batch, fixed over time, on the inputs; ``recurrent_dropout``:
      one ``[B, H]`` mask on ``h_{t-1}`` (both training only; input mask drawn first). Keras 3 uses
      one mask for all four gates, as here.
    * Masks (Keras semantics): at a masked step the state is carried unchanged and the output is the
      previous step's output (zeros before the first valid step), or zero with
      ``zero_output_for_mask=True`` (Bidirectional sets it when returning sequences); the final
      state is the one after the last unmasked step.
    * ``stateful=True``: the batch size is fixed by the build shape or the first batch; the final
      state of each batch is the next batch's initial state (no gradient flows between batches);
      ``reset_states()`` zeroes it. A batch of another size raises ValueError.
    * ``unroll``, ``implementation`` and ``use_cudnn`` are accepted and ignored (results are the same).
    """

    supports_masking = True
    _accepts_initial_state = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, return_sequences=False,
                 return_state=False, go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False,
                 peephole=False, peephole_initializer="glorot_uniform", seed=None, time_major=False,
                 implementation=None, use_cudnn="auto", **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units", self.name)
        act = activation.name if isinstance(activation, activations.Activation) else activation
        if act != "tanh":
            raise ValueError(f"LSTM {self.name!r}: only activation='tanh' is supported (the engine's cell "
                             f"activation), got {activation!r}")
        self.activation = "tanh"
        self.recurrent_activation = _recurrent_activation_name(recurrent_activation, self.name)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.unit_forget_bias = bool(unit_forget_bias)
        _refuse(self.name, kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                bias_constraint=bias_constraint)
        if time_major:
            raise NotImplementedError(f"LSTM {self.name!r}: time_major=True is not supported (inputs are "
                                      "[batch, time, features])")
        self.dropout = _rate(dropout, "dropout", self.name)
        self.recurrent_dropout = _rate(recurrent_dropout, "recurrent_dropout", self.name)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.peephole = bool(peephole)
        self.peephole_initializer = peephole_initializer
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)
        self._stateful_batch = None
        self._state_h = None
        self._state_c = None

    # -- building -------------------------------------------------------------------------------

    def build(self, input_shape):
        shape = _first_shape(input_shape)
        if len(shape) != 3 or shape[-1] is None:
            raise ValueError(f"LSTM {self.name!r} needs inputs of shape (batch, timesteps, features) with known "
                             f"features, got {shape}")
        X, H, dt = shape[-1], self.units, self._np_dtype
        self.add_weight("kernel", (X, 4 * H), self.kernel_initializer)
        self.add_weight("recurrent_kernel", (H, 4 * H), self.recurrent_initializer)
        if self.use_bias:
            if self.unit_forget_bias:
                init = initializers.get(self.bias_initializer)
                self.add_weight("bias", (4 * H,), lambda s, d: np.concatenate(
                    [init((H,), dt), np.ones(H, dt), init((2 * H,), dt)]))
            else:
                self.add_weight("bias", (4 * H,), self.bias_initializer)
        if self.peephole:
            init = initializers.get(self.peephole_initializer)
            self.add_weight("peephole", (3, H), lambda s, d: np.stack([init((H,), dt) for _ in range(3)]))
        if self.stateful:
            batch = shape[0]
            if batch is None and self._input_shape_hint is not None:
                batch = self._input_shape_hint[0]
            self._stateful_batch = batch
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        B, T = _first_shape(input_shape)[:2]
        H = self.units
        out = (B, T, H) if self.return_sequences else (B, H)
        return [out, (B, H), (B, H)] if self.return_state else out

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        return [out, None, None] if self.return_state else out

    # -- states ---------------------------------------------------------------------------------

    @property
    def states(self):
        """The stateful layer's current [h, c] (None before the first batch)."""
        if self._state_h is None:
            return None
        return [self._state_h, self._state_c]

    def reset_states(self, states=None) -> None:
        if not self.stateful:
            return
        if states is None:
            if self._state_h is not None:  # new arrays: a pending backward pass may still hold the old ones
                self._state_h = np.zeros_like(self._state_h)
                self._state_c = np.zeros_like(self._state_c)
            return
        h, c = (np.array(s, dtype=self._np_dtype) for s in states)
        B = self._stateful_batch if self._stateful_batch is not None else h.shape[0]
        for name, s in (("h", h), ("c", c)):
            if s.shape != (B, self.units):
                raise ValueError(f"LSTM {self.name!r}: state {name} must have shape {(B, self.units)}, got {s.shape}")
        self._stateful_batch, self._state_h, self._state_c = B, h, c

    # -- computation ----------------------------------------------------------------------------

    def _rng_now(self):
        return self._rng if self._rng is not None else backend.get_rng()

    def _run(self, inputs, training, mask, keep):
        """Shared forward: returns (outputs, cache or None)."""
        dt = self._np_dtype
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 3:
                raise ValueError(f"LSTM {self.name!r}: a list input must be [x, h0, c0], got {len(inputs)} arrays")
            x, h0, c0 = inputs
            h0, c0 = _cast(h0, dt), _cast(c0, dt)
            has_state = True
        else:
            x, h0, c0, has_state = inputs, None, None, False
        if type(x) is not np.ndarray:
            x = _as_array(x)
        xp = _xp(x)  # cupy: the whole layer runs on the GPU
        if x.ndim != 3:
            raise ValueError(f"LSTM {self.name!r} needs input of shape (batch, timesteps, features), got {x.shape}")
        B, T = x.shape[0], x.shape[1]
        if self.stateful:
            if self._stateful_batch is None:
                self._stateful_batch = B
            elif B != self._stateful_batch:
                raise ValueError(f"stateful LSTM {self.name!r} was built for batch size {self._stateful_batch}, "
                                 f"got {B}")
            if not has_state and self._state_h is not None:
                h0, c0 = self._state_h, self._state_c
        if mask is not None:
            if isinstance(mask, (list, tuple)):
                mask = mask[0]
            if mask is not None:
                # The mask only steers index bookkeeping (_MaskPlan), done on the host: from the GPU
                # that is one small [B,T] copy; the index arrays go back to index the data there.
                mask = _cuda.to_host(_as_array(mask, bool))
                if mask.shape != (B, T):
                    raise ValueError(f"LSTM {self.name!r}: mask must have shape (batch, timesteps) = {(B, T)}, "
                                     f"got {mask.shape}")
                if mask.all():
                    mask = None

        plan = None
        if mask is None:
            xs = x[:, ::-1] if self.go_backwards else x
            x_tm = xp.ascontiguousarray(xs.transpose(1, 0, 2), dtype=dt)        # [T,B,X]
            lengths = None
        else:
            plan = _MaskPlan(mask, self.go_backwards, self.zero_output_for_mask)
            if xp is np:
                x_tm = np.asarray(x[plan.gather_x], dtype=dt)                   # [T,B,X] compacted
                lengths = plan.lengths
            else:
                x_tm = xp.ascontiguousarray(x[tuple(xp.asarray(i) for i in plan.gather_x)], dtype=dt)
                lengths = xp.asarray(plan.lengths)
        input_mask = recurrent_mask = None
        if training and self.dropout:
            rng = self._rng_now()
            input_mask = ((rng.random((B, x.shape[2])) >= self.dropout).astype(dt)
                          * dt.type(1 / (1 - self.dropout)))                  # [B,X]
            if xp is not np:  # masks come from the host generator, as on the CPU, then move once
                input_mask = xp.asarray(input_mask)
            x_tm = x_tm * input_mask
        if training and self.recurrent_dropout:
            rng = self._rng_now()
            recurrent_mask = ((rng.random((B, self.units)) >= self.recurrent_dropout).astype(dt)
                              * dt.type(1 / (1 - self.recurrent_dropout)))    # [B,H]
            if xp is not np:
                recurrent_mask = xp.asarray(recurrent_mask)
        w = self.weights
        if h0 is not None:
            h0, c0 = xp.ascontiguousarray(h0), xp.ascontiguousarray(c0)
        act = ops.RECURRENT_ACTIVATIONS[self.recurrent_activation]
        try:
            if xp is not np:
                out = self._forward_on_gpu(xp, x_tm, h0, c0, lengths, act, keep, recurrent_mask)
            else:
                # Arguments are checked here and at build; the engine binding checks them again.
                out = ops._forward(x_tm, w["kernel"], w["recurrent_kernel"], w.get("bias"), h0, c0,
                                   w.get("peephole"), lengths, act, keep, recurrent_mask)
        except (ValueError, TypeError) as err:
            raise type(err)(f"LSTM {self.name!r}: {err}") from None

        h, c = out.h, out.c
        if self.return_sequences:
            if plan is None:
                y = xp.ascontiguousarray(out.y.transpose(1, 0, 2))              # [B,T,H]
            else:
                index = _index_on(xp, plan.sequence_index(self.go_backwards, self.zero_output_for_mask))
                rows = _index_on(xp, plan.rows)
                if self.zero_output_for_mask:
                    y = out.y[index, rows]                                      # [B,T,H]
                else:
                    padded = xp.concatenate([xp.zeros((1, B, self.units), dt), out.y])   # [T+1,B,H]
                    y = padded[index, rows]                                     # [B,T,H] forward-filled
        elif plan is not None and plan.last_valid is not None:
            y = h * _index_on(xp, plan.last_valid)[:, None]
        else:
            y = h
        if self.stateful:
            self._state_h, self._state_c = h.copy(), c.copy()
        outputs = [y, h, c] if self.return_state else y
        if not keep:
            return outputs, None
        return outputs, (out.cache, input_mask, plan, has_state, T)

    def _move_to(self, xp) -> None:
        super()._move_to(xp)
        if self._state_h is not None:
            move = xp.asarray if xp is not None else _cuda.to_host
            self._state_h, self._state_c = move(self._state_h), move(self._state_c)

    def _forward_on_gpu(self, cp, x_tm, h0, c0, lengths, act, keep, recurrent_mask):
        """The engine on CuPy arrays (lstmfast.cuda.ops); the weights must be on x's device."""
        from .cuda import ops as cuda_ops
        w = self.weights
        for key, value in w.items():
            if _cuda.device_module(value) is None:
                raise TypeError(f"weight {key!r} is on the host but the input is a CuPy array (a model's "
                                f"fit/evaluate/predict move its weights to the GPU after "
                                f"lstmfast.set_backend('cuda'))")
        with x_tm.device:
            return cuda_ops._forward(cp, x_tm, w["kernel"], w["recurrent_kernel"], w.get("bias"), h0, c0,
                                     w.get("peephole"), lengths, act, keep, recurrent_mask)

    def call(self, inputs, training=False, mask=None):
        return self._run(inputs, training, mask, False)[0]

    def forward(self, inputs, training=False, mask=None):
        return self._run(inputs, training, mask, True)

    def backward(self, cache, grad_outputs):
        engine_cache, input_mask, plan, has_state, T = cache
        dt = self._np_dtype
        if self.return_state:
            gy, dh, dc = grad_outputs
            dh, dc = _cast(dh, dt), _cast(dc, dt)
        else:
            gy, dh, dc = grad_outputs, None, None
        gy = _cast(gy, dt)
        xp = _xp(engine_cache.x)
        dy = None
        if self.return_sequences:
            if gy is not None:
                if plan is None:
                    dy = xp.ascontiguousarray(gy.transpose(1, 0, 2))                # [T,B,H]
                elif self.zero_output_for_mask:
                    dy = gy[_index_on(xp, plan.rows.T), _index_on(xp, plan.order.T)]   # [T,B,H]
                else:
                    # Segment sums (np.add.reduceat, which CuPy lacks): on the host, from the GPU too.
                    starts, keep, step, row, B = plan.fill_segments(T)
                    sums = np.add.reduceat(_cuda.to_host(gy).reshape(B * T, self.units), starts, axis=0)
                    dy = np.zeros((T, B, self.units), dt)
                    dy[step, row] = sums[keep]
                    dy = _index_on(xp, dy)
        elif gy is not None:
            if plan is not None and plan.last_valid is not None:
                gy = gy * _index_on(xp, plan.last_valid)[:, None]
            dh = gy if dh is None else dh + gy
        dh = None if dh is None else xp.ascontiguousarray(dh)
        dc = None if dc is None else xp.ascontiguousarray(dc)
        if xp is not np:
            from .cuda import ops as cuda_ops
            with engine_cache.x.device:
                g = cuda_ops._backward(xp, engine_cache, dy, dh, dc)
        else:
            g = ops._backward(engine_cache, dy, dh, dc)
        if self.trainable:
            grads = self.grads
            grads["kernel"] += g.dkernel
            grads["recurrent_kernel"] += g.drecurrent_kernel
            if self.use_bias:
                grads["bias"] += g.dbias
            if self.peephole:
                grads["peephole"] += g.dpeephole
        dx_tm = g.dx                                                                # [T,B,X]
        if input_mask is not None:
            dx_tm *= input_mask
        if plan is None:
            if self.go_backwards:
                dx_tm = dx_tm[::-1]
            dx = xp.ascontiguousarray(dx_tm.transpose(1, 0, 2))                     # [B,T,X]
        else:
            dx = dx_tm[_index_on(xp, plan.scatter_x), _index_on(xp, plan.rows)]     # [B,T,X]
        if has_state:
            return [dx, g.dh0, g.dc0]
        return dx

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "recurrent_activation": self.recurrent_activation, "use_bias": self.use_bias,
                "kernel_initializer": _serialize_initializer(self.kernel_initializer),
                "recurrent_initializer": _serialize_initializer(self.recurrent_initializer),
                "bias_initializer": _serialize_initializer(self.bias_initializer),
                "unit_forget_bias": self.unit_forget_bias, "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout, "return_sequences": self.return_sequences,
                "return_state": self.return_state, "go_backwards": self.go_backwards, "stateful": self.stateful,
                "unroll": self.unroll, "zero_output_for_mask": self.zero_output_for_mask,
                "peephole": self.peephole, "peephole_initializer": _serialize_initializer(self.peephole_initializer),
                "seed": self.seed}


# ---------------------------------------------------------------------------------------------
# Wrappers.
# ---------------------------------------------------------------------------------------------

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
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
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


class TimeDistributed(_Wrapper):
    """Applies ``layer`` to every time step: ``[B, T, ...] -> [B*T, ...] -> layer -> [B, T, ...]``.
    Its weights (and grads) are the inner layer's, the same dict objects."""

    supports_masking = True

    def __init__(self, layer, **kwargs):
        self.layer = _layer_from(layer)
        super().__init__(**kwargs)
        self.weights = self.layer.weights
        self.grads = self.layer.grads
        self._finish_init()

    def _sublayers(self):
        return [self.layer]

    def build(self, input_shape):
        shape = _first_shape(input_shape)
        if len(shape) < 3:
            raise ValueError(f"TimeDistributed {self.name!r} needs inputs of shape (batch, timesteps, ...), "
                             f"got {shape}")
        if not self.layer.built:
            self.layer.build((None,) + shape[2:])
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = _first_shape(input_shape)
        inner = self.layer.compute_output_shape((None,) + shape[2:])
        return shape[:2] + tuple(inner[1:])

    def call(self, inputs, training=False, mask=None):
        x = _as_array(inputs)
        B, T = x.shape[:2]
        y = self.layer.call(x.reshape((B * T,) + x.shape[2:]), training)
        return y.reshape((B, T) + y.shape[1:])

    def forward(self, inputs, training=False, mask=None):
        x = _as_array(inputs)
        B, T = x.shape[:2]
        y, inner = self.layer.forward(x.reshape((B * T,) + x.shape[2:]), training)
        return y.reshape((B, T) + y.shape[1:]), (inner, x.shape)

    def backward(self, cache, grad_outputs):
        inner, shape = cache
        if grad_outputs is not None:
            grad_outputs = grad_outputs.reshape((shape[0] * shape[1],) + grad_outputs.shape[2:])
        dx = self.layer.backward(inner, grad_outputs)
        return None if dx is None else dx.reshape(shape[:2] + dx.shape[1:])

    def get_config(self):
        return {**super().get_config(), "layer": serialize(self.layer)}


_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(_Wrapper):
    """Runs a recurrent layer forwards and a ``go_backwards`` copy, and merges the outputs.

    The forward layer is rebuilt from ``layer``'s config as "forward_<name>", the backward one
    (unless ``backward_layer`` is given) as "backward_<name>" with ``go_backwards=True``. With
    ``return_sequences`` both get ``zero_output_for_mask=True`` (Keras), and the backward outputs
    are reversed back in time before merging. Weights: the forward layer's, then the backward
    layer's (keys "forward_lstm/kernel", ...). ``return_state`` gives ``[out, h_fw, c_fw, h_bw,
    c_bw]`` (``[out_fw, out_bw, ...]`` with ``merge_mode=None``); an initial state is
    ``[h_fw, c_fw, h_bw, c_bw]``.
    """

    supports_masking = True
    _accepts_initial_state = True

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
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
            config["go_backwards"] = True
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

    def build(self, input_shape):
        shape = _first_shape(input_shape)
        for layer in self._sublayers():
            if not layer.built:
                layer.build(shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
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

    def compute_mask(self, inputs, mask=None):
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
            outs = [yf, _contiguous(yb, _xp(yb))]
        outputs = outs + states if (self.return_state or mode is None) else outs[0]
        if not keep:
            return outputs, None
        return outputs, (fw_cache, bw_cache, yf, yb, fw_state is not None)

    def call(self, inputs, training=False, mask=None):
        return self._run(inputs, training, mask, False)[0]

    def forward(self, inputs, training=False, mask=None):
        return self._run(inputs, training, mask, True)

    def backward(self, cache, grad_outputs):
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

    def get_config(self):
        config = {**super().get_config(), "layer": serialize(self.forward_layer), "merge_mode": self.merge_mode,
                  "backward_layer": serialize(self.backward_layer)}
        return config


def _remove_prefix(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


# ---------------------------------------------------------------------------------------------
# Serialisation.
# ---------------------------------------------------------------------------------------------

LAYERS = {cls.__name__: cls for cls in (InputLayer, Dense, Embedding, Dropout, RepeatVector, TimeDistributed,
                                        Activation, Flatten, Concatenate, Masking, LSTM, Bidirectional)}


def get(class_name: str):
    """The layer class called ``class_name`` ("LSTM", "Dense", ...)."""
    if class_name not in LAYERS:
        raise ValueError(f"unknown layer class {class_name!r}; known: {', '.join(sorted(LAYERS))}")
    return LAYERS[class_name]


def serialize(layer: Layer) -> dict:
    """``{"class_name": ..., "config": layer.get_config()}`` (JSON-serialisable)."""
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config: dict, custom_objects=None) -> Layer:
    """A new (unbuilt) layer from ``serialize``'s output; ``custom_objects`` maps extra class names."""
    name = config.get("class_name")
    cls = (custom_objects or {}).get(name) or get(name)
    return cls.from_config(dict(config.get("config", {})))
