"""Keras-style layers on NumPy (or CuPy) arrays, with explicit forward and backward passes.

``from lstmfast.layers import LSTM, Dense`` is meant to be a drop-in for the Keras layers of the
same names (Keras 3 semantics unless stated). Shapes are batch-major as in Keras: sequences are
``[B, T, X]``; the LSTM engine (``lstmfast.ops``, time-major ``[T, B, X]``) is called inside.

Layers: Input, InputLayer, Dense, Embedding, Dropout, RepeatVector, TimeDistributed, Activation,
Flatten, Concatenate, Masking, LSTM, Bidirectional, BatchNormalization, LayerNormalization, Add,
Subtract, Multiply, Average, Maximum, Minimum, Attention, AdditiveAttention, Lambda, Conv1D,
MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D, GlobalAveragePooling1D, Reshape, Permute,
SpatialDropout1D; CuDNNLSTM
(Keras 2's name: builds an LSTM, deprecated). Modules: ``base`` (Layer, the registry behind
``serialize``/``deserialize``), ``graph`` (KerasTensor, Node), ``core`` (InputLayer and the simple
layers), ``lstm`` (LSTM and its mask plan), ``wrappers`` (TimeDistributed, Bidirectional),
``normalization``, ``merging`` (the element-wise merges), ``attention``, ``lambda_layer``,
``convolutional`` (Conv1D), ``pooling``, ``reshaping``, ``regularization`` (SpatialDropout1D).

The layer protocol (what ``lstmfast.models`` relies on)
-------------------------------------------------------
``weights`` and ``grads`` are ordered dicts of arrays with the same keys (Keras ``get_weights``
order). ``forward(inputs, training, mask) -> (outputs, cache)`` and ``backward(cache,
grad_outputs) -> grad_inputs`` are pure in the cache, so one layer may appear at several places
in a graph; ``backward`` ADDS the weight gradients into ``grads`` (call ``zero_grads()`` before
a step) and leaves them alone when ``layer.trainable`` is False. ``call`` is the inference path
(no cache). A cache may be used by one ``backward`` only (the LSTM engine consumes it).
``buffers`` is a dict of arrays that are not weights (a stateful LSTM's ``"h"``, ``"c"``).

* Non-trainable weights: ``layer.non_trainable`` is the set of keys of ``weights`` that are state,
  not parameters (``add_weight(..., trainable=False)``; BatchNormalization's ``moving_mean``,
  ``moving_variance``). They stay in ``weights`` (so ``get_weights``/``set_weights``, saving,
  placement and ``count_params`` include them, in Keras order) and have a ``grads`` entry that stays
  zero; the layer updates them in place during ``forward``. ``layer.trainable_pairs()`` lists the
  ``(grad, weight)`` pairs the optimizer may update: none when ``trainable`` is False, never a
  non-trainable key (a wrapper's come from its sublayers). ``trainable_weights`` /
  ``non_trainable_weights`` and the model's summary count follow it.
* Call-time arguments: a layer names the extra keyword arguments its ``__call__`` accepts in
  ``_extra_call_kwargs`` (Attention: ``return_attention_scores``, ``use_causal_mask``); given at call
  time, they are passed as keywords to ``forward``, ``call``, ``compute_mask`` and
  ``compute_output_shape`` (eagerly, and for each functional node, which keeps them in
  ``call_kwargs``; ``node.layer_kwargs`` lists them).

* Devices: a layer computes with the array module of its inputs (``ops.array_module``) and never
  asks which device it is on. The model's placement step puts ``weights``, ``grads`` and
  ``buffers`` of every layer (wrappers list theirs with ``_sublayers()``) where the inputs will be.

* ``inputs``: one array, or a list for a multi-input call (``LSTM``: ``[x, h0, c0]`` when an
  initial state is given; ``Bidirectional``: ``[x, h_fw, c_fw, h_bw, c_bw]``; ``Concatenate``: the
  list of its inputs). ``outputs`` is one array or a list (``return_state``); ``grad_outputs``
  mirrors ``outputs`` and any entry may be None (zero gradient); ``grad_inputs`` mirrors
  ``inputs``, with None where an input is not differentiable (Embedding's integer indices).
* ``mask``: a bool ``[B, T]`` array or None for a single-input call; for a multi-input call either
  None or a list mirroring ``inputs`` (only the first entry of an LSTM's list is used).
  ``compute_mask(inputs, mask)`` gives the output mask (a list for multi-output layers).
* Outputs may share memory with caches or other outputs (``LSTM(return_state=True)`` without
  ``return_sequences`` returns the same array as ``y`` and ``h``): treat them as read-only.
* Arrays of another dtype are cast to the layer's dtype (``backend.floatx()`` at construction).

Functional API
--------------
``Input(shape)`` returns a :class:`KerasTensor` whose ``_history`` is ``(input_layer, 0, 0)``.
Calling a layer on KerasTensors builds it from their shapes, appends a :class:`Node` to
``layer._inbound_nodes`` and returns KerasTensors with ``_history = (layer, node_index,
tensor_index)``. To run a node: pass ``node.inputs[0]``'s value alone when ``len(node.inputs) ==
1`` and the list of values otherwise, i.e. ``layer.forward(v[0] if len(v) == 1 else v, ...)``;
``node.call_kwargs`` holds ``n_inputs`` and, when the user gave it at call time, ``training``
(a forced training flag, e.g. Monte-Carlo dropout: ``Dropout(0.5)(x, training=True)``), and the
layer's own call-time arguments (``Attention()([q, v], use_causal_mask=True)``; saved with the model).
An InputLayer's node has no inputs; its ``forward`` is the identity.

Masks follow Keras: Embedding(mask_zero=True) and Masking make one; layers with
``supports_masking`` pass it on (Dense, Dropout, Activation, Masking, TimeDistributed);
LSTM/Bidirectional consume it (and pass it on with ``return_sequences``); others drop it.
BatchNormalization (its batch statistics skip masked steps) and LayerNormalization pass it on;
the element-wise merges give the OR of their inputs' masks when every input has one (Multiply,
Maximum and Minimum also let masked entries lose, as Keras 3); Attention consumes
``[query_mask, value_mask]`` and passes the query mask on; a Lambda's is its ``mask`` argument.
SpatialDropout1D passes it on; GlobalAveragePooling1D averages over unmasked steps and drops it;
Conv1D, the other pooling layers, Reshape and Permute drop it (as Keras 3).
As in Keras, an LSTM with ``go_backwards=True, return_sequences=True`` passes the input mask on
unreversed although its output sequence is reversed.

Serialisation: ``serialize(layer) -> {"class_name", "config"}``, ``deserialize(dict)``; every
``get_config()`` is JSON-serialisable and ``cls.from_config(config)`` rebuilds the layer (unbuilt;
``get_build_config()`` gives the shape to build it with). The exception is Lambda: its function
is code, so its ``get_config``/``from_config`` raise ValueError (lstmfast never saves or runs code).
"""
from __future__ import annotations

