"""Helpers with Keras semantics (``keras.utils``): ``to_categorical``, ``pad_sequences``,
``normalize``, ``get_file`` (download with cache and hash check), ``PyDataset``/``Sequence``;
``set_random_seed`` and ``Progbar`` re-exported; ``np_utils`` is Keras 2's spelling of
``to_categorical`` and ``normalize``, ``data_utils`` of ``get_file`` and ``Sequence`` (deprecated)."""
from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import sys
import tarfile
import tempfile
import time
import types
import typing
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from typing import Any, Iterator, Optional, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._atomic import atomic_file
from ._typing import PathLike
from .backend import set_random_seed
from .callbacks import Progbar

__all__ = ["set_random_seed", "to_categorical", "pad_sequences", "normalize", "Progbar", "get_file",
           "PyDataset", "Sequence", "np_utils", "data_utils"]


def to_categorical(y: ArrayLike, num_classes: Optional[int] = None, dtype: DTypeLike = "float64") -> np.ndarray:
    """One-hot encode integer labels: shape ``y.shape + (num_classes,)``, except that a trailing
    axis of size 1 is dropped first (``(N, 1)`` -> ``(N, num_classes)``), as Keras does.
    ``num_classes`` defaults to ``max(y) + 1``. float64 by default, as Keras 3 returns (Keras 2
    gave float32: ``np_utils.to_categorical`` keeps that); ``dtype`` is lstmfast's addition."""
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


def pad_sequences(sequences: typing.Sequence[Any], maxlen: Optional[int] = None, dtype: DTypeLike = "int32",
                  padding: str = "pre", truncating: str = "pre", value: Any = 0.0) -> np.ndarray:
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


def normalize(x: ArrayLike, axis: int = -1, order: Union[int, float, str, None] = 2) -> np.ndarray:
    """``x`` divided by its ``order``-norm along ``axis`` (zero norms left as 1), as Keras."""
    x = np.asarray(x)
    norm = np.atleast_1d(np.linalg.norm(x, order, axis))
    norm[norm == 0] = 1
    return x / np.expand_dims(norm, axis)


# ---- Keras 2's np_utils ------------------------------------------------------------------------

def _np_utils_to_categorical(y, num_classes=None, dtype="float32") -> np.ndarray:
    warnings.warn("lstmfast.utils.np_utils.to_categorical is Keras 2's spelling; use "
                  "lstmfast.utils.to_categorical (it returns float64 as Keras 3; pass dtype='float32' for "
                  "Keras 2's dtype)", DeprecationWarning, stacklevel=2)
    return to_categorical(y, num_classes, dtype)


# A module object rather than a file, so `lstmfast.utils` stays one module: once this module has run,
# the import system finds `lstmfast.utils.np_utils` in sys.modules (`from ...np_utils import` works).
np_utils = types.ModuleType(f"{__name__}.np_utils", "Keras 2's keras.utils.np_utils (deprecated): "
                            "to_categorical (float32 by default, as Keras 2) and normalize.")
np_utils.to_categorical = _np_utils_to_categorical
np_utils.normalize = normalize
sys.modules[np_utils.__name__] = np_utils


def _data_utils_get_file(*args, **kwargs):
    warnings.warn("lstmfast.utils.data_utils.get_file is Keras 2's spelling; use lstmfast.utils.get_file",
                  DeprecationWarning, stacklevel=2)
    return get_file(*args, **kwargs)


# Keras 2's keras.utils.data_utils (`from keras.utils.data_utils import get_file`, as Keras 2's text
# examples wrote it); a module object for the same reason as np_utils.
data_utils = types.ModuleType(f"{__name__}.data_utils", "Keras 2's keras.utils.data_utils (deprecated): "
                              "get_file, and Sequence (lstmfast.utils.PyDataset).")
data_utils.get_file = _data_utils_get_file
sys.modules[data_utils.__name__] = data_utils


# ---- PyDataset ---------------------------------------------------------------------------------

