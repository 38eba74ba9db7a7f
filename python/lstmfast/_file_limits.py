"""What a model file being read may make lstmfast allocate, decompress or build: one place for the
limits every reader applies (``lstmfast.saving``, ``interop.keras_format``, ``interop.safetensors_io``,
``interop.torch_lstm``), so a damaged or hostile file gets a ValueError naming it and what was wrong,
never a MemoryError, a RecursionError or minutes of work.

* JSON (a manifest, a Keras config, a safetensors header): at most ``MAX_JSON_BYTES``, nested at most
  ``MAX_JSON_DEPTH`` deep (a model's description is kilobytes, some 15 levels deep).
* Compressed data (zip members, HDF5 datasets) may expand to at most ``expansion_limit(stored)``:
  ``MAX_EXPANSION`` times the bytes it occupies, plus ``EXPANSION_SLACK``. Trained weights barely
  compress (lstmfast writes them uncompressed), so only a zip bomb goes past that.
* A model rebuilt from a file (``weights_from_file``) gets no more weight values than the file holds,
  checked as each weight is created and before it is allocated, and its layers skip their
  initializers: the file's arrays replace them (so ``units=60000`` never draws a 107 GiB orthogonal
  matrix).
* An optimizer state holds at most ``optimizer_slots_limit`` arrays and ``optimizer_values_limit``
  values for the model it belongs to.

This module imports nothing of lstmfast: the readers and ``Layer.add_weight`` import it.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import math
import zipfile
import zlib
from typing import Any, Iterator, Optional, Sequence

import numpy as np

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_EXPANSION", "EXPANSION_SLACK", "ZIP_ERRORS", "CONFIG_ERRORS",
           "expansion_limit", "check_zip", "load_json", "check_json_depth", "file_error",
           "weights_from_file", "claim_weight", "optimizer_slots_limit", "optimizer_values_limit"]

MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 100
MAX_EXPANSION = 100
EXPANSION_SLACK = 1 << 20

# What zipfile raises for a damaged archive or member (zlib.error: a damaged deflate stream). Opening
# an archive can also raise ValueError (UnicodeDecodeError: a member name that is not UTF-8).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError)

# What building a model from a config that is not what lstmfast or Keras writes can raise (a field
# of the wrong type or missing, a nesting too deep for the graph walk, an option lstmfast lacks): the
# readers turn these into a ValueError naming the file.
CONFIG_ERRORS = (KeyError, IndexError, TypeError, AttributeError, NotImplementedError, OverflowError,
                 RecursionError, ZeroDivisionError)


def expansion_limit(stored: int) -> int:
    """The most bytes that ``stored`` bytes of compressed data may expand to."""
    return MAX_EXPANSION * int(stored) + EXPANSION_SLACK


def check_zip(z: zipfile.ZipFile, path: str) -> None:
    """Refuse, before anything is extracted, a zip archive whose members declare more bytes than
    ``expansion_limit`` of what they occupy in it (a zip bomb)."""
    infos = z.infolist()
    for info in infos:
        if info.file_size > expansion_limit(info.compress_size):
            raise ValueError(f"{path}: {info.filename} declares {info.file_size} bytes, stored in "
                             f"{info.compress_size}; at most {expansion_limit(info.compress_size)} ({MAX_EXPANSION}x, "
                             f"a zip bomb otherwise); refusing to extract it")
    stored = sum(info.compress_size for info in infos)
    declared = sum(info.file_size for info in infos)
    if declared > expansion_limit(stored):
        raise ValueError(f"{path}: its members declare {declared} bytes in all, stored in {stored}; at most "
                         f"{expansion_limit(stored)} ({MAX_EXPANSION}x, a zip bomb otherwise); refusing to "
                         f"extract them")


def load_json(raw, what: str, invalid: str = "is not valid JSON") -> Any:
    """The JSON value of ``raw`` (bytes in UTF-8, or str); ValueError starting with ``what`` when it
    is not JSON (``invalid`` says so) or nests deeper than ``MAX_JSON_DEPTH``."""
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
    except RecursionError:
        raise ValueError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels (a model's description "
                         f"needs about 15); refusing to read it") from None
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{what} {invalid} ({e})") from None
    check_json_depth(value, what)
    return value


def check_json_depth(value: Any, what: str) -> None:
    """ValueError when the JSON value ``value`` nests deeper than ``MAX_JSON_DEPTH`` (walked
    without recursion, so any depth is measured)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels (a model's description "
                             f"needs about 15); refusing to read it")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def file_error(path: str, error: BaseException, what: str) -> ValueError:
    """A ValueError for ``error``, raised while reading ``path``, that names the file and says
    ``what`` failed ("its model cannot be built")."""
    message = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
    if path in message:
        return ValueError(message)
    return ValueError(f"{path}: {what} ({message[:500]})")


# ---- building a model from a file -----------------------------------------------------------------

class _FileWeights:
    def __init__(self, values: int, source: str):
        self.values, self.left, self.source = int(values), int(values), source


_FILE_WEIGHTS: contextvars.ContextVar[Optional[_FileWeights]] = contextvars.ContextVar(
    "lstmfast_file_weights", default=None)


@contextlib.contextmanager
def weights_from_file(values: int, source: str) -> Iterator[None]:
    """While a model is built from the file ``source``, whose arrays hold ``values`` weight values:
    ``Layer.add_weight`` creates zeros instead of running the initializers (the file's arrays
    replace them) and refuses, before allocating it, a weight that takes the model past ``values``."""
    token = _FILE_WEIGHTS.set(_FileWeights(values, source))
    try:
        yield
    finally:
        _FILE_WEIGHTS.reset(token)


def claim_weight(layer: str, name: str, shape: Sequence[int], dtype) -> Optional[np.ndarray]:
    """Inside ``weights_from_file``: zeros of ``shape`` for weight ``name`` of ``layer``, once the
    file is checked to hold that many more values; outside it, None (the initializer runs)."""
    budget = _FILE_WEIGHTS.get()
    if budget is None:
        return None
    shape = tuple(shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{budget.source}: layer {layer!r} would need weight {name!r} of shape {shape}; "
                         f"a dimension is negative")
    size = math.prod(shape)
    if size > budget.left:
        raise ValueError(f"{budget.source}: its config asks layer {layer!r} for weight {name!r} of shape {shape} "
                         f"({size} values), but the file holds only {budget.values} weight values in all "
                         f"({budget.left} not yet used); refusing to build the model")
    budget.left -= size
    return np.zeros(shape, dtype)


# ---- optimizer state --------------------------------------------------------------------------------

def optimizer_slots_limit(n_weights: int) -> int:
    """The most optimizer arrays a model of ``n_weights`` weight arrays can have (3 slots per weight
    for AMSGrad, one more each to spare)."""
    return 4 * n_weights + 4


def optimizer_values_limit(weight_values: int) -> int:
    """The most values an optimizer state of a model of ``weight_values`` weight values can hold."""
    return 4 * weight_values + (1 << 18)
