"""Running the Keras programs of this folder on lstmfast or on Keras 3, for tests/test_keras_programs.py
and bench/keras_programs.py (not a program itself).

* ``lstmfast_variant``: the program with its import lines rewritten (``import keras`` ->
  ``import lstmfast as keras``, ``from keras...`` -> ``from lstmfast...``), nothing else;
* ``keras3_variant``: the program for Keras 3; a Keras 2 program gets the few renames of KERAS3_PORT;
* ``prepare_homes``: fresh cache folders (LSTMFAST_HOME, KERAS_HOME) and lstmfast's IMDB data folder
  (LSTMFAST_DATA, links to the shared reviews and word index);
* ``build_keras_imdb``: Keras's ``imdb.npz`` rebuilt from the shared reviews, in Keras's cache;
* ``run_program``: one program in a fresh interpreter with its sizes (PROGRAM_* variables) and the
  numbers it prints at the end (``PARAMS``, ``LOSS0``, ``FIT_SECONDS``, ...).

The environment of a run is the caller's, plus these variables (and KERAS_BACKEND=torch for Keras).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

PROGRAMS = Path(__file__).resolve().parent
DATA = PROGRAMS.parents[2] / "shared" / "data"   # the shared data beside the checkout (SOURCES.md there)
CORPUS = DATA / "tinyshakespeare.txt"
KERAS_BACKEND = "torch"

# The programs, and the shared files each reads.
NEEDS = {"addition_rnn": [], "bidirectional_lstm_imdb": ["imdb_reviews.jsonl.gz", "imdb_word_index.json"],
         "lstm_character_level_text_generation": ["tinyshakespeare.txt"], "echo_sequence": [],
         "imdb_lstm_classic": ["imdb_reviews.jsonl.gz", "imdb_word_index.json"],
         "macbeth_text_generation": ["tinyshakespeare.txt"]}

# Keras 2 spellings that Keras 3 removed (lstmfast keeps them, with DeprecationWarnings): the Keras 3
# run of a Keras 2 program renames just these; everything else runs as written.
KERAS3_PORT = {"macbeth_text_generation": [
    ("from keras.utils import np_utils, set_random_seed", "from keras.utils import set_random_seed, to_categorical"),
    ("from keras.utils.data_utils import get_file", "from keras.utils import get_file"),
    ("np_utils.to_categorical(", "to_categorical("),
    ("Adam(lr=", "Adam(learning_rate="),
    (".hdf5", ".keras"),                      # Keras 3's ModelCheckpoint saves only .keras files
]}

# Keras's imdb.load_data insists on the sha256 of Google's imdb.npz, which cannot be had offline
# (shared/data/SOURCES.md, "Not found"). The stand-in build_keras_imdb writes holds the same arrays in
# other bytes, so Keras programs run through this wrapper: it drops the hash check of load_data's
# get_file call (get_file still runs, and finds the file in Keras's cache) and runs the program.
KERAS_OFFLINE_IMDB = """
import runpy, sys
import keras.src.datasets.imdb as imdb
_get_file = imdb.get_file
def _get_file_without_hash(*args, file_hash=None, **kwargs):
    return _get_file(*args, **kwargs)
imdb.get_file = _get_file_without_hash
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def source(name: str) -> str:
    return (PROGRAMS / f"{name}.py").read_text(encoding="utf-8")


def lstmfast_variant(text: str) -> str:
    """``text`` with Keras's imports turned into lstmfast's, and nothing else changed."""
    lines = []
    for line in text.splitlines(keepends=True):
        line = re.sub(r"^import keras(?=\s*$)", "import lstmfast as keras", line)
        line = re.sub(r"^from keras(?=[.\s])", "from lstmfast", line)
        lines.append(line)
    return "".join(lines)


def keras3_variant(name: str, text: str) -> str:
    for old, new in KERAS3_PORT.get(name, ()):
        if old not in text:
            raise ValueError(f"{name}: the Keras 3 port expects {old!r} in the program")
        text = text.replace(old, new)
    return text


def missing_data(name: str) -> list:
    return [str(DATA / f) for f in NEEDS[name] if not (DATA / f).is_file()]


