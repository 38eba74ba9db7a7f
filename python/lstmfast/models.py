"""Keras-style models: ``Sequential`` and the functional ``Model(inputs, outputs)``.

Both run the same small graph executor: a list of steps (one per layer call, in topological
order) over numbered tensors. Training runs each step's ``layer.forward`` (which returns the
outputs and a cache), the loss, then each step's ``layer.backward`` in reverse, and hands the
accumulated gradients to the optimizer. Inference runs ``layer.call`` and keeps nothing.

Masks (from ``Embedding(mask_zero=True)``) travel with the tensors through ``compute_mask``; a
masked sequence output weights its loss like Keras does (the mean over unmasked steps).

Where a model runs is decided in one place, ``Model._place``: before each batch it puts the weights,
gradients and buffers of every layer, and the optimizer's slots, on ``lstmfast.get_backend()``
(moving them only when that changed); each batch's inputs are then copied there once (the ids of
Embeddings fed by a model input checked on the host first), and the loss and the metrics run
there too, on the model's outputs. A training step on a GPU reads nothing back: the loss and the
metrics' sums stay on the device and are read in one copy at the end of each epoch, or when a
callback reads the logs of a batch (``_read_logs``; the progress bar reads them only when it
draws). ``predict`` copies the outputs to the host.

``load_model`` (also ``lstmfast.load_model``) rebuilds a model from a file; ``lstmfast.saving``
reads and writes the file and knows models only through their public methods (``get_config``,
``get_compile_config``, ``get_weights``, the optimizer's ``get_state``).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _file_limits, backend, distributed, ops, saving
from . import layers as layers_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from ._naming import snake_case, unique_name
from ._typing import ArrayData, ArrayLike, ModelData, PathLike
from .callbacks import Callback, CallbackList, History
from .data_adapters import ArrayBatches, GeneratorBatches, PyDatasetBatches, is_batch_source
from .layers import KerasTensor, Layer
from .losses import Loss, LossLike
from .metrics import MetricLike
from .optimizers import OptimizerLike
from .utils import PyDataset

__all__ = ["Model", "Sequential", "load_model", "model_from_config"]


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _sequence_weights(pred, mask, sample_weight):
    """The weights of an output's loss: for a sequence output with a mask, the mask scaled to make
    the loss a mean over the unmasked steps (0 when none is), times ``sample_weight``; else
    ``sample_weight``. Computed where the output is, nothing read back."""
    if mask is None or pred.ndim != 3:
        return sample_weight
    xp = ops.array_module(pred)
    m = mask.astype(pred.dtype)
    steps = m.sum()
    m *= (m.size / xp.maximum(steps, 1)) * (steps > 0)  # steps >= 1 where it is > 0
    if sample_weight is None:
        return m
    return m * (sample_weight[:, None] if np.ndim(sample_weight) == 1 else sample_weight)


def _shapes_of(arrays) -> tuple:
    """The shapes and dtypes of arrays (a host array's are those of its device copy): what a graph
    is kept for."""
    return tuple((np.shape(a), (a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype).str) for a in arrays)


def _batch_key(xs, ys, sample_weight) -> tuple:
    """The shapes and dtypes of a batch: what the outputs' shapes are remembered for."""
    return _shapes_of(list(xs) + list(ys)), None if sample_weight is None else np.shape(sample_weight)


def _batch_count(arrays: List[np.ndarray]) -> int:
    return arrays[0].shape[0] if arrays else 0


class _Step:
    """One layer call in the graph: which tensors go in and come out, and in which structure."""

    __slots__ = ("layer", "inputs", "outputs", "multi_in", "multi_out", "training", "node", "kwargs",
                 "grad_in")

    def __init__(self, layer, inputs, outputs, multi_in, multi_out, training, node):
        self.layer, self.inputs, self.outputs = layer, inputs, outputs
        self.multi_in, self.multi_out = multi_in, multi_out
        self.training = training  # None, or a flag forced at call time (e.g. Dropout(0.5)(x, training=True))
        self.node = node
        self.kwargs = node.layer_kwargs  # the layer's own call-time arguments (Attention's use_causal_mask)
        self.grad_in = True  # whether some input depends on a layer with weights (see _build_graph)


class Model:
    """A graph of layers with Keras's training API.

    ``Model(inputs, outputs)`` builds from symbolic tensors made by ``lstmfast.layers.Input`` and
    layer calls; ``Sequential`` (below) is a chain of layers.
    """

    _placed_on = "cpu"  # where the weights are: "cpu" or "cuda" (see _place)
    _id_checks = None  # [(input position, layer)]: layers whose model input is checked on the host (_to_device)
    _single_input = True  # Model(x, y) with one tensor, not a list (get_config keeps the structure)
    _single_output = True

    def __init__(self, inputs: Union[None, KerasTensor, Sequence[KerasTensor]] = None,
                 outputs: Union[None, KerasTensor, Sequence[KerasTensor]] = None, name: Optional[str] = None) -> None:
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.optimizer = None
        self.loss = None
        self.compiled = False
        self.stop_training = False     # a callback sets these to end fit, evaluate or predict early
        self.stop_evaluating = False
        self.stop_predicting = False
        self.history = None
        self._metric_specs: list = []
        self._ranks_synced = False  # data-parallel: rank 0's weights broadcast since the last compile
        self._steps: List[_Step] = []
        self._layers: list = []
        self._input_tensors: list = []
        self._output_tensors: list = []
        self._n_tensors = 0
        self._input_ids: List[int] = []
        self._output_ids: List[int] = []
        self._train_pairs: Optional[list] = None
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ValueError("Model(inputs, outputs) needs both inputs and outputs (symbolic tensors from Input())")
            self._build_graph(_as_list(inputs), _as_list(outputs))
            self._single_input = not isinstance(inputs, (list, tuple))
            self._single_output = not isinstance(outputs, (list, tuple))

    # ---- graph ----------------------------------------------------------------------------------

    def _build_graph(self, inputs: list, outputs: list) -> None:
        for t in inputs + outputs:
            if not isinstance(t, layers_module.KerasTensor):
                raise TypeError(f"Model inputs and outputs must be symbolic tensors from lstmfast.layers.Input "
                                f"and layer calls, got {type(t).__name__}")
        ids: Dict[int, int] = {}

        def tid(t) -> int:
            key = id(t)
            if key not in ids:
                ids[key] = len(ids)
            return ids[key]

        self._input_tensors, self._output_tensors = inputs, outputs
        self._input_ids = [tid(t) for t in inputs]
        # Depth-first from the outputs back to the inputs, emitting each node after its inputs.
        order: list = []
        seen_nodes = set()
        input_keys = {id(t) for t in inputs}

        def visit(t, stack):
            if id(t) in input_keys:
                return
            layer, node_index, _ = t._history
            node = layer._inbound_nodes[node_index]
            if id(node) in seen_nodes:
                return
            if id(node) in stack:
                raise ValueError("the layer graph has a cycle")
            if isinstance(layer, layers_module.InputLayer):
                raise ValueError(f"output depends on input {t.name!r}, which is not among the model's inputs")
            stack.add(id(node))
            for src in node.inputs:
                visit(src, stack)
            stack.discard(id(node))
            seen_nodes.add(id(node))
            order.append(node)

        for t in outputs:
            visit(t, set())
        steps, layer_list = [], []
        for node in order:
            in_ids = [tid(t) for t in node.inputs]
            out_ids = [tid(t) for t in node.outputs]
            multi_in = len(node.inputs) > 1
            multi_out = len(node.outputs) > 1
            training = node.call_kwargs.get("training")
            steps.append(_Step(node.layer, in_ids, out_ids, multi_in, multi_out, training, node))
            if node.layer not in layer_list:
                layer_list.append(node.layer)
        # Backward can skip a weightless step whose inputs depend on no weights: nobody needs its
        # input gradients (a Lambda preprocessing the model's input need not be differentiable).
        with_grad = set()
        for step in steps:
            step.grad_in = any(i in with_grad for i in step.inputs)
            if step.grad_in or len(step.layer.weights):
                with_grad.update(step.outputs)
        self._steps = steps
        self._layers = layer_list
        self._output_ids = [tid(t) for t in outputs]
        self._n_tensors = len(ids)
        self._train_pairs = None
        self._id_checks = None
        self._device_outputs: Dict[tuple, list] = {}  # batch key -> [(shape, dtype)] of the outputs on a device

    @property
    def layers(self) -> list:
        """The model's layers in call order (input layers first for functional models)."""
        input_layers = [t._history[0] for t in self._input_tensors]
        return input_layers + [layer for layer in self._layers if layer not in input_layers]

    def get_layer(self, name: Optional[str] = None, index: Optional[int] = None) -> Layer:
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: {[layer.name for layer in self.layers]}")

    @property
    def built(self) -> bool:
        return bool(self._input_ids)

    # ---- execution ----------------------------------------------------------------------------

    def _run(self, inputs: List[np.ndarray], training: bool, keep_caches: bool):
        """Forward through the graph. Returns (values, masks, caches)."""
        values: list = [None] * self._n_tensors
        masks: list = [None] * self._n_tensors
        for i, x in zip(self._input_ids, inputs):
            values[i] = x
        caches = [] if keep_caches else None
        for step in self._steps:
            if step.multi_in:
                x = [values[i] for i in step.inputs]
                m = [masks[i] for i in step.inputs]
                if all(v is None for v in m):
                    m = None
            else:
                x = values[step.inputs[0]]
                m = masks[step.inputs[0]]
            layer = step.layer
            flag = training if step.training is None else step.training
            kwargs = step.kwargs  # mostly empty: calls without ** are the cheaper ones
            if keep_caches:
                out, cache = (layer.forward(x, training=flag, mask=m, **kwargs) if kwargs
                              else layer.forward(x, training=flag, mask=m))
                caches.append(cache)
            else:
                out = layer.call(x, training=flag, mask=m, **kwargs) if kwargs else layer.call(x, training=flag, mask=m)
            out_mask = layer.compute_mask(x, m, **kwargs) if kwargs else layer.compute_mask(x, m)
            if step.multi_out:
                out_masks = out_mask if isinstance(out_mask, (list, tuple)) else [out_mask] * len(out)
                for i, v, mk in zip(step.outputs, out, out_masks):
                    values[i], masks[i] = v, mk
            else:
                values[step.outputs[0]] = out
                masks[step.outputs[0]] = out_mask
        return values, masks, caches

    def _backward(self, caches: list, output_grads: Dict[int, np.ndarray]) -> None:
        grads: list = [None] * self._n_tensors
        for i, g in output_grads.items():
            grads[i] = g
        for step, cache in zip(reversed(self._steps), reversed(caches)):
            if not step.grad_in and not len(step.layer.weights):
                continue
            if step.multi_out:
                g_out = [grads[i] for i in step.outputs]
                if all(g is None for g in g_out):
                    continue
            else:
                g_out = grads[step.outputs[0]]
                if g_out is None:
                    continue
            g_in = step.layer.backward(cache, g_out)
            if step.multi_in:
                pairs = zip(step.inputs, g_in)
            else:
                pairs = ((step.inputs[0], g_in),)
            for i, g in pairs:
                if g is None:
                    continue
                grads[i] = g if grads[i] is None else grads[i] + g

    # ---- compile --------------------------------------------------------------------------------

    def compile(self, optimizer: OptimizerLike = "rmsprop", loss: Union[None, LossLike, Sequence[LossLike]] = None,
                metrics: Union[None, Sequence[MetricLike], Sequence[Sequence[MetricLike]]] = None,
                loss_weights: Optional[Sequence[float]] = None, run_eagerly: Optional[bool] = None,
                jit_compile: Optional[bool] = None, **kwargs: Any) -> None:
        """Configure training: optimizer (name or instance), loss (name, instance, or one per output),
        metrics (names such as "accuracy", "mae"; a list, or one list per output)."""
        if kwargs:
            raise TypeError(f"compile() got unexpected arguments: {sorted(kwargs)}")
        self.optimizer = optimizers_module.get(optimizer)
        n_out = len(self._output_ids) if self.built else None
        if isinstance(loss, (list, tuple)):
            self.loss = [losses_module.get(each) for each in loss]
        elif isinstance(loss, dict):
            raise TypeError("loss as a dict is not supported; pass a list with one loss per output")
        else:
            self.loss = losses_module.get(loss)
        if n_out is not None and isinstance(self.loss, list) and len(self.loss) != n_out:
            raise ValueError(f"compile() got {len(self.loss)} losses for a model with {n_out} outputs")
        self._loss_weights = list(loss_weights) if loss_weights is not None else None
        self._metric_specs = metrics if metrics is not None else []
        if isinstance(self._metric_specs, str):
            raise TypeError(f"metrics must be a list, e.g. metrics=[{self._metric_specs!r}]")
        specs = self._metric_specs
        if specs and isinstance(specs[0], (list, tuple)):  # one list per output
            specs = [m for per in specs for m in per]
        for spec in specs:
            metrics_module.get(spec)  # validates names now (a clear error at compile time)
        self._compile_args = {"optimizer": optimizer, "loss": loss, "metrics": metrics, "loss_weights": loss_weights}
        self.compiled = True
        self._metrics_built = None
        self._train_pairs = None
        self._ranks_synced = False

    def _losses_per_output(self) -> list:
        n = len(self._output_ids)
        if isinstance(self.loss, list):
            if len(self.loss) != n:
                raise ValueError(f"compile() got {len(self.loss)} losses for a model with {n} outputs")
            return self.loss
        return [self.loss] * n

    def _build_metrics(self, ys: List[np.ndarray], preds: List[np.ndarray]) -> None:
        n = len(self._output_ids)
        specs = self._metric_specs
        if specs and isinstance(specs[0], (list, tuple)):
            per_output = [list(s) for s in specs]
            if len(per_output) != n:
                raise ValueError(f"metrics has {len(per_output)} lists for a model with {n} outputs")
        else:
            per_output = [list(specs)] + [[] for _ in range(n - 1)] if n > 1 and specs else [list(specs)] * max(n, 1)
        losses = self._losses_per_output()
        built = []
        for k in range(n):
            prefix = "" if n == 1 else self._output_name(k) + "_"
            for spec in per_output[k]:
                metric = metrics_module.resolve(spec, losses[k].name, ys[k], preds[k])
                built.append((k, prefix + metric.name, metric))
        self._metrics_built = built

    def _output_name(self, k: int) -> str:
        t = self._output_tensors[k]
        return t._history[0].name

    # ---- data handling -------------------------------------------------------------------------

    def _prepare_x(self, x, what: str = "x") -> List[np.ndarray]:
        if x is None:
            raise ValueError(f"{what} is required")
        xs = _as_list(x) if isinstance(x, (list, tuple)) and self._expects_multiple_inputs(x) else [x]
        self._ensure_built_from(xs)
        if len(xs) != len(self._input_ids):
            raise ValueError(f"{what}: the model has {len(self._input_ids)} inputs, got {len(xs)} arrays")
        out = []
        for k, arr in enumerate(xs):
            t = self._input_tensors[k]
            arr = np.asarray(arr)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"{what} must be numeric, got dtype {arr.dtype}")
            want = np.dtype(t.dtype) if t.dtype else None
            if want is not None and arr.dtype != want and not (want.kind in "iu" and arr.dtype.kind == "f"):
                arr = arr.astype(want)
            expected = tuple(t.shape[1:])
            if arr.shape[1:] != expected and (len(arr.shape) != len(t.shape) or any(
                    e is not None and e != g for e, g in zip(expected, arr.shape[1:]))):
                name = f"input {k} ({t.name})" if len(xs) > 1 else what
                raise ValueError(f"{name} must have shape (batch,) + {tuple(expected)} (None = any), "
                                 f"got {tuple(arr.shape)}")
            out.append(arr)
        if len(out) > 1:
            n = {a.shape[0] for a in out}
            if len(n) > 1:
                raise ValueError(f"{what}: all input arrays must have the same number of samples, got {sorted(n)}")
        return out

    def _expects_multiple_inputs(self, x) -> bool:
        # A list is several inputs for a multi-input model; for one input it is the data itself.
        return (len(self._input_ids) > 1) if self.built else len(x) > 1 and all(hasattr(a, "shape") for a in x)

    def _ensure_built_from(self, xs: List[np.ndarray]) -> None:
        if not self.built:
            raise ValueError("this model is not built; give the first layer an input_shape or start with Input()")

    def _prepare_y(self, y, n_samples: int, what: str = "y") -> List[np.ndarray]:
        n_out = len(self._output_ids)
        ys = list(y) if (n_out > 1 and isinstance(y, (list, tuple))) else [y]
        if len(ys) != n_out:
            raise ValueError(f"{what}: the model has {n_out} outputs, got {len(ys)} target arrays")
        out = []
        for k, arr in enumerate(ys):
            arr = np.asarray(arr)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"{what} must be numeric, got dtype {arr.dtype}")
            if arr.ndim == 0 or arr.shape[0] != n_samples:
                raise ValueError(f"{what} has {arr.shape[0] if arr.ndim else 0} samples but x has {n_samples}; "
                                 f"x and y must have the same number of samples (got y shape {arr.shape})")
            out.append(arr)
        return out

    def _batch_source(self, source, purpose: str, steps=None, shuffle=False, class_weight=None):
        """The adapter of a generator or PyDataset for ``purpose`` ("fit", "evaluate", "predict",
        "validation"): each batch it yields is checked here like array data."""
        kind = "PyDataset" if isinstance(source, PyDataset) else "generator"
        targets = purpose != "predict"

        def prepare(batch, index):
            where = f"batch {index} of the {kind}"
            if isinstance(batch, list):
                batch = tuple(batch)
            elif not isinstance(batch, tuple):
                batch = (batch,)
            if not 1 <= len(batch) <= 3:
                raise ValueError(f"{where} has {len(batch)} elements; a batch must be x, (x,), (x, y) or "
                                 f"(x, y, sample_weight)")
            xs = self._prepare_x(batch[0], f"x ({where})")
            if not targets:
                return xs, None, None
            if len(batch) < 2 or batch[1] is None:
                raise ValueError(f"{purpose} needs targets, but {where} holds x only: yield (x, y) or "
                                 f"(x, y, sample_weight)")
            n = xs[0].shape[0]
            ys = self._prepare_y(batch[1], n, f"y ({where})")
            sw = None if len(batch) < 3 or batch[2] is None else np.asarray(batch[2], np.float64)
            if sw is not None and (sw.ndim == 0 or sw.shape[0] != n):
                raise ValueError(f"sample_weight ({where}) has shape {sw.shape} but x has {n} samples")
            if class_weight is not None:
                sw = _class_weights_to_sample_weights(class_weight, ys[0], sw)
            return xs, ys, sw

        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if kind == "PyDataset":
            return PyDatasetBatches(source, prepare, steps, shuffle)
        return GeneratorBatches(source, prepare, steps)

    # ---- training steps ------------------------------------------------------------------------

    def _trainable_pairs(self) -> list:
        """(gradient, weight) pairs the optimizer updates: each layer's ``trainable_pairs()``, which
        leave out frozen layers and non-trainable weights (BatchNormalization's moving statistics)."""
        if self._train_pairs is None:
            self._train_pairs = [pair for layer in self._layers for pair in layer.trainable_pairs()]
        return self._train_pairs

    def _output_losses(self, ys, values, masks, sample_weight, counts: bool = False) -> list:
        """``[(loss, gradient w.r.t. the output, count)]`` per output, the loss weights applied.
        ``count`` (with ``counts``) is what the loss is a mean over: the rows, or a masked sequence
        output's unmasked steps (data-parallel training weights each rank's part by it)."""
        losses = self._losses_per_output()
        out = []
        weights = self._loss_weights
        for k, (oid, loss) in enumerate(zip(self._output_ids, losses)):
            pred = values[oid]
            mask = masks[oid]
            count = float(pred.shape[0])
            if counts and mask is not None and pred.ndim == 3:
                # counted on the host: a device mask made from host values (an Embedding's) is not read back
                count = float(ops.to_numpy(mask).astype(pred.dtype).sum())
            value, grad = loss.value_and_grad(ys[k], pred, _sequence_weights(pred, mask, sample_weight))
            if weights is not None:
                value *= weights[k]
                grad = grad * weights[k]
            out.append((value, grad, count))
        return out

    def _loss_and_grads(self, ys, values, masks, sample_weight):
        parts = self._output_losses(ys, values, masks, sample_weight)
        return sum(value for value, _, _ in parts), {oid: grad for oid, (_, grad, _) in zip(self._output_ids, parts)}

    # ---- where the model runs -----------------------------------------------------------------

    def _place(self) -> str:
        """The placement step: put the weights, gradients and buffers of every layer (wrappers'
        inner layers included) and the optimizer's slots on ``lstmfast.get_backend()``, moving them
        only when that changed. Returns the backend, "cpu" or "cuda"."""
        where = ops.get_backend()
        if self._placed_on != where:
            for layer in self._all_layers():
                for arrays in (layer.weights, layer.grads, layer.buffers):
                    for key in list(arrays):
                        arrays[key] = ops.to_backend(arrays[key], where)
            self._train_pairs = None
            for name in ("_graphed_inference", "_graphed_training", "_graphed_evaluation"):  # they hold the old arrays
                if name in self.__dict__:
                    self.__dict__[name].clear()
            optimizer = self.optimizer
            if optimizer is not None and optimizer.built:
                state = optimizer.get_state()              # the slots as NumPy copies
                optimizer.build(self.trainable_weights)    # new slots beside the moved weights
                optimizer.set_state(state)
            self._placed_on = where
        return where

    def _all_layers(self) -> list:
        """Every layer of the model once, the inner layers of wrappers included."""
        seen, out = set(), []
        stack = list(self._layers)
        while stack:
            layer = stack.pop()
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            out.append(layer)
            stack.extend(getattr(layer, "_sublayers", lambda: [])())
        return out

    def _to_device(self, xs, extra=(), into=None) -> list:
        """The batch's input arrays, then ``extra`` (checked targets, sample weights), copied to the
        device (through pinned buffers, see ``ops.batch_to_device``; into the arrays ``into`` when
        given), one copy each. Layers that check the values of a model input (Embedding's ids)
        check the host array first, so that they need not read the device copy back."""
        moved = ops.batch_to_device(list(xs) + list(extra), into)
        checks = self._id_checks
        if checks is None:
            positions = {tid: k for k, tid in enumerate(self._input_ids)}
            checks = self._id_checks = [
                (positions[step.inputs[0]], step.layer) for step in self._steps
                if not step.multi_in and step.inputs[0] in positions and hasattr(step.layer, "check_indices")]
        for k, layer in checks:
            layer.check_indices(xs[k], moved[k])
        return moved

    def _outputs_to_host(self, values, masks):
        """The model outputs (and their masks) as NumPy arrays: the loss and the metrics run on the
        host. One copy of each output per batch."""
        values, masks = list(values), list(masks)
        for i in self._output_ids:
            values[i] = ops.to_numpy(values[i])
            if masks[i] is not None:
                masks[i] = ops.to_numpy(masks[i])
        return values, masks

    def _train_batch(self, xs, ys, sample_weight=None) -> float:
        """One step on one batch: forward, loss, backward, the metrics' update, the optimizer's
        step; returns the batch's loss. In data-parallel training (``lstmfast.distributed``) the
        batch is this rank's slice of the global batch (it may be empty), and the step sums the
        ranks' gradients, losses and metric updates before the optimizer steps."""
        where = self._place()
        world = distributed.data_parallel()
        rows = xs[0].shape[0]
        if where != "cpu" and world is None and rows:
            loss = self._step_on_device(True, xs, ys, sample_weight)
            if loss is not None:
                return loss
        for layer in self._layers:
            if layer.trainable:
                layer.zero_grads()
        if rows:
            if where != "cpu":
                xs = self._to_device(xs)  # the batch moves to the device once
            values, masks, caches = self._run(xs, training=True, keep_caches=True)
            parts = self._output_losses(ys, values, masks, sample_weight, world is not None)  # where the outputs are
        else:  # a rank whose slice of a short last batch is empty still takes part in the sums
            parts = [(0.0, None, 0.0) for _ in self._output_ids]
        if world is not None:
            parts = [(float(value), grad, count) for value, grad, count in parts]  # a device loss: read here
            # Each output's part of the global loss is this rank's count over all ranks' counts. With
            # one output the step sends the loss as a sum (scaled by the count) with the count itself,
            # and divides after its one allreduce; several outputs need their totals before backward.
            counts = [count for _, _, count in parts]
            scales = counts if len(parts) == 1 else world.output_shares(counts)
            parts = [(value * scale, None if grad is None else grad * scale, count)
                     for (value, grad, count), scale in zip(parts, scales)]
        loss = sum(value for value, _, _ in parts)
        if rows:
            loss_scale = self.optimizer._loss_scale()  # a LossScaleOptimizer's (Keras's scale_loss)
            out_grads = {oid: grad if loss_scale == 1.0 else grad * loss_scale
                         for oid, (_, grad, _) in zip(self._output_ids, parts)}
            if where != "cpu":
                out_grads = {i: ops.to_backend(g, where) for i, g in out_grads.items()}
                self._device_outputs[_batch_key(xs, ys, sample_weight)] = [
                    (values[i].shape, values[i].dtype) for i in self._output_ids]
            self._backward(caches, out_grads)
            self._last_values, self._last_masks = values, masks
        pairs = self._trainable_pairs()
        if world is None:
            if rows:
                self._update_metrics(ys, sample_weight)
        else:
            before = self._metric_states()
            if rows:
                self._update_metrics(ys, sample_weight)
            after = self._metric_states()
            before = before if len(before) == len(after) else [0.0] * len(after)  # built by this batch
            sums_of_counts = counts[:1] if len(parts) == 1 else []  # the one output's divisor, summed too
            summed, values_sum = world.reduce_step(
                [g for g, _ in pairs], [loss] + sums_of_counts + [a - b for a, b in zip(after, before)])
            scale = 1.0
            if sums_of_counts:
                scale = 1.0 / values_sum[1] if values_sum[1] > 0 else 1.0
                values_sum = np.concatenate([[values_sum[0] * scale], values_sum[2:]])
            for (grad, _), total in zip(pairs, summed):  # copied back and scaled in place: no new arrays
                grad[...] = total
                if scale != 1.0:
                    grad *= grad.dtype.type(scale)
            loss = float(values_sum[0])
            self._set_metric_states([b + d for b, d in zip(before, values_sum[1:])])
        self.optimizer.apply_gradients(pairs)
        return loss

    def _step_on_device(self, training: bool, xs, ys, sample_weight) -> Any:
        """The training step (``training``: forward, loss, backward, optimizer) or the evaluation
        step (forward and loss) on the device in one process, with the metrics' update, replayed as
        a CUDA graph per batch shape (``ops.GraphedCalls``); returns the batch's loss (a device
        scalar), or None where the plain step must run: at a shape's first batch (the outputs'
        shapes are not known yet), or for a loss, optimizer or metric that cannot run in a graph (a
        loss that overrides ``value_and_grad``, an optimizer without a fused kernel, a metric
        without ``get_state``). The targets are checked on the host against the outputs' shapes
        and copied with the inputs; the step gives the metrics' sums over the batch, added to their
        running sums outside it; a training replay's host part is the optimizer's step (its step
        count and step values)."""
        specs = self._device_outputs.get(_batch_key(xs, ys, sample_weight))
        losses = self._losses_per_output()
        metrics = [metric for _, _, metric in self._metrics_built or ()]
        optimizer = self.optimizer if training else None
        step_key = optimizer._captured_step_key() if training else ()
        if (specs is None or self._metrics_built is None or step_key is None
                or any(type(loss).value_and_grad is not Loss.value_and_grad for loss in losses)):
            return None
        try:
            states = [list(metric.get_state()) for metric in metrics]
        except NotImplementedError:
            return None
        targets = [loss._checked_targets(np.asarray(y), shape, dtype)
                   for loss, y, (shape, dtype) in zip(losses, ys, specs)]
        extra = targets + ([] if sample_weight is None else [np.asarray(sample_weight)])
        name = "_graphed_training" if training else "_graphed_evaluation"
        graphs = self.__dict__.get(name)
        if graphs is None:
            # a training graph keeps a batch's activations and gradients: at most 4 shapes (the
            # full batches and the last one of fit, or a few buckets of lengths)
            graphs = ops.GraphedCalls("training step", max_shapes=4) if training else ops.GraphedCalls(
                "evaluation step")
            setattr(self, name, graphs)
        key = (_shapes_of(list(xs) + extra), step_key)
        inputs = self._to_device(xs, extra, graphs.inputs_of(key))
        n_in, n_out = len(xs), len(targets)
        outputs, weights = self._output_ids, self._loss_weights
        pairs = self._trainable_pairs() if training else []
        layers = self._all_layers()

        def run(arrays):
            x, t = arrays[:n_in], arrays[n_in:n_in + n_out]
            sw = arrays[n_in + n_out] if len(arrays) > n_in + n_out else None
            if training:
                for layer in self._layers:
                    if layer.trainable:
                        layer.zero_grads()
            values, masks, caches = self._run(x, training=training, keep_caches=training)
            total, grads = 0.0, {}
            for k, (oid, loss) in enumerate(zip(outputs, losses)):
                value, grad = loss._value_and_grad_of(t[k], values[oid], _sequence_weights(values[oid], masks[oid], sw))
                if weights is not None:
                    value = value * weights[k]
                    grad = grad * weights[k] if training else None
                total, grads[oid] = total + value, grad
            if training:
                self._backward(caches, grads)
            self._last_values, self._last_masks = values, masks
            for metric in metrics:
                metric.reset_state()
            self._update_metrics(t, sw)
            sums = [v for metric in metrics for v in metric.get_state()]
            if training:
                optimizer.apply_gradients(pairs)
            return total, sums

        generators = [backend.get_rng()] + [layer._rng for layer in layers if getattr(layer, "_rng", None) is not None]

        def save():  # what a step changes on the host: a capture must leave it as it was
            return (optimizer.iterations if training else None, [list(metric.get_state()) for metric in metrics],
                    [g.bit_generator.state for g in generators])

        def restore(saved):
            if training:
                optimizer.iterations = saved[0]
            for metric, state in zip(metrics, saved[1]):
                metric.set_state(state)
            for g, state in zip(generators, saved[2]):
                g.bit_generator.state = state

        weights_now = [w for layer in layers for w in layer.weights.values()]
        if training:  # written in place: the weights (the optimizer's, BatchNormalization's
            # statistics), the slots and the dropout generators' draw counters
            written = weights_now + optimizer._slot_arrays() + ops.device_dropout_counters()
            keep = written + [g for g, _ in pairs]
        else:
            written, keep = [], weights_now
        keep = keep + losses + metrics  # compiled anew: captured anew
        loss, sums = graphs(key, run, inputs, [layer.buffers for layer in layers], keep, written=written,
                            before=(lambda: optimizer.apply_gradients(pairs)) if training else None,
                            host_state=(save, restore))
        at = 0
        for metric, state in zip(metrics, states):
            metric.set_state([a + b for a, b in zip(state, sums[at:at + len(state)])])
            at += len(state)
        self._last_values = [None] * self._n_tensors  # the graph's arrays: valid until its next launch
        return loss

    def _predict_batch(self, xs, to_host: bool = True) -> list:
        """The outputs of one batch, copied to the host unless ``to_host`` is False (evaluation:
        the loss and the metrics run where the outputs are)."""
        where = self._place()
        if where != "cpu":
            values, masks = self._inference_on_device(xs)
        else:
            values, masks, _ = self._run(xs, training=False, keep_caches=False)
        if where != "cpu" and to_host:
            values, masks = self._outputs_to_host(values, masks)
        self._last_values, self._last_masks = values, masks
        return [values[i] for i in self._output_ids]

    def _inference_on_device(self, xs) -> tuple:
        """(values, masks) of the inference step on the device for the host batch ``xs`` (copied
        there first), replayed as a CUDA graph per input shape (``ops.GraphedCalls``); the entries
        of tensors other than the outputs are None. The layers' buffers (a stateful LSTM's state)
        are the graph's state."""
        graphs = self.__dict__.get("_graphed_inference")
        if graphs is None:
            graphs = self._graphed_inference = ops.GraphedCalls()
        key = _shapes_of(xs)
        xs = self._to_device(xs, into=graphs.inputs_of(key))
        outputs = self._output_ids

        def run(inputs):
            values, masks, _ = self._run(inputs, training=False, keep_caches=False)
            keep = set(outputs)
            return ([v if i in keep else None for i, v in enumerate(values)],
                    [m if i in keep else None for i, m in enumerate(masks)])

        layers = self._all_layers()
        weights = [w for layer in layers for w in layer.weights.values()]
        return graphs(key, run, xs, [layer.buffers for layer in layers], weights)

    def _update_metrics(self, ys, sample_weight=None) -> None:
        values = self._last_values
        if self._metrics_built is None:
            self._build_metrics(ys, [values[i] for i in self._output_ids])
        if not self._metrics_built:
            return
        for k, _, metric in self._metrics_built:
            metric.update_state(ys[k], values[self._output_ids[k]], sample_weight)

    def _metric_states(self) -> List[float]:
        """The compiled metrics' running sums, flattened (``Metric.get_state``), as Python floats."""
        return [float(v) for _, _, metric in self._metrics_built or () for v in metric.get_state()]

    def _set_metric_states(self, values) -> None:
        at = 0
        for _, _, metric in self._metrics_built or ():
            n = len(metric.get_state())
            metric.set_state([float(v) for v in values[at:at + n]])
            at += n

    def _reset_metrics(self) -> None:
        for _, _, metric in self._metrics_built or ():
            metric.reset_state()

    def _metric_logs(self) -> Dict[str, float]:
        return {name: float(metric.result()) for _, name, metric in self._metrics_built or ()}

    def _read_logs(self, loss) -> Dict[str, float]:
        """``_logs`` for a loss and metric sums that may be on a device (a GPU step reads nothing
        back): all read to the host in one copy, the metrics' sums replaced by their host values."""
        metrics = [metric for _, _, metric in self._metrics_built or ()]
        try:
            states = [metric.get_state() for metric in metrics]
        except NotImplementedError:  # a metric of the user's without get_state: it reads its own
            states = []
        host = ops.to_floats([loss] + [v for state in states for v in state])
        at = 1
        for metric, state in zip(metrics, states):
            metric.set_state(host[at:at + len(state)])
            at += len(state)
        return self._logs(host[0])

    def _batch_logs(self, callbacks, hook: str, on_device: bool) -> Callable[[Any], Dict[str, float]]:
        """How a loop builds the logs of ``hook`` from the running loss: ``_logs`` on the host; on
        a device ``_read_logs`` (one read per batch) when some listener reads them as they come,
        logs that read the device when first looked at when the listeners read them only when
        they need them (``Callback.lazy_logs``: the progress bar, when it draws)."""
        if not on_device:
            return self._logs
        if callbacks.reads_logs_eagerly(hook):
            return self._read_logs
        return lambda loss: _LazyLogs(self._read_logs, loss)

    def _check_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"you must compile the model before {what}: call model.compile(optimizer, loss)")

    # ---- public training API -------------------------------------------------------------------

    def fit(self, x: Optional[ModelData] = None, y: Optional[ArrayData] = None,
            batch_size: Optional[int] = None, epochs: int = 1, verbose: Union[str, int] = "auto",
            callbacks: Optional[Sequence[Callback]] = None, validation_split: float = 0.0,
            validation_data: Union[None, ModelData, Sequence[Any]] = None, shuffle: Union[bool, str] = True,
            class_weight: Optional[Dict[int, float]] = None, sample_weight: Optional[ArrayLike] = None,
            initial_epoch: int = 0, steps_per_epoch: Optional[int] = None, validation_steps: Optional[int] = None,
            validation_batch_size: Optional[int] = None, validation_freq: int = 1, **kwargs: Any) -> History:
        """Train for ``epochs`` epochs; returns the History. Keras semantics: ``validation_split``
        takes the last fraction of the data before shuffling; ``shuffle`` reshuffles every epoch.
        ``x`` (and ``validation_data``) may be a generator/iterator yielding ``(x, y)`` or
        ``(x, y, sample_weight)``, or a ``utils.PyDataset`` (see ``data_adapters``): the batches are
        then the data's own (``batch_size`` is an error), ``steps_per_epoch``/``validation_steps``
        count them, and only a PyDataset is shuffled (its batch order).
        ``nb_epoch`` (Keras 1's spelling, accepted by Keras 2) replaces ``epochs``, with a DeprecationWarning."""
        if "nb_epoch" in kwargs:
            warnings.warn("fit(nb_epoch=...) is Keras 1's spelling; use fit(epochs=...)", DeprecationWarning,
                          stacklevel=2)
            epochs = kwargs.pop("nb_epoch")
        if kwargs:
            raise TypeError(f"fit() got unexpected arguments: {sorted(kwargs)}")
        self._check_compiled("training it (fit)")
        if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        verbose = 1 if verbose == "auto" else int(verbose)
        shuffle = bool(shuffle) and shuffle != "batch"
        if is_batch_source(x):
            _check_source_args(x, y, batch_size, sample_weight)
            if validation_split:
                raise ValueError("validation_split is only supported for arrays; give a generator or PyDataset "
                                 "validation_data instead")
            data = self._batch_source(x, "fit", steps_per_epoch, shuffle, class_weight)
            val = self._validation_source(validation_data, validation_steps, validation_batch_size or 32)
            return self._fit_batches(data, val, epochs, verbose, callbacks, initial_epoch, validation_freq)
        xs = self._prepare_x(x)
        n = _batch_count(xs)
        ys = self._prepare_y(y, n)
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if sw is not None and sw.shape[0] != n:
            raise ValueError(f"sample_weight has {sw.shape[0]} entries but x has {n} samples")
        if class_weight is not None:
            sw = _class_weights_to_sample_weights(class_weight, ys[0], sw)
        batch_size = _check_batch_size(batch_size)

        val = None
        if validation_data is not None:
            val = self._validation_source(validation_data, validation_steps, validation_batch_size or batch_size)
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            split = int(n * (1.0 - validation_split))
            if split == 0 or split == n:
                raise ValueError(f"validation_split={validation_split} leaves no training or no validation "
                                 f"samples out of {n}")
            val = ArrayBatches([a[split:] for a in xs], [a[split:] for a in ys], None if sw is None else sw[split:],
                               validation_batch_size or batch_size)
            xs, ys = [a[:split] for a in xs], [a[:split] for a in ys]
            sw = None if sw is None else sw[:split]

        data = ArrayBatches(xs, ys, sw, batch_size, steps_per_epoch, shuffle)
        return self._fit_batches(data, val, epochs, verbose, callbacks, initial_epoch, validation_freq)

    def _validation_source(self, validation_data, steps, batch_size):
        """fit's validation data as an adapter: a generator/PyDataset, or (x, y[, sample_weight]) arrays."""
        if validation_data is None:
            return None
        if is_batch_source(validation_data):
            return self._batch_source(validation_data, "validation", steps)
        vd = tuple(validation_data)
        if len(vd) not in (2, 3):
            raise ValueError("validation_data must be (x_val, y_val) or (x_val, y_val, sample_weight), "
                             "a generator or a PyDataset")
        vx = self._prepare_x(vd[0], "validation_data x")
        vy = self._prepare_y(vd[1], _batch_count(vx), "validation_data y")
        vsw = None if len(vd) == 2 or vd[2] is None else np.asarray(vd[2], np.float64)
        return ArrayBatches(vx, vy, vsw, batch_size)

    def _fit_batches(self, data, val, epochs, verbose, callbacks, initial_epoch, validation_freq):
        """fit's loop over the batches of ``data`` (an adapter of ``data_adapters``), validating on ``val``.
        Data-parallel (``lstmfast.distributed``): each global batch is split over the ranks, and only
        rank 0 shows the progress bar and runs the callbacks that write files."""
        world = distributed.data_parallel()
        if world is not None:
            self._place()
            world.start_fit(self)
            self._ranks_synced = True
            if hasattr(data, "permutation"):
                data.permutation = world.permutation  # rank 0 draws each epoch's order
            if not distributed.is_chief():
                verbose = 0
                callbacks = [cb for cb in callbacks or [] if not getattr(cb, "chief_only", False)]
        cbs = CallbackList(callbacks, model=self, add_history=True, add_progbar=verbose != 0, verbose=verbose,
                           epochs=epochs, steps=data.num_batches)
        self.stop_training = False
        cbs.on_train_begin()
        logs: Dict[str, float] = {}
        batch_logs_wanted = cbs.wants("on_train_batch_end")  # e.g. a progress bar; else build logs per epoch
        # Decided once per fit: on a device the loss and metric sums stay there (see _read_logs).
        on_device = world is None and ops.get_backend() != "cpu"
        batch_logs = self._batch_logs(cbs, "on_train_batch_end", on_device)
        epoch_logs_of = self._read_logs if on_device else self._logs
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics()
            cbs.on_epoch_begin(epoch)
            data.on_epoch_begin()
            loss_sum, seen = 0.0, 0
            for step, (bx, by, bsw) in enumerate(data.batches()):
                cbs.on_train_batch_begin(step)
                count = bx[0].shape[0]
                loss = self._train_batch(*_local_slice(world, bx, by, bsw, self))
                loss_sum += loss * count
                seen += count
                if batch_logs_wanted:
                    logs = batch_logs(loss_sum / seen)
                    cbs.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            data.on_epoch_end()
            if seen:
                logs = epoch_logs_of(loss_sum / seen)
            epoch_logs = dict(logs)
            if val is not None and (epoch + 1) % validation_freq == 0:
                # Keras: validation drives the test hooks of fit's callbacks (the progress bar stays quiet)
                val_logs = self._evaluate_batches(val, cbs)
                epoch_logs.update({"val_" + k: v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if data.stop_after_epoch(epoch + 1 < epochs):
                self.stop_training = True
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return self.history  # CallbackList.set_model attached this fit's History

    def _evaluate_batches(self, data, callbacks=None) -> Dict[str, float]:
        """Loss and metrics over the batches of ``data`` (an adapter). ``callbacks`` (a CallbackList) get the test
        hooks as in Keras: ``on_test_begin()``, per batch ``on_test_batch_begin(step)`` and
        ``on_test_batch_end(step, running logs)``, then ``on_test_end(logs)``; a callback may set
        ``model.stop_evaluating`` to end after the current batch."""
        self._reset_metrics()
        self.stop_evaluating = False
        batch_logs_wanted = callbacks is not None and callbacks.wants("on_test_batch_end")
        if callbacks is not None:
            callbacks.on_test_begin()
        loss_sum, seen = 0.0, 0
        world = distributed.data_parallel()
        on_device = world is None and ops.get_backend() != "cpu"
        if batch_logs_wanted:
            batch_logs = self._batch_logs(callbacks, "on_test_batch_end", on_device)
        data.on_epoch_begin()
        for step, (bx, by, bsw) in enumerate(data.batches()):
            if callbacks is not None:
                callbacks.on_test_batch_begin(step)
            count = bx[0].shape[0]
            loss = self._test_batch(*_local_slice(world, bx, by, bsw, self))
            loss_sum += loss * count
            seen += count
            if batch_logs_wanted:
                callbacks.on_test_batch_end(step, batch_logs(loss_sum / seen))
            if self.stop_evaluating:
                break
        data.on_epoch_end()
        logs = (self._read_logs if on_device else self._logs)(loss_sum / seen if seen else float("nan"))
        if callbacks is not None:
            callbacks.on_test_end(logs)
        return logs

    def _test_batch(self, xs, ys, sample_weight=None) -> float:
        """The loss of one batch, the metrics updated; data-parallel, this rank's slice of it, the
        loss and metric updates summed over the ranks as in ``_train_batch``."""
        world = distributed.data_parallel()
        before = self._metric_states() if world is not None else None
        rows = xs[0].shape[0]
        if rows and world is None and self._place() != "cpu":
            loss = self._step_on_device(False, xs, ys, sample_weight)
            if loss is not None:
                return loss
        if rows:
            self._predict_batch(xs, to_host=False)
            if self._placed_on != "cpu":
                self._device_outputs[_batch_key(xs, ys, sample_weight)] = [
                    (self._last_values[i].shape, self._last_values[i].dtype) for i in self._output_ids]
            parts = self._output_losses(ys, self._last_values, self._last_masks, sample_weight, world is not None)
            self._update_metrics(ys, sample_weight)
        else:
            parts = [(0.0, None, 0.0) for _ in self._output_ids]
        if world is None:
            return sum(value for value, _, _ in parts)
        parts = [(float(value), grad, count) for value, grad, count in parts]  # a device loss: read here
        shares = world.output_shares([count for _, _, count in parts])
        after = self._metric_states()
        before = before if len(before) == len(after) else [0.0] * len(after)  # built by this batch
        summed = world.reduce_values([sum(v * s for (v, _, _), s in zip(parts, shares))]
                                     + [a - b for a, b in zip(after, before)])
        self._set_metric_states([b + d for b, d in zip(before, summed[1:])])
        return float(summed[0])

    def _logs(self, loss: float) -> Dict[str, float]:
        logs = {"loss": loss}
        logs.update(self._metric_logs())
        return logs

    def evaluate(self, x: Optional[ModelData] = None, y: Optional[ArrayData] = None,
                 batch_size: Optional[int] = None, verbose: Union[str, int] = "auto",
                 sample_weight: Optional[ArrayLike] = None, steps: Optional[int] = None,
                 callbacks: Union[None, Sequence[Callback], CallbackList] = None, return_dict: bool = False,
                 **kwargs: Any) -> Union[float, List[float], Dict[str, float]]:
        """Loss and metrics on the given data (a float, or a list [loss, metrics...], or a dict).
        ``callbacks`` get the test hooks (see ``Callback``); ``verbose`` shows Keras's progress bar.
        ``x`` may be a generator or PyDataset (as in ``fit``); ``steps`` then caps the batches."""
        if kwargs:
            raise TypeError(f"evaluate() got unexpected arguments: {sorted(kwargs)}")
        self._check_compiled("evaluating it")
        if is_batch_source(x):
            _check_source_args(x, y, batch_size, sample_weight)
            data = self._batch_source(x, "evaluate", steps)
        else:
            xs = self._prepare_x(x)
            ys = self._prepare_y(y, _batch_count(xs))
            sw = None if sample_weight is None else np.asarray(sample_weight, np.float64)
            data = ArrayBatches(xs, ys, sw, _check_batch_size(batch_size))
        verbose = 1 if verbose == "auto" else int(verbose)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, model=self, add_progbar=verbose != 0, verbose=verbose, epochs=1,
                                     steps=data.num_batches)
        logs = self._evaluate_batches(data, callbacks)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x: ModelData, batch_size: Optional[int] = None, verbose: Union[str, int] = "auto",
                callbacks: Union[None, Sequence[Callback], CallbackList] = None,
                steps: Optional[int] = None) -> Union[np.ndarray, List[np.ndarray]]:
        """Outputs for ``x`` in batches (inference mode: no dropout). ``callbacks`` get the predict
        hooks as in Keras: ``on_predict_begin()``, per batch ``on_predict_batch_begin(step)`` and
        ``on_predict_batch_end(step, {"outputs": the batch's outputs})``, then ``on_predict_end()``;
        a callback may set ``model.stop_predicting`` to end after the current batch (the outputs
        then cover the batches run). ``verbose`` shows Keras's progress bar. ``x`` may be a
        generator or PyDataset yielding ``x`` or ``(x,)`` (targets are ignored); ``steps`` caps the batches."""
        if is_batch_source(x):
            _check_source_args(x, None, batch_size, None)
            data = self._batch_source(x, "predict", steps)
        else:
            data = ArrayBatches(self._prepare_x(x), None, None, _check_batch_size(batch_size))
        verbose = 1 if verbose == "auto" else int(verbose)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, model=self, add_progbar=verbose != 0, verbose=verbose, epochs=1,
                                     steps=data.num_batches)
        batch_logs_wanted = callbacks.wants("on_predict_batch_end")
        self.stop_predicting = False
        callbacks.on_predict_begin()
        chunks: List[list] = [[] for _ in self._output_ids]
        data.on_epoch_begin()
        world = distributed.data_parallel()
        for step, (bx, _, _) in enumerate(data.batches()):
            callbacks.on_predict_batch_begin(step)
            if world is None:
                outs = self._predict_batch(bx)
            else:  # each rank predicts its slice; every rank gets the whole batch's outputs
                local, _, _ = _local_slice(world, bx, None, None)
                outs = self._predict_batch(local) if local[0].shape[0] else self._empty_outputs()
                outs = [world.gather_rows(np.asarray(o)) for o in outs]
            for k, o in enumerate(outs):
                chunks[k].append(o)
            if batch_logs_wanted:
                callbacks.on_predict_batch_end(step, {"outputs": outs[0] if len(outs) == 1 else list(outs)})
            if self.stop_predicting:
                break
        data.on_epoch_end()
        callbacks.on_predict_end()
        if not chunks[0]:
            results = self._empty_outputs()
        else:
            results = [np.concatenate(c, axis=0) if len(c) > 1 else c[0] for c in chunks]
        return results[0] if len(results) == 1 else results

    def _empty_outputs(self) -> list:
        """The outputs of zero rows."""
        return [np.zeros((0,) + tuple(d or 0 for d in t.shape[1:]), backend.floatx()) for t in self._output_tensors]

    def train_on_batch(self, x: ArrayData, y: Optional[ArrayData] = None,
                       sample_weight: Optional[ArrayLike] = None, class_weight: Optional[Dict[int, float]] = None,
                       return_dict: bool = False) -> Union[float, List[float], Dict[str, float]]:
        """One gradient update on one batch; returns the loss (and metrics, Keras-style)."""
        self._check_compiled("training it (train_on_batch)")
        xs = self._prepare_x(x)
        ys = self._prepare_y(y, _batch_count(xs))
        sw = None if sample_weight is None else np.asarray(sample_weight, np.float64)
        if class_weight is not None:
            sw = _class_weights_to_sample_weights(class_weight, ys[0], sw)
        self._reset_metrics()
        world = distributed.data_parallel()
        if world is not None and not self._ranks_synced:
            self._place()
            world.start_fit(self)
            self._ranks_synced = True
        loss = self._train_batch(*_local_slice(world, xs, ys, sw, self))
        return self._batch_result(loss, return_dict)

    def test_on_batch(self, x: ArrayData, y: Optional[ArrayData] = None,
                      sample_weight: Optional[ArrayLike] = None,
                      return_dict: bool = False) -> Union[float, List[float], Dict[str, float]]:
        self._check_compiled("evaluating it (test_on_batch)")
        xs = self._prepare_x(x)
        ys = self._prepare_y(y, _batch_count(xs))
        sw = None if sample_weight is None else np.asarray(sample_weight, np.float64)
        logs = self._evaluate_batches(ArrayBatches(xs, ys, sw, max(1, _batch_count(xs))))
        return logs if return_dict else (list(logs.values()) if len(logs) > 1 else logs["loss"])

    def predict_on_batch(self, x: ArrayData) -> Union[np.ndarray, List[np.ndarray]]:
        outs = self._predict_batch(self._prepare_x(x))
        return outs[0] if len(outs) == 1 else outs

    def _batch_result(self, loss: float, return_dict: bool):
        logs = self._logs(loss) if type(loss) is float else self._read_logs(loss)
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    # ---- weights, state, description -----------------------------------------------------------

    def get_weights(self) -> List[np.ndarray]:
        """All weights, layer by layer in Keras's order (copies)."""
        return [w for layer in self._layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        weights = list(weights)
        expected = sum(len(layer.weights) for layer in self._layers)
        if len(weights) != expected:
            raise ValueError(f"set_weights: the model has {expected} weight arrays, got {len(weights)}")
        pos = 0
        for layer in self._layers:
            k = len(layer.weights)
            layer.set_weights(weights[pos:pos + k])
            pos += k

    @property
    def weights(self) -> List[np.ndarray]:
        return [w for layer in self._layers for w in layer.weights.values()]

    @property
    def trainable_weights(self) -> List[np.ndarray]:
        return [w for _, w in self._trainable_pairs()]

    @property
    def non_trainable_weights(self) -> List[np.ndarray]:
        return [w for layer in self._layers for w in layer.non_trainable_weights]

    def count_params(self) -> int:
        return int(sum(layer.count_params() for layer in self._layers))

    def reset_states(self) -> None:
        for layer in self._layers:
            layer.reset_states()

    def summary(self, print_fn: Optional[Callable[[str], Any]] = None, line_length: int = 80) -> None:
        """Print a Keras-style table: each layer's name, type, output shape and parameter count."""
        print_fn = print_fn or print
        cols = [int(line_length * 0.45), int(line_length * 0.33), line_length - int(line_length * 0.45)
                - int(line_length * 0.33)]

        def row(a, b, c):
            return f"{a:<{cols[0]}}{b:<{cols[1]}}{c:>{cols[2]}}"

        print_fn(f'Model: "{self.name}"')
        print_fn("_" * line_length)
        print_fn(row(" Layer (type)", "Output Shape", "Param #"))
        print_fn("=" * line_length)
        rows = self._summary_rows()
        for i, (label, shape, params) in enumerate(rows):
            print_fn(row(" " + label, str(shape), f"{params:,}"))
            if i < len(rows) - 1:
                print_fn("")
        print_fn("=" * line_length)
        total = self.count_params()
        trainable = sum(int(w.size) for layer in self._layers for w in layer.trainable_weights)
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {total - trainable:,}")
        print_fn("_" * line_length)

    def _summary_rows(self):
        rows = []
        # Keras lists the inputs of functional models only
        for t in ([] if isinstance(self, Sequential) else self._input_tensors):
            layer = t._history[0]
            rows.append((f"{layer.name} ({type(layer).__name__})", _shape_str(t.shape), 0))
        for step in self._steps:
            shapes = [t.shape for t in step.node.outputs]
            shape = _shape_str(shapes[0]) if len(shapes) == 1 else "[" + ", ".join(_shape_str(s) for s in shapes) + "]"
            rows.append((f"{step.layer.name} ({type(step.layer).__name__})", shape, step.layer.count_params()))
        return rows

    # ---- saving ---------------------------------------------------------------------------------

    def save(self, filepath: PathLike, overwrite: bool = True, metadata: Optional[dict] = None) -> None:
        """Save architecture, weights, compile settings and optimizer state to one file, written
        atomically. By extension: ``.keras`` a Keras 3 file and ``.h5``/``.hdf5`` a legacy Keras HDF5
        file (``keras.saving.load_model`` opens both; needs h5py), anything else lstmfast's own zip of
        JSON and .npy. ``metadata``: an optional JSON-serialisable dict kept with it (all formats)."""
        if os.fspath(filepath).lower().endswith((".keras", ".h5", ".hdf5")):
            from .interop import keras_format
            keras_format.save(self, filepath, overwrite=overwrite, metadata=metadata)
        else:
            saving.save_model(self, filepath, overwrite=overwrite, metadata=metadata)

    def save_weights(self, filepath: PathLike, overwrite: bool = True) -> None:
        """Write the weights only: ``.h5``/``.hdf5`` (Keras 3 wants ``.weights.h5``) as Keras 3's
        ``save_weights`` (needs h5py), anything else in lstmfast's own format."""
        if os.fspath(filepath).lower().endswith((".h5", ".hdf5")):
            from .interop import keras_format
            keras_format.save_weights(self, filepath, overwrite=overwrite)
        else:
            saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath: PathLike) -> None:
        """Set the weights from a file of ``save_weights`` or ``save``, lstmfast's or Keras's
        (recognised by content: Keras 3 ``.weights.h5`` and ``.keras``, legacy ``.h5``)."""
        from .interop import keras_format
        if os.path.isfile(filepath) and keras_format.is_keras_file(filepath):
            keras_format.load_weights(self, filepath)
        else:
            saving.load_weights(self, filepath)

    def export(self, filepath: PathLike, format: str = "onnx", verbose: bool = False, **kwargs: Any) -> None:
        """Export for inference elsewhere (Keras 3's spelling). ``format="onnx"``: a standard ONNX graph
        with the LSTM operator (needs ``pip install onnx``); keyword arguments (``opset``,
        ``dynamic_time``) go to ``lstmfast.interop.onnx_export.export_onnx``."""
        if format != "onnx":
            raise ValueError(f"export: format must be 'onnx' (the one lstmfast writes), got {format!r}")
        from .interop.onnx_export import export_onnx
        export_onnx(self, filepath, verbose=bool(verbose), **kwargs)

    def get_config(self) -> dict:
        """The architecture as a JSON-serialisable dict: the inputs, each layer's config, and the
        layer calls that connect them (``model_from_config`` rebuilds the model from it)."""
        inputs = [{"id": i, "batch_shape": list(t.shape), "dtype": t.dtype, "name": t._history[0].name}
                  for i, t in zip(self._input_ids, self._input_tensors)]
        steps = [{"layer": step.layer.name, "inputs": list(step.inputs), "outputs": list(step.outputs),
                  "multi_in": step.multi_in, "training": step.training, **({"kwargs": dict(step.kwargs)}
                                                                           if step.kwargs else {})}
                 for step in self._steps]
        return {"class_name": "Model", "name": self.name, "inputs": inputs,
                "layers": [_layer_entry(layer) for layer in self._layers], "steps": steps,
                "outputs": list(self._output_ids), "single_input": bool(self._single_input),
                "single_output": bool(self._single_output)}

    @classmethod
    def from_config(cls, config: dict) -> "Model":
        """The model ``get_config()`` describes (uncompiled, with freshly initialised weights)."""
        return model_from_config(config)

    def get_compile_config(self) -> Optional[dict]:
        """The ``compile`` settings as a JSON-serialisable dict (None before ``compile``):
        ``compile_from_config`` applies it to another model."""
        if not self.compiled:
            return None
        if isinstance(self.loss, list):
            loss = [losses_module.serialize(each) for each in self.loss]
        else:
            loss = losses_module.serialize(self.loss)
        return {"optimizer": optimizers_module.serialize(self.optimizer), "loss": loss,
                "metrics": _metric_names(self._compile_args.get("metrics")),
                "loss_weights": self._compile_args.get("loss_weights")}

    def compile_from_config(self, config: dict) -> None:
        """``compile`` with the settings of ``get_compile_config()`` (a new optimizer, no state)."""
        loss = config["loss"]
        if isinstance(loss, list):
            loss = [losses_module.deserialize(each) for each in loss]
        else:
            loss = losses_module.deserialize(loss)
        self.compile(optimizer=optimizers_module.deserialize(config["optimizer"]), loss=loss,
                     metrics=config.get("metrics"), loss_weights=config.get("loss_weights"))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} layers={len(self._layers)}>"


