"""Dynamic loss scaling around another optimizer, as Keras's ``LossScaleOptimizer``."""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Optional, Sequence, Tuple

from .. import ops
from .._typing import Array
from ._checks import real
from .base import LearningRate, Optimizer

__all__ = ["LossScaleOptimizer"]


class LossScaleOptimizer(Optimizer):
    """Keras's dynamic loss scaling: the training step multiplies the loss's gradient by
    ``dynamic_scale`` (Keras's ``scale_loss``), and each step divides the gradients by it again
    and then

    * when every gradient is finite: runs ``inner_optimizer``'s step, and doubles the scale after
      ``dynamic_growth_steps`` such steps in a row;
    * otherwise: skips the step (weights, slots and ``iterations`` unchanged) and halves the scale.

    Keras uses it for float16 computations, whose small gradients underflow unscaled. lstmfast
    computes in float32 (or bfloat16 products accumulated in float32), where nothing underflows;
    what it adds there is Keras's handling of overflowing or non-finite gradients: a step that
    would write inf or NaN into the weights is skipped instead. With a power-of-two scale and
    finite gradients the steps are exactly the inner optimizer's. Checking the gradients reads one
    value from the GPU per step, so on a GPU this step is not replayed as a CUDA graph.

    The learning rate, ``iterations`` and the slots are the inner optimizer's; the state adds the
    scale and the count of finite steps (saved with the model)."""

    _default_name = "loss_scale_optimizer"

    def __init__(self, inner_optimizer: Optimizer, initial_scale: float = 2.0 ** 15, dynamic_growth_steps: int = 2000,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        if not kwargs.pop("dynamic", True):
            raise ValueError("LossScaleOptimizer(dynamic=False) is not supported (nor by Keras 3): the scale is "
                             "always dynamic")
        for key in ("weight_decay", "clipnorm", "global_clipnorm", "clipvalue"):
            if kwargs.pop(key, None) is not None:
                raise ValueError(f"LossScaleOptimizer does not take {key}; set it on the inner optimizer")
        if kwargs:
            raise TypeError(f"LossScaleOptimizer() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if not isinstance(inner_optimizer, Optimizer) or isinstance(inner_optimizer, LossScaleOptimizer):
            raise TypeError(f"inner_optimizer must be an lstmfast optimizer (not a LossScaleOptimizer), got "
                            f"{type(inner_optimizer).__name__}")
        initial_scale = real(initial_scale, "initial_scale", 0.0)
        if not (initial_scale > 0 and math.isfinite(initial_scale)):
            raise ValueError(f"initial_scale must be a finite number > 0, got {initial_scale!r}")
        if isinstance(dynamic_growth_steps, bool) or not isinstance(dynamic_growth_steps, numbers.Integral) \
                or dynamic_growth_steps < 1:
            raise ValueError(f"dynamic_growth_steps must be an int >= 1, got {dynamic_growth_steps!r}")
        self.inner_optimizer = inner_optimizer
        self.initial_scale = float(initial_scale)
        self.dynamic_growth_steps = int(dynamic_growth_steps)
        self.dynamic_scale = self.initial_scale
        self.step_counter = 0  # finite steps since the scale last changed
        self.name = self._default_name if name is None else str(name)
        self.clipnorm = self.clipvalue = self.global_clipnorm = self.weight_decay = None  # the inner one's apply

    # ---- what is the inner optimizer's -------------------------------------------------------

    @property
    def learning_rate(self) -> LearningRate:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: LearningRate) -> None:
        self.inner_optimizer.learning_rate = value

    @property
    def iterations(self) -> int:
        return self.inner_optimizer.iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        self.inner_optimizer.iterations = value

    def current_learning_rate(self) -> float:
        return self.inner_optimizer.current_learning_rate()

    @property
    def slot_names(self) -> tuple:
        return self.inner_optimizer.slot_names

    @property
    def built(self) -> bool:
        return self.inner_optimizer.built

    def build(self, variables: Sequence[Array]) -> None:
        self.inner_optimizer.build(variables)

    def _slot_arrays(self) -> list:
        return self.inner_optimizer._slot_arrays()

    def _captured_step_key(self) -> Optional[tuple]:
        return None  # the finiteness check is read on the host: the step stays eager

    # ---- the step ----------------------------------------------------------------------------

    def scale_loss(self, loss: Any) -> Any:
        """``loss`` times the current scale (Keras's name; ``fit`` scales the loss's gradient)."""
        return loss * self.dynamic_scale

    def _loss_scale(self) -> float:
        return self.dynamic_scale

    def apply(self, grads: Sequence[Array], variables: Sequence[Array]) -> None:
        """One step with ``grads`` of the scaled loss: unscaled, then the inner step when all are
        finite, else none; the scale follows (see the class docstring)."""
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(variables)
        if not ops.all_finite(grads):
            self.step_counter = 0
            self.dynamic_scale *= 0.5
            return
        scale = self.dynamic_scale
        self.inner_optimizer.apply([g / scale for g in grads], variables)
        if self.step_counter == self.dynamic_growth_steps - 1:
            self.step_counter = 0
            self.dynamic_scale *= 2.0
        else:
            self.step_counter += 1

    # ---- state and config --------------------------------------------------------------------

    def get_state(self) -> dict:
        """The inner optimizer's state and ``"loss_scale": [dynamic_scale, step_counter]``."""
        return {**self.inner_optimizer.get_state(), "loss_scale": [self.dynamic_scale, self.step_counter]}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore ``get_state``'s result (without ``"loss_scale"``: the scale starts again)."""
        scale, counter = self._checked_loss_scale(state.get("loss_scale") if isinstance(state, dict) else None)
        self.inner_optimizer.set_state(state)
        self.dynamic_scale, self.step_counter = scale, counter

    def _checked_loss_scale(self, value) -> Tuple[float, int]:
        if value is None:
            return self.initial_scale, 0
        ok = isinstance(value, (list, tuple)) and len(value) == 2
        scale, counter = value if ok else (None, None)
        if not (ok and isinstance(scale, numbers.Real) and not isinstance(scale, bool) and math.isfinite(scale)
                and scale > 0 and isinstance(counter, numbers.Integral) and not isinstance(counter, bool)
                and 0 <= counter < self.dynamic_growth_steps):
            raise ValueError(f"optimizer state 'loss_scale' must be [scale > 0, finite steps 0..."
                             f"{self.dynamic_growth_steps - 1}], got {value!r:.100}")
        return float(scale), int(counter)

    def get_config(self) -> dict:
        from . import serialize
        return {"name": self.name, "inner_optimizer": serialize(self.inner_optimizer),
                "initial_scale": self.initial_scale, "dynamic_growth_steps": self.dynamic_growth_steps}

    @classmethod
    def from_config(cls, config: dict) -> "LossScaleOptimizer":
        from . import deserialize
        config = dict(config)
        if "inner_optimizer" not in config:
            raise ValueError("LossScaleOptimizer config needs 'inner_optimizer'")
        return cls(deserialize(config.pop("inner_optimizer")), **config)

    def __repr__(self) -> str:
        return (f"<LossScaleOptimizer name={self.name!r} inner={self.inner_optimizer!r} "
                f"dynamic_scale={self.dynamic_scale}>")
