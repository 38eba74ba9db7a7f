"""The LSTM layer and its mask plan. The layer turns Keras's batch-major ``[B, T, X]`` calls (masks,
``go_backwards``, stateful states, dropout masks) into one time-major engine call,
``ops.lstm_forward`` / ``ops.lstm_backward``, on the array module of its inputs."""
from __future__ import annotations

import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from .. import activations, initializers, ops
from .._typing import Array, Arrays, InputShape, Mask, OutputShape
from ..initializers import InitializerLike
from .base import (
    Layer,
    _as_array,
    _cast,
    _dropout_mask,
    _first_shape,
    _positive_int,
    _rate,
    _refuse,
    _serialize_initializer,
    register,
)

__all__ = ["LSTM", "CuDNNLSTM"]


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


@register
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
      state of each batch is the next batch's initial state (no gradient flows between batches),
      kept in ``buffers["h"]``, ``buffers["c"]``; ``reset_states()`` zeroes it. A batch of another
      size raises ValueError.
    * ``unroll``, ``implementation`` and ``use_cudnn`` are accepted and ignored (results are the same).
    """

    supports_masking = True
    _accepts_initial_state = True

    def __init__(self, units: int, activation: Union[str, activations.Activation] = "tanh",
                 recurrent_activation: Union[str, activations.Activation] = "sigmoid", use_bias: bool = True,
                 kernel_initializer: InitializerLike = "glorot_uniform",
                 recurrent_initializer: InitializerLike = "orthogonal", bias_initializer: InitializerLike = "zeros",
                 unit_forget_bias: bool = True, kernel_regularizer: None = None, recurrent_regularizer: None = None,
                 bias_regularizer: None = None, activity_regularizer: None = None, kernel_constraint: None = None,
                 recurrent_constraint: None = None, bias_constraint: None = None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, peephole: bool = False,
                 peephole_initializer: InitializerLike = "glorot_uniform", seed: Optional[int] = None,
                 time_major: bool = False, implementation: Optional[int] = None, use_cudnn: Union[str, bool] = "auto",
                 **kwargs: Any) -> None:
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

    # -- building -------------------------------------------------------------------------------

    def build(self, input_shape: InputShape) -> None:
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

    def compute_output_shape(self, input_shape: InputShape) -> OutputShape:
        B, T = _first_shape(input_shape)[:2]
        H = self.units
        out = (B, T, H) if self.return_sequences else (B, H)
        return [out, (B, H), (B, H)] if self.return_state else out

    def compute_mask(self, inputs: Arrays, mask: Mask = None) -> Mask:
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        return [out, None, None] if self.return_state else out

    # -- states ---------------------------------------------------------------------------------

    @property
    def states(self) -> Optional[List[Array]]:
        """The stateful layer's current [h, c] (None before the first batch)."""
        if "h" not in self.buffers:
            return None
        return [self.buffers["h"], self.buffers["c"]]

    def reset_states(self, states: Optional[Sequence[ArrayLike]] = None) -> None:
        if not self.stateful:
            return
        if states is None:
            if "h" in self.buffers:  # new arrays: a pending backward pass may still hold the old ones
                self.buffers["h"] = np.zeros_like(self.buffers["h"])
                self.buffers["c"] = np.zeros_like(self.buffers["c"])
            return
        h, c = (np.array(s, dtype=self._np_dtype) for s in states)
        B = self._stateful_batch if self._stateful_batch is not None else h.shape[0]
        for name, s in (("h", h), ("c", c)):
            if s.shape != (B, self.units):
                raise ValueError(f"LSTM {self.name!r}: state {name} must have shape {(B, self.units)}, got {s.shape}")
        self._stateful_batch = B
        self.buffers["h"], self.buffers["c"] = h, c

    # -- computation ----------------------------------------------------------------------------

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
        x = _as_array(x)
        xp = ops.array_module(x)
        if x.ndim != 3:
            raise ValueError(f"LSTM {self.name!r} needs input of shape (batch, timesteps, features), got {x.shape}")
        B, T = x.shape[0], x.shape[1]
        if self.stateful:
            if self._stateful_batch is None:
                self._stateful_batch = B
            elif B != self._stateful_batch:
                raise ValueError(f"stateful LSTM {self.name!r} was built for batch size {self._stateful_batch}, "
                                 f"got {B}")
            if not has_state and "h" in self.buffers:
                h0, c0 = self.buffers["h"], self.buffers["c"]
        if mask is not None:
            if isinstance(mask, (list, tuple)):
                mask = mask[0]
            if mask is not None:
                # The mask only steers index bookkeeping (_MaskPlan), done on the host: from the GPU
                # that is one small [B,T] copy, none when the mask was made from host values (an
                # Embedding's, see ops.mirrored_on_device); the index arrays go back to the device.
                mask = ops.to_numpy(_as_array(mask, bool))
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
            gather = tuple(ops.to_device_of(x, i) for i in plan.gather_x)
            x_tm = xp.ascontiguousarray(x[gather], dtype=dt)                  # [T,B,X] compacted
            lengths = ops.mirrored_on_device(x, plan.lengths)  # the engine checks them on the host
        input_mask = recurrent_mask = None  # drawn in this order: input mask first
        if training and self.dropout:
            input_mask = _dropout_mask(self, x, (B, x.shape[2]), self.dropout, dt)  # [B,X]
            x_tm = x_tm * input_mask
        if training and self.recurrent_dropout:
            recurrent_mask = _dropout_mask(self, x, (B, self.units), self.recurrent_dropout, dt)   # [B,H]
        w = self.weights
        try:
            out = ops.lstm_forward(x_tm, w["kernel"], w["recurrent_kernel"], w.get("bias"), h0=h0, c0=c0,
                                   peephole=w.get("peephole"), lengths=lengths,
                                   recurrent_activation=self.recurrent_activation, training=keep,
                                   recurrent_dropout_mask=recurrent_mask, precision=self._gemm_precision)
        except (ValueError, TypeError) as err:
            raise type(err)(f"LSTM {self.name!r}: {err}") from None

        h, c = out.h, out.c
        if self.return_sequences:
            if plan is None:
                y = xp.ascontiguousarray(out.y.transpose(1, 0, 2))              # [B,T,H]
            else:
                index = ops.to_device_of(x, plan.sequence_index(self.go_backwards, self.zero_output_for_mask))
                rows = ops.to_device_of(x, plan.rows)
                if self.zero_output_for_mask:
                    y = out.y[index, rows]                                      # [B,T,H]
                else:
                    padded = xp.concatenate([xp.zeros((1, B, self.units), dt), out.y])   # [T+1,B,H]
                    y = padded[index, rows]                                     # [B,T,H] forward-filled
        elif plan is not None and plan.last_valid is not None:
            y = h * ops.to_device_of(x, plan.last_valid)[:, None]
        else:
            y = h
        if self.stateful:
            self.buffers["h"], self.buffers["c"] = h.copy(), c.copy()
        outputs = [y, h, c] if self.return_state else y
        if not keep:
            return outputs, None
        return outputs, (out.cache, x_tm, input_mask, plan, has_state, T)

    def call(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Arrays:
        return self._run(inputs, training, mask, False)[0]

    def forward(self, inputs: Arrays, training: bool = False, mask: Mask = None) -> Tuple[Arrays, Any]:
        return self._run(inputs, training, mask, True)

    def backward(self, cache: Any, grad_outputs: Optional[Arrays]) -> Optional[Arrays]:
        engine_cache, x_tm, input_mask, plan, has_state, T = cache
        dt = self._np_dtype
        if self.return_state:
            gy, dh, dc = grad_outputs
            dh, dc = _cast(dh, dt), _cast(dc, dt)
        else:
            gy, dh, dc = grad_outputs, None, None
        gy = _cast(gy, dt)
        xp = ops.array_module(x_tm)
        dy = None
        if self.return_sequences:
            if gy is not None:
                if plan is None:
                    dy = xp.ascontiguousarray(gy.transpose(1, 0, 2))                # [T,B,H]
                elif self.zero_output_for_mask:
                    dy = gy[ops.to_device_of(x_tm, plan.rows.T), ops.to_device_of(x_tm, plan.order.T)]  # [T,B,H]
                else:
                    # Forward-filled outputs: each kept step's gradient is the sum over the steps it fills.
                    starts, keep, step, row, B = plan.fill_segments(T)
                    sums = ops.segment_sum(gy.reshape(B * T, self.units), starts)      # [segments,H]
                    dy = xp.zeros((T, B, self.units), dt)
                    dy[ops.to_device_of(x_tm, step), ops.to_device_of(x_tm, row)] = sums[ops.to_device_of(x_tm, keep)]
        elif gy is not None:
            if plan is not None and plan.last_valid is not None:
                gy = gy * ops.to_device_of(x_tm, plan.last_valid)[:, None]
            dh = gy if dh is None else dh + gy
        g = ops.lstm_backward(engine_cache, dy, dh, dc)
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
            dx = dx_tm[ops.to_device_of(x_tm, plan.scatter_x), ops.to_device_of(x_tm, plan.rows)]  # [B,T,X]
        if has_state:
            return [dx, g.dh0, g.dc0]
        return dx

    def get_config(self) -> dict:
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


def CuDNNLSTM(units: int, kernel_initializer: InitializerLike = "glorot_uniform",
              recurrent_initializer: InitializerLike = "orthogonal", bias_initializer: InitializerLike = "zeros",
              unit_forget_bias: bool = True, kernel_regularizer: None = None, recurrent_regularizer: None = None,
              bias_regularizer: None = None, activity_regularizer: None = None, kernel_constraint: None = None,
              recurrent_constraint: None = None, bias_constraint: None = None, return_sequences: bool = False,
              return_state: bool = False, go_backwards: bool = False, stateful: bool = False,
              **kwargs: Any) -> LSTM:
    """Keras 2's ``CuDNNLSTM`` (deprecated): an :class:`LSTM` with cuDNN's fixed cell (tanh,
    recurrent_activation sigmoid, no dropout) and Keras 2's CuDNNLSTM arguments and defaults. It
    builds, saves and loads as an LSTM; ``lstmfast.load_model`` converts the weights of Keras 2
    files that hold CuDNNLSTM layers (a ``[8H]`` bias; ``interop.keras_legacy``)."""
    warnings.warn("CuDNNLSTM is Keras 2's spelling; use LSTM(units) (its defaults are cuDNN's cell, and "
                  "lstmfast picks its fastest engine itself)", DeprecationWarning, stacklevel=2)
    lstm_only = sorted(set(kwargs) & {"activation", "recurrent_activation", "use_bias", "dropout", "recurrent_dropout",
                                      "unroll", "implementation", "use_cudnn", "time_major", "seed", "peephole",
                                      "peephole_initializer", "zero_output_for_mask"})
    if lstm_only:
        raise TypeError(f"CuDNNLSTM has no argument {', '.join(lstm_only)} (cuDNN's cell is fixed, as in Keras 2); "
                        f"use LSTM for these")
    return LSTM(units, activation="tanh", recurrent_activation="sigmoid", kernel_initializer=kernel_initializer,
                recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                unit_forget_bias=unit_forget_bias, kernel_regularizer=kernel_regularizer,
                recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
                activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
                return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards,
                stateful=stateful, **kwargs)
