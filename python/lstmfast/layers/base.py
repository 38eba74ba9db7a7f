"""The layer base class, the layer registry (``serialize``/``deserialize``) and the small argument
helpers the layers share. The protocol every layer follows is in ``lstmfast.layers``'s docstring."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import backend, initializers, mixed_precision, ops
from .._file_limits import claim_weight
from .._naming import snake_case, unique_name
from .._typing import Array, Arrays, InputShape, Mask, OutputShape
from ..initializers import InitializerLike
from .graph import KerasTensor, Node, _shape_tuple

__all__ = ["Layer", "LAYERS", "register", "get", "serialize", "deserialize"]


# ---------------------------------------------------------------------------------------------
# Shapes, dtypes and argument checks.
# ---------------------------------------------------------------------------------------------

def _dtype_policy(dtype) -> mixed_precision.DTypePolicy:
    """A layer's policy from its ``dtype`` argument, the error naming the argument."""
    try:
        return mixed_precision.get(dtype)
    except (TypeError, ValueError) as err:
        raise type(err)(f"layer dtype: {err}") from None


def _is_shape_list(shape) -> bool:
    """True for a list of shapes (multi-input), False for one shape."""
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and all(
        isinstance(s, (list, tuple)) for s in shape)


def _first_shape(shape):
    return _shape_tuple(shape[0] if _is_shape_list(shape) else shape)


def _as_array(value, dtype=None):
    """``value`` as an array of ``dtype`` (None: its own) where it lives: NumPy for lists and
    scalars, a device array stays on its device."""
    if type(value) is np.ndarray and (dtype is None or value.dtype == dtype):
        return value
    return ops.array_module(value).asarray(value, dtype=dtype)


def _contiguous(a):
    return a if a.flags.c_contiguous else ops.array_module(a).ascontiguousarray(a)


def _host_copy(a) -> np.ndarray:
    """A NumPy copy of ``a``: the device-to-host copy when ``a`` lives on a device, else ``a.copy()``."""
    host = ops.to_numpy(a)
    return host.copy() if host is a else host


def _cast(a, dt):
    """``a`` in dtype ``dt`` (no copy when it already is); None stays None."""
    if a is None or (type(a) is np.ndarray and a.dtype == dt):
        return a
    return _as_array(a, dt)


def _dropout_mask(layer, like, shape, rate: float, dtype: np.dtype):
    """An inverted-dropout mask on the device of ``like``: ``1 / (1 - rate)`` with probability
    ``1 - rate``, else 0. On the host drawn from the layer's seeded generator (``layer._rng``; None:
    ``backend.get_rng()``); on a GPU by the device's own generator (``ops.device_dropout_mask``),
    with the layer's key drawn once from that same host generator."""
    rng = layer._rng if layer._rng is not None else backend.get_rng()

    def key():
        if "_dropout_key" not in layer.__dict__:
            layer._dropout_key = tuple(int(k) for k in rng.integers(0, 2 ** 32, 2))
        return layer._dropout_key

    keep = ops.device_dropout_mask(like, shape, rate, dtype, key)
    if keep is not None:
        return keep
    return ops.to_device_of(like, (rng.random(shape) >= rate).astype(dtype) * dtype.type(1 / (1 - rate)))


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
# Base layer.
# ---------------------------------------------------------------------------------------------

_L = TypeVar("_L", bound="Layer")


