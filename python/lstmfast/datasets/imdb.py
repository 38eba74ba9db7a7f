"""The IMDB movie-review sentiment data set (Maas et al., ACL 2011) in Keras's format.

``load_data`` returns what ``keras.datasets.imdb.load_data`` returns, review for review:
``(x_train, y_train), (x_test, y_test)``, where each ``x`` is a 1-D object array of Python lists
of word ids and each ``y`` an int64 array of labels (1 = positive, 0 = negative), 25,000 + 25,000
reviews. It reads any of these (``path``; the format is sniffed from the content, not the name):

* the official ``aclImdb_v1.tar.gz``, read member by member (nothing is extracted to disk);
* the extracted ``aclImdb`` directory (``train|test/pos|neg/<id>_<rating>.txt``);
  a directory holding ``aclImdb_v1.tar.gz``, ``imdb_reviews.jsonl.gz`` or ``imdb.npz`` stands for
  that file (the first of them found, in this order);
* a ``.jsonl`` or ``.jsonl.gz`` file, one ``{"split", "label", "id", "rating", "text"}`` object
  per review (the repackaged aclImdb in ``shared/data/imdb_reviews.jsonl.gz``);
* Keras's own ``imdb.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``; word ranks, not yet
  shifted by ``index_from``), or the encoded cache this module writes (``ids``/``offsets`` arrays).

From text, a review becomes word ranks exactly as Keras's ``imdb.npz`` was made (checked against
Keras's arrays: the first 5,000 train and 1,000 test reviews of Keras's ``load_data(num_words=500)``
output are reproduced element for element)::

    ASCII letters lowercased (other letters are left as they are: the index has "Åge"),
    each of FILTERS replaced by a space, split on single spaces, empty pieces dropped,
    words missing from the word index DROPPED (not OOV), each word -> word_index[word]

and the reviews of a split are stored positive first, then negative, each in file-name order
(``"10000_8.txt" < "1000_4.txt"``), which is the order Keras's ``imdb.npz`` holds them in.
``load_data`` then does what Keras does with them: one ``np.random.RandomState(seed)`` shuffles the
train split and then the test split; every id is shifted by ``index_from`` and ``start_char`` is put
in front; with ``maxlen`` only sequences *shorter* than ``maxlen`` (start char included) are kept;
ids outside ``[skip_top, num_words)`` become ``oov_char`` (or are dropped when it is None).

One difference from Keras: ``num_words`` defaults to 20000 (the size every IMDB LSTM tutorial
uses), not None; pass ``num_words=None`` for Keras's default (every word kept, except that, as in
Keras, the largest id then also becomes ``oov_char``).

The word index (``get_word_index``) is Keras's ``imdb_word_index.json`` (88,584 words -> frequency
rank). Text sources are encoded with, in this order: the ``word_index`` argument, an
``imdb_word_index.json`` next to the data, the one in the cache directory, or a download of
Keras's file (checked against Keras's MD5).

``path=None`` looks in the cache directory (``$LSTMFAST_DATA``, else ``~/.lstmfast/datasets``)
for ``aclImdb_v1.tar.gz``, ``aclImdb/`` or ``imdb_reviews.jsonl.gz`` and downloads
``aclImdb_v1.tar.gz`` from Stanford (ACLIMDB_URL, about 84 MB) when none is there. Downloads go
to ``<name>.part`` and are renamed when complete. The encoded word ranks of a text source are
cached there too (``imdb_encoded-<key>.npz``, plain int arrays, ``allow_pickle=False``), keyed by
the source's path, size and modification time and the word index's digest, so the next call
skips the ~5 s of tokenising (``cache=False`` turns this off).

Security: Keras's ``imdb.npz`` stores ragged object arrays, which NumPy can only save as pickles,
and Keras read them with ``np.load(allow_pickle=True)`` until recently (Keras 3.15 uses a
restricted unpickler). Unpickling a file can run arbitrary code, so this module does what current
Keras does: numeric arrays are read with ``allow_pickle=False``, object arrays with an unpickler
that only accepts the few NumPy globals an array of lists needs and refuses everything else. Such
a file is read only when you pass its path (or its folder); ``path=None`` never picks up an ``.npz`` other than its
own pickle-free cache.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import pickle
import re
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

__all__ = ["load_data", "get_word_index", "tokenize", "encode_review", "cache_dir", "ACLIMDB_URL",
           "WORD_INDEX_URL", "WORD_INDEX_MD5", "FILTERS"]

ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ACLIMDB_NAME = "aclImdb_v1.tar.gz"
WORD_INDEX_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb_word_index.json"
WORD_INDEX_NAME = "imdb_word_index.json"
WORD_INDEX_MD5 = "bfafd718b763782e994055a2d397834f"  # the file_hash keras.datasets.imdb checks
JSONL_NAME = "imdb_reviews.jsonl.gz"

FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'  # Keras's text_to_word_sequence default filters
# One str.translate does both steps of Keras's tokenizer: ASCII-only lowercasing and the filters.
_TABLE = str.maketrans({**{c: " " for c in FILTERS},
                        **{chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)}})

SUPPORTED_FORMATS = ("aclImdb_v1.tar.gz (or any .tar/.tar.gz holding aclImdb/{train,test}/{pos,neg}/*.txt)",
                     "an extracted aclImdb directory",
                     ".jsonl or .jsonl.gz with one {split, label, id, rating, text} object per line",
                     "Keras's imdb.npz (x_train, y_train, x_test, y_test)",
                     "lstmfast's encoded .npz cache")

_MEMBER = re.compile(r"(?:\./)?(?:aclImdb/)?(train|test)/(pos|neg)/(\d+)_(\d+)\.txt")
_CACHE_FORMAT = "lstmfast.imdb.encoded.v1"
_SPLITS = ("train", "test")


# ---- tokenising --------------------------------------------------------------------------------

def tokenize(text: str) -> List[str]:
    """The words Keras's IMDB encoding sees in ``text`` (see the module docstring)."""
    return [w for w in text.translate(_TABLE).split(" ") if w]


