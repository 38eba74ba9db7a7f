"""Data-parallel training (lstmfast.distributed) in real MPI jobs: ``mpiexec -n 2`` and ``-n 3`` run
tests/mpi/fit_job.py, and their results are compared with one process running the same script.

N ranks with global batch b must end where one process with batch b ends (float32 rounding), every
rank must hold bitwise the same weights and logs, and the same rank count must give bitwise the
same run twice. Failures must end the whole job with the failing rank's message."""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import distributed

from conftest import peer
from test_cuda import emulated  # noqa: F401  (the CuPy emulation, a fixture)

JOB = os.path.join(os.path.dirname(__file__), "mpi", "fit_job.py")
RTOL = 1e-5  # float32 sums in another order than one process's


def mpiexec():
    peer("mpi4py")
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if found is None:
        pytest.fail("mpi4py is installed but there is no mpiexec (pip install 'lstmfast[mpi]' brings MPICH's)")
    return found


def run(tmp_path, case, ranks, name=None, check=True, timeout=120, threads="1"):
    """Run the job on ``ranks`` ranks (0: one process without mpiexec); return (results per rank, the
    completed process). ``threads``: OMP_NUM_THREADS (None: unset, the ranks share the cores)."""
    out = str(tmp_path / (name or f"{case}-{ranks}"))
    command = [sys.executable, JOB, out, case]
    if ranks:
        command = [mpiexec(), "-n", str(ranks)] + command
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    results = []
    for r in range(max(ranks, 1)):
        path = f"{out}.rank{r}.npz"
        if os.path.exists(path):
            with np.load(path) as f:
                results.append({k: f[k] for k in f.files})
    return results, done


def assert_same_run(one, many, rtol):
    assert set(one) == set(many)
    for key in one:
        if key not in ("size", "threads", "draws"):
            assert_allclose(many[key], one[key], rtol=rtol, atol=rtol * 1e-2, err_msg=key)


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("case", ["plain", "masked", "two_outputs", "generator", "train_on_batch"])
def test_ranks_end_where_one_process_ends(tmp_path, case, ranks):
    (one,), _ = run(tmp_path, case, 0)
    many, _ = run(tmp_path, case, ranks)
    assert len(many) == ranks and all(int(r["size"]) == ranks for r in many)
    assert_same_run(one, many[0], RTOL)
    for other in many[1:]:  # every rank holds the same bits
        for key in set(many[0]) - {"draws"}:
            assert_array_equal(other[key], many[0][key], err_msg=key)
        assert not np.array_equal(other["draws"], many[0]["draws"])  # but a random generator of its own
    if case == "plain":  # no dropout: rank 0 drew only the shuffles, as one process does
        assert_array_equal(many[0]["draws"], one["draws"])


