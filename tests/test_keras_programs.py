"""Six real Keras LSTM programs (tests/programs/*.py, written for Keras) run on lstmfast with only
their import lines changed, and on Keras 3 (torch backend) at the same small sizes:

* the lstmfast variant is made by rewriting import lines only (``import keras`` ->
  ``import lstmfast as keras``, ``from keras...`` -> ``from lstmfast...``), and the test checks that
  nothing else changed;
* it runs in a fresh interpreter and must finish with sane numbers (parameter count, a finite
  first-epoch loss near the untrained model's, the echo model well above chance);
* where Keras is installed (CI installs it), the Keras program runs too, and the parameter counts
  must be equal and the first-epoch losses agree within LOSS_RTOL.

The data is real (../shared/data, see SOURCES.md): the text programs download tiny-shakespeare with
``get_file`` from a file:// URL into a fresh cache; the IMDB programs call ``imdb.load_data()``, which
on lstmfast reads the reviews from a data folder the test points LSTMFAST_DATA at, and on Keras reads
an ``imdb.npz`` rebuilt from the same reviews in Keras's cache folder (KERAS_HOME; see tests/programs/harness.py).
Sizes come from the programs' PROGRAM_* variables (SIZES); each run is seeded (PROGRAM_SEED).
"""
from __future__ import annotations

import math
import re

import pytest
from programs import harness

from conftest import peer

SEED = 1
TIMEOUT = 300  # seconds per program run; each takes 1-15 s on a 2-core VM

# Small sizes (the programs' defaults are the tutorials' full sizes).
SIZES = {
    "addition_rnn": dict(PROGRAM_TRAINING_SIZE=2000, PROGRAM_EPOCHS=2),
    "bidirectional_lstm_imdb": dict(PROGRAM_TRAIN_SAMPLES=500, PROGRAM_VAL_SAMPLES=200, PROGRAM_MAXLEN=50,
                                    PROGRAM_EPOCHS=1),
    "lstm_character_level_text_generation": dict(PROGRAM_CORPUS_CHARS=10000, PROGRAM_EPOCHS=1,
                                                 PROGRAM_GENERATE_CHARS=10),
    "echo_sequence": dict(PROGRAM_UPDATES=2000),
    "imdb_lstm_classic": dict(PROGRAM_TRAIN_SAMPLES=500, PROGRAM_TEST_SAMPLES=200, PROGRAM_MAXLEN=50,
                              PROGRAM_EPOCHS=1),
    "macbeth_text_generation": dict(PROGRAM_CORPUS_CHARS=3000, PROGRAM_SEQ_LENGTH=20, PROGRAM_EPOCHS=1,
                                    PROGRAM_GENERATE_CHARS=10),
}
assert sorted(SIZES) == sorted(harness.NEEDS)
# Parameter counts of the Keras models (the keras-io pages and the tutorials print the same); the text
# models' depend on the corpus's character set, which the Keras comparison checks.
PARAMS = {"addition_rnn": 205_324, "bidirectional_lstm_imdb": 2_757_761, "echo_sequence": 3_860,
          "imdb_lstm_classic": 213_301}
# The untrained model's loss is ln(classes) for a softmax over the classes (12 characters, 10 values;
# the text models print their character count), ln 2 for the sigmoid; a first-epoch loss is at most a
# little above it.
CLASSES = {"addition_rnn": 12, "bidirectional_lstm_imdb": 2, "echo_sequence": 10, "imdb_lstm_classic": 2}

# LOSS_RTOL: the first-epoch losses of lstmfast and Keras agree within this relative tolerance. The
# two libraries start from different random weights (each its own generator; the initializers' statistics
# agree) and train on the same seeded data; with the same initial weights their losses agree to 1e-6.
# SPREAD: the largest relative difference |a - b| / mean(a, b) measured between a lstmfast run (seeds 1-5)
# and a Keras run (seeds 1-4) at SIZES, 2-core VM. The tolerance is about twice the spread. Wrong losses
# fall far outside: mse instead of binary cross-entropy starts at 0.25, not ln 2 = 0.693; an untrained
# text model stays at ln(characters) ~ 3.6, 15 % above the trained first epoch's ~3.1; a missing softmax
# or a wrong target layout does not give a loss near the right one at all. The text-generation example
# is the noisy one: RMSprop at 0.01 on 26 batches.
SPREAD = {"addition_rnn": 0.018, "bidirectional_lstm_imdb": 0.0017, "echo_sequence": 0.029,
          "imdb_lstm_classic": 0.0010, "lstm_character_level_text_generation": 0.065,
          "macbeth_text_generation": 0.014}