def encode_review(text: str, word_index: Dict[str, int]) -> List[int]:
    """Word ranks of ``text``: ``word_index[w]`` for each word, words not in the index dropped.
    ``load_data`` adds ``index_from``, the start char and the OOV cut on top."""
    get = word_index.get
    return [r for r in map(get, text.translate(_TABLE).split(" ")) if r is not None]


# The same on UTF-8 bytes, many reviews at a time (how load_data encodes 50,000 reviews in a few
# seconds). Equivalent to the str version: the filters and A-Z are ASCII, and no byte of a
# multi-byte UTF-8 character is ASCII.
_BYTE_TABLE = bytes(32 if chr(b) in FILTERS else b + 32 if 65 <= b <= 90 else b for b in range(256))


def _encode_many(texts: List[bytes], index: Dict[bytes, int]) -> "_Ragged":
    """Word ranks of each UTF-8 ``text``; ``index`` maps UTF-8 words to ranks (all >= 1)."""
    parts, counts = [], []
    get = index.get
    for lo in range(0, len(texts), 2048):
        words = [t.translate(_BYTE_TABLE).split(b" ") for t in texts[lo:lo + 2048]]
        n = np.fromiter(map(len, words), np.int64, count=len(words))
        # rank 0 marks words to drop: not in the index (including the empty pieces of "a  b")
        ranks = np.fromiter(map(get, itertools.chain.from_iterable(words), itertools.repeat(0)), np.int64,
                            count=int(n.sum()))
        parts.append(ranks)
        counts.append(n)
    all_counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    ranks = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(all_counts, out=offsets[1:])
    return _Ragged(ranks, offsets).keep_elements(ranks != 0)


# ---- the cache directory and downloads ---------------------------------------------------------

def cache_dir() -> Path:
    """``$LSTMFAST_DATA`` if set, else ``~/.lstmfast/datasets`` (not created here)."""
    env = os.environ.get("LSTMFAST_DATA")
    return Path(env).expanduser() if env else Path.home() / ".lstmfast" / "datasets"


