"""The old Keras layouts still found in ``.h5`` files: Keras 1's per-gate LSTM arrays and layer
options, and Keras 2's ``CuDNNLSTM`` weights. :mod:`lstmfast.interop.keras_format` calls these while
it reads a legacy file; nothing here opens a file or runs code named in one.

What each function reproduces was read in Keras's own sources: Keras 1.2.2
``keras/layers/recurrent.py`` (``LSTM.build``, ``LSTM.step``), ``keras/engine/topology.py``
(``save_weights_to_hdf5_group``: a layer's arrays are written in ``layer.weights`` order) and
``keras/models.py`` (``save_model``); Keras 2.2.4 ``keras/engine/saving.py``
(``preprocess_weights_for_loading``, ``_convert_rnn_weights``, the same code as tf.keras's
``hdf5_format.py``) and ``keras/legacy/interfaces.py`` (the Keras 1 to 2 argument renames); the
``CuDNNLSTM`` of Keras 2.2.4 and of tf.keras (``cudnn_recurrent.py``, ``_process_batch``).
"""
from __future__ import annotations

import warnings
from typing import Any, List, Sequence, Tuple

import numpy as np

__all__ = ["is_keras1", "lstm_weights_from_keras1", "lstm_weights_from_cudnn", "keras1_config"]

GATES = "ifco"               # lstmfast's (and Keras 2's, and cuDNN's) gate order
KERAS1_FILE_GATES = "icfo"   # the order of Keras 1's per-gate (W, U, b) triples in a file

# Keras 1 option names -> Keras 2 names, per layer (keras/legacy/interfaces.py of Keras 2.0-2.2).
_RENAMES = {
    "LSTM": {"output_dim": "units", "init": "kernel_initializer", "inner_init": "recurrent_initializer",
             "inner_activation": "recurrent_activation", "W_regularizer": "kernel_regularizer",
             "U_regularizer": "recurrent_regularizer", "b_regularizer": "bias_regularizer",
             "dropout_W": "dropout", "dropout_U": "recurrent_dropout"},
    "Dense": {"output_dim": "units", "init": "kernel_initializer", "W_regularizer": "kernel_regularizer",
              "b_regularizer": "bias_regularizer", "W_constraint": "kernel_constraint",
              "b_constraint": "bias_constraint", "bias": "use_bias"},
    "Embedding": {"init": "embeddings_initializer", "W_regularizer": "embeddings_regularizer",
                  "W_constraint": "embeddings_constraint"},
    "Dropout": {"p": "rate"},
}
_INITIALIZERS = {"zero": "zeros", "one": "ones"}  # Keras 1 names lstmfast spells differently
_WRAPPERS = ("TimeDistributed", "Bidirectional")
_MERGE_LAYERS = {"concat": "Concatenate", "sum": "Add", "mul": "Multiply", "ave": "Average", "max": "Maximum"}


def is_keras1(keras_version: Any) -> bool:
    """True when a legacy file's ``keras_version`` attribute (str, bytes or None) means Keras 1:
    absent, or a version whose major number is 1 ("1.2.2").

    Keras 1.x wrote ``keras_version`` only on the file's root, never on ``model_weights``; Keras 2's
    loader read the attribute of the weights group and took "absent" as Keras 1. Either attribute
    gives the right answer here."""
    if keras_version is None:
        return True
    if isinstance(keras_version, bytes):
        keras_version = keras_version.decode("utf-8")
    return str(keras_version).strip().split(".")[0] == "1"


# ---- LSTM weights ------------------------------------------------------------------------------