class _LazyLogs(dict):
    """The logs of a batch on a device for callbacks that read them only when they need them
    (``Callback.lazy_logs``): a dict of Python floats, ``read(loss)`` (all values in one copy) on
    first access. Reading gives the running values of that moment: read it before the next batch."""

    def __init__(self, read, loss):
        super().__init__()
        self._pending = (read, loss)

    def _fill(self):
        if self._pending is not None:
            read, loss = self._pending
            self._pending = None
            dict.update(self, read(loss))
        return self

    def __bool__(self):
        return True  # "loss" is always there; no read needed to say so

    def __len__(self):
        return dict.__len__(self._fill())

    def __iter__(self):
        return dict.__iter__(self._fill())

    def __getitem__(self, key):
        return dict.__getitem__(self._fill(), key)

    def __contains__(self, key):
        return dict.__contains__(self._fill(), key)

    def __eq__(self, other):
        return dict.__eq__(self._fill(), other)

    __hash__ = None

    def __repr__(self):
        return dict.__repr__(self._fill())

    def get(self, key, default=None):
        return dict.get(self._fill(), key, default)

    def keys(self):
        return dict.keys(self._fill())

    def values(self):
        return dict.values(self._fill())

    def items(self):
        return dict.items(self._fill())

    def copy(self):
        return dict(self.items())


