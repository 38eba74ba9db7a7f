"""Result types shared by the engine (ops.py), the NumPy oracle (reference.py) and the GPU path."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional


class LSTMOutput(NamedTuple):
    """What ``lstm_forward`` returns. Time-major: ``y [T,B,H]``; ``h, c [B,H]`` final state."""

    y: Any
    h: Any
    c: Any
    cache: Optional[Any]  # None after an inference-mode call (training=False)


class LSTMGradients(NamedTuple):
    """What ``lstm_backward`` returns; a field is None where it does not apply
    (``dbias`` without bias, ``dh0``/``dc0`` without an initial state, ``dpeephole`` without peepholes)."""

    dx: Any
    dkernel: Any
    drecurrent_kernel: Any
    dbias: Optional[Any]
    dh0: Optional[Any]
    dc0: Optional[Any]
    dpeephole: Optional[Any]