class PyDataset:
    """Keras 3's ``keras.utils.PyDataset`` (``Sequence`` is the same class): a data set of batches.
    Subclasses implement ``__len__`` (the number of batches) and ``__getitem__(index)`` (batch
    ``index``: ``x``, ``(x, y)`` or ``(x, y, sample_weight)``), and may override
    ``on_epoch_begin``/``on_epoch_end``. ``workers``, ``use_multiprocessing`` and
    ``max_queue_size`` are stored as Keras does.

    ``fit``, ``evaluate`` and ``predict`` take it as ``x`` (see ``lstmfast.data_adapters``): its
    batches are used as given, ``fit(shuffle=True)`` reorders them each epoch, and
    ``on_epoch_begin``/``on_epoch_end`` run around every epoch."""

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10) -> None:
        self.workers = workers
        self.use_multiprocessing = use_multiprocessing
        self.max_queue_size = max_queue_size

    # Keras 2's Sequence subclasses never call super().__init__(): these class defaults cover them.
    workers = 1
    use_multiprocessing = False
    max_queue_size = 10

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index) (batch number index)")

    @property
    def num_batches(self) -> Optional[int]:
        """The number of batches (``len(self)``); None for an endless data set."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError(f"{type(self).__name__} must implement __len__ (the number of batches)")

    def __iter__(self) -> Iterator[Any]:
        try:
            n = self.num_batches
        except NotImplementedError:
            n = None
        for index in (range(n) if n is not None else itertools.count()):
            yield self[index]

    def on_epoch_begin(self) -> None:
        """Called at the start of every epoch."""

    def on_epoch_end(self) -> None:
        """Called at the end of every epoch (e.g. to reshuffle)."""


Sequence = PyDataset
data_utils.Sequence = Sequence


# ---- get_file ----------------------------------------------------------------------------------

_CHUNK = 1 << 16


def _cache_root(cache_dir) -> str:
    """``cache_dir``, else ``$LSTMFAST_HOME``, else ``~/.lstmfast``; where that is not writable, the
    temporary directory's ``.lstmfast`` (as Keras falls back to /tmp/.keras)."""
    if cache_dir is None:
        cache_dir = os.environ.get("LSTMFAST_HOME") or os.path.join("~", ".lstmfast")
    root = os.path.expanduser(os.fspath(cache_dir))
    probe = root
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK):
        root = os.path.join(tempfile.gettempdir(), ".lstmfast")
    return root


def _hasher(algorithm: str, file_hash: str):
    if algorithm == "auto":
        algorithm = "sha256" if len(file_hash) == 64 else "md5"
    if algorithm not in ("sha256", "md5"):
        raise ValueError(f"hash_algorithm must be 'auto', 'sha256' or 'md5', got {algorithm!r}")
    return hashlib.new(algorithm)


def _hash_file(path: str, algorithm: str, file_hash: str) -> str:
    h = _hasher(algorithm, file_hash)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


class _DownloadBar:
    """``Downloading <origin>: 1.2 MB / 3.4 MB (35%)`` on stderr, redrawn at most every 0.2 s
    (a quick download shows only the final line)."""

    def __init__(self, origin: str, total):
        self.origin, self.total, self.last = origin, total, time.monotonic()

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        of = f" / {_size(self.total)} ({100 * done / self.total:.0f}%)" if self.total else ""
        sys.stderr.write(f"\rDownloading {self.origin}: {_size(done)}{of}" + ("\n" if final else ""))
        sys.stderr.flush()


