"""The core layers: InputLayer (and ``Input``), Dense, Activation, Dropout, Masking, Embedding,
RepeatVector, Flatten, Concatenate. Each computes with the array module of its inputs (NumPy, or
CuPy when the model runs on the GPU); see ``lstmfast.layers`` for the protocol."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from .. import activations, backend, ops
from .._typing import Array, Arrays, InputShape, Mask, OutputShape
from ..activations import ActivationLike
from ..initializers import InitializerLike
from .base import (
    Layer,
    _as_array,
    _cast,
    _contiguous,
    _dropout_mask,
    _first_shape,
    _is_shape_list,
    _positive_int,
    _rate,
    _refuse,
    _serialize_initializer,
    register,
)
from .graph import KerasTensor, Node, _shape_tuple

__all__ = ["InputLayer", "Input", "Dense", "Activation", "Dropout", "Masking", "Embedding", "RepeatVector",
           "Flatten", "Concatenate"]


# ---------------------------------------------------------------------------------------------
# Input.
# ---------------------------------------------------------------------------------------------

@register
class InputLayer(Layer):
    """The source of a functional graph: no weights; forward/backward are the identity."""

    def __init__(self, shape: Union[None, int, Sequence[Optional[int]]] = None, batch_size: Optional[int] = None,
                 dtype: DTypeLike = None, batch_shape: Optional[Sequence[Optional[int]]] = None,
                 name: Optional[str] = None, sparse: Optional[bool] = None,
                 input_shape: Union[None, int, Sequence[Optional[int]]] = None,
                 batch_input_shape: Optional[Sequence[Optional[int]]] = None, **kwargs: Any) -> None:
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

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return inputs

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        return inputs, None

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        return grad_outputs

    def get_config(self) -> dict:
        return {"batch_shape": list(self.batch_shape), "dtype": self.dtype, "sparse": False, "name": self.name}


def Input(shape: Union[None, int, Sequence[Optional[int]]] = None, batch_size: Optional[int] = None,
          dtype: DTypeLike = None, name: Optional[str] = None,
          batch_shape: Optional[Sequence[Optional[int]]] = None) -> KerasTensor:
    """A symbolic input tensor (Keras ``keras.Input``): ``shape`` excludes the batch dim."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, batch_shape=batch_shape,
                      name=name).output


# ---------------------------------------------------------------------------------------------
# Dense, Activation, Dropout, Masking.
# ---------------------------------------------------------------------------------------------

