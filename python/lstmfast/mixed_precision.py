"""Dtype policies, as ``keras.mixed_precision``: a layer's policy names the dtype of its variables
and the precision of its computations.

* ``"float32"``, ``"float64"``: variables and computations in that dtype.
* ``"mixed_bfloat16"``: float32 variables, activations and LSTM cell state; the layer's matrix
  products (Dense, LSTM, Conv1D, the attention layers) may round their operands to bfloat16 and
  accumulate in float32. On a GPU the cuBLAS products run on tensor cores that way
  (``CUBLAS_COMPUTE_32F_FAST_16BF``; cuBLAS may also choose TF32, which is more precise); the
  LSTM sequence kernels (small batches, the recurrence held on chip) keep their recurrent product
  in float32. The C++ engine has no bfloat16 products: on the CPU these layers compute in
  float32, the same numbers as ``"float32"``. Outputs are float32 everywhere (NumPy has no
  bfloat16; Keras's would be bfloat16 tensors).
* ``"mixed_float16"``: accepted so Keras programs run; lstmfast computes these layers in float32
  (float16 products would need loss scaling) and says so once with a warning.

Keras's full-precision ``"bfloat16"`` and ``"float16"`` policies (variables in 16 bits) are refused:
lstmfast keeps variables in float32 or float64.

``LossScaleOptimizer`` (also ``lstmfast.optimizers.LossScaleOptimizer``) is Keras's dynamic loss
scaling; nothing here computes in float16, so what it adds is skipping steps whose gradients are
not finite.

``set_global_policy`` (also ``set_dtype_policy``) sets the policy of layers created without a
``dtype``; its default follows ``lstmfast.backend.floatx()``."""
from __future__ import annotations

import warnings
from typing import Any, Optional, Union

import numpy as np

from . import backend
from .optimizers import LossScaleOptimizer

__all__ = ["DTypePolicy", "Policy", "set_global_policy", "global_policy", "set_dtype_policy", "dtype_policy",
           "LossScaleOptimizer", "NAMES"]

# name -> (variable dtype, compute dtype as Keras reports it, precision of the layer's matrix products)
_POLICIES = {"float32": ("float32", "float32", None), "float64": ("float64", "float64", None),
             "mixed_bfloat16": ("float32", "bfloat16", "bfloat16"),
             "mixed_float16": ("float32", "float16", None)}
NAMES = tuple(_POLICIES)
_FULL_16_BIT = ("bfloat16", "float16")
_warned_float16 = False


class DTypePolicy:
    """A dtype policy by name (one of ``NAMES``): ``variable_dtype``, ``compute_dtype`` (what Keras
    reports for the policy) and ``gemm_precision`` (what lstmfast's products take: None for the
    variables' dtype, ``"bfloat16"`` for bfloat16 operands with float32 accumulation)."""

    def __init__(self, name: Optional[str] = None) -> None:
        if name is None:
            name = backend.floatx()
        if not isinstance(name, str):
            raise TypeError(f"dtype policy name must be a string, got {type(name).__name__}")
        if name not in _POLICIES:
            if name in _FULL_16_BIT:
                raise ValueError(f"dtype policy {name!r} keeps variables in {name}; lstmfast keeps them in float32 "
                                 f"or float64: use 'mixed_{name}'")
            raise ValueError(f"dtype policy must be one of {', '.join(repr(n) for n in NAMES)}, got {name!r}")
        self._name = name
        self._variable_dtype, self._compute_dtype, self._gemm_precision = _POLICIES[name]

    @property
    def name(self) -> str:
        return self._name

    @property
    def variable_dtype(self) -> str:
        return self._variable_dtype

    @property
    def compute_dtype(self) -> str:
        return self._compute_dtype

    @property
    def gemm_precision(self) -> Optional[str]:
        return self._gemm_precision

    def get_config(self) -> dict:
        return {"name": self._name}

    @classmethod
    def from_config(cls, config: dict) -> "DTypePolicy":
        return cls(**config)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, DTypePolicy) and other._name == self._name

    def __hash__(self) -> int:
        return hash(self._name)

    def __repr__(self) -> str:
        return f'<DTypePolicy "{self._name}">'


Policy = DTypePolicy  # Keras's older name
_global: Optional[DTypePolicy] = None  # None: follow backend.floatx()


def get(value: Union[None, str, dict, DTypePolicy]) -> DTypePolicy:
    """The policy a layer's ``dtype`` argument names: None (the global policy), a name (``NAMES``),
    a ``DTypePolicy``, or Keras's serialized form ``{"class_name": "DTypePolicy", "config": {"name": ...}}``."""
    if value is None:
        return global_policy()
    if isinstance(value, DTypePolicy):
        policy = value
    elif isinstance(value, dict):
        name = (value.get("config") or {}).get("name") if "config" in value else value.get("name")
        if not isinstance(name, str):
            raise ValueError(f"dtype must name a policy, got {value!r:.200}")
        policy = DTypePolicy(name)
    elif isinstance(value, str):
        if value not in _POLICIES and value not in _FULL_16_BIT:
            try:  # another spelling of a float type ('f4', 'float'): its name
                value = np.dtype(value).name
            except TypeError:
                pass  # not a type either: DTypePolicy lists the names
        policy = DTypePolicy(value)
    else:
        try:  # a NumPy dtype or type
            name = np.dtype(value).name
        except TypeError:
            raise TypeError(f"dtype must be a policy name ({', '.join(NAMES)}), a DTypePolicy or a float "
                            f"dtype, got {value!r:.100}") from None
        policy = DTypePolicy(name)
    if policy.name == "mixed_float16":
        _warn_float16()
    return policy


def _warn_float16() -> None:
    global _warned_float16
    if not _warned_float16:
        _warned_float16 = True
        warnings.warn("lstmfast computes 'mixed_float16' layers in float32 (it has no float16 products); "
                      "'mixed_bfloat16' runs a GPU's products on tensor cores", UserWarning, stacklevel=4)


def set_global_policy(policy: Union[None, str, DTypePolicy]) -> None:
    """The policy of layers created from now on without a ``dtype`` (None: back to ``floatx()``)."""
    global _global
    _global = None if policy is None else get(policy)


def global_policy() -> DTypePolicy:
    return _global if _global is not None else DTypePolicy(backend.floatx())


set_dtype_policy = set_global_policy  # keras.config's names
dtype_policy = global_policy