def test_ranks_on_one_machine_share_its_cores(tmp_path):
    results, _ = run(tmp_path, "plain", 2, threads=None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert [int(r["threads"]) for r in results] == [max(1, cores // 2)] * 2
    results, _ = run(tmp_path, "plain", 2, name="chosen", threads="2")
    assert [int(r["threads"]) for r in results] == [2, 2]


def test_the_same_rank_count_gives_bitwise_the_same_run(tmp_path):
    first, _ = run(tmp_path, "masked", 2, name="first")
    second, _ = run(tmp_path, "masked", 2, name="second")
    for key in first[0]:
        assert_array_equal(first[0][key], second[0][key], err_msg=key)


def test_only_rank_0_prints_and_writes_and_early_stopping_agrees(tmp_path):
    results, done = run(tmp_path, "files", 2)
    assert len(results[0]["h_loss"]) == len(results[1]["h_loss"]) < 6  # stopped at the same epoch everywhere
    assert os.path.exists(tmp_path / "files-2.rank0.keras") and os.path.exists(tmp_path / "files-2.rank0.csv")
    assert not os.path.exists(tmp_path / "files-2.rank1.keras") and not os.path.exists(tmp_path / "files-2.rank1.csv")
    assert done.stdout.count("Epoch 1/6") == 1  # one progress report, rank 0's
    assert done.stdout.count("early stopping") == 1


def test_a_failing_rank_ends_the_job_with_its_message(tmp_path):
    start = time.monotonic()
    _, done = run(tmp_path, "fault", 2, check=False, timeout=60)
    assert done.returncode != 0
    assert "rank one fails on purpose" in done.stderr and "[lstmfast rank 1 of 2]" in done.stderr
    assert time.monotonic() - start < 30  # rank 0 did not wait out its 50 epochs or hang in a collective


def test_ranks_with_different_models_are_told_so(tmp_path):
    _, done = run(tmp_path, "mismatch", 2, check=False, timeout=60)
    assert done.returncode != 0
    assert "rank(s) [1] hold a different model architecture than rank 0" in done.stderr


# ---- without a launcher ---------------------------------------------------------------------------

def test_shard_splits_as_array_split():
    for rows in (0, 1, 2, 3, 10, 33):
        for size in (1, 2, 3, 4):
            parts = [np.arange(rows)[distributed.shard(rows, r, size)] for r in range(size)]
            expected = np.array_split(np.arange(rows), size)
            assert [p.tolist() for p in parts] == [e.tolist() for e in expected]


def test_init_without_a_launcher_is_one_process(monkeypatch):
    for key in distributed._LAUNCHER_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(distributed, "_STARTED", False)
    monkeypatch.setattr(distributed, "_WORLD", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # not installed: still one process
    assert distributed.init() == (0, 1)
    assert distributed.rank() == 0 and distributed.size() == 1 and distributed.is_chief()
    assert distributed.data_parallel() is None


def test_init_under_a_launcher_without_mpi4py_says_what_is_missing(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setattr(distributed, "_STARTED", False)
    monkeypatch.setattr(distributed, "_WORLD", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"PMI_RANK is set.*pip install 'lstmfast\[mpi\]'"):
        distributed.init()


# ---- the GPU path, on the CuPy emulation ----------------------------------------------------------

class OneRankComm:
    """An MPI communicator of one rank: the collectives copy (enough to run DataParallel's code)."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Alltoall(self, send, receive):
        receive[...] = send

    def Allgather(self, send, receive):
        receive[...] = np.reshape(send, receive.shape)

    def Bcast(self, array, root=0):
        pass


@pytest.mark.usefixtures("emulated")
def test_device_gradients_are_reduced_where_they_are(monkeypatch):
    """On the CUDA backend the packed gradient buffer is a device array; without NCCL (the
    emulation has none) it goes through the host. One rank must give what plain fit gives."""
    import lstmfast
    from lstmfast import layers as L

    def train(parallel):
        monkeypatch.setattr(distributed, "_WORLD", DataParallelOfOne() if parallel else None)
        lstmfast.utils.set_random_seed(3)
        model = lstmfast.Sequential([L.Input((5, 3)), L.LSTM(4), L.Dense(2)])
        model.compile(optimizer="adam", loss="mse", metrics=["mae"])
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((12, 5, 3)).astype("float32"), rng.standard_normal((12, 2)).astype("float32")
        history = model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
        return model.get_weights(), history.history

    reductions = []

    class DataParallelOfOne(distributed.DataParallel):
        def __init__(self):
            super().__init__(OneRankComm())

        def _allreduce_on_device(self, buffer):
            reductions.append(type(buffer).__module__)
            return super()._allreduce_on_device(buffer)

    lstmfast.set_backend("cuda")
    try:
        plain_weights, plain_history = train(False)
        parallel_weights, parallel_history = train(True)
    finally:
        lstmfast.set_backend("cpu")
    assert len(reductions) == 6 and all(not m.startswith("numpy") for m in reductions)  # 3 steps x 2 epochs
    for a, b in zip(plain_weights, parallel_weights):
        assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    assert_allclose(parallel_history["loss"], plain_history["loss"], rtol=1e-6)


def test_init_when_mpi_cannot_start_says_what_is_missing():
    peer("mpi4py")
    env = dict(os.environ, MPI4PY_LIBMPI="/nonexistent/libmpi.so", PMI_RANK="0")  # mpi4py's MPI library is gone
    done = subprocess.run([sys.executable, "-c", "import lstmfast; lstmfast.distributed.init()"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "RuntimeError: MPI could not start" in done.stderr and "/nonexistent/libmpi.so" in done.stderr
    assert "pip install 'lstmfast[mpi]'" in done.stderr