class Layer:
    """Base class; see ``lstmfast.layers``'s docstring for the protocol.

    ``weights`` and ``grads`` hold the weight arrays (Keras ``get_weights`` order) and their
    gradients; the keys in ``non_trainable`` name weights that are state, not parameters
    (BatchNormalization's moving statistics): saved, loaded and counted like the others, but never
    given to the optimizer, their gradients left zero. ``buffers`` holds non-weight arrays that
    follow the model to its device (an LSTM's stateful "h", "c").
    """

    supports_masking = False
    _accepts_initial_state = False
    _extra_call_kwargs: tuple = ()  # call-time keyword arguments passed on to forward/call/compute_mask
    _input_dtype_hint = None  # dtype of the data this layer expects first in a Sequential (None: floatx)

    def __init__(self, name: Optional[str] = None, trainable: bool = True, dtype: DTypeLike = None,
                 input_shape: Union[None, int, Sequence[Optional[int]]] = None, input_dim: Optional[int] = None,
                 batch_input_shape: Optional[Sequence[Optional[int]]] = None, batch_size: Optional[int] = None,
                 weights: Optional[Sequence[ArrayLike]] = None, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s): "
                            f"{', '.join(sorted(kwargs))}")
        if name is None:
            name = unique_name(snake_case(type(self).__name__))
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"layer name must be a non-empty string without '/', got {name!r}")
        self.name = name
        self.trainable = bool(trainable)
        self._dtype_policy = _dtype_policy(dtype)
        self._gemm_precision = self._dtype_policy.gemm_precision  # what the products pass to ops (per step)
        self._np_dtype = np.dtype(self._dtype_policy.variable_dtype)
        self.dtype = self._np_dtype.name  # the variables' dtype, as Keras's ``layer.dtype``
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
        self.non_trainable = set()  # keys of ``weights`` the optimizer never updates
        self.buffers = {}
        self._inbound_nodes = []

    # -- weights --------------------------------------------------------------------------------

    def add_weight(self, name: str, shape: Sequence[int], initializer: InitializerLike,
                   trainable: bool = True) -> np.ndarray:
        """Create weight ``name`` (and its zero gradient) from ``initializer``; ``trainable=False``
        makes it state the optimizer never updates (its key goes into ``non_trainable``)."""
        shape = tuple(int(d) for d in shape)
        value = claim_weight(self.name, name, shape, self._np_dtype)  # built from a file: zeros, its size checked
        if value is None:
            value = initializers.get(initializer)(shape, self._np_dtype)
            value = np.array(value, dtype=self._np_dtype, order="C")  # a fresh C array (0-d stays 0-d)
        if value.shape != shape:
            raise ValueError(f"layer {self.name!r}: initializer for {name!r} returned shape {value.shape}, "
                             f"expected {shape}")
        self.weights[name] = value
        self.grads[name] = np.zeros_like(value)
        if not trainable:
            self.non_trainable.add(name)
        return value

    def build(self, input_shape: InputShape) -> None:
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
        return [_host_copy(w) for w in self.weights.values()]

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
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
            new = ops.to_numpy(new)
            if new.shape != current.shape:
                raise ValueError(f"layer {self.name!r}: weight {index} ({key!r}) expects shape "
                                 f"{current.shape}, got {new.shape}")
            checked.append(new)
        for (_, current), new in zip(params, checked):
            current[...] = ops.to_device_of(current, new)

    def count_params(self) -> int:
        """All weights' entries, trainable or not (as Keras)."""
        return int(sum(w.size for w in self.weights.values()))

    def _sublayers(self) -> list:
        """The layers whose weights this layer's ``weights`` shows (wrappers); none here."""
        return []

    def trainable_pairs(self) -> list:
        """``(gradient, weight)`` for each weight the optimizer updates, in ``weights`` order: none
        when ``trainable`` is False, never those in ``non_trainable``; a wrapper's come from its
        sublayers."""
        if not self.trainable:
            return []
        sublayers = self._sublayers()
        if sublayers:
            return [pair for layer in sublayers for pair in layer.trainable_pairs()]
        return [(self.grads[key], w) for key, w in self.weights.items() if key not in self.non_trainable]

    @property
    def trainable_weights(self) -> list:
        return [w for _, w in self.trainable_pairs()]

    @property
    def non_trainable_weights(self) -> list:
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights.values() if id(w) not in trainable]

    # -- computation ----------------------------------------------------------------------------

    @property
    def dtype_policy(self) -> mixed_precision.DTypePolicy:
        return self._dtype_policy

    @dtype_policy.setter
    def dtype_policy(self, value: Any) -> None:
        """Another policy with the same variable dtype (the weights keep theirs)."""
        policy = _dtype_policy(value)
        if policy.variable_dtype != self._np_dtype.name:
            raise ValueError(f"layer {self.name!r}: dtype_policy {policy.name!r} keeps variables in "
                             f"{policy.variable_dtype}, this layer's are {self._np_dtype.name}")
        self._dtype_policy, self._gemm_precision = policy, policy.gemm_precision

    @property
    def variable_dtype(self) -> str:
        return self.dtype_policy.variable_dtype

    @property
    def compute_dtype(self) -> str:
        """The policy's compute dtype, as Keras reports it (``lstmfast.mixed_precision`` says what
        lstmfast computes in: the variables' dtype, with bfloat16 products under mixed_bfloat16)."""
        return self.dtype_policy.compute_dtype

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        return input_shape

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self.forward(inputs, training, mask)[0]

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
        return mask if self.supports_masking else None

    def reset_states(self) -> None:
        """No-op except for stateful layers."""

    # -- config ---------------------------------------------------------------------------------

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype_policy.name}
        if self._input_shape_hint is not None:
            config["batch_input_shape"] = list(self._input_shape_hint)
        return config

    @classmethod
    def from_config(cls: Type[_L], config: Dict[str, Any]) -> _L:
        return cls(**config)

    # -- calling --------------------------------------------------------------------------------

    def __call__(self, inputs: Any, *, training: Optional[bool] = None, mask: Mask = None,
                 initial_state: Union[None, Array, Sequence[Array]] = None, **kwargs: Any) -> Any:
        unexpected = sorted(set(kwargs) - set(self._extra_call_kwargs))
        if unexpected:
            accepted = ", ".join(("training", "mask") + self._extra_call_kwargs
                                 + (("initial_state",) if self._accepts_initial_state else ()))
            raise TypeError(f"layer {self.name!r} got unexpected call argument(s): {', '.join(unexpected)} "
                            f"(it accepts {accepted})")
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
            return self._symbolic_call(list(flat), training, kwargs)
        if isinstance(inputs, (list, tuple)):
            inputs = [_as_array(t) for t in inputs]
            shape = [t.shape for t in inputs]
        else:
            inputs = _as_array(inputs)
            shape = inputs.shape
        if not self.built:
            self.build(shape)
        return self.call(inputs, training=bool(training), mask=mask, **kwargs)

    def _symbolic_call(self, tensors, training, kwargs=None):
        for t in tensors:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"layer {self.name!r}: cannot mix KerasTensors and arrays in one call, got "
                                f"{type(t).__name__}")
        shapes = tensors[0].shape if len(tensors) == 1 else [t.shape for t in tensors]
        if not self.built:
            self.build(shapes)
        kwargs = kwargs or {}
        out_shapes = self.compute_output_shape(shapes, **kwargs)
        multi = _is_shape_list(out_shapes) and isinstance(out_shapes, list)
        call_kwargs = {"n_inputs": len(tensors)}
        if training is not None:
            call_kwargs["training"] = bool(training)
        call_kwargs.update(kwargs)  # the layer's own call-time arguments (Node.layer_kwargs)
        node_index = len(self._inbound_nodes)
        node = Node(self, tensors, [], call_kwargs)
        shapes_out = out_shapes if multi else [out_shapes]
        node.outputs = [KerasTensor(s, self.dtype, history=(self, node_index, i)) for i, s in enumerate(shapes_out)]
        self._inbound_nodes.append(node)
        return list(node.outputs) if multi else node.outputs[0]

    @property
    def input(self) -> Union[KerasTensor, List[KerasTensor]]:
        """The symbolic input(s) of this layer's first call."""
        return self._first_call_tensors("inputs")

    @property
    def output(self) -> Union[KerasTensor, List[KerasTensor]]:
        """The symbolic output(s) of this layer's first call."""
        return self._first_call_tensors("outputs")

    def _first_call_tensors(self, side: str):
        """``side`` ("inputs" or "outputs") of the first node: one KerasTensor, or a list of them."""
        if not self._inbound_nodes:
            raise AttributeError(f"layer {self.name!r} has not been called on a KerasTensor")
        tensors = getattr(self._inbound_nodes[0], side)
        return tensors[0] if len(tensors) == 1 else list(tensors)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}, built={self.built}>"


# ---------------------------------------------------------------------------------------------
# Registry and serialisation.
# ---------------------------------------------------------------------------------------------

LAYERS: dict = {}  # class name -> class, for lstmfast's own layers only (a file never names a new class)


def register(cls: Type[_L]) -> Type[_L]:
    """Class decorator: ``deserialize`` and ``get`` know ``cls`` by its class name."""
    LAYERS[cls.__name__] = cls
    return cls


def get(class_name: str) -> Type[Layer]:
    """The layer class called ``class_name`` ("LSTM", "Dense", ...)."""
    if class_name not in LAYERS:
        raise ValueError(f"unknown layer class {class_name!r}; known: {', '.join(sorted(LAYERS))}")
    return LAYERS[class_name]


def serialize(layer: Layer) -> dict:
    """``{"class_name": ..., "config": layer.get_config()}`` (JSON-serialisable)."""
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config: dict, custom_objects: Optional[Mapping[str, Type[Layer]]] = None) -> Layer:
    """A new (unbuilt) layer from ``serialize``'s output; ``custom_objects`` maps extra class names."""
    name = config.get("class_name")
    cls = (custom_objects or {}).get(name) or get(name)
    return cls.from_config(dict(config.get("config", {})))
