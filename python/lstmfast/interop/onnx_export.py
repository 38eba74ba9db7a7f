"""ONNX export: a model as a standard ONNX graph (``model.export(path, format="onnx")``).

The graph is built with the ``onnx`` package's helper API (``pip install onnx``; onnxruntime is not
needed to export). Each layer call of the model becomes a few standard operators:

    Embedding        Gather (ids cast to int64); mask_zero: mask = ids != 0
    Dense            MatMul, Add, then the activation
    Activation       Relu, Sigmoid, Tanh, Softmax (last axis), HardSigmoid, Softplus, Softsign, Elu,
                     Selu, Exp; swish = x * Sigmoid(x); gelu = x * (1 + Erf(x / sqrt 2)) / 2
    Dropout          nothing (inference)
    Masking          mask = any(x != mask_value) over features; x * mask
    RepeatVector     Unsqueeze, Tile
    TimeDistributed  the inner layer on the last axis (Dense, Activation, Dropout), else Reshape to
                     [B*T, ...], the inner layer, Reshape back
    Flatten, Concatenate, Add, Subtract, Average, BatchNormalization (its moving statistics)
    LSTM             the LSTM operator, direction "forward"
    Bidirectional    one LSTM operator, direction "bidirectional", then the merge (concat, sum, ave,
                     mul, or two outputs for merge_mode=None)

LSTM weights: ONNX wants gates in the order i, o, f, c with ``W [D, 4H, X] = kernel.T``, ``R [D, 4H,
H] = recurrent_kernel.T``, ``B [D, 8H] = [Wb, Rb]`` with ``Wb`` our bias and ``Rb = 0``, peepholes
``P [D, 3H]`` in the order i, o, f (our ``peephole [3, H]`` rows i, f, o); ``recurrent_activation
="hard_sigmoid"`` is ONNX's ``HardSigmoid`` (alpha 0.2, beta 0.5: Keras 2's, the engine's). The
operator runs time-major, so the graph transposes around it.

Masks (Embedding(mask_zero=True), Masking) are exact for ANY mask, as ``predict`` computes them, not
only for right-padded batches: each row's unmasked steps are gathered to the front (``TopK`` of
``(not mask) * T + t`` gives their order, ``GatherElements`` moves them), the LSTM operator runs
with ``sequence_lens`` = the count of unmasked steps, and the outputs are moved back (the inverse
order: zeros at masked steps, as Bidirectional and ``zero_output_for_mask`` give) or forward-filled
(``CumSum`` of the mask indexes the outputs: a masked step repeats the last unmasked output, zeros
before the first, as a plain masked LSTM gives). For right-padded batches the gathers are the
identity. A row with no unmasked step gives zero outputs and keeps its initial state, as predict.

Axes: the batch axis of every input is dynamic ("batch"), and so is the time axis (axis 1) of a
sequence input (rank 3, or integer ids of rank 2) unless ``dynamic_time=False``. A model whose
layers need a fixed length (Flatten after a sequence) runs only at the length it was built for.

Refused, with the layer named: layers without an ONNX form here (Attention, LayerNormalization,
Multiply, Maximum, Minimum, Lambda, ...), stateful LSTMs (an ONNX graph holds no state), layers called
with ``training=True`` that draw random numbers, activations other than those above. The graph is
float32 whatever the model's dtype.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Dict, Optional

import numpy as np

from .._atomic import atomic_file, check_writable
from .._typing import PathLike

if TYPE_CHECKING:  # type names only: models imports this module
    from ..models import Model


__all__ = ["export_onnx", "DEFAULT_OPSET", "SUPPORTED_LAYERS"]

DEFAULT_OPSET = 17
_MIN_OPSET, _MAX_OPSET = 15, 21  # Shape(start, end) needs 15; 18 moves the Reduce* axes to inputs
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install onnx "
                          "(or pip install 'lstmfast[onnx]')") from None
    return onnx


# ---- the graph under construction -----------------------------------------------------------------

class _Graph:
    """Nodes and initializers, with unique names. ``op`` returns the output name(s)."""

    def __init__(self, onnx, opset: int):
        self.onnx, self.helper, self.opset = onnx, onnx.helper, opset
        self.nodes: list = []
        self.initializers: list = []
        self._used: set = set()

    def name(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c in "_./" else "_" for c in hint) or "t"
        name, k = base, 1
        while name in self._used:
            name, k = f"{base}_{k}", k + 1
        self._used.add(name)
        return name

    def const(self, value, hint: str, dtype=None) -> str:
        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.array(array, order="C"), name))  # 0-d stays 0-d
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(values, np.int64), hint)

    def op(self, op_type: str, inputs, hint: str, n_out: int = 1, **attrs):
        outs = [self.name(f"{hint}/{op_type}" + (f"_{k}" if n_out > 1 else "")) for k in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, name=self.name(f"{hint}/{op_type}/node"),
                                                **attrs))
        return outs[0] if n_out == 1 else outs

    def reduce(self, op_type: str, x: str, axes, hint: str, keepdims: int = 0) -> str:
        # ReduceSum takes axes as an input from opset 13, the others from opset 18.
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes, "axes")], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=list(axes), keepdims=keepdims)

    def cast(self, x: str, to: str, hint: str) -> str:
        return self.op("Cast", [x], hint, to=getattr(self.onnx.TensorProto, to))


class _Call:
    """One layer call: the layer, its input names and masks, the KerasTensor shapes around it, and
    the training flag forced at call time (None when not forced)."""

    __slots__ = ("layer", "inputs", "masks", "in_shapes", "out_shapes", "training")

    def __init__(self, layer, inputs, masks, in_shapes, out_shapes, training):
        self.layer, self.inputs, self.masks = layer, inputs, masks
        self.in_shapes, self.out_shapes, self.training = in_shapes, out_shapes, training


# ---- activations ----------------------------------------------------------------------------------

def _activation(g: _Graph, name: str, x: str, hint: str, where: str) -> str:
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
              "softsign": "Softsign", "selu": "Selu", "exponential": "Exp"}
    if name == "linear":
        return x
    if name in simple:
        return g.op(simple[name], [x], hint)
    if name == "softmax":
        return g.op("Softmax", [x], hint, axis=-1)
    if name == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6
        return g.op("HardSigmoid", [x], hint, alpha=1.0 / 6.0, beta=0.5)
    if name == "elu":
        return g.op("Elu", [x], hint, alpha=1.0)
    if name == "swish":
        return g.op("Mul", [x, g.op("Sigmoid", [x], hint)], hint)
    if name == "gelu":  # exact: x * Phi(x)
        erf = g.op("Erf", [g.op("Mul", [x, g.const(math.sqrt(0.5), "rsqrt2", np.float32)], hint)], hint)
        half = g.op("Mul", [x, g.const(0.5, "half", np.float32)], hint)
        return g.op("Mul", [half, g.op("Add", [erf, g.const(1.0, "one", np.float32)], hint)], hint)
    raise ValueError(f"export to ONNX: {where} has activation {name!r}, which has no ONNX form here; supported: "
                     f"linear, relu, sigmoid, tanh, softmax, hard_sigmoid, softplus, softsign, elu, selu, swish, "
                     f"gelu, exponential")


# ---- the LSTM operator ----------------------------------------------------------------------------

def _onnx_gates(w: np.ndarray) -> np.ndarray:
    """Columns (last axis) in gate order i, f, c, o -> i, o, f, c (ONNX's)."""
    i, f, c, o = np.split(np.asarray(w, np.float64), 4, axis=-1)
    return np.concatenate([i, o, f, c], axis=-1)


def _lstm_operator_weights(cells) -> dict:
    """``W, R, B`` (and ``P`` when a cell has peepholes) of the LSTM operator, one row per direction."""
    H = cells[0].units
    W, R, B, P = [], [], [], []
    for cell in cells:
        w = cell.weights
        W.append(_onnx_gates(w["kernel"]).T)                                 # [4H, X]
        R.append(_onnx_gates(w["recurrent_kernel"]).T)                       # [4H, H]
        bias = _onnx_gates(w["bias"]) if cell.use_bias else np.zeros(4 * H)
        B.append(np.concatenate([bias, np.zeros(4 * H)]))                    # [8H] = [Wb, Rb]
        peephole = np.asarray(w["peephole"], np.float64) if cell.peephole else np.zeros((3, H))
        P.append(peephole[[0, 2, 1]].reshape(-1))                            # rows i, f, o -> [3H] i, o, f
    out = {"W": np.stack(W), "R": np.stack(R), "B": np.stack(B)}
    if any(cell.peephole for cell in cells):
        out["P"] = np.stack(P)
    return out


def _check_cells(cells, where: str, training) -> None:
    for cell in cells:
        if cell.stateful:
            raise ValueError(f"export to ONNX: {where} is stateful; an ONNX graph keeps no state between runs "
                             f"(rebuild it with stateful=False, or give the state as inputs: initial_state=)")
        if training and (cell.dropout or cell.recurrent_dropout):
            raise ValueError(f"export to ONNX: {where} is called with training=True and has dropout; its output "
                             f"is random, which the graph cannot reproduce")
    if len({cell.units for cell in cells}) != 1:
        raise ValueError(f"export to ONNX: {where}: both directions must have the same units for one LSTM "
                         f"operator, got {[cell.units for cell in cells]}")


def _recurrence(g: _Graph, cells, x: str, mask: Optional[str], init, zero_output: bool, hint: str):
    """Run ``cells`` (one LSTM, or [forward, backward]) over ``x [B, T, X]`` with ``mask [B, T]``.

    ``init``: None, or ``(h0, c0)`` names of shape ``[D, B, H]``. Returns ``(Y [B, T, D, H] at the
    input's time positions, Yh [D, B, H], Yc [D, B, H], lengths [B] int32 or None)``.
    """
    D, H = len(cells), cells[0].units
    weights = {key: g.const(value, f"{hint}/{key}") for key, value in _lstm_operator_weights(cells).items()}
    lengths = order = mask_i64 = None
    if mask is not None:
        mask_i64 = g.cast(mask, "INT64", hint)                                           # [B,T]
        lengths = g.cast(g.reduce("ReduceSum", mask_i64, [1], hint), "INT32", hint)      # [B]
        steps = g.op("Shape", [x], hint, start=1, end=2)                                 # [1] = T
        t_scalar = g.op("Squeeze", [steps], hint)
        time = g.op("Range", [g.const(np.int64(0), "zero"), t_scalar, g.const(np.int64(1), "one")], hint)  # [T]
        masked = g.op("Sub", [g.const(np.int64(1), "one"), mask_i64], hint)
        key = g.op("Add", [g.op("Mul", [masked, t_scalar], hint), time], hint)            # unique per row
        _, order = g.op("TopK", [key, steps], hint, n_out=2, axis=1, largest=0, sorted=1)  # [B,T] unmasked first
        index = g.op("Expand", [g.op("Unsqueeze", [order, g.ints([2])], hint), g.op("Shape", [x], hint)], hint)
        x = g.op("GatherElements", [x, index], hint, axis=1)                            # compacted [B,T,X]
    x_tm = g.op("Transpose", [x], hint, perm=[1, 0, 2])                                  # [T,B,X]
    inputs = [x_tm, weights["W"], weights["R"], weights["B"], lengths or "",
              init[0] if init else "", init[1] if init else "", weights.get("P", "")]
    while inputs[-1] == "":
        inputs.pop()
    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if any(cell.recurrent_activation == "hard_sigmoid" for cell in cells):
        attrs["activations"] = [a for cell in cells for a in
                                ("HardSigmoid" if cell.recurrent_activation == "hard_sigmoid" else "Sigmoid",
                                 "Tanh", "Tanh")]
    y, yh, yc = g.op("LSTM", inputs, hint, n_out=3, **attrs)                            # [T,D,B,H], [D,B,H] x 2
    y = g.op("Transpose", [y], hint, perm=[2, 0, 1, 3])                                  # [B,T,D,H]
    if mask is not None:
        shape = g.op("Shape", [y], hint)
        if zero_output:
            _, where = g.op("TopK", [order, steps], hint, n_out=2, axis=1, largest=0, sorted=1)  # inverse order
        else:
            where = g.op("CumSum", [mask_i64, g.const(np.int64(1), "axis")], hint)      # compact step + 1
            y = g.op("Pad", [y, g.ints([0, 1, 0, 0, 0, 0, 0, 0], "pads")], hint)        # a zero step in front
        index = g.op("Expand", [g.op("Unsqueeze", [where, g.ints([2, 3])], hint), shape], hint)
        y = g.op("GatherElements", [y, index], hint, axis=1)
        if init:  # a row with no unmasked step keeps its initial state (the operator would give zeros)
            some = g.op("Unsqueeze", [g.op("Greater", [lengths, g.const(np.int32(0), "zero_i32")], hint),
                                      g.ints([0, 2])], hint)                             # [1,B,1]
            yh = g.op("Where", [some, yh, init[0]], hint)
            yc = g.op("Where", [some, yc, init[1]], hint)
    return y, yh, yc, lengths


def _direction(g: _Graph, value: str, d: int, axis: int, hint: str) -> str:
    return g.op("Gather", [value, g.const(np.int64(d), "dir")], hint, axis=axis)


def _last_output(g: _Graph, h: str, lengths: Optional[str], hint: str) -> str:
    """A masked LSTM's output without sequences: its final h, zero for rows with no unmasked step."""
    if lengths is None:
        return h
    some = g.op("Greater", [lengths, g.const(np.int32(0), "zero_i32")], hint)
    return g.op("Mul", [h, g.cast(g.op("Unsqueeze", [some, g.ints([1])], hint), "FLOAT", hint)], hint)


def _reverse_time(g: _Graph, x: str, hint: str) -> str:
    return g.op("Slice", [x, g.ints([-1]), g.ints([_INT64_MIN]), g.ints([1]), g.ints([-1])], hint)


def _lstm(g: _Graph, call: _Call):
    layer, hint = call.layer, call.layer.name
    where = f"LSTM {layer.name!r}"
    _check_cells([layer], where, call.training)
    x, mask = call.inputs[0], call.masks[0]
    init = None
    if len(call.inputs) == 3:
        init = tuple(g.op("Unsqueeze", [s, g.ints([0])], hint) for s in call.inputs[1:])  # [1,B,H]
    if layer.go_backwards:  # Keras: the layer reads the sequence (and its mask) reversed
        x = _reverse_time(g, x, hint)
        mask = None if mask is None else _reverse_time(g, mask, hint)
    y, yh, yc, lengths = _recurrence(g, [layer], x, mask, init, layer.zero_output_for_mask, hint)
    h, c = _direction(g, yh, 0, 0, hint), _direction(g, yc, 0, 0, hint)
    if layer.return_sequences:
        out = _direction(g, y, 0, 2, hint)
    elif mask is not None and layer.zero_output_for_mask:  # zero when the last step read is masked
        last = g.op("Slice", [mask, g.ints([-1]), g.ints([_INT64_MAX]), g.ints([1])], hint)   # [B,1]
        out = g.op("Mul", [h, g.cast(last, "FLOAT", hint)], hint)
    else:
        out = _last_output(g, h, lengths, hint)
    out_mask = call.masks[0] if layer.return_sequences else None
    if layer.return_state:
        return [out, h, c], [out_mask, None, None]
    return [out], [out_mask]


def _bidirectional(g: _Graph, call: _Call):
    layer, hint = call.layer, call.layer.name
    where = f"Bidirectional {layer.name!r}"
    fw, bw = layer.forward_layer, layer.backward_layer
    if type(fw).__name__ != "LSTM" or type(bw).__name__ != "LSTM" or fw.go_backwards or not bw.go_backwards:
        raise ValueError(f"export to ONNX: {where} must wrap an LSTM run forwards with its backward copy")
    _check_cells([fw, bw], where, call.training)
    x, mask = call.inputs[0], call.masks[0]
    init = None
    if len(call.inputs) == 5:
        s = [g.op("Unsqueeze", [name, g.ints([0])], hint) for name in call.inputs[1:]]
        init = (g.op("Concat", [s[0], s[2]], hint, axis=0), g.op("Concat", [s[1], s[3]], hint, axis=0))
    y, yh, yc, lengths = _recurrence(g, [fw, bw], x, mask, init, layer.return_sequences, hint)
    mode = layer.merge_mode
    if layer.return_sequences:
        if mode == "concat":
            outs = [g.op("Reshape", [y, g.ints([0, 0, 2 * fw.units])], hint)]
        elif mode == "sum":
            outs = [g.reduce("ReduceSum", y, [2], hint)]
        elif mode == "ave":
            outs = [g.reduce("ReduceMean", y, [2], hint)]
        else:
            outs = [_direction(g, y, 0, 2, hint), _direction(g, y, 1, 2, hint)]
    else:
        outs = [_last_output(g, _direction(g, yh, d, 0, hint), lengths, hint) for d in (0, 1)]
        if mode == "concat":
            outs = [g.op("Concat", outs, hint, axis=-1)]
        elif mode == "sum":
            outs = [g.op("Add", outs, hint)]
        elif mode == "ave":
            outs = [g.op("Mul", [g.op("Add", outs, hint), g.const(0.5, "half", np.float32)], hint)]
    if mode == "mul":
        outs = [g.op("Mul", outs, hint)]
    out_mask = call.masks[0] if layer.return_sequences else None
    masks = [out_mask] * len(outs)
    if layer.return_state:
        states = [_direction(g, s, d, 0, hint) for d in (0, 1) for s in (yh, yc)]  # h_fw, c_fw, h_bw, c_bw
        return outs + states, masks + [None] * 4
    return outs, masks


# ---- the other layers -----------------------------------------------------------------------------

def _check_training(call: _Call, matters: bool, why: str) -> None:
    if call.training and matters:
        raise ValueError(f"export to ONNX: {type(call.layer).__name__} {call.layer.name!r} is called with "
                         f"training=True; {why}, which the inference graph does not compute")


def _dense(g: _Graph, call: _Call):
    layer, hint = call.layer, call.layer.name
    y = g.op("MatMul", [call.inputs[0], g.const(layer.weights["kernel"], f"{hint}/kernel")], hint)
    if layer.use_bias:
        y = g.op("Add", [y, g.const(layer.weights["bias"], f"{hint}/bias")], hint)
    return [_activation(g, layer.activation.name, y, hint, f"Dense {layer.name!r}")], [call.masks[0]]


def _activation_layer(g: _Graph, call: _Call):
    layer = call.layer
    out = _activation(g, layer.activation.name, call.inputs[0], layer.name, f"Activation {layer.name!r}")
    return [out], [call.masks[0]]


def _dropout(g: _Graph, call: _Call):
    _check_training(call, call.layer.rate > 0, "its output is random (Monte-Carlo dropout)")
    return [call.inputs[0]], [call.masks[0]]


def _embedding(g: _Graph, call: _Call):
    layer, hint = call.layer, call.layer.name
    ids = g.cast(call.inputs[0], "INT64", hint)  # float ids truncate, as predict's cast
    out = g.op("Gather", [g.const(layer.weights["embeddings"], f"{hint}/embeddings"), ids], hint, axis=0)
    mask = g.op("Not", [g.op("Equal", [ids, g.const(np.int64(0), "zero_i64")], hint)], hint) if layer.mask_zero \
        else None
    return [out], [mask]


def _masking(g: _Graph, call: _Call):
    layer, hint, x = call.layer, call.layer.name, call.inputs[0]
    differs = g.op("Not", [g.op("Equal", [x, g.const(np.float32(layer.mask_value), f"{hint}/mask_value")], hint)],
                   hint)
    keep = g.reduce("ReduceMax", g.cast(differs, "FLOAT", hint), [-1], hint, keepdims=1)  # [B,T,1]
    out = g.op("Mul", [x, keep], hint)
    return [out], [g.cast(g.op("Squeeze", [keep, g.ints([-1])], hint), "BOOL", hint)]


def _repeat_vector(g: _Graph, call: _Call):
    layer, hint = call.layer, call.layer.name
    x = g.op("Unsqueeze", [call.inputs[0], g.ints([1])], hint)
    return [g.op("Tile", [x, g.ints([1, layer.n, 1], f"{hint}/repeats")], hint)], [None]


def _flatten(g: _Graph, call: _Call):
    return [g.op("Flatten", [call.inputs[0]], call.layer.name, axis=1)], [None]


def _time_distributed(g: _Graph, call: _Call):
    layer, hint, x = call.layer, call.layer.name, call.inputs[0]
    inner = layer.layer
    shape = call.in_shapes[0]
    if type(inner).__name__ in ("Dense", "Activation", "Dropout"):  # they act on the last axis alone
        outs, _ = _convert(g, _Call(inner, [x], [None], [shape], call.out_shapes, call.training))
        return outs, [call.masks[0]]
    rest = list(shape[2:])
    out_rest = list(call.out_shapes[0][2:])
    if any(d is None for d in rest + out_rest):
        raise ValueError(f"export to ONNX: TimeDistributed {layer.name!r} needs known inner shapes, got input "
                         f"{shape} and output {call.out_shapes[0]}")
    flat = g.op("Reshape", [x, g.ints([-1] + rest)], hint)
    inner_out = inner.compute_output_shape((None,) + tuple(rest))
    outs, _ = _convert(g, _Call(inner, [flat], [None], [(None,) + tuple(rest)], [inner_out], call.training))
    batch_time = g.op("Shape", [x], hint, start=0, end=2)
    back = g.op("Concat", [batch_time, g.ints(out_rest)], hint, axis=0)
    return [g.op("Reshape", [outs[0], back], hint)], [call.masks[0]]


def _or_masks(g: _Graph, masks, hint: str) -> Optional[str]:
    if any(m is None for m in masks):
        return None
    out = masks[0]
    for m in masks[1:]:
        out = g.op("Or", [out, m], hint)
    return out


def _concatenate(g: _Graph, call: _Call):
    layer, hint = call.layer, call.layer.name
    rank = len(call.in_shapes[0])
    axis = layer.axis % rank
    mask = None
    if any(m is not None for m in call.masks):
        if axis != rank - 1:
            raise ValueError(f"export to ONNX: Concatenate {layer.name!r} joins masked inputs on axis {layer.axis}; "
                             f"only the last axis is supported with masks")
        mask = _or_masks(g, call.masks, hint)  # a missing mask counts as all true: then no mask
    return [g.op("Concat", call.inputs, hint, axis=axis)], [mask]


def _merge(g: _Graph, call: _Call):
    layer, hint = call.layer, call.layer.name
    kind = type(layer).__name__
    if len({len(s) for s in call.in_shapes}) != 1:
        raise ValueError(f"export to ONNX: {kind} {layer.name!r} merges inputs of different ranks "
                         f"{[tuple(s) for s in call.in_shapes]}; only equal ranks are supported")
    xs = call.inputs
    if kind == "Subtract":
        out = g.op("Sub", xs, hint)
    else:
        out = g.op("Sum", xs, hint) if len(xs) > 1 else xs[0]
        if kind == "Average":
            out = g.op("Mul", [out, g.const(np.float32(1.0 / len(xs)), "inv_n")], hint)
    return [out], [_or_masks(g, call.masks, hint)]


def _batch_normalization(g: _Graph, call: _Call):
    layer, hint = call.layer, call.layer.name
    _check_training(call, True, "it normalises with each batch's statistics")
    w = {key: np.asarray(value, np.float64) for key, value in zip(layer.weights, layer.get_weights())}
    rank = len(call.in_shapes[0])
    shape = [1] * rank
    shape[layer.axis % rank] = -1
    inv = 1.0 / np.sqrt(w["moving_variance"] + layer.epsilon)
    scale = inv * w["gamma"] if layer.scale else inv
    y = g.op("Sub", [call.inputs[0], g.const(w["moving_mean"].reshape(shape), f"{hint}/moving_mean")], hint)
    y = g.op("Mul", [y, g.const(scale.reshape(shape), f"{hint}/scale")], hint)
    if layer.center:
        y = g.op("Add", [y, g.const(w["beta"].reshape(shape), f"{hint}/beta")], hint)
    return [y], [call.masks[0]]


_CONVERTERS: Dict[str, Callable] = {
    "Dense": _dense, "Activation": _activation_layer, "Dropout": _dropout, "Embedding": _embedding,
    "Masking": _masking, "RepeatVector": _repeat_vector, "Flatten": _flatten, "TimeDistributed": _time_distributed,
    "Concatenate": _concatenate, "Add": _merge, "Subtract": _merge, "Average": _merge,
    "BatchNormalization": _batch_normalization, "LSTM": _lstm, "Bidirectional": _bidirectional,
}
SUPPORTED_LAYERS = tuple(sorted(_CONVERTERS))


def _convert(g: _Graph, call: _Call):
    kind = type(call.layer).__name__
    converter = _CONVERTERS.get(kind)
    if converter is None or type(call.layer).__module__.split(".")[0] != "lstmfast":
        raise ValueError(f"export to ONNX: layer {call.layer.name!r} ({kind}) has no ONNX form here; supported "
                         f"layers: {', '.join(SUPPORTED_LAYERS)}")
    return converter(g, call)


# ---- the model ------------------------------------------------------------------------------------

_ELEM = {"float16": "FLOAT16", "float32": "FLOAT", "float64": "FLOAT", "int8": "INT8", "int16": "INT16",
         "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
         "uint64": "UINT64", "bool": "BOOL"}


def _input_dims(t, name: str, dynamic_time: bool) -> list:
    shape, dtype = tuple(t.shape), np.dtype(t.dtype) if t.dtype else np.dtype(np.float32)
    sequence = len(shape) == 3 or (len(shape) == 2 and dtype.kind in "iu")
    dims = []
    for k, d in enumerate(shape):
        if k == 0:
            dims.append("batch")
        elif k == 1 and sequence and (dynamic_time or d is None):
            dims.append("time")
        else:
            dims.append(f"{name}_dim{k}" if d is None else int(d))
    return dims


def export_onnx(model: Model, filepath: PathLike, *, opset: int = DEFAULT_OPSET, dynamic_time: bool = True,
                verbose: bool = False) -> None:
    """Write ``model`` (Sequential or functional, built) to ``filepath`` as an ONNX model, atomically.

    Inputs are named after the model's input layers, outputs ``output_0``, ``output_1``, ...; a
    float input is float32, an integer one (Embedding ids) keeps its dtype. ``opset``: 15..21
    (default 17; onnxruntime runs them all). ``dynamic_time``: the time axis of sequence inputs
    is dynamic (default), else fixed where the model's shape fixes it. The graph is checked with
    ``onnx.checker`` before it is written. Errors name the layer that cannot be exported.
    """
    onnx = _onnx()
    from ..models import Model

    if not isinstance(model, Model):
        raise TypeError(f"export_onnx: model must be an lstmfast Model or Sequential, got {type(model).__name__}")
    if not model.built or not model._steps:
        raise ValueError(f"export_onnx: model {model.name!r} is not built (give it an input shape, or call it on "
                         f"data once) or has no layers")
    if isinstance(opset, bool) or not isinstance(opset, int) or not _MIN_OPSET <= opset <= _MAX_OPSET:
        raise ValueError(f"export_onnx: opset must be an int in [{_MIN_OPSET}, {_MAX_OPSET}], got {opset!r}")
    check_writable(filepath, "export_onnx: filepath")
    g = _Graph(onnx, opset)
    helper, TP = onnx.helper, onnx.TensorProto
    values: Dict[int, str] = {}
    masks: Dict[int, Optional[str]] = {}
    graph_inputs = []
    for tid, t in zip(model._input_ids, model._input_tensors):
        name = g.name(t._history[0].name)
        dtype = str(np.dtype(t.dtype)) if t.dtype else "float32"
        if dtype not in _ELEM:
            raise ValueError(f"export_onnx: input {name!r} has dtype {dtype}, which ONNX inputs here cannot take")
        graph_inputs.append(helper.make_tensor_value_info(name, getattr(TP, _ELEM[dtype]),
                                                          _input_dims(t, name, dynamic_time)))
        values[tid] = name  # a float64 model's inputs are float32 too: the graph is float32
        masks[tid] = None
    for step in model._steps:
        node = step.node
        call = _Call(step.layer, [values[i] for i in step.inputs], [masks[i] for i in step.inputs],
                     [tuple(t.shape) for t in node.inputs], [tuple(t.shape) for t in node.outputs], step.training)
        outs, out_masks = _convert(g, call)
        if len(outs) != len(step.outputs):
            raise ValueError(f"export to ONNX: layer {step.layer.name!r} gave {len(outs)} outputs, the model "
                             f"expects {len(step.outputs)}")
        for i, out, mask in zip(step.outputs, outs, out_masks):
            values[i], masks[i] = out, mask
    graph_outputs = []
    for k, (tid, t) in enumerate(zip(model._output_ids, model._output_tensors)):
        name = g.name(f"output_{k}")
        g.nodes.append(helper.make_node("Identity", [values[tid]], [name], name=g.name(f"{name}/Identity")))
        shape = tuple(t.shape)
        dims = ["batch"] + [None] * (len(shape) - 2) + ([int(shape[-1])] if len(shape) > 1 and shape[-1] else [None])
        graph_outputs.append(helper.make_tensor_value_info(name, TP.FLOAT, dims[:len(shape)]))
    graph = helper.make_graph(g.nodes, model.name, graph_inputs, graph_outputs, g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="lstmfast",
                              producer_version=_version(), ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto)
    with atomic_file(filepath, "wb") as f:
        f.write(proto.SerializeToString())
    if verbose:
        print(f"Saved ONNX model (opset {opset}) to {filepath}")


def _version() -> str:
    from .. import __version__
    return __version__