from .._naming import reset_uids
from .attention import AdditiveAttention, Attention
from .base import LAYERS, Layer, deserialize, get, serialize
from .convolutional import Conv1D
from .core import Activation, Concatenate, Dense, Dropout, Embedding, Flatten, Input, InputLayer, Masking, RepeatVector
from .graph import KerasTensor, Node
from .lambda_layer import Lambda
from .lstm import LSTM, CuDNNLSTM
from .merging import Add, Average, Maximum, Minimum, Multiply, Subtract
from .normalization import BatchNormalization, LayerNormalization
from .pooling import AveragePooling1D, GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D
from .regularization import SpatialDropout1D
from .reshaping import Permute, Reshape
from .wrappers import Bidirectional, TimeDistributed

__all__ = ["Layer", "KerasTensor", "Node", "Input", "InputLayer", "Dense", "Embedding", "Dropout",
           "RepeatVector", "TimeDistributed", "Activation", "Flatten", "Concatenate", "Masking", "LSTM",
           "CuDNNLSTM", "Bidirectional", "serialize", "deserialize", "get", "reset_uids", "LAYERS",
           "Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D", "GlobalAveragePooling1D",
           "Reshape", "Permute", "SpatialDropout1D",
           "BatchNormalization", "LayerNormalization", "Add", "Subtract", "Multiply", "Average", "Maximum",
           "Minimum", "Attention", "AdditiveAttention", "Lambda"]