def lstm_weights_from_keras1(arrays: Sequence, units: int) -> List[np.ndarray]:
    """lstmfast's ``[kernel [X,4H], recurrent_kernel [H,4H], bias [4H]]`` (gates i, f, c, o) from a
    Keras 1 LSTM's arrays, in the order its file lists them (the layer group's ``weight_names``).

    * 12 arrays (``consume_less`` "cpu" or "mem", Keras 1's default): ``W_g [X,H]``, ``U_g [H,H]``,
      ``b_g [H]`` per gate, the gates in the order i, c, f, o -- Keras 1's ``trainable_weights``
      listed the cell gate before the forget gate, while its step computed, per gate,
      ``z_g = x W_g + h U_g + b_g`` as Keras 2 does. So each gate's arrays become that gate's
      columns, in lstmfast's order i, f, c, o (Keras 2 loaded them so).
    * 3 arrays (``consume_less="gpu"``): ``W [X,4H]``, ``U [H,4H]``, ``b [4H]``, whose step split
      ``z`` in the order i, f, c, o: already lstmfast's layout, returned as they are.

    Keras 1 ``Dense`` (``W [in,out]``, ``b [out]``) and ``Embedding`` (``W [input_dim,output_dim]``)
    arrays are lstmfast's ``kernel``, ``bias`` and ``embeddings`` unchanged, and are not passed here.
    """
    where = "lstm_weights_from_keras1"
    H = _units(units, where)
    arrays = [np.asarray(a) for a in arrays]
    if len(arrays) == 3:
        return _checked_lstm(arrays, H, where, bias_size=4 * H)
    if len(arrays) != 12:
        raise ValueError(f"{where}: arrays must be Keras 1's 12 per-gate arrays (W, U, b for gates i, c, f, o) "
                         f"or consume_less='gpu''s 3 (W, U, b), got {len(arrays)} arrays")
    if arrays[0].ndim != 2:
        raise ValueError(f"{where}: W_i must be 2-D [X, {H}], got shape {arrays[0].shape}")
    X = arrays[0].shape[0]
    per_gate = {}
    for k, gate in enumerate(KERAS1_FILE_GATES):
        W, U, b = arrays[3 * k:3 * k + 3]
        for name, array, shape in ((f"W_{gate}", W, (X, H)), (f"U_{gate}", U, (H, H)), (f"b_{gate}", b, (H,))):
            _expect_shape(where, name, array, shape)
        per_gate[gate] = (W, U, b)
    return [np.concatenate([per_gate[g][part] for g in GATES], axis=-1) for part in range(3)]


def lstm_weights_from_cudnn(arrays: Sequence, units: int) -> List[np.ndarray]:
    """lstmfast's ``[kernel [X,4H], recurrent_kernel [H,4H], bias [4H]]`` from a Keras 2
    ``CuDNNLSTM``'s ``[kernel [X,4H], recurrent_kernel [H,4H], bias [8H]]``, as Keras 2 converted
    them when a CuDNNLSTM file was loaded into an LSTM.

    What the file holds: CuDNNLSTM gave its variables an LSTM's shapes but never multiplied by them.
    Each call it cut each variable into its four gate blocks (i, f, c, o), flattened every block in
    row-major order, and concatenated the eight weight blocks (input ones, then recurrent ones) and
    then the eight bias blocks (``bias[:4H]`` for the inputs, ``bias[4H:]`` for the state) into
    cuDNN's parameter buffer -- with no transpose. cuDNN reads each weight block of that buffer as
    a row-major matrix with one row per unit, ``M_g [H, n]`` (n = X or H), and computes
    ``z_g = M_g x_t + M'_g h_{t-1} + b_in_g + b_rec_g`` with the usual LSTM gates in the order
    i, f, c, o. (The orientation is the one tf.keras's own LSTM relies on: its GPU path transposes
    each ``[n, H]`` gate block of a plain kernel before flattening it for cuDNN.)

    So a stored ``[n, H]`` block is ``M_g``'s numbers re-shaped, not a kernel: the kernel that
    computes the same ``z_g`` is ``reshape(block, [H, n]).T``. For the square recurrent blocks this
    is a plain transpose; for the input blocks (unless X = H) it is not. The two biases add. This is
    Keras 2's ``_convert_rnn_weights`` (its ``kernel.T.reshape(kernel.shape, order='F')`` is
    ``reshape(kernel, [H, X]).T``; recurrent blocks ``.T``; bias halves summed).

    Writers: Keras 2.1-2.3's own CuDNNLSTM and tf.keras's (TensorFlow 1.x and 2.x,
    ``tf.compat.v1.keras.layers.CuDNNLSTM``) build the buffer the same way (tf.keras's
    ``_canonical_to_params`` transposes only when asked, and CuDNNLSTM never asks), so their files
    hold the same layout and need no telling apart. The sum is done in the file's dtype: a float32
    sum of two float32 numbers is already correctly rounded.
    """
    where = "lstm_weights_from_cudnn"
    H = _units(units, where)
    kernel, recurrent_kernel, bias = _checked_lstm([np.asarray(a) for a in arrays], H, where, bias_size=8 * H)
    return [_kernel_from_cudnn_blocks(kernel, H), _kernel_from_cudnn_blocks(recurrent_kernel, H),
            bias[:4 * H] + bias[4 * H:]]


