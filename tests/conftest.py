"""Shared fixtures."""
import contextlib
import importlib
import importlib.util
import os
import sys
import warnings

import numpy as np
import pytest

import lstmfast

SIMD_LEVELS = ["portable", "avx2", "avx512"]  # the hardware levels, in increasing order
# avx512emu runs the AVX-512 level's code shapes with AVX2 instructions: where the CPU has AVX2
# but no AVX-512 it is the only way those shapes (16 float lanes, 6-row tiles) get tested.
ALL_LEVELS = SIMD_LEVELS + ["avx512emu"]


def level_runs_here(level: str) -> bool:
    best = SIMD_LEVELS.index(lstmfast.build_info()["simd_supported"])
    if level == "avx512emu":
        return best >= SIMD_LEVELS.index("avx2")
    return SIMD_LEVELS.index(level) <= best


@contextlib.contextmanager
def simd_level(level: str):
    """Run at SIMD ``level`` (skip where this CPU lacks it), then restore the level that was in use."""
    before = lstmfast.build_info()["simd"]
    if not level_runs_here(level):
        pytest.skip(f"this CPU does not support the {level} kernels")
    lstmfast.set_simd_level(level)
    try:
        yield level
    finally:
        lstmfast.set_simd_level(before)


@pytest.fixture(params=ALL_LEVELS)
def simd(request):
    """Run the test at each SIMD level this CPU supports (others skip with the reason), then
    restore the level that was in use."""
    with simd_level(request.param):
        yield request.param


def fuzz_examples(default: int) -> int:
    """Examples each property-based (hypothesis) test draws: ``default`` for the short run, or the
    positive integer in LSTMFAST_FUZZ_EXAMPLES, the same for every fuzz test, for a longer campaign."""
    value = os.environ.get("LSTMFAST_FUZZ_EXAMPLES", "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"LSTMFAST_FUZZ_EXAMPLES must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Engines: an engine test is written once and runs on each.
# ---------------------------------------------------------------------------------------------

# The C++ engine at each SIMD level; the GPU engine on test_cuda.py's NumPy-backed CuPy stand-in
# ("emulated"); on a real GPU with the step kernels ("gpu") and the sequence kernels
# ("gpu-sequence"), which skip without CuPy and a GPU.
ENGINES = ALL_LEVELS + ["emulated", "gpu", "gpu-sequence"]


class Side:
    """Where an engine test runs: ``name``, the array module ``xp`` of the engine's arrays (numpy
    on the CPU), and moving arrays between the host and there."""

    def __init__(self, name, xp):
        self.name, self.xp = name, xp

    def to_device(self, value):
        return self.xp.asarray(value) if isinstance(value, np.ndarray) else value

    def to_host(self, value):
        return None if value is None else lstmfast.ops.to_numpy(value)

    def kwargs_to_device(self, kwargs):
        return {k: self.to_device(v) for k, v in kwargs.items()}


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    """Each engine in turn, as a Side; the GPU ones come from test_cuda.py."""
    if request.param in ALL_LEVELS:
        with simd_level(request.param):
            yield Side(request.param, np)
        return
    import test_cuda
    yield test_cuda.device_side(request.param, request, monkeypatch)


@pytest.fixture
def float64():
    """New layers are float64 for the duration of the test (the finite-difference checks need it)."""
    from lstmfast import backend
    previous = backend.floatx()
    backend.set_floatx("float64")
    yield
    backend.set_floatx(previous)


@pytest.fixture(scope="session")
def host_library(tmp_path_factory):
    """The CUDA step kernels' per-element functions compiled by g++ for the host (test_cuda.py)."""
    import test_cuda
    return test_cuda.build_host_library(tmp_path_factory.mktemp("lstm_host"))


# ---------------------------------------------------------------------------------------------
# Peers: the frameworks the parity tests compare against. The test extra installs them.
# ---------------------------------------------------------------------------------------------

PEERS = {"torch": ("torch",), "keras": ("torch", "keras")}  # what each peer needs installed
PEERS.update(onnx=("onnx",), onnxruntime=("onnxruntime", "onnx"), safetensors=("safetensors",),  # interop tests
             h5py=("h5py",), mpi4py=("mpi4py",))
KERAS_BACKEND = "torch"  # the Keras backend the parity tests run on: the one the test extra installs


def peer(module: str):
    """`module` of a peer framework ("torch", "keras", or a submodule such as "keras.src.datasets.imdb"),
    imported for a parity test; the test skips, saying why, when the peer is not installed or Keras was
    already imported with another backend. The one place that decides whether a peer is usable.
    Keras is imported with KERAS_BACKEND=torch (for that first import only, the environment is restored)."""
    top = module.partition(".")[0]
    if top not in PEERS:
        raise ValueError(f"peer: module must be one of {sorted(PEERS)} or a submodule of one, got {module!r}")
    for name in PEERS[top]:
        if importlib.util.find_spec(name) is None:
            _peer_unusable(f"{name} is not installed (pip install '.[test]' installs the test peers)")
    saved = os.environ.get("KERAS_BACKEND")
    if top == "keras" and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = KERAS_BACKEND
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a peer's import-time warnings are not ours to fail on
            imported = importlib.import_module(module)  # installed but broken: the test errors, loudly
    finally:
        if saved is None:
            os.environ.pop("KERAS_BACKEND", None)
        else:
            os.environ["KERAS_BACKEND"] = saved
    if top == "keras" and (backend := sys.modules["keras"].backend.backend()) != KERAS_BACKEND:
        _peer_unusable(f"keras was already imported with the {backend!r} backend; the parity tests need "
                       f"{KERAS_BACKEND!r}")
    return imported


def _peer_unusable(why: str):
    """Skip, saying why; fail instead where the peers must be there (.ci/run sets LSTMFAST_REQUIRE_PEERS=1:
    CI installs the test extra, so a parity test that skips there hides a broken install)."""
    if os.environ.get("LSTMFAST_REQUIRE_PEERS") == "1":
        pytest.fail(f"LSTMFAST_REQUIRE_PEERS=1 but {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def keras():
    """Keras 3 on the torch backend, for the Keras parity tests (skips as `peer` says)."""
    return peer("keras")
