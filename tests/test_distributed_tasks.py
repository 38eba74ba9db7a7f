"""The sample tasks data-parallel: ``mpiexec -n 2 python -m lstmfast TASK ...`` against one process
running the same command (same seed, same global batch).

Each rank runs in its own working directory and the commands name their output files by relative
paths, so a file a rank writes lands in that rank's directory: rank 0's must hold exactly the files
one process writes, rank 1's must stay empty. ``-prepend-rank`` (MPICH) labels each line of output
with its rank: rank 1 must print nothing. The 2-rank metrics must equal one process's to ``RTOL``
(float32 sums in another order); wall-clock measurements are not compared. Dropout is off in the
text task's runs: each rank draws the masks of its own rows, so with dropout the runs differ."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from numpy.testing import assert_allclose
from test_distributed import mpiexec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RTOL = 1e-5
TIMINGS = ("seconds", "per_second")  # metrics keys holding wall-clock measurements
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n")


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 8, encoding="utf-8")  # 1,176 characters
    return path


def shared(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return path


# ``python -c LATE SECONDS ARGS...``: ``python -m lstmfast ARGS...`` that joins the job, then waits
# SECONDS (MPI_Init waits for every rank: a wait before it would delay them all)
LATE = ("import runpy, sys, time; import lstmfast; lstmfast.distributed.init(); time.sleep(float(sys.argv[1])); "
        "sys.argv[1:] = sys.argv[2:]; runpy.run_module('lstmfast', run_name='__main__', alter_sys=True)")


def run_task(tmp_path, argv, ranks, name=None, timeout=120, wdirs=None, delays=None):
    """Run ``python -m lstmfast argv`` as one process (``ranks`` 0) or on ``ranks`` ranks, each in
    its own working directory (made under ``tmp_path``, or ``wdirs``) and, with ``delays``, each
    waiting that many seconds after joining the job; return (the completed process, the directories)."""
    root = tmp_path / (name or f"ranks{ranks}")
    wdirs = wdirs or [root / f"rank{r}" for r in range(max(ranks, 1))]
    for d in wdirs:
        d.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in argv]
    program = [sys.executable, "-m", "lstmfast", *argv]
    command = program
    if ranks:
        command = [mpiexec(), "-prepend-rank"]
        for r, d in enumerate(wdirs):
            late = [sys.executable, "-c", LATE, str(delays[r]), *argv] if delays else program
            command += ([":"] if r else []) + ["-n", "1", "-wdir", str(d)] + late
    # the ranks share the 2 cores; the IMDB encoding is cached under tmp_path, not in the user's cache
    env = dict(os.environ, OMP_NUM_THREADS="1", LSTMFAST_DATA=str(tmp_path / "cache"))
    done = subprocess.run(command, cwd=wdirs[0], capture_output=True, text=True, timeout=timeout, env=env)
    return done, wdirs


def assert_same_metrics(one, many, where="metrics"):
    """``many`` equals ``one`` (nested dicts and lists): numbers to RTOL, the rest exactly; the
    wall-clock measurements are skipped."""
    if isinstance(one, dict):
        assert sorted(many) == sorted(one), where
        for key in one:
            if not any(t in key for t in TIMINGS):
                assert_same_metrics(one[key], many[key], f"{where}.{key}")
    elif isinstance(one, list):
        assert len(many) == len(one), where
        for k, (a, b) in enumerate(zip(one, many)):
            assert_same_metrics(a, b, f"{where}[{k}]")
    elif isinstance(one, float):
        assert_allclose(many, one, rtol=RTOL, atol=RTOL * 1e-2, err_msg=where)
    else:
        assert many == one, where


def check_passed(done):
    assert done.returncode == 0, f"{done.args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


# Each case: the command (its output files named relatively) and the files one process writes.
CASES = {
    # 5 streams: ranks 0 and 1 hold 3 and 2 of them (and of the 5 validation streams)
    "text": (lambda tmp: ["text", "train", tmp / "corpus.txt", "--save", "char.lstmfast", "--layers", "2",
                          "--units", "8", "--seq-len", "10", "--batch-size", "5", "--epochs", "2", "--val-every", "10",
                          "--dropout", "0", "--lr-schedule", "cosine", "--metrics-json", "m.json"],
             ["char.lstmfast", "m.json"]),
    # keras.io's bidirectional model (no dropout); 60 reviews in batches of 16: an uneven last batch
    "imdb": (lambda tmp: ["imdb", "--config", "bidirectional", "--data", shared("imdb_reviews.jsonl.gz"),
                          "--limit", "60", "--maxlen", "16", "--epochs", "2", "--batch-size", "16",
                          "--save", "imdb.lstmfast", "--metrics-json", "m.json"],
             ["imdb.lstmfast", "m.json"]),
    # shuffled batches, validation split with early stopping's best weights, predict sharded
    "forecast": (lambda tmp: ["forecast", shared("airline-passengers.csv"), "--column", "Passengers",
                              "--lookback", "6", "--horizon", "2", "--units", "8", "--epochs", "4", "--patience", "2",
                              "--batch-size", "9", "--save", "f.lstmfast", "--metrics-json", "m.json"],
                 ["f.lstmfast", "m.json"]),
    "seq2seq": (lambda tmp: ["seq2seq", "--task", "addition", "--digits", "2", "--samples", "300",
                             "--test-samples", "30", "--epochs", "2", "--units", "16", "--batch-size", "32",
                             "--beam", "2", "--save", "s.lstmfast", "--metrics-json", "m.json"],
                ["s.lstmfast", "m.json"]),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_two_ranks_end_where_one_process_ends(tmp_path, corpus, task):
    command, files = CASES[task]
    argv = command(tmp_path)
    one, (one_dir,) = run_task(tmp_path, argv, 0)
    check_passed(one)
    two, (rank0, rank1) = run_task(tmp_path, argv, 2)
    check_passed(two)
    assert sorted(os.listdir(one_dir)) == sorted(files)
    assert sorted(os.listdir(rank0)) == sorted(files) and os.listdir(rank1) == []  # only rank 0 writes
    assert "[0] " in two.stdout and "[1] " not in two.stdout, two.stdout  # only rank 0 prints
    assert_same_metrics(json.loads((one_dir / "m.json").read_text()), json.loads((rank0 / "m.json").read_text()))


def test_a_time_budget_ends_every_rank_at_the_same_batch(tmp_path, corpus):
    # Rank 1 starts its clock 0.3 s after rank 0: unless every rank follows rank 0's clock, rank 0
    # stops training first and rank 1 waits for it in the next step's allreduce (or they exchange
    # buffers of different sizes and MPI fails).
    done, _ = run_task(tmp_path, ["text", "train", corpus, "--save", "char.lstmfast", "--layers", "1", "--units", "8",
                                  "--seq-len", "10", "--batch-size", "4", "--minutes", "0.02", "--lr-schedule",
                                  "cosine", "--quiet", "--metrics-json", "m.json"], 2, timeout=30, delays=[0, 0.3])
    check_passed(done)


def test_an_error_on_one_rank_ends_the_job(tmp_path, corpus):
    # "out/" exists only in rank 1's directory: rank 0 refuses --save out/char.lstmfast, rank 1 does not
    wdirs = [tmp_path / "rank0", tmp_path / "rank1"]
    (wdirs[1] / "out").mkdir(parents=True)
    start = time.monotonic()
    done, _ = run_task(tmp_path, ["text", "train", corpus, "--save", "out/char.lstmfast", "--layers", "1", "--units",
                                  "8", "--seq-len", "10", "--batch-size", "4", "--epochs", "50", "--quiet"], 2,
                       timeout=60, wdirs=wdirs)
    assert done.returncode == 2 and "lstmfast text: error: --save 'out/char.lstmfast'" in done.stderr
    assert time.monotonic() - start < 30  # rank 1 neither trained its 50 epochs nor waited for rank 0
    assert os.listdir(wdirs[1] / "out") == []


def test_one_process_commands_and_too_small_batches_are_refused(tmp_path, corpus):
    done, _ = run_task(tmp_path, ["echo", "--steps", "10"], 2, name="echo", timeout=60)
    assert done.returncode == 2 and "echo runs as one process; start it without mpiexec" in done.stderr
    done, _ = run_task(tmp_path, ["text", "train", corpus, "--save", "char.lstmfast", "--batch-size", "1"], 2,
                       name="text", timeout=60)
    assert done.returncode == 2 and "batch_size 1 must be at least the number of ranks (2)" in done.stderr