def _kernel_from_cudnn_blocks(stored: np.ndarray, H: int) -> np.ndarray:
    """``[n, 4H]`` kernel whose gate block g is ``M_g.T``, from a CuDNNLSTM variable ``[n, 4H]``
    whose gate block g holds cuDNN's ``M_g [H, n]`` in row-major order."""
    n = stored.shape[0]
    return np.concatenate([np.reshape(block, (H, n)).T for block in np.split(stored, 4, axis=1)], axis=1)


def _checked_lstm(arrays: list, H: int, where: str, bias_size: int) -> list:
    """``[kernel [X,4H], recurrent_kernel [H,4H], bias [bias_size]]`` checked, or ValueError."""
    if len(arrays) != 3:
        raise ValueError(f"{where}: arrays must be [kernel, recurrent_kernel, bias], got {len(arrays)} arrays")
    kernel, recurrent_kernel, bias = arrays
    if kernel.ndim != 2 or kernel.shape[1] != 4 * H:
        raise ValueError(f"{where}: kernel must have shape [X, {4 * H}], got {kernel.shape}")
    _expect_shape(where, "recurrent_kernel", recurrent_kernel, (H, 4 * H))
    _expect_shape(where, "bias", bias, (bias_size,))
    return arrays


def _expect_shape(where: str, name: str, array: np.ndarray, shape: tuple) -> None:
    if array.shape != shape:
        raise ValueError(f"{where}: {name} must have shape {shape}, got {array.shape}")


def _units(units, where: str) -> int:
    if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
        raise ValueError(f"{where}: units must be a positive int, got {units!r}")
    return int(units)


# ---- layer options -----------------------------------------------------------------------------