def prepare_homes(root: Path) -> dict:
    """Fresh folders under ``root``: lstmfast's and Keras's caches (get_file downloads into them) and
    lstmfast's IMDB data folder (links to the shared reviews and word index; lstmfast's encoded cache of
    the reviews lands there)."""
    imdb_data = Path(root) / "lstmfast_data"
    imdb_data.mkdir(parents=True, exist_ok=True)
    for name in ("imdb_reviews.jsonl.gz", "imdb_word_index.json"):
        if (DATA / name).is_file() and not (imdb_data / name).exists():
            (imdb_data / name).symlink_to(DATA / name)
    return {"LSTMFAST_HOME": Path(root) / "lstmfast_home", "LSTMFAST_DATA": imdb_data,
            "KERAS_HOME": Path(root) / "keras_home"}


def build_keras_imdb(homes: dict) -> Path:
    """Keras's ``imdb.npz`` in Keras's cache, rebuilt from the shared reviews: per split the word ranks in
    Keras's stored order (lstmfast's IMDB reader makes exactly these, see lstmfast.datasets.imdb), checked
    against the genuine Keras-encoded subset (the first 5,000 train reviews of Keras's
    load_data(num_words=500)) by doing to them what Keras's load_data does to its arrays."""
    target = homes["KERAS_HOME"] / "datasets" / "imdb.npz"
    if target.is_file():
        return target
    from lstmfast.datasets import imdb
    data = imdb._load_source(homes["LSTMFAST_DATA"] / "imdb_reviews.jsonl.gz", None, True, False)
    arrays = {}
    for split, (ragged, labels) in data.items():
        arrays[f"x_{split}"], arrays[f"y_{split}"] = ragged.to_object_array(), labels
    subset = DATA / "imdb_keras_subset_nw500.npz"
    if subset.is_file():
        with zipfile.ZipFile(subset) as z:      # object arrays, read with lstmfast's pickle-restricted reader
            x_genuine, y_genuine = (imdb._read_npy(z.read(f"{k}.npy"), str(subset)) for k in ("arr_0", "arr_1"))
        order = np.arange(len(arrays["x_train"]))
        np.random.RandomState(113).shuffle(order)              # Keras's load_data: seed 113, the train split first
        for k, i in enumerate(order[:len(x_genuine)]):
            ours = [1] + [w + 3 if w + 3 < 500 else 2 for w in arrays["x_train"][i]]
            if ours != list(x_genuine[k]) or arrays["y_train"][i] != y_genuine[k]:
                raise AssertionError(f"the rebuilt imdb.npz differs from Keras's at train review {k}")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name("imdb.part.npz")
    np.savez(part, **arrays)
    os.replace(part, target)
    return target


def parse(stdout: str) -> dict:
    """The numbers a program prints at the end, one ``NAME value`` per line."""
    return {k: float(v) for k, v in re.findall(r"^([A-Z][A-Z0-9_]*) ([-+0-9.eE]+|nan|inf)$", stdout, re.M)}


def run_program(name: str, library: str, sizes: dict, homes: dict, work: Path, seed=None, timeout=None):
    """Run program ``name`` on ``library`` ("lstmfast" or "keras") in folder ``work`` with ``sizes``
    (PROGRAM_* variables); returns the finished process (stdout, stderr, returncode) and its numbers."""
    text = lstmfast_variant(source(name)) if library == "lstmfast" else keras3_variant(name, source(name))
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    program = work / f"{name}.py"
    program.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGRAM_")}
    env.update({k: str(v) for k, v in homes.items()})
    env.update({k: str(v) for k, v in sizes.items()})
    env["PROGRAM_CORPUS_URL"] = CORPUS.as_uri()
    if seed is not None:
        env["PROGRAM_SEED"] = str(seed)
    if library == "lstmfast":
        cmd = [sys.executable, str(program)]
    elif library == "keras":
        env["KERAS_BACKEND"] = KERAS_BACKEND
        cmd = [sys.executable, "-c", KERAS_OFFLINE_IMDB, str(program)]
    else:
        raise ValueError(f"library must be 'lstmfast' or 'keras', got {library!r}")
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, parse(proc.stdout)