def _download(origin: str, target: str, file_hash, hash_algorithm: str) -> None:
    """Stream ``origin`` into ``target`` atomically; with ``file_hash`` the digest must match, or
    nothing is written."""
    try:
        response = urllib.request.urlopen(origin, timeout=60)
    except urllib.error.HTTPError as e:
        raise OSError(f"URL fetch failure on {origin}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise OSError(f"URL fetch failure on {origin}: {e.reason}") from e
    with response, atomic_file(target, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        bar = _DownloadBar(origin, total)
        h = _hasher(hash_algorithm, file_hash) if file_hash is not None else None
        done = 0
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            out.write(chunk)
            if h is not None:
                h.update(chunk)
            done += len(chunk)
            bar.update(done)
        bar.update(done, final=True)
        if total is not None and done != total:
            raise OSError(f"URL fetch failure on {origin}: got {done} of {total} bytes")
        if h is not None and h.hexdigest() != file_hash.lower():
            raise ValueError(f"the {h.name} hash of {origin} is {h.hexdigest()}, expected {file_hash}: the "
                             f"download is incomplete or corrupted (nothing was kept)")


def _extract(archive: str, dest: str, archive_format) -> bool:
    """Extract a tar or zip ``archive`` into ``dest`` (through a temporary directory beside it, so
    ``dest`` is complete or absent). Members may not leave ``dest``. False: not such an archive."""
    if archive_format is None:
        return False
    formats = ["tar", "zip"] if archive_format == "auto" else \
        [archive_format] if isinstance(archive_format, str) else list(archive_format)
    for fmt in formats:
        if fmt == "tar" and tarfile.is_tarfile(archive):
            opener = tarfile.open
        elif fmt == "zip" and zipfile.is_zipfile(archive):
            opener = zipfile.ZipFile
        else:
            continue
        tmp = tempfile.mkdtemp(prefix=".lstmfast-extract-", dir=os.path.dirname(dest))
        try:
            with opener(archive) as a:
                if fmt == "tar" and hasattr(tarfile, "data_filter"):
                    a.extractall(tmp, filter="data")    # refuses absolute paths, "..", links out
                else:                                   # zip, or a Python without tar filters
                    names = a.namelist() if fmt == "zip" else [m.name for m in a.getmembers()]
                    if fmt == "tar" and any(m.issym() or m.islnk() for m in a.getmembers()):
                        raise ValueError(f"archive {archive} has links; this Python cannot extract them safely")
                    root = os.path.realpath(tmp)
                    for name in names:
                        where = os.path.realpath(os.path.join(root, name))
                        if os.path.commonpath([root, where]) != root:
                            raise ValueError(f"archive {archive} has a member outside its folder: {name!r}")
                    a.extractall(tmp)
            if os.path.exists(dest):
                shutil.rmtree(dest) if os.path.isdir(dest) else os.remove(dest)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True
    return False


def get_file(fname: Optional[PathLike] = None, origin: Optional[str] = None, untar: bool = False,
             md5_hash: Optional[str] = None, file_hash: Optional[str] = None, cache_subdir: str = "datasets",
             hash_algorithm: str = "auto", extract: bool = False,
             archive_format: Union[str, typing.Sequence[str], None] = "auto", cache_dir: Optional[PathLike] = None,
             force_download: bool = False) -> str:
    """Download ``origin`` into ``<cache_dir>/<cache_subdir>/<fname>`` unless it is already there
    (Keras 3's ``keras.utils.get_file``, same arguments); returns the file's path.

    ``cache_dir`` defaults to ``$LSTMFAST_HOME`` or ``~/.lstmfast`` (Keras: ``~/.keras``);
    ``fname`` to the last part of the URL's path. ``file_hash``: the expected sha256 (64 hex
    digits) or md5 digest (``hash_algorithm`` 'auto', 'sha256' or 'md5'; ``md5_hash`` is Keras 1's
    spelling): a cached file that does not match is downloaded again, and a download that does not
    match raises ValueError and leaves no file. The file is written atomically (a reader never sees
    half of it) with a progress line on stderr. ``extract`` (or ``untar``): unpack a tar or zip
    archive (``archive_format`` 'auto', 'tar', 'zip' or a list) into a folder beside it and return
    that folder: ``<name before the first dot>_extracted`` when ``fname`` has a dot, as Keras.
    Any URL urllib opens works, ``file://`` included."""
    if origin is None:
        raise ValueError('get_file needs origin= (the URL of the file to download)')
    if md5_hash is not None and file_hash is None:
        file_hash, hash_algorithm = md5_hash, "md5"
    if file_hash is not None:
        _hasher(hash_algorithm, file_hash)     # check the algorithm before any download
    datadir = os.path.join(_cache_root(cache_dir), cache_subdir)
    os.makedirs(datadir, exist_ok=True)
    given = fname is not None and os.fspath(fname) != ""
    fname = os.fspath(fname) if given else os.path.basename(urllib.parse.urlsplit(origin).path)
    if not fname:
        raise ValueError(f"cannot take a file name from origin {origin!r}; pass fname=")
    if os.sep in fname or (os.altsep and os.altsep in fname):
        raise ValueError(f"fname must be a file name, not a path (use cache_dir= for the folder), got {fname!r}")
    extraction_dir = None
    if extract or untar:
        if given and "." in fname:
            target = os.path.join(datadir, fname)
            extraction_dir = os.path.join(datadir, fname[:fname.find(".")] + "_extracted")
        else:
            target = os.path.join(datadir, fname + "_archive")
            extraction_dir = os.path.join(datadir, fname)
    else:
        target = os.path.join(datadir, fname)

    download = force_download or not os.path.exists(target)
    if not download and file_hash is not None and _hash_file(target, hash_algorithm, file_hash) != file_hash.lower():
        sys.stderr.write(f"{target} does not match the expected hash {file_hash}: downloading it again\n")
        os.remove(target)                       # a failed download must not leave the stale file
        download = True
    if download:
        sys.stderr.write(f"Downloading data from {origin}\n")
        _download(origin, target, file_hash, hash_algorithm)

    if extraction_dir is None:
        return target
    if download or not os.path.exists(extraction_dir):
        if not _extract(target, extraction_dir, "tar" if untar else archive_format):
            warnings.warn(f"could not extract {target}: not a {archive_format} archive", stacklevel=2)
    return extraction_dir