def _download(url: str, dest: Path, md5: Optional[str] = None, verbose: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` through ``dest.part`` (renamed when complete and, with ``md5``,
    checked), printing progress to stderr. Raises FileNotFoundError when it cannot."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, last = 0, 0.0
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                now = time.monotonic()
                if verbose and (now - last > 0.5 or (total and done == total)):
                    last = now
                    of = f" / {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
                    print(f"\rDownloading {url}: {done / 1e6:.1f}{of}", end="", file=sys.stderr, flush=True)
        if verbose:
            print(file=sys.stderr)
        if total and done != total:
            raise OSError(f"got {done} of {total} bytes")
        if md5 and digest.hexdigest() != md5:
            raise OSError(f"MD5 {digest.hexdigest()} differs from the expected {md5}")
        os.replace(part, dest)
    except (OSError, urllib.error.URLError) as e:  # URLError is an OSError; named for clarity
        try:
            part.unlink()
        except OSError:
            pass
        raise FileNotFoundError(f"could not download {url} to {dest}: {getattr(e, 'reason', e)}. Download it "
                                f"yourself and put it in {dest.parent} (or pass its path)") from e
    return dest


# ---- the word index ----------------------------------------------------------------------------

def _read_word_index(path: Path) -> Dict[str, int]:
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"word index {path} is not valid JSON: {e}") from None
    if not isinstance(index, dict) or not all(isinstance(v, int) and v >= 1 for v in index.values()):
        raise ValueError(f"word index {path} must be a JSON object mapping words to ranks >= 1")
    return index


def get_word_index(path: Union[str, os.PathLike, None] = None) -> Dict[str, int]:
    """Keras's IMDB word index, word -> frequency rank (``"the": 1``). ``path``: a JSON file;
    None: ``imdb_word_index.json`` in the cache directory, downloaded from WORD_INDEX_URL (and
    checked against WORD_INDEX_MD5) when missing."""
    if path is None:
        path = cache_dir() / WORD_INDEX_NAME
        if not path.is_file():
            _download(WORD_INDEX_URL, path, md5=WORD_INDEX_MD5)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word index {path} does not exist" if not path.exists()
                                else f"word index {path} is not a file")
    return _read_word_index(path)


def _word_index_for(source: Path, word_index) -> Tuple[Dict[str, int], Optional[str]]:
    """The index to encode ``source`` with, and a digest of it for the cache key (None: no cache)."""
    if isinstance(word_index, dict):
        return word_index, None
    if word_index is not None:
        path = Path(word_index)
    else:
        near = [source.parent / WORD_INDEX_NAME]
        if source.is_dir():
            near = [source / WORD_INDEX_NAME] + near
        path = next((p for p in near if p.is_file()), None)
        if path is None:
            path = cache_dir() / WORD_INDEX_NAME
            if not path.is_file():
                _download(WORD_INDEX_URL, path, md5=WORD_INDEX_MD5)
    if not path.is_file():
        raise FileNotFoundError(f"word index {path} does not exist")
    data = path.read_bytes()
    return _read_word_index(path), hashlib.md5(data).hexdigest()


# ---- ragged int sequences ----------------------------------------------------------------------

class _Ragged:
    """Sequences of ints as one flat array ``ids [total]`` and ``offsets [n + 1]``."""

    __slots__ = ("ids", "offsets")

    def __init__(self, ids: np.ndarray, offsets: np.ndarray):
        self.ids, self.offsets = ids, offsets

    @classmethod
    def from_lists(cls, seqs) -> "_Ragged":
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(offsets[-1]))
        return cls(ids, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> "_Ragged":
        """The sequences at ``rows``, in that order."""
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # element j of output row r comes from self.offsets[rows[r]] + j
        gather = np.repeat(self.offsets[:-1][rows] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return _Ragged(self.ids[gather], offsets)

    def prepend(self, value: int) -> "_Ragged":
        n = len(self)
        offsets = self.offsets + np.arange(n + 1)
        ids = np.empty(len(self.ids) + n, self.ids.dtype)
        is_start = np.zeros(len(ids), bool)
        is_start[offsets[:-1]] = True
        ids[is_start] = value
        ids[~is_start] = self.ids
        return _Ragged(ids, offsets)

    def keep_elements(self, keep: np.ndarray) -> "_Ragged":
        row = np.repeat(np.arange(len(self)), self.lengths)
        counts = np.bincount(row[keep], minlength=len(self))
        offsets = np.zeros(len(self) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return _Ragged(self.ids[keep], offsets)

    def to_object_array(self) -> np.ndarray:
        """A 1-D object array of Python lists of ints (Keras's layout; 1-D even when all lengths match)."""
        flat = self.ids.tolist()
        out = np.empty(len(self), dtype=object)
        bounds = self.offsets.tolist()
        for i in range(len(self)):
            out[i] = flat[bounds[i]:bounds[i + 1]]
        return out


# ---- reading the sources -----------------------------------------------------------------------

def _sniff(path: Path) -> str:
    """'aclimdb-dir', 'tar', 'jsonl', 'npz'; ValueError for anything else."""
    if path.is_dir():
        if (path / "train").is_dir() or (path / "test").is_dir() or (path / "aclImdb").is_dir():
            return "aclimdb-dir"
        raise ValueError(f"{path} is a directory without train/, test/, aclImdb/, {ACLIMDB_NAME}, {JSONL_NAME} "
                         f"or imdb.npz in it; supported formats: {'; '.join(SUPPORTED_FORMATS)}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "npz"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(512)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path} is not a readable gzip file: {e}") from None
    else:
        with open(path, "rb") as f:
            head = f.read(512)
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.lstrip().startswith(b"{"):
        return "jsonl"
    raise ValueError(f"{path} is in no format lstmfast.datasets.imdb knows; supported formats: "
                     f"{'; '.join(SUPPORTED_FORMATS)}")


def _iter_dir(root: Path) -> Iterator[tuple]:
    if not (root / "train").is_dir() and not (root / "test").is_dir():
        root = root / "aclImdb"
    for split in _SPLITS:
        for polarity in ("pos", "neg"):
            folder = root / split / polarity
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.is_file() and _MEMBER.fullmatch(f"{split}/{polarity}/{entry.name}"):
                    with open(entry.path, "rb") as f:
                        yield split, int(polarity == "pos"), entry.name, f.read()


def _iter_tar(path: Path) -> Iterator[tuple]:
    # Members are read, never extracted, and only regular files whose whole name matches
    # [./][aclImdb/]{train,test}/{pos,neg}/<id>_<rating>.txt are used: no path is ever written.
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                match = _MEMBER.fullmatch(member.name)
                if not match or not member.isfile():
                    continue
                f = tar.extractfile(member)
                yield (match.group(1), int(match.group(2) == "pos"), f"{match.group(3)}_{match.group(4)}.txt",
                       f.read())
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable tar archive: {e}") from None


def _iter_jsonl(path: Path) -> Iterator[tuple]:
    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                split, label, text = rec["split"], rec["label"], rec["text"]
                name = f"{int(rec['id'])}_{int(rec['rating'])}.txt" if "id" in rec else None
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {line_no}: expected a JSON object with split, label, id, "
                                 f"rating and text ({type(e).__name__}: {e})") from None
            if split not in _SPLITS or label not in (0, 1) or isinstance(label, bool) or not isinstance(text, str):
                raise ValueError(f"{path}, line {line_no}: split must be 'train' or 'test', label 0 or 1 and "
                                 f"text a string; got split={split!r}, label={label!r}")
            # Without id/rating the file order stands in for Keras's file-name order.
            yield split, label, name if name is not None else f"{line_no:012d}", text.encode("utf-8")


def _encode_reviews(reviews: Iterable[tuple], word_index: Dict[str, int], source: Path) -> Dict[str, tuple]:
    """{split: (_Ragged word ranks, labels)} in Keras's stored order: pos, then neg, by file name."""
    rows = {s: [] for s in _SPLITS}
    for split, label, name, data in reviews:
        rows[split].append((-label, name, data))
    index = {word.encode("utf-8"): rank for word, rank in word_index.items()}
    out = {}
    for split in _SPLITS:
        if not rows[split]:
            raise ValueError(f"{source} holds no {split} reviews")
        rows[split].sort(key=lambda r: (r[0], r[1]))
        out[split] = (_encode_many([r[2] for r in rows[split]], index),
                      np.array([-r[0] for r in rows[split]], np.int64))
    return out


# Object arrays of lists need exactly these globals to be rebuilt (NumPy 1 and 2 spellings).
_ALLOWED_GLOBALS = frozenset({("numpy", "ndarray"), ("numpy", "dtype"),
                              ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                              ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")})


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: an IMDB .npz holds only arrays of "
                                     f"lists of ints (the file may be corrupt or malicious)")


def _read_npy(data: bytes, where: str) -> np.ndarray:
    fp = io.BytesIO(data)
    try:
        return np.lib.format.read_array(fp, allow_pickle=False)
    except ValueError:  # an object array: its payload is a pickle
        fp.seek(0)
        major, _ = np.lib.format.read_magic(fp)
        if major == 1:
            np.lib.format.read_array_header_1_0(fp)
        else:  # 2.0 and 3.0 share the header layout
            np.lib.format.read_array_header_2_0(fp)
        try:
            return _ArrayOnlyUnpickler(fp).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
            raise ValueError(f"{where}: {e}") from None


def _read_npz(path: Path) -> Dict[str, tuple]:
    try:
        with zipfile.ZipFile(path) as z:
            arrays = {name[:-4]: _read_npy(z.read(name), f"{path}:{name}")
                      for name in z.namelist() if name.endswith(".npy")}
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is not a readable .npz: {e}") from None
    out = {}
    if "format" in arrays and str(arrays["format"]) == _CACHE_FORMAT:
        for split in _SPLITS:
            ids, offsets = arrays[f"{split}_ids"].astype(np.int64), arrays[f"{split}_offsets"].astype(np.int64)
            if offsets[0] != 0 or offsets[-1] != len(ids) or np.any(np.diff(offsets) < 0):
                raise ValueError(f"{path}: {split}_offsets do not describe {split}_ids")
            out[split] = (_Ragged(ids, offsets), arrays[f"{split}_labels"].astype(np.int64))
    elif {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        for split in _SPLITS:
            x, y = arrays[f"x_{split}"], np.asarray(arrays[f"y_{split}"])
            try:
                ragged = _Ragged.from_lists([list(s) for s in x])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: x_{split} must hold sequences of ints ({e})") from None
            if y.shape != (len(ragged),):
                raise ValueError(f"{path}: y_{split} has shape {y.shape}, expected ({len(ragged)},)")
            out[split] = (ragged, y.astype(np.int64))
    else:
        raise ValueError(f"{path} is an .npz without x_train, y_train, x_test, y_test (Keras's imdb.npz) or "
                         f"lstmfast's encoded arrays; it has {sorted(arrays)}")
    for split, (ragged, labels) in out.items():
        if len(ragged.ids) and ragged.ids.min() < 0:
            raise ValueError(f"{path}: x_{split} holds negative word ids")
        if len(labels) and not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{path}: y_{split} must hold labels 0 and 1")
    return out


# ---- the encoded cache -------------------------------------------------------------------------

def _cache_path(source: Path, index_digest: str) -> Path:
    st = source.stat()
    key = json.dumps([_CACHE_FORMAT, str(source.resolve()), st.st_size, st.st_mtime_ns, index_digest])
    return cache_dir() / f"imdb_encoded-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _write_cache(path: Path, data: Dict[str, tuple]) -> None:
    arrays = {"format": np.array(_CACHE_FORMAT)}
    for split, (ragged, labels) in data.items():
        arrays[f"{split}_ids"] = ragged.ids.astype(np.int32)
        arrays[f"{split}_offsets"] = ragged.offsets
        arrays[f"{split}_labels"] = labels
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written is only a slower next call
        try:
            tmp.unlink()
        except OSError:
            pass


def _load_source(path: Path, word_index, cache: bool, verbose: bool) -> Dict[str, tuple]:
    """{split: (_Ragged word ranks, labels)} in Keras's stored order, from any supported source."""
    if not path.exists():
        raise FileNotFoundError(f"IMDB data {path} does not exist")
    if path.is_dir() and not any((path / d).is_dir() for d in ("train", "test", "aclImdb")):
        # a folder holding one of the known files (e.g. shared/data): use the first there
        found = [path / n for n in (ACLIMDB_NAME, JSONL_NAME, "imdb.npz") if (path / n).is_file()]
        if found:
            path = found[0]
    kind = _sniff(path)
    if kind == "npz":
        return _read_npz(path)
    index, digest = _word_index_for(path, word_index)
    cached = _cache_path(path, digest) if cache and digest else None
    if cached is not None and cached.is_file():
        try:
            return _read_npz(cached)
        except (ValueError, KeyError, OSError):
            pass  # a damaged cache is rebuilt below
    if verbose:
        print(f"Encoding the IMDB reviews in {path} ...", file=sys.stderr, flush=True)
    reviews = {"aclimdb-dir": _iter_dir, "tar": _iter_tar, "jsonl": _iter_jsonl}[kind](path)
    data = _encode_reviews(reviews, index, path)
    if cached is not None:
        _write_cache(cached, data)
    return data


def _default_source(verbose: bool) -> Path:
    folder = cache_dir()
    for name in (ACLIMDB_NAME, "aclImdb", JSONL_NAME):
        if (folder / name).exists():
            return folder / name
    return _download(ACLIMDB_URL, folder / ACLIMDB_NAME, verbose=verbose)


# ---- Keras's load_data -------------------------------------------------------------------------

def _check_int(name: str, value, allow_none: bool, minimum: int = 0) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be {'None or ' if allow_none else ''}an int >= {minimum}, got {value!r}")


def load_data(path: Union[str, os.PathLike, None] = None, num_words: Optional[int] = 20000, skip_top: int = 0,
              maxlen: Optional[int] = None, seed: int = 113, start_char: Optional[int] = 1,
              oov_char: Optional[int] = 2, index_from: int = 3, *,
              word_index: Union[None, Dict[str, int], str, os.PathLike] = None, cache: bool = True,
              verbose: bool = True) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Keras's ``imdb.load_data``: ``(x_train, y_train), (x_test, y_test)``, 25,000 reviews each.

    ``path``: a data source (see the module docstring for the formats), or None for the cache
    directory / a download. ``num_words`` (default 20000; Keras: None), ``skip_top``, ``maxlen``,
    ``seed``, ``start_char``, ``oov_char`` and ``index_from`` mean what they mean in Keras.
    ``word_index``: a dict or a JSON path to encode text sources with (default: see the module
    docstring). ``cache``: keep the encoded word ranks of a text source in the cache directory.
    ``verbose``: say on stderr when downloading or encoding.
    """
    _check_int("num_words", num_words, allow_none=True)
    _check_int("skip_top", skip_top, allow_none=False)
    _check_int("maxlen", maxlen, allow_none=True)
    _check_int("seed", seed, allow_none=False)
    _check_int("start_char", start_char, allow_none=True)
    _check_int("oov_char", oov_char, allow_none=True)
    _check_int("index_from", index_from, allow_none=False)
    source = _default_source(verbose) if path is None else Path(path).expanduser()
    data = _load_source(source, word_index, cache, verbose)

    # From here on, step for step what keras.datasets.imdb.load_data does with its arrays.
    rng = np.random.RandomState(seed)
    splits = []
    for name in _SPLITS:
        ragged, labels = data[name]
        indices = np.arange(len(ragged))
        rng.shuffle(indices)
        splits.append([ragged.take(indices), labels[indices]])
    for s in splits:
        if start_char is not None:
            s[0] = _Ragged(s[0].ids + index_from, s[0].offsets).prepend(start_char)
        elif index_from:
            s[0] = _Ragged(s[0].ids + index_from, s[0].offsets)
    if maxlen:
        for s in splits:
            keep = np.flatnonzero(s[0].lengths < maxlen)
            s[0], s[1] = s[0].take(keep), s[1][keep]
        if not len(splits[0][0]) or not len(splits[1][0]):
            raise ValueError(f"After filtering for sequences shorter than maxlen={maxlen}, no sequence was kept. "
                             f"Increase maxlen.")
    if not num_words:
        num_words = max((int(s[0].ids.max()) for s in splits if len(s[0].ids)), default=0)
    for s in splits:
        ids = s[0].ids
        inside = (ids >= skip_top) & (ids < num_words)
        if oov_char is not None:
            s[0] = _Ragged(np.where(inside, ids, oov_char), s[0].offsets)
        else:
            s[0] = s[0].keep_elements(inside)
    (x_train, y_train), (x_test, y_test) = [(s[0].to_object_array(), s[1]) for s in splits]
    return (x_train, y_train), (x_test, y_test)
