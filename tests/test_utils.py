"""lstmfast.utils: pad_sequences and to_categorical against the Keras semantics (and Keras 3 itself).

Losses, metrics, optimizers and callbacks have their own files (test_losses.py, test_metrics.py,
test_optimizers.py, test_callbacks.py)."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import backend, callbacks, utils

from conftest import peer


def test_pad_sequences_basic():
    seqs = [[1, 2, 3], [4, 5], [], [6, 7, 8, 9]]
    assert_array_equal(utils.pad_sequences(seqs), [[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 0, 0], [6, 7, 8, 9]])
    assert_array_equal(utils.pad_sequences(seqs, padding="post"),
                       [[1, 2, 3, 0], [4, 5, 0, 0], [0, 0, 0, 0], [6, 7, 8, 9]])
    assert_array_equal(utils.pad_sequences(seqs, maxlen=2), [[2, 3], [4, 5], [0, 0], [8, 9]])
    assert_array_equal(utils.pad_sequences(seqs, maxlen=2, truncating="post"), [[1, 2], [4, 5], [0, 0], [6, 7]])
    assert_array_equal(utils.pad_sequences(seqs, maxlen=5, padding="post", value=-1),
                       [[1, 2, 3, -1, -1], [4, 5, -1, -1, -1], [-1] * 5, [6, 7, 8, 9, -1]])
    out = utils.pad_sequences(seqs)
    assert out.dtype == np.int32 and out.shape == (4, 4)
    assert utils.pad_sequences([[], []]).shape == (2, 0)
    assert utils.pad_sequences([]).shape == (0, 0)
    assert utils.pad_sequences([[1, 2]], maxlen=0).shape == (1, 0)


def test_pad_sequences_dtypes_and_shapes():
    floats = utils.pad_sequences([[0.5, 1.5], [2.5]], dtype="float32", value=-0.5)
    assert floats.dtype == np.float32
    assert_array_equal(floats, [[0.5, 1.5], [-0.5, 2.5]])
    assert_array_equal(utils.pad_sequences([[0.7, 1.9]]), [[0, 1]])       # int dtype truncates, as NumPy
    ragged = [np.ones((3, 2)), np.full((1, 2), 5.0)]
    out = utils.pad_sequences(ragged, dtype="float64", padding="post")
    assert out.shape == (2, 3, 2)
    assert_array_equal(out[1], [[5, 5], [0, 0], [0, 0]])
    words = utils.pad_sequences([["a", "b"], ["c"]], dtype=object, value="<pad>")
    assert words.tolist() == [["a", "b"], ["<pad>", "c"]]
    assert utils.pad_sequences([["ab"], []], dtype="<U5", value="x").tolist() == [["ab"], ["x"]]
    with pytest.raises(ValueError, match="dtype=object"):
        utils.pad_sequences([["a"]], value="<pad>")
    with pytest.raises(ValueError, match='Padding type "middle" not understood'):
        utils.pad_sequences([[1]], padding="middle")
    with pytest.raises(ValueError, match='Truncating type "both" not understood'):
        utils.pad_sequences([[1]], truncating="both")
    with pytest.raises(ValueError, match="non-iterable"):
        utils.pad_sequences([[1], 2])
    with pytest.raises(ValueError, match="different from expected shape"):
        utils.pad_sequences([np.ones((2, 3)), np.ones((2, 4))], dtype="float32")
    with pytest.raises(ValueError, match="maxlen"):
        utils.pad_sequences([[1]], maxlen=-1)


def test_to_categorical():
    out = utils.to_categorical([0, 2, 1])
    assert out.dtype == np.float64 and out.shape == (3, 3)
    assert_array_equal(out, np.eye(3)[[0, 2, 1]])
    assert utils.to_categorical(np.array([[1], [0]]), num_classes=4).shape == (2, 4)   # trailing 1 dropped
    assert utils.to_categorical(np.array([[1, 2], [0, 1]])).shape == (2, 2, 3)
    assert utils.to_categorical(np.array([1.0, 0.0]), dtype="float64").dtype == np.float64
    assert utils.to_categorical(3, num_classes=5).tolist() == [0, 0, 0, 1, 0]
    with pytest.raises(ValueError, match=r"label 3 is out of range for num_classes=3"):
        utils.to_categorical([0, 3], num_classes=3)
    with pytest.raises(ValueError, match="label -1"):
        utils.to_categorical([0, -1])
    with pytest.raises(ValueError, match="non-integer"):
        utils.to_categorical([0.5])
    with pytest.raises(ValueError, match="num_classes"):
        utils.to_categorical([])


def test_utils_reexports_and_normalize():
    assert utils.set_random_seed is backend.set_random_seed
    assert utils.Progbar is callbacks.Progbar
    assert_allclose(utils.normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


# ---------------------------------------------------------------------------------------------
# Keras 3 itself as the reference for metrics, callbacks and utils (skipped without keras).
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    dict(sequences=[[1, 2, 3], [4, 5], [], [6, 7, 8, 9]]),
    dict(sequences=[[1, 2, 3], [4, 5], [], [6, 7, 8, 9]], maxlen=2, truncating="post", padding="post", value=-1),
    dict(sequences=[[0.5, 1.5], [2.5]], dtype="float32", value=-0.5, maxlen=3),
    dict(sequences=[[0.7, 1.9], [3.2]]),
    dict(sequences=[np.ones((3, 2)), np.full((1, 2), 5.0)], dtype="float64", padding="post"),
    dict(sequences=[["a", "b"], ["c"]], dtype=object, value="<pad>"),
])
def test_pad_sequences_matches_keras(args):
    keras = peer("keras")
    theirs = keras.utils.pad_sequences(**args)
    ours = utils.pad_sequences(**args)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.tolist() == theirs.tolist()
    labels = np.array([[1], [0], [3]])
    assert utils.to_categorical(labels).dtype == keras.utils.to_categorical(labels).dtype
    assert_array_equal(utils.to_categorical(labels), keras.utils.to_categorical(labels))
    assert_array_equal(utils.to_categorical(labels, 5), keras.utils.to_categorical(labels, 5))
