"""Data helpers with Keras semantics: ``to_categorical``, ``pad_sequences``, ``normalize``;
``set_random_seed`` and ``Progbar`` re-exported."""
from __future__ import annotations

import numpy as np

from .backend import set_random_seed
from .callbacks import Progbar

__all__ = ["set_random_seed", "to_categorical", "pad_sequences", "normalize", "Progbar"]


def to_categorical(y, num_classes=None, dtype="float32") -> np.ndarray:
    """One-hot encode integer labels: shape ``y.shape + (num_classes,)``, except that a trailing
    axis of size 1 is dropped first (``(N, 1)`` -> ``(N, num_classes)``), as Keras does.
    ``num_classes`` defaults to ``max(y) + 1``."""
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"y must hold integer class labels, got dtype {arr.dtype}")
    labels = arr.astype(np.int64)
    if arr.dtype.kind == "f" and not np.array_equal(labels, arr):
        raise ValueError("y must hold integer class labels, got non-integer values")
    shape = labels.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    flat = labels.reshape(-1)
    if num_classes is None:
        if flat.size == 0:
            raise ValueError("num_classes is required when y is empty")
        num_classes = int(flat.max()) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if flat.size and (flat.min() < 0 or flat.max() >= num_classes):
        bad = int(flat.min()) if flat.min() < 0 else int(flat.max())
        raise ValueError(f"label {bad} is out of range for num_classes={num_classes} (labels must lie in "
                         f"[0, {num_classes - 1}])")
    out = np.zeros((flat.size, int(num_classes)), dtype=dtype)
    out[np.arange(flat.size), flat] = 1
    return out.reshape(shape + (int(num_classes),))


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0) -> np.ndarray:
    """Pad (or truncate) a list of sequences to one length: shape ``(len(sequences), maxlen) +
    sample_shape`` where ``sample_shape`` is that of the entries of the first non-empty sequence.

    ``maxlen`` defaults to the longest sequence. ``padding``/``truncating`` ``"pre"`` (default)
    pad or cut at the start, ``"post"`` at the end. Values are converted to ``dtype`` as NumPy
    does (floats into an int dtype are truncated); use ``dtype=object`` or a string dtype for strings.
    """
    if padding not in ("pre", "post"):
        raise ValueError(f'Padding type "{padding}" not understood: padding must be "pre" or "post"')
    if truncating not in ("pre", "post"):
        raise ValueError(f'Truncating type "{truncating}" not understood: truncating must be "pre" or "post"')
    if not hasattr(sequences, "__len__"):
        raise ValueError("`sequences` must be iterable.")
    num_samples = len(sequences)
    lengths = []
    sample_shape = ()
    found = False
    for x in sequences:
        try:
            lengths.append(len(x))
        except TypeError:
            raise ValueError(f"`sequences` must be a list of iterables. Found non-iterable: {x!r}") from None
        if not found and len(x):
            sample_shape = np.asarray(x).shape[1:]
            found = True
    if maxlen is None:
        maxlen = max(lengths) if lengths else 0
    elif isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)) or maxlen < 0:
        raise ValueError(f"maxlen must be None or an int >= 0, got {maxlen!r}")
    maxlen = int(maxlen)
    is_str_dtype = np.issubdtype(np.dtype(dtype), np.str_) or np.issubdtype(np.dtype(dtype), np.bytes_)
    if isinstance(value, str) and np.dtype(dtype) != object and not is_str_dtype:
        raise ValueError(f"`dtype` {dtype} is not compatible with `value`'s type: {type(value)}\n"
                         f"You should set `dtype=object` for variable length strings.")
    x = np.full((num_samples, maxlen) + sample_shape, value, dtype=dtype)
    if maxlen == 0:
        return x
    for idx, s in enumerate(sequences):
        if not len(s):
            continue
        trunc = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        trunc = np.asarray(trunc, dtype=dtype)
        if trunc.shape[1:] != sample_shape:
            raise ValueError(f"Shape of sample {trunc.shape[1:]} of sequence at position {idx} is different from "
                             f"expected shape {sample_shape}")
        if padding == "post":
            x[idx, :len(trunc)] = trunc
        else:
            x[idx, -len(trunc):] = trunc
    return x


def normalize(x, axis=-1, order=2) -> np.ndarray:
    """``x`` divided by its ``order``-norm along ``axis`` (zero norms left as 1), as Keras."""
    x = np.asarray(x)
    norm = np.atleast_1d(np.linalg.norm(x, order, axis))
    norm[norm == 0] = 1
    return x / np.expand_dims(norm, axis)
