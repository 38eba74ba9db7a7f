"""Weight initializers (Keras 3 definitions), drawing from ``backend.get_rng()``.

An initializer is called as ``init(shape, dtype)`` and returns a new array of that shape and dtype
(default ``backend.floatx()``). Values are drawn in float64 and then cast, so a float32 and a
float64 layer seeded alike start from the same numbers (up to rounding). An initializer given a
``seed`` draws from its own generator made from that seed on every call, so it returns the same
values each time (as Keras 3 does with an integer seed).

Fans (Keras ``compute_fans``): shape ``()`` -> 1, 1; ``(n,)`` -> n, n; ``(a, b)`` -> a, b; higher
ranks multiply the receptive field (all but the last two dims) into both.

``VarianceScaling(scale, mode, distribution)``: n = fan_in, fan_out or their mean (``mode``),
``s = scale / max(1, n)``; "uniform" draws U(-sqrt(3 s), sqrt(3 s)); "truncated_normal" draws
N(0, sqrt(s) / .87962566103423978) cut at two standard deviations (redrawn beyond);
"untruncated_normal" draws N(0, sqrt(s)).
``glorot_uniform``/``glorot_normal`` = VarianceScaling(1, fan_avg, uniform/truncated_normal),
``he_*`` = (2, fan_in, ...), ``lecun_*`` = (1, fan_in, ...).
``orthogonal``: QR of a standard-normal matrix of shape (max(rows, cols), min(rows, cols)), columns
multiplied by sign(diag(R)), transposed when rows < cols, times ``gain`` (1); rows = prod(shape[:-1]).
``uniform``/``random_uniform``: U(-0.05, 0.05); ``normal``/``random_normal``: N(0, 0.05);
``truncated_normal``: N(0, 0.05) cut at two standard deviations; ``zeros``, ``ones``, ``Constant(v)``,
``identity`` (2-D only, gain times the identity).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type, Union

import numpy as np
from numpy.typing import DTypeLike

from . import backend

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomUniform", "RandomNormal", "TruncatedNormal",
           "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
           "LecunNormal", "Orthogonal", "Identity", "get", "serialize", "deserialize"]

_TRUNCATED_STDDEV_CORRECTION = 0.87962566103423978  # stddev of N(0,1) cut at +-2


def compute_fans(shape: Sequence[int]) -> Tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape``, as Keras computes them."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _dtype(dtype):
    dtype = np.dtype(backend.floatx() if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"initializers make float arrays; dtype must be a float type, got {dtype}")
    return dtype


class Initializer:
    """Base class: ``init(shape, dtype=None) -> np.ndarray``; ``get_config()`` gives the constructor args."""

    seed = None

    def __call__(self, shape: Sequence[int], dtype: DTypeLike = None) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        return np.asarray(self._draw(shape, self._rng()), dtype=_dtype(dtype))

    def _rng(self) -> np.random.Generator:
        return backend.get_rng() if self.seed is None else np.random.default_rng(self.seed)

    def _draw(self, shape, rng):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> Initializer:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def _draw(self, shape, rng):
        return np.zeros(shape)


class Ones(Initializer):
    def _draw(self, shape, rng):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def _draw(self, shape, rng):
        return np.full(shape, self.value)

    def get_config(self) -> dict:
        return {"value": self.value}


class RandomUniform(Initializer):
    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: Optional[int] = None) -> None:
        self.minval, self.maxval, self.seed = float(minval), float(maxval), seed

    def _draw(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, shape)

    def get_config(self) -> dict:
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: Optional[int] = None) -> None:
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def _draw(self, shape, rng):
        return rng.normal(self.mean, self.stddev, shape)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def _truncated_normal(rng, shape, stddev):
    """N(0, stddev) restricted to [-2 stddev, 2 stddev], out-of-range draws redrawn."""
    values = rng.standard_normal(shape)
    bad = np.abs(values) > 2
    while bad.any():
        values[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(values) > 2
    return values * stddev


class TruncatedNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: Optional[int] = None) -> None:
        self.mean, self.stddev, self.seed = float(mean), float(stddev), seed

    def _draw(self, shape, rng):
        return self.mean + _truncated_normal(rng, shape, self.stddev)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class VarianceScaling(Initializer):
    _MODES = ("fan_in", "fan_out", "fan_avg")
    _DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform", "normal")

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal",
                 seed: Optional[int] = None) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if mode not in self._MODES:
            raise ValueError(f"mode must be one of {self._MODES}, got {mode!r}")
        if distribution not in self._DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {self._DISTRIBUTIONS}, got {distribution!r}")
        self.scale, self.mode, self.seed = float(scale), mode, seed
        self.distribution = "truncated_normal" if distribution == "normal" else distribution

    def _draw(self, shape, rng):
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        s = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3 * s)
            return rng.uniform(-limit, limit, shape)
        if self.distribution == "truncated_normal":
            return _truncated_normal(rng, shape, math.sqrt(s) / _TRUNCATED_STDDEV_CORRECTION)
        return rng.normal(0.0, math.sqrt(s), shape)

    def get_config(self) -> dict:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class _FixedVarianceScaling(VarianceScaling):
    """A named VarianceScaling whose config is only the seed."""

    _ARGS = (1.0, "fan_in", "truncated_normal")

    def __init__(self, seed: Optional[int] = None) -> None:
        super().__init__(*self._ARGS, seed=seed)

    def get_config(self) -> dict:
        return {"seed": self.seed}


class GlorotUniform(_FixedVarianceScaling):
    _ARGS = (1.0, "fan_avg", "uniform")


class GlorotNormal(_FixedVarianceScaling):
    _ARGS = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_FixedVarianceScaling):
    _ARGS = (2.0, "fan_in", "uniform")


class HeNormal(_FixedVarianceScaling):
    _ARGS = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_FixedVarianceScaling):
    _ARGS = (1.0, "fan_in", "uniform")


class LecunNormal(_FixedVarianceScaling):
    _ARGS = (1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    def __init__(self, gain: float = 1.0, seed: Optional[int] = None) -> None:
        self.gain, self.seed = float(gain), seed

    def _draw(self, shape, rng):
        if len(shape) < 2:
            raise ValueError(f"orthogonal initializer needs a shape of at least 2 dims, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))  # makes the decomposition unique, so q is uniformly distributed
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self) -> dict:
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def _draw(self, shape, rng):
        if len(shape) != 2:
            raise ValueError(f"identity initializer needs a 2-D shape, got {shape}")
        return self.gain * np.eye(*shape)

    def get_config(self) -> dict:
        return {"gain": self.gain}


_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "uniform": RandomUniform, "random_uniform": RandomUniform,
    "normal": RandomNormal, "random_normal": RandomNormal, "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal,
    "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal, "identity": Identity,
}
_BY_CLASS_NAME = {cls.__name__: cls for cls in _BY_NAME.values()}


# What a layer's ``*_initializer`` argument and ``get`` take.
InitializerLike = Union[str, Dict[str, Any], Initializer, Type[Initializer], Callable[..., Any]]


def get(identifier: InitializerLike) -> Union[Initializer, Callable[..., Any]]:
    """An initializer from a name ("glorot_uniform"), a class name ("GlorotUniform"), an instance, a
    Keras-style dict ``{"class_name": ..., "config": {...}}``, or a callable ``f(shape, dtype)``."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = _BY_CLASS_NAME.get(name) or _BY_NAME.get(name)
        if cls is None:
            raise ValueError(f"unknown initializer class {name!r}; valid: {', '.join(sorted(_BY_CLASS_NAME))}")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier) or _BY_CLASS_NAME.get(identifier)
        if cls is None:
            raise ValueError(f"unknown initializer {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")
        return cls()
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(f"initializer must be a name, an Initializer or a callable, got {type(identifier).__name__}")


def serialize(initializer: Initializer) -> Dict[str, Any]:
    """A JSON-serialisable description: ``{"class_name": ..., "config": {...}}``."""
    if not isinstance(initializer, Initializer):
        raise TypeError(f"cannot serialize initializer {initializer!r}: not an lstmfast Initializer")
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}


def deserialize(config: InitializerLike) -> Union[Initializer, Callable[..., Any]]:
    return get(config)