class Sequential(Model):
    """A linear stack of layers: ``Sequential([LSTM(25, input_shape=(5, 10)), Dense(10, activation="softmax")])``.

    The model is built as soon as its input shape is known: from ``Input(shape)`` as first element,
    from the first layer's ``input_shape``/``batch_input_shape``, or from the first data it sees.
    """

    def __init__(self, layers: Optional[Sequence[Union[Layer, KerasTensor]]] = None,
                 name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self._stack: list = []
        self._input_spec = None  # (batch_shape, dtype) once known
        for layer in layers or []:
            self.add(layer)

    def add(self, layer: Union[Layer, KerasTensor]) -> None:
        if self._append(layer):
            self._rebuild()

    def _extend(self, layers: Sequence[Union[Layer, KerasTensor]]) -> None:
        """``add`` each of ``layers`` and build the graph once, at the end (a model read from a file:
        building it after each layer would take time quadratic in their number)."""
        rebuild = False
        for layer in layers:
            rebuild = self._append(layer) or rebuild
        if rebuild:
            self._rebuild()

    def _append(self, layer: Union[Layer, KerasTensor]) -> bool:
        """``add``'s checks and bookkeeping; True when the graph must be built again."""
        if isinstance(layer, layers_module.KerasTensor):
            if self._stack or self._input_spec is not None:
                raise ValueError("Input() can only be the first element of a Sequential model")
            self._input_spec = (tuple(layer.shape), layer.dtype)
            return True
        if isinstance(layer, layers_module.InputLayer):
            if self._stack or self._input_spec is not None:
                raise ValueError("an InputLayer can only be the first element of a Sequential model")
            t = layer._inbound_nodes[0].outputs[0]
            self._input_spec = (tuple(t.shape), t.dtype)
            return True
        if not isinstance(layer, layers_module.Layer):
            raise TypeError(f"Sequential.add expects a Layer, got {type(layer).__name__}")
        if layer in self._stack:
            raise ValueError(f"layer {layer.name!r} is already in this model")
        if not self._stack and self._input_spec is None:
            hint = getattr(layer, "_input_shape_hint", None)
            if hint is not None:
                self._input_spec = (tuple(hint), getattr(layer, "_input_dtype_hint", None))
        self._stack.append(layer)
        return self._input_spec is not None

    def pop(self) -> Layer:
        if not self._stack:
            raise ValueError("pop() on an empty Sequential model")
        layer = self._stack.pop()
        if self._input_spec is not None and self._stack:
            self._rebuild()
        return layer

    def _rebuild(self) -> None:
        if self._input_spec is None:
            return
        shape, dtype = self._input_spec
        t = inp = layers_module.Input(batch_shape=shape, dtype=dtype)
        for layer in self._stack:
            t = layer(t)
        if self._stack:
            self._build_graph([inp], _as_list(t))
            self._single_input, self._single_output = True, not isinstance(t, (list, tuple))
        else:
            self._input_tensors, self._input_ids = [inp], [0]

    @property
    def layers(self) -> list:
        return list(self._stack)

    def get_config(self) -> dict:
        spec = self._input_spec
        return {"class_name": "Sequential", "name": self.name,
                "input": None if spec is None else {"batch_shape": list(spec[0]), "dtype": spec[1]},
                "layers": [_layer_entry(layer) for layer in self._stack]}

    def _ensure_built_from(self, xs: List[np.ndarray]) -> None:
        if self.built and self._steps:
            return
        if not self._stack:
            raise ValueError("this Sequential model has no layers; add some with model.add(layer)")
        if len(xs) != 1:
            raise ValueError(f"a Sequential model takes one input array, got {len(xs)}")
        arr = np.asarray(xs[0])
        dtype = None if arr.dtype.kind == "f" else str(arr.dtype)
        self._input_spec = ((None,) + tuple(arr.shape[1:]), dtype)
        self._rebuild()

    def _expects_multiple_inputs(self, x) -> bool:
        return False


# ---- loading ------------------------------------------------------------------------------------

def load_model(filepath: PathLike, compile: bool = True) -> Model:
    """Load a model saved with ``model.save``: architecture, weights and (if compiled) the optimizer
    with its state, so ``fit`` continues where it stopped. Keras files (a Keras 3 ``.keras`` zip, a
    legacy ``.h5`` from Keras 1, 2 or 3), recognised by their content, are read too
    (``lstmfast.interop.keras_format``)."""
    from .interop import keras_format
    if os.path.isfile(filepath) and keras_format.is_keras_file(filepath):
        return keras_format.load(filepath, compile=compile)
    errors = (ValueError,) + _file_limits.CONFIG_ERRORS  # what a damaged or hostile config can raise
    with saving.open_model(filepath) as f:
        try:  # within the weights the file holds, without running initializers
            with _file_limits.weights_from_file(f.weight_values(), f.path):
                model = model_from_config(f.config)
        except errors as e:
            raise _file_limits.file_error(f.path, e, "its model cannot be built") from None
        f.load_weights_into(model)
        if compile and f.compile_config:
            try:
                model.compile_from_config(f.compile_config)
            except errors as e:
                raise _file_limits.file_error(f.path, e, "its compile settings cannot be applied") from None
            state = f.optimizer_state(model)
            if state is not None:
                try:
                    model.optimizer.build(model.trainable_weights)
                    model.optimizer.set_state(state)
                except errors as e:
                    raise _file_limits.file_error(f.path, e, "its optimizer state does not fit the model") from None
    return model


def model_from_config(config: dict) -> Model:
    """Rebuild a model (uncompiled, freshly initialised weights) from ``Model.get_config()``."""
    kind = config.get("class_name")
    if kind == "Sequential":
        model = Sequential(name=config.get("name"))
        spec = config.get("input")
        stack = [] if spec is None else [layers_module.Input(batch_shape=tuple(spec["batch_shape"]),
                                                             dtype=spec.get("dtype"))]
        model._extend(stack + [_layer_from_entry(entry) for entry in config.get("layers", [])])
        return model
    if kind == "Model":
        tensors: Dict[int, Any] = {}
        for spec in config["inputs"]:
            tensors[spec["id"]] = layers_module.Input(batch_shape=tuple(spec["batch_shape"]), dtype=spec.get("dtype"),
                                                      name=spec.get("name"))
        built = {}
        for entry in config["layers"]:
            layer = _layer_from_entry(entry)
            built[layer.name] = layer
        for step in config["steps"]:
            layer = built.get(step["layer"])
            if layer is None:
                raise ValueError(f"the model file calls layer {step['layer']!r}, which it does not define")
            args = [tensors[i] for i in step["inputs"]]
            # A multi-input call (an LSTM's [x, h0, c0] included) replays as a list.
            out = layer(args if step["multi_in"] else args[0], training=step.get("training"),
                        **step.get("kwargs", {}))
            outs = out if isinstance(out, (list, tuple)) else [out]
            if len(outs) != len(step["outputs"]):
                raise ValueError(f"layer {layer.name!r} produced {len(outs)} outputs, the file expects "
                                 f"{len(step['outputs'])}")
            for i, t in zip(step["outputs"], outs):
                tensors[i] = t
        inputs = [tensors[s["id"]] for s in config["inputs"]]
        outputs = [tensors[i] for i in config["outputs"]]
        return Model(inputs[0] if config.get("single_input", True) and len(inputs) == 1 else inputs,
                     outputs[0] if config.get("single_output", True) and len(outputs) == 1 else outputs,
                     name=config.get("name"))
    raise ValueError(f"unknown model class {kind!r} in the model file (expected 'Sequential' or 'Model')")


def _layer_entry(layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def _layer_from_entry(entry: dict):
    # Only lstmfast's own layer classes: a file can name a class, never make us import one.
    registry = layers_module.LAYERS
    if not isinstance(entry, dict) or "class_name" not in entry or "config" not in entry:
        raise ValueError(f"bad layer entry in the model file: {entry!r:.200}")
    cls = registry.get(entry["class_name"])
    if cls is None:
        raise ValueError(f"unknown layer class {entry['class_name']!r} in the model file; "
                         f"known: {', '.join(sorted(registry))}")
    return cls.from_config(dict(entry["config"]))


def _metric_names(metrics):
    if metrics is None:
        return None
    out = []
    for m in metrics:
        if isinstance(m, (list, tuple)):
            out.append(_metric_names(m))
        elif isinstance(m, str):
            out.append(m)
        else:
            out.append(getattr(m, "name", str(m)))
    return out


# ---- helpers ------------------------------------------------------------------------------------

def _shape_str(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _local_slice(world, xs, ys, sw, model=None):
    """``(xs, ys, sw)`` of one batch, or this rank's slice of it in data-parallel training. The
    first batch must give every rank a row: the metrics take their form from it."""
    if world is None:
        return xs, ys, sw
    rows = xs[0].shape[0]
    if model is not None and rows < world.size and model._metrics_built is None and model._metric_specs:
        raise ValueError(f"data-parallel: the first batch has {rows} rows for {world.size} ranks; every rank "
                         f"needs at least one (use a batch_size of at least {world.size})")
    part = world.shard(rows)
    return ([a[part] for a in xs], None if ys is None else [a[part] for a in ys],
            None if sw is None else sw[part])


def _check_batch_size(batch_size) -> int:
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _check_source_args(x, y, batch_size, sample_weight) -> None:
    """The arguments a generator or PyDataset brings itself (Keras rejects them too)."""
    kind = "a PyDataset" if isinstance(x, PyDataset) else "a generator"
    if batch_size is not None:
        raise ValueError(f"do not give batch_size when x is {kind}: the data determines the batch size "
                         f"(each batch it yields is one step); got batch_size={batch_size!r}")
    if y is not None:
        raise ValueError(f"do not give y when x is {kind}: it must yield the targets with each batch, (x, y)")
    if sample_weight is not None:
        raise ValueError(f"do not give sample_weight when x is {kind}: it must yield them with each batch, "
                         f"(x, y, sample_weight)")


def _class_weights_to_sample_weights(class_weight: dict, y: np.ndarray, sw) -> np.ndarray:
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class index: weight}}, got {type(class_weight).__name__}")
    labels = y.argmax(-1) if (y.ndim > 1 and y.shape[-1] > 1) else y.reshape(y.shape[0], -1)[:, 0].astype(np.int64)
    if labels.ndim > 1:
        raise ValueError("class_weight is supported for one label per sample, not for sequence targets")
    weights = np.array([class_weight.get(int(c), 1.0) for c in labels.astype(np.int64)], np.float64)
    return weights if sw is None else weights * sw
