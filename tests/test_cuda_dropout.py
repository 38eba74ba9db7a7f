"""Dropout masks drawn on the GPU (lstmfast.cuda.dropout, lf_random.cuh): Philox4x32-10 against the
published known answers and a NumPy implementation, masks against their definition, the device's
draw counter, and training with dropout replayed as a CUDA graph, on the CuPy stand-in (the kernel's
math compiled for the host) and on a real GPU when there is one."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import backend as lf_backend
from lstmfast import ops
from lstmfast.cuda import dropout as cuda_dropout
from lstmfast.layers import LSTM, Dense, Dropout, Embedding
from lstmfast.models import Sequential

import test_cuda
from test_cuda import (
    Launches,
    Transfers,
    emulated,  # noqa: F401  (a fixture)
    fit_model,
    host_dropout_mask,
    philox4x32_10,
)

# Random123's known-answer vectors for Philox4x32-10: counter words, key words, output words.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, want", KNOWN_ANSWERS)
def test_the_numpy_philox_gives_the_known_answers(counter, key, want):
    assert tuple(int(w) for w in philox4x32_10(np.array([counter], np.uint64), key)[0]) == want


def draw(cp, shape, rate, dtype, key):
    return cuda_dropout.keep_mask(cp, shape, rate, dtype, key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (3,), (5, 7), (33, 64, 3), (2, 1, 4099)])
def test_device_masks_are_the_philox_masks_and_advance_the_counter(shape, dtype, emulated):  # noqa: F811
    cp = emulated.xp
    key = (0x12345678, 0x9ABCDEF0)
    first, second = draw(cp, shape, 0.3, dtype, key), draw(cp, shape, 0.3, dtype, key)
    assert first.dtype == dtype and first.shape == shape
    assert_array_equal(first.view(np.ndarray), host_dropout_mask(shape, 0.3, dtype, key, 0))
    assert_array_equal(second.view(np.ndarray), host_dropout_mask(shape, 0.3, dtype, key, 1))
    assert int(cuda_dropout.counters()[0].view(np.ndarray)[0]) == 2
    lf_backend.set_random_seed(0)  # the counter back to zero, in place
    assert_array_equal(draw(cp, shape, 0.3, dtype, key).view(np.ndarray), first.view(np.ndarray))


def test_masks_keep_one_minus_rate_scaled_and_differ_by_key(emulated):  # noqa: F811
    cp = emulated.xp
    for rate in (0.0, 0.1, 0.5, 0.9):
        keep = draw(cp, (200, 500), rate, np.float32, (7, 11)).view(np.ndarray)
        scale = np.float32(1 / (1 - rate))
        assert set(np.unique(keep)) <= {np.float32(0), scale}
        kept = (keep != 0).mean()
        assert abs(kept - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / keep.size) + 1e-12, (rate, kept)
    a = draw(cp, (1000,), 0.5, np.float64, (1, 2)).view(np.ndarray)
    lf_backend.set_random_seed(0)
    b = draw(cp, (1000,), 0.5, np.float64, (1, 3)).view(np.ndarray)
    assert 350 < (a != b).sum() < 650  # another key: another, independent mask


@pytest.mark.parametrize("rate, key, message", [(1.0, (1, 2), "rate must lie in"), (-0.1, (1, 2), "rate must lie in"),
                                                (0.5, (1,), "key must be two"), (0.5, (1, 2 ** 32), "key must be two")])
def test_bad_arguments_are_refused(rate, key, message, emulated):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        draw(emulated.xp, (4,), rate, np.float32, key)
    with pytest.raises(TypeError, match="float32 or float64"):
        draw(emulated.xp, (4,), 0.5, np.float16, (1, 2))


def test_a_dropout_layer_draws_on_the_device_with_one_launch_and_no_copy(emulated):  # noqa: F811
    cp = emulated.xp
    layer = Dropout(0.4, seed=9)
    x = cp.asarray(np.ones((6, 50), np.float32))
    Launches.reset()
    Transfers.reset()
    y = layer(x, training=True)
    assert isinstance(y, cp.ndarray) and Transfers.count == 0
    assert Launches.kernels == ["dropout_keep"], Launches.kernels
    key = layer._dropout_key  # drawn once from the layer's seeded generator
    assert key == tuple(int(k) for k in np.random.default_rng(9).integers(0, 2 ** 32, 2))
    assert_array_equal(y.view(np.ndarray), host_dropout_mask((6, 50), 0.4, np.float32, key, 0))
    layer(x, training=True)
    assert layer._dropout_key == key  # not drawn again


def dropout_model():
    model = Sequential([Embedding(40, 6), LSTM(9, dropout=0.3, recurrent_dropout=0.2, return_sequences=True),
                        Dropout(0.25), LSTM(5), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(4)
    return model, rng.integers(0, 40, (48, 7)), rng.integers(0, 3, 48)


def test_training_with_dropout_replays_graphs_and_matches_the_cpu_with_the_same_masks(emulated):  # noqa: F811
    _, cpu_history, cpu_prediction = fit_model(dropout_model, "cpu", epochs=2)
    Launches.reset()
    model, history, prediction = fit_model(dropout_model, "cuda", epochs=2)
    for key, values in cpu_history.items():
        assert_allclose(history[key], values, rtol=2e-4, atol=1e-6, err_msg=key)
    assert_allclose(prediction, cpu_prediction, rtol=1e-3, atol=1e-5)
    # 12 batches of 8: batch 1 learns the shapes, 2 and 3 run eagerly (3 is captured), 4 checks
    # the graph (predict's two batches, of 32 and 16, run eagerly)
    assert Launches.kernels.count("graph") == 9
    # each step drew 3 masks on the device, replays too (the check's eager step was undone)
    assert int(ops.device_dropout_counters()[0].view(np.ndarray)[0]) == 12 * 3


def test_graphs_never_gives_the_same_training(emulated, monkeypatch):  # noqa: F811
    _, auto, _ = fit_model(dropout_model, "cuda", epochs=2)
    monkeypatch.setattr(test_cuda.lcuda.graphs, "GRAPHS", "never")
    Launches.reset()
    _, never, _ = fit_model(dropout_model, "cuda", epochs=2)
    assert Launches.kernels.count("graph") == 0
    for key, values in never.items():
        assert_allclose(auto[key], values, rtol=1e-6, err_msg=key)
