"""SpatialDropout1D: dropout of whole channels of a sequence (Keras 3 semantics)."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from .._typing import Arrays, InputShape, Mask
from .base import _dropout_mask, _first_shape, register
from .core import Dropout

__all__ = ["SpatialDropout1D"]


@register
class SpatialDropout1D(Dropout):
    """Inverted dropout of channels: in training, ``y[b, t, c] = x[b, t, c] * keep[b, c] / (1 - rate)``
    with one draw ``keep[b, c]`` (probability ``1 - rate``) shared by every time step; the identity
    otherwise. Inputs ``[B, T, C]``; the mask passes through. Draws as ``Dropout`` does."""

    def __init__(self, rate: float, seed: Optional[int] = None, **kwargs: Any) -> None:
        if "noise_shape" in kwargs:
            raise TypeError(f"SpatialDropout1D takes no noise_shape (it is (batch, 1, channels)), got "
                            f"noise_shape={kwargs['noise_shape']!r}")
        super().__init__(rate, seed=seed, **kwargs)

    def _check_rank(self, shape) -> None:
        if len(shape) != 3:
            raise ValueError(f"SpatialDropout1D {self.name!r} needs inputs of shape (batch, steps, channels), got "
                             f"shape {tuple(shape)}")

    def build(self, input_shape: InputShape) -> None:
        self._check_rank(_first_shape(input_shape))
        super().build(input_shape)

    def _keep_mask(self, x):
        return _dropout_mask(self, x, (x.shape[0], 1, x.shape[2]), self.rate, self._np_dtype)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        self._check_rank(inputs.shape)
        return super().call(inputs, training, mask)

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        self._check_rank(inputs.shape)
        return super().forward(inputs, training, mask)

    def get_config(self) -> dict:
        config = super().get_config()
        del config["noise_shape"]
        return config