@register
class Dense(Layer):
    """``y = activation(x @ kernel + bias)`` on the last axis; ``kernel [in, units]``, ``bias [units]``."""

    supports_masking = True

    def __init__(self, units: int, activation: ActivationLike = None, use_bias: bool = True,
                 kernel_initializer: InitializerLike = "glorot_uniform", bias_initializer: InitializerLike = "zeros",
                 kernel_regularizer: None = None, bias_regularizer: None = None, activity_regularizer: None = None,
                 kernel_constraint: None = None, bias_constraint: None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units", self.name)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        _refuse(self.name, kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                bias_constraint=bias_constraint)

    def build(self, input_shape: InputShape) -> None:
        shape = _first_shape(input_shape)
        if len(shape) < 2 or shape[-1] is None:
            raise ValueError(f"Dense {self.name!r} needs inputs of shape (batch, ..., features) with known "
                             f"features, got {shape}")
        self.add_weight("kernel", (shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        return _first_shape(input_shape)[:-1] + (self.units,)

    def _affine(self, x):
        kernel = self.weights["kernel"]
        if x.shape[-1] != kernel.shape[0]:
            raise ValueError(f"Dense {self.name!r} was built for {kernel.shape[0]} input features, "
                             f"got input of shape {x.shape}")
        # One [N, X] @ [X, units] product on the engine's GEMM (one thread pool per step); a 2-D
        # input is that already.
        precision = self._gemm_precision
        if x.ndim == 2:
            z = ops.matmul(_contiguous(x), kernel, precision=precision)
        else:
            z = ops.matmul(_contiguous(x).reshape(-1, kernel.shape[0]), kernel,
                           precision=precision).reshape(x.shape[:-1] + (self.units,))
        if self.use_bias:
            z += self.weights["bias"]
        return z

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        x = _cast(inputs, self._np_dtype)
        return self.activation(self._affine(x))

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        z = self._affine(x)
        y = self.activation(z)
        return y, (x, z, y)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        x, z, y = cache
        dy = np.zeros_like(y) if grad_outputs is None else _cast(grad_outputs, self._np_dtype)
        dz = self.activation.backward(z, y, dy)
        kernel = self.weights["kernel"]
        flat = dz.ndim == 2  # [N, units] already: the products need no reshapes
        dz2 = dz if flat else dz.reshape(-1, self.units)
        if self.trainable:
            ops.matmul(x if flat else x.reshape(-1, kernel.shape[0]), dz2, trans_a=True, out=self.grads["kernel"],
                       accumulate=True, precision=self._gemm_precision)
            if self.use_bias:
                self.grads["bias"] += dz2.sum(axis=0)
        dx = ops.matmul(dz2, kernel, trans_b=True, precision=self._gemm_precision)
        return dx if flat else dx.reshape(dz.shape[:-1] + (kernel.shape[0],))

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "activation": self.activation.name,
                "use_bias": self.use_bias, "kernel_initializer": _serialize_initializer(self.kernel_initializer),
                "bias_initializer": _serialize_initializer(self.bias_initializer)}


@register
class Activation(Layer):
    """Applies an activation function (see ``lstmfast.activations``)."""

    supports_masking = True

    def __init__(self, activation: ActivationLike, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        y = self.activation(x)
        return y, (x, y)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self.activation(_cast(inputs, self._np_dtype))

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        x, y = cache
        dy = np.zeros_like(y) if grad_outputs is None else _cast(grad_outputs, self._np_dtype)
        return self.activation.backward(x, y, dy)

    def get_config(self) -> dict:
        return {**super().get_config(), "activation": self.activation.name}


@register
class Dropout(Layer):
    """Inverted dropout in training: keep each entry with probability ``1 - rate``, scaled by
    ``1 / (1 - rate)``; the identity otherwise. ``noise_shape`` (None entries = the input's) shares
    one draw over broadcast axes. Draws from ``backend.get_rng()``, or its own generator if ``seed``."""

    supports_masking = True

    def __init__(self, rate: float, noise_shape: Optional[Sequence[Optional[int]]] = None, seed: Optional[int] = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = _rate(rate, "rate", self.name)
        self.noise_shape = None if noise_shape is None else _shape_tuple(noise_shape)
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def _keep_mask(self, x):
        shape = x.shape
        noise_shape = shape
        if self.noise_shape is not None:
            if len(self.noise_shape) != len(shape):
                raise ValueError(f"Dropout {self.name!r}: noise_shape {self.noise_shape} does not match input "
                                 f"rank {len(shape)}")
            noise_shape = tuple(s if n is None else n for n, s in zip(self.noise_shape, shape))
        return _dropout_mask(self, x, noise_shape, self.rate, self._np_dtype)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        x = _cast(inputs, self._np_dtype)
        if not training or self.rate == 0:
            return x
        return x * self._keep_mask(x)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        if not training or self.rate == 0:
            return x, None
        keep = self._keep_mask(x)
        return x * keep, keep

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        if grad_outputs is None:
            return None
        return grad_outputs if cache is None else grad_outputs * cache

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate,
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape), "seed": self.seed}


@register
class Masking(Layer):
    """Masks time steps whose features all equal ``mask_value``: the mask is
    ``any(x != mask_value, axis=-1)`` and masked steps' outputs are zeroed (Keras)."""

    supports_masking = True

    def __init__(self, mask_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
        return np.any(inputs != self.mask_value, axis=-1)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        keep = np.any(x != self.mask_value, axis=-1, keepdims=True)
        return x * keep, keep

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        return None if grad_outputs is None else grad_outputs * cache

    def get_config(self) -> dict:
        return {**super().get_config(), "mask_value": self.mask_value}


# ---------------------------------------------------------------------------------------------
# Embedding.
# ---------------------------------------------------------------------------------------------

@register
class Embedding(Layer):
    """Looks up rows of ``embeddings [input_dim, output_dim]`` for integer indices ``[B, ...]``.

    Float inputs are cast to integers (as Keras does). ``mask_zero``: index 0 is padding and the
    output mask is ``x != 0``. ``input_length`` (Keras 2) only sets the input-shape hint.
    The gradient w.r.t. the indices is None.
    """

    _input_dtype_hint = "int32"

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer: InitializerLike = "uniform",
                 embeddings_regularizer: None = None, activity_regularizer: None = None,
                 embeddings_constraint: None = None, mask_zero: bool = False, input_length: Optional[int] = None,
                 **kwargs: Any) -> None:
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
    def supports_masking(self) -> bool:
        return self.mask_zero

    def build(self, input_shape: InputShape) -> None:
        self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        return _first_shape(input_shape) + (self.output_dim,)

    _checked_ids = None  # the device copy of ids the caller checked on the host (see check_indices)
    _checked_host = None  # and those host ids

    def check_indices(self, ids: Array, device_copy: Optional[Array] = None) -> None:
        """ValueError (naming the index and its position) unless every id lies in ``[0, input_dim)``.
        ``device_copy``: the device array the caller made of these host ``ids``; the layer then
        does not check it again, which would read it back from the device (Model's step on a GPU
        checks each batch on the host before it copies it)."""
        x = _as_array(ids)
        if x.size:
            lo, hi = x.min(), x.max()
            if lo < 0 or hi >= self.input_dim:
                bad = lo if lo < 0 else hi
                where = tuple(int(i) for i in np.argwhere(x == bad)[0])
                raise ValueError(f"Embedding {self.name!r}: index {int(bad)} at position {where} is out of range "
                                 f"for input_dim={self.input_dim} (valid: 0..{self.input_dim - 1})")
        self._checked_ids, self._checked_host = device_copy, (None if device_copy is None else x)

    def _indices(self, inputs):
        x = _as_array(inputs)
        checked = x is self._checked_ids
        if x.dtype.kind not in "iu":
            if x.dtype.kind not in "fb":
                raise TypeError(f"Embedding {self.name!r} needs integer indices, got dtype {x.dtype}")
            x = x.astype(np.intp)
        if not checked:
            self.check_indices(x)
        return x

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self.weights["embeddings"].take(self._indices(inputs), axis=0)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        idx = self._indices(inputs)
        return self.weights["embeddings"].take(idx, axis=0), idx

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        if self.trainable and grad_outputs is not None:
            rows = _contiguous(_cast(grad_outputs, self._np_dtype)).reshape(-1, self.output_dim)
            ops.scatter_add(self.grads["embeddings"], cache.reshape(-1), rows)
        return None

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
        if not self.mask_zero:
            return None
        x = _as_array(inputs)
        if x is self._checked_ids:  # ids checked on the host: the mask too is made there, and kept
            return ops.mirrored_on_device(x, self._checked_host != 0)
        return x != 0

    def get_config(self) -> dict:
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": _serialize_initializer(self.embeddings_initializer),
                "mask_zero": self.mask_zero, "input_length": self.input_length}


# ---------------------------------------------------------------------------------------------
# Reshaping and merging.
# ---------------------------------------------------------------------------------------------

@register
class RepeatVector(Layer):
    """``[B, X] -> [B, n, X]``."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = _positive_int(n, "n", self.name)

    def build(self, input_shape: InputShape) -> None:
        if len(_first_shape(input_shape)) != 2:
            raise ValueError(f"RepeatVector {self.name!r} needs inputs of shape (batch, features), "
                             f"got {input_shape}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        b, x = _first_shape(input_shape)
        return (b, self.n, x)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        return np.repeat(x[:, None, :], self.n, axis=1), None

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        return None if grad_outputs is None else grad_outputs.sum(axis=1)

    def get_config(self) -> dict:
        return {**super().get_config(), "n": self.n}


@register
class Flatten(Layer):
    """``[B, d1, d2, ...] -> [B, d1 * d2 * ...]``."""

    def __init__(self, data_format: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_format = data_format

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shape = _first_shape(input_shape)
        rest = shape[1:]
        return (shape[0], None if any(d is None for d in rest) else math.prod(rest))

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        x = _cast(inputs, self._np_dtype)
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        return None if grad_outputs is None else grad_outputs.reshape(cache)

    def get_config(self) -> dict:
        return {**super().get_config(), "data_format": self.data_format}


@register
class Concatenate(Layer):
    """Concatenates a list of inputs along ``axis`` (counted with the batch dim, as Keras)."""

    supports_masking = True

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)

    def build(self, input_shape: InputShape) -> None:
        if not _is_shape_list(input_shape):
            raise ValueError(f"Concatenate {self.name!r} must be called on a list of inputs, got shape "
                             f"{input_shape}")
        ranks = {len(s) for s in input_shape}
        if len(ranks) != 1:
            raise ValueError(f"Concatenate {self.name!r}: inputs must have the same rank, got shapes {input_shape}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        shapes = [_shape_tuple(s) for s in input_shape] if _is_shape_list(input_shape) else [_shape_tuple(input_shape)]
        axis = self.axis % len(shapes[0])
        sizes = [s[axis] for s in shapes]
        out = list(shapes[0])
        out[axis] = None if any(d is None for d in sizes) else sum(sizes)
        return tuple(out)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        listed = isinstance(inputs, (list, tuple))
        xs = [_cast(x, self._np_dtype) for x in (inputs if listed else [inputs])]
        sizes = [x.shape[self.axis] for x in xs]
        return np.concatenate(xs, axis=self.axis), (np.cumsum(sizes)[:-1], listed)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        splits, listed = cache
        if grad_outputs is None:
            grads = [None] * (len(splits) + 1)
        else:
            grads = np.split(grad_outputs, splits, axis=self.axis)
        return grads if listed else grads[0]

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
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

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis}


