"""``keras.config``'s settings that lstmfast has: the default float type of new layers and the
global dtype policy (``lstmfast.mixed_precision``)."""
from __future__ import annotations

from .backend import floatx, set_floatx
from .mixed_precision import dtype_policy, set_dtype_policy

__all__ = ["floatx", "set_floatx", "dtype_policy", "set_dtype_policy"]