def keras1_config(class_name: str, config: dict) -> Tuple[str, dict]:
    """``(class_name, config)`` of a Keras 1 layer, as Keras 2 would write that layer; ``config``
    is not modified.

    * LSTM: ``output_dim`` -> ``units``, ``init`` -> ``kernel_initializer``, ``inner_init`` ->
      ``recurrent_initializer``, ``inner_activation`` -> ``recurrent_activation`` (Keras 1's
      default "hard_sigmoid" is ``clip(0.2 z + 0.5, 0, 1)`` on both its backends, lstmfast's LSTM
      definition), ``W_/U_/b_regularizer`` -> ``kernel_/recurrent_/bias_regularizer``,
      ``dropout_W``/``dropout_U`` -> ``dropout``/``recurrent_dropout`` (Keras 1 drew one mask per
      gate unless ``consume_less="gpu"``, lstmfast draws one; training only). ``forget_bias_init``
      becomes ``unit_forget_bias`` (True for "one", else False); ``consume_less`` is dropped (it
      chose Keras 1's computation, not the result).
    * Dense: ``output_dim`` -> ``units``, ``init``, ``W_/b_regularizer``, ``W_/b_constraint`` ->
      ``kernel_``/``bias_``..., ``bias`` -> ``use_bias``.
    * Embedding: ``init`` -> ``embeddings_initializer``, ``W_regularizer``/``W_constraint`` ->
      ``embeddings_...``; ``dropout`` (training only: it dropped whole vocabulary rows) has no
      equivalent and is dropped, with a warning when it is not 0 (Keras 2 dropped it too).
    * Dropout: ``p`` -> ``rate``. Activation, RepeatVector, Masking, Flatten: names unchanged.
    * TimeDistributed, Bidirectional: their inner ``layer`` config is translated the same way.
    * Merge (``mode`` concat, sum, mul, ave, max) -> Concatenate(``axis=concat_axis``), Add,
      Multiply, Average, Maximum. Any other mode ("cos", "dot"), a Python function or lambda as
      mode, or a Merge of whole sub-models (a Keras 1 Sequential starting with Merge) raises
      ValueError. (Keras 1 ANDed the input masks of sum/mul/ave, lstmfast ORs them, as Keras 3.)
    * Every layer: ``input_dtype`` -> ``dtype`` when it names a float type (Keras 2 took it as the
      layer's dtype); an integer one (Embedding's "int32") is dropped, except on an InputLayer,
      whose dtype is its input's. LSTM and Dense ``input_dim`` (and LSTM ``input_length``) become
      ``batch_input_shape`` when that is absent, as Keras 2 did. Initializer names "zero" and
      "one" become "zeros" and "ones".

    Any other layer keeps its class name and options (only the every-layer step above applies): a
    Keras 1 option lstmfast does not know then fails when lstmfast constructs the layer, naming it.
    Applying this to a config it already translated changes nothing.
    """
    if class_name == "Merge":
        return _merge_config(config)
    renames = _RENAMES.get(class_name, {})
    out = {renames.get(key, key): value for key, value in config.items()}
    if "input_dtype" in out:
        dtype = out.pop("input_dtype")
        if class_name == "InputLayer" or str(dtype).startswith("float"):
            out["dtype"] = dtype
    for key in ("kernel_initializer", "recurrent_initializer", "embeddings_initializer"):
        if isinstance(out.get(key), str):
            out[key] = _INITIALIZERS.get(out[key], out[key])
    if class_name in ("LSTM", "Dense"):
        input_dim = out.pop("input_dim", None)
        input_length = out.pop("input_length", None)
        if out.get("batch_input_shape") is None and input_dim is not None:
            out["batch_input_shape"] = [None, input_length, input_dim] if class_name == "LSTM" else [None, input_dim]
    if class_name == "LSTM":
        out.pop("consume_less", None)
        if "forget_bias_init" in out:
            out["unit_forget_bias"] = out.pop("forget_bias_init") == "one"
    if class_name == "Embedding":
        dropout = out.pop("dropout", 0.0)
        if dropout:
            warnings.warn(f"Keras 1 Embedding {out.get('name')!r}: dropout={dropout!r} (whole vocabulary rows dropped "
                          f"in training) has no lstmfast equivalent and is left out; predictions are unaffected",
                          UserWarning, stacklevel=2)
    if class_name in _WRAPPERS and isinstance(out.get("layer"), dict):
        inner = out["layer"]
        inner_class, inner_config = keras1_config(inner.get("class_name"), inner.get("config") or {})
        out["layer"] = {**inner, "class_name": inner_class, "config": inner_config}
    return class_name, out


def _merge_config(config: dict) -> Tuple[str, dict]:
    """The Keras 2 merge layer of a Keras 1 ``Merge``, or ValueError."""
    name = config.get("name")
    if config.get("layers"):
        raise ValueError(f"Keras 1 Merge {name!r} merges whole sub-models (a Sequential whose first layer is a "
                         f"Merge); lstmfast does not read that form: rebuild the model with the functional API "
                         f"and load the weights")
    mode, mode_type = config.get("mode"), config.get("mode_type", "raw")
    if mode_type != "raw":
        raise ValueError(f"Keras 1 Merge {name!r}: its mode is a Python {mode_type}, and loading never runs code "
                         f"from a file")
    target = _MERGE_LAYERS.get(mode)
    if target is None:
        raise ValueError(f"Keras 1 Merge {name!r}: mode must be one of {', '.join(_MERGE_LAYERS)} (the modes "
                         f"lstmfast has a layer for), got {mode!r}")
    out = {"name": name}
    if target == "Concatenate":
        out["axis"] = config.get("concat_axis", -1)
    return target, out