LOSS_RTOL = {"addition_rnn": 0.04, "bidirectional_lstm_imdb": 0.005, "echo_sequence": 0.06,
             "imdb_lstm_classic": 0.005, "lstm_character_level_text_generation": 0.12,
             "macbeth_text_generation": 0.03}
assert all(LOSS_RTOL[k] >= 1.7 * SPREAD[k] for k in SIZES)

IMPORT_LINE = re.compile(r"(import \S.*|from \S+ import \S.*)\n?")


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> dict:
    """Fresh caches and lstmfast's IMDB data folder, shared by the runs of this module."""
    return harness.prepare_homes(tmp_path_factory.mktemp("keras_programs"))


@pytest.fixture(scope="module")
def runs(homes, tmp_path_factory):
    """run(name, library) -> the numbers the program printed; each program runs once per library."""
    done = {}

    def run(name: str, library: str) -> dict:
        if (name, library) not in done:
            missing = harness.missing_data(name)
            if missing:
                pytest.skip(f"shared data not present: {', '.join(missing)}")
            if library == "keras" and "imdb_reviews.jsonl.gz" in harness.NEEDS[name]:
                harness.build_keras_imdb(homes)
            work = tmp_path_factory.mktemp(f"{name}-{library}")
            proc, values = harness.run_program(name, library, SIZES[name], homes, work, SEED, TIMEOUT)
            assert proc.returncode == 0, \
                f"{name} on {library} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            for key in ("PARAMS", "LOSS0", "FIT_SECONDS"):
                assert key in values, f"{name} on {library} printed no {key} line:\n{proc.stdout[-2000:]}"
            done[name, library] = dict(values, stdout=proc.stdout, stderr=proc.stderr, work=work)
        return done[name, library]
    return run


# ---- the tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SIZES))
def test_lstmfast_variant_changes_only_import_lines(name):
    source = harness.source(name)
    assert "import keras" in source or "from keras" in source
    variant = harness.lstmfast_variant(source)
    before, after = source.splitlines(keepends=True), variant.splitlines(keepends=True)
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed, f"{name}: no import line was rewritten"
    for a, b in changed:
        assert IMPORT_LINE.fullmatch(a) and IMPORT_LINE.fullmatch(b), f"{name}: a non-import line changed: {a!r}"
    for line in variant.splitlines():
        if IMPORT_LINE.fullmatch(line + "\n"):
            assert not re.match(r"(from|import) keras\b", line), f"{name}: {line!r} still imports Keras"


@pytest.mark.parametrize("name", sorted(SIZES))
def test_program_runs_on_lstmfast(name, runs, homes):
    got = runs(name, "lstmfast")
    if name in PARAMS:
        assert got["PARAMS"] == PARAMS[name]
    loss0 = got["LOSS0"]
    assert math.isfinite(loss0) and loss0 > 0
    classes = CLASSES.get(name) or int(re.search(r"^Total (?:chars|Vocab): +(\d+)$", got["stdout"], re.M)[1])
    assert loss0 < 1.1 * math.log(classes), f"{name}: first-epoch loss {loss0} above an untrained model's"
    assert got["FIT_SECONDS"] > 0
    if name == "echo_sequence":
        assert got["ACC"] >= 0.3, "echo: accuracy on 100 new sequences not well above chance (0.1)"
    if "tinyshakespeare.txt" in harness.NEEDS[name]:   # get_file really fetched the corpus into lstmfast's cache
        cached = list((homes["LSTMFAST_HOME"] / "datasets").glob("*.txt"))
        assert cached and all(p.stat().st_size == harness.CORPUS.stat().st_size for p in cached)
    if name == "macbeth_text_generation":         # ModelCheckpoint wrote the epoch's model, load_model read it
        assert [p.name[:23] for p in got["work"].glob("weights-improvement-*.hdf5")] == ["weights-improvement-01-"]
        for spelling in ("np_utils.to_categorical", "data_utils.get_file", "Adam(lr=...)"):   # Keras 2's, warned
            assert f"{spelling} is Keras 2's spelling" in got["stderr"]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_program_matches_keras(name, runs):
    peer("keras")
    ours, theirs = runs(name, "lstmfast"), runs(name, "keras")
    assert ours["PARAMS"] == theirs["PARAMS"]
    assert ours["LOSS0"] == pytest.approx(theirs["LOSS0"], rel=LOSS_RTOL[name]), \
        f"{name}: first-epoch loss lstmfast {ours['LOSS0']:.4f}, Keras {theirs['LOSS0']:.4f}"
