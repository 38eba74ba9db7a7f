"""Data sets and data preparation for the sample tasks.

Each module loads one kind of data from local files and prepares it for a model:
``text`` (a text file, its character vocabulary, a held-out tail, contiguous batches for
stateful truncated BPTT); ``timeseries`` (CSV columns, sliding windows, scalers, train/test split, naive baselines);
``imdb`` (Keras's ``imdb.load_data`` from aclImdb, a JSONL of reviews or Keras's imdb.npz; it is
the one module that downloads, and only when given no path and nothing is in its cache directory).
"""
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:  # what __getattr__ below loads on first use, named for type checkers
    from . import imdb as imdb
    from . import text as text
    from . import timeseries as timeseries


def __getattr__(name: str) -> _Any:
    # `keras.datasets.imdb.load_data(...)` style access: the modules load on first use.
    if name in ("imdb", "text", "timeseries"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
