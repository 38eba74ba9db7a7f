"""`import lstmfast as keras`: Keras 3's module surface (issue 13, item 1) and the Keras 2 spellings
accepted with a DeprecationWarning (item 2): np_utils, lr=, decay=, epsilon=None, CuDNNLSTM, nb_epoch.
get_file is tested offline only: file:// URLs and an http.server on 127.0.0.1."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import math
import os
import subprocess
import sys
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast as keras
from lstmfast import optimizers, utils
from lstmfast.optimizers.schedules import InverseTimeDecay
from lstmfast.preprocessing.text import Tokenizer, text_to_word_sequence, tokenizer_from_json

from conftest import peer

# ---- the module surface ------------------------------------------------------------------------


def test_module_surface_as_attributes():
    assert keras.Input is keras.layers.Input
    assert keras.models.Sequential is keras.Sequential and keras.models.Model is keras.Model
    assert keras.models.load_model is keras.load_model
    assert keras.preprocessing.sequence.pad_sequences is keras.utils.pad_sequences   # reused, not copied
    assert keras.preprocessing.text.Tokenizer is Tokenizer
    assert callable(keras.datasets.imdb.load_data)
    for name in ("to_categorical", "pad_sequences", "get_file", "PyDataset", "Sequence", "set_random_seed"):
        assert callable(getattr(keras.utils, name)), name
    assert keras.callbacks.EarlyStopping and keras.optimizers.Adam and keras.losses.get and keras.metrics.get
    assert keras.layers.LSTM and keras.layers.Dense
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        keras.Nope


def test_import_forms_in_a_fresh_interpreter():
    # The spellings of the programs in issue 13, each from a clean start; `import lstmfast` alone
    # must not load the training API.
    code = "\n".join([
        "import sys, lstmfast",
        "assert 'lstmfast.models' not in sys.modules, 'import lstmfast loaded the training API'",
        "from lstmfast.models import load_model, Sequential, Model",
        "from lstmfast.preprocessing import sequence",
        "from lstmfast.preprocessing.text import Tokenizer",
        "from lstmfast.utils import np_utils, get_file, PyDataset",
        "from lstmfast.utils.data_utils import get_file",
        "import lstmfast.utils.np_utils",
        "from lstmfast.utils.np_utils import to_categorical",
        "assert lstmfast.datasets.imdb.load_data",
        "assert sequence.pad_sequences([[1]], maxlen=2).tolist() == [[0, 1]]",
        "print('ok')",
    ])
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_functional_model_from_top_level_input():
    inputs = keras.Input(shape=(3, 2))
    outputs = keras.layers.Dense(1)(keras.layers.LSTM(4)(inputs))
    model = keras.models.Model(inputs, outputs)
    assert model.predict(np.zeros((5, 3, 2), np.float32), verbose=0).shape == (5, 1)


# ---- to_categorical and np_utils -----------------------------------------------------------------


def test_to_categorical_dtype_is_keras3s():
    assert utils.to_categorical([0, 2, 1]).dtype == np.float64          # Keras 3 returns float64
    assert utils.to_categorical([0, 2], dtype="float32").dtype == np.float32


def test_np_utils_to_categorical_is_keras2s():
    with pytest.deprecated_call(match=r"lstmfast\.utils\.to_categorical"):
        out = utils.np_utils.to_categorical([[1], [0]], 3)
    assert out.dtype == np.float32                                       # Keras 2's default
    assert_array_equal(out, [[0, 1, 0], [1, 0, 0]])
    assert utils.np_utils.normalize is utils.normalize


def test_data_utils_get_file_is_keras2s(tmp_path):
    # Keras 2's text examples (and tests/programs/macbeth_text_generation.py) import get_file from
    # keras.utils.data_utils, which Keras 3 dropped: it is get_file, with a DeprecationWarning.
    from lstmfast.utils.data_utils import Sequence, get_file
    assert Sequence is utils.PyDataset
    path, data = _source(tmp_path)
    with pytest.deprecated_call(match=r"lstmfast\.utils\.get_file") as rec:
        got = get_file("copy.bin", origin=path.as_uri(), cache_dir=tmp_path / "cache")
    assert rec[0].filename == __file__ and _read(got) == data               # the warning points at the caller


# ---- Tokenizer (Keras 2's keras_preprocessing.text; expectations worked out by hand) --------------

TEXTS = ["The cat sat on the mat.", "The dog ate my homework!", "the cat"]
# counts: the 4, cat 2, then the words seen once in first-seen order
INDEX = {"the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5, "dog": 6, "ate": 7, "my": 8, "homework": 9}


def test_tokenizer_fit_ranks_by_count_ties_first_seen():
    tok = Tokenizer()
    tok.fit_on_texts(TEXTS)
    assert tok.word_index == INDEX
    assert tok.index_word == {i: w for w, i in INDEX.items()}
    assert list(tok.word_counts.items())[:3] == [("the", 4), ("cat", 2), ("sat", 1)]
    assert tok.document_count == 3
    assert tok.word_docs["the"] == 3 and tok.word_docs["cat"] == 2 and tok.word_docs["dog"] == 1
    assert tok.index_docs[1] == 3 and tok.index_docs[2] == 2
    tied = Tokenizer()
    tied.fit_on_texts(["b a", "a b"])
    assert tied.word_index == {"b": 1, "a": 2}
    tok.fit_on_texts(["zebra zebra zebra zebra zebra"])        # refits over everything seen
    assert tok.word_index["zebra"] == 1 and tok.word_index["the"] == 2 and tok.document_count == 4


def test_tokenizer_sequences_num_words_and_oov():
    tok = Tokenizer()
    tok.fit_on_texts(TEXTS)
    assert tok.texts_to_sequences(["The cat ate a fish"]) == [[1, 2, 7]]          # unknown words dropped
    assert tok.sequences_to_texts([[1, 2, 99, 7]]) == ["the cat ate"]
    few = Tokenizer(num_words=3)
    few.fit_on_texts(TEXTS)
    assert few.texts_to_sequences(["The cat ate"]) == [[1, 2]]                     # only indices < 3
    assert few.sequences_to_texts([[1, 7, 2]]) == ["the cat"]
    oov = Tokenizer(num_words=4, oov_token="<OOV>")
    oov.fit_on_texts(TEXTS)
    assert oov.word_index["<OOV>"] == 1 and oov.word_index["the"] == 2 and oov.word_index["homework"] == 10
    assert oov.texts_to_sequences(["The cat ate a fish"]) == [[2, 3, 1, 1, 1]]
    assert oov.sequences_to_texts([[2, 3, 8, 99]]) == ["the cat <OOV> <OOV>"]
    assert list(oov.texts_to_sequences_generator(["cat"])) == [[3]]


def test_tokenizer_text_splitting_options():
    assert text_to_word_sequence("Hello, World!  it's") == ["hello", "world", "it's"]
    tok = Tokenizer(filters="", lower=False, split=",")
    tok.fit_on_texts(["A,b,,A"])
    assert tok.word_index == {"A": 1, "b": 2}
    chars = Tokenizer(char_level=True)            # characters are tokens: lower-cased, not filtered
    chars.fit_on_texts(["abca", "Bb!"])
    assert chars.word_index == {"b": 1, "a": 2, "c": 3, "!": 4}
    assert chars.texts_to_sequences(["cab!"]) == [[3, 2, 1, 4]]
    tokens = Tokenizer()                          # a text given as a list: its items are the tokens
    tokens.fit_on_texts([["Hello", "big world"]])
    assert tokens.word_index == {"hello": 1, "big world": 2}


def test_tokenizer_matrix_modes():
    tok = Tokenizer()
    tok.fit_on_texts(TEXTS)
    texts = ["the the cat", "dog", ""]                       # sequences [1, 1, 2], [6], []
    assert tok.texts_to_matrix(texts).shape == (3, 10)       # len(word_index) + 1
    expect = {"binary": {(0, 1): 1, (0, 2): 1, (1, 6): 1},
              "count": {(0, 1): 2, (0, 2): 1, (1, 6): 1},
              "freq": {(0, 1): 2 / 3, (0, 2): 1 / 3, (1, 6): 1},
              # (1 + ln count) * ln(1 + documents / (1 + documents with the word)); 3 documents
              "tfidf": {(0, 1): (1 + math.log(2)) * math.log(1 + 3 / 4), (0, 2): math.log(2),
                        (1, 6): math.log(1 + 3 / 2)}}
    for mode, cells in expect.items():
        want = np.zeros((3, 10))
        for (r, c), v in cells.items():
            want[r, c] = v
        assert_allclose(tok.texts_to_matrix(texts, mode=mode), want, rtol=1e-12, err_msg=mode)
    few = Tokenizer(num_words=3)
    few.fit_on_texts(TEXTS)
    assert_array_equal(few.texts_to_matrix(["the dog cat"], mode="count"), [[0, 1, 1]])
    assert_array_equal(few.sequences_to_matrix([[1, 7]], mode="freq"), [[0, 0.5, 0]])   # length counts index 7
    with pytest.raises(ValueError, match="mode must be one of"):
        tok.texts_to_matrix(texts, mode="onehot")
    with pytest.raises(ValueError, match="fit the Tokenizer"):
        Tokenizer().texts_to_matrix(["a"])
    with pytest.raises(ValueError, match="tfidf"):
        Tokenizer(num_words=5).sequences_to_matrix([[1]], mode="tfidf")
    counted = Tokenizer(num_words=5)
    counted.fit_on_sequences([[1, 1, 2], [2]])
    assert counted.document_count == 2 and counted.index_docs[1] == 1 and counted.index_docs[2] == 2


def test_tokenizer_json_round_trip():
    tok = Tokenizer(num_words=4, oov_token="<OOV>")
    tok.fit_on_texts(TEXTS)
    back = tokenizer_from_json(tok.to_json())
    assert back.word_index == tok.word_index and back.index_word == tok.index_word
    assert back.texts_to_sequences(["the cat ate"]) == tok.texts_to_sequences(["the cat ate"])
    assert_array_equal(back.texts_to_matrix(TEXTS, "tfidf"), tok.texts_to_matrix(TEXTS, "tfidf"))
    with pytest.raises(TypeError, match="unexpected"):
        Tokenizer(num_word=3)
    with pytest.deprecated_call(match="num_words"):
        assert Tokenizer(nb_words=7).num_words == 7


# ---- get_file (offline) --------------------------------------------------------------------------


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _source(tmp_path, data=b"hello lstmfast\n" * 1000, name="data.bin"):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(data)
    return src / name, data


def test_get_file_file_url_caches_and_checks_sha256(tmp_path, capsys):
    path, data = _source(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    got = utils.get_file("copy.bin", path.as_uri(), file_hash=sha, cache_dir=cache)
    assert got == str(cache / "datasets" / "copy.bin") and _read(got) == data
    err = capsys.readouterr().err
    assert "Downloading" in err and "(100%)" in err            # the progress line, on stderr
    path.unlink()                                              # cached: the origin is not read again
    assert utils.get_file("copy.bin", path.as_uri(), file_hash=sha, cache_dir=cache) == got
    assert capsys.readouterr().err == ""
    assert sorted(os.listdir(cache / "datasets")) == ["copy.bin"]   # no temporary files left


def test_get_file_hash_mismatch_leaves_no_file(tmp_path):
    path, data = _source(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="incomplete or corrupted"):
        utils.get_file("x.bin", path.as_uri(), file_hash="0" * 64, cache_dir=cache)
    assert os.listdir(cache / "datasets") == []
    # a stale cached file is replaced when its hash does not match, and removed when the new one fails
    (cache / "datasets" / "x.bin").write_bytes(b"stale")
    md5 = hashlib.md5(data).hexdigest()
    got = utils.get_file("x.bin", path.as_uri(), md5_hash=md5, cache_dir=cache)
    assert _read(got) == data
    with pytest.raises(ValueError, match="md5"):
        utils.get_file("x.bin", path.as_uri(), file_hash="f" * 32, cache_dir=cache)
    assert os.listdir(cache / "datasets") == []
    with pytest.raises(ValueError, match="hash_algorithm"):
        utils.get_file("x.bin", path.as_uri(), file_hash=md5, hash_algorithm="sha1", cache_dir=cache)


def test_get_file_arguments(tmp_path, monkeypatch):
    path, data = _source(tmp_path)
    monkeypatch.setenv("LSTMFAST_HOME", str(tmp_path / "home"))
    got = utils.get_file(origin=path.as_uri(), cache_subdir="sub")       # fname from the URL
    assert got == str(tmp_path / "home" / "sub" / "data.bin")
    path.write_bytes(b"new")
    assert _read(utils.get_file(origin=path.as_uri(), cache_subdir="sub")) == data
    assert _read(utils.get_file(origin=path.as_uri(), cache_subdir="sub", force_download=True)) == b"new"
    with pytest.raises(ValueError, match="origin"):
        utils.get_file("a.bin")
    with pytest.raises(ValueError, match="not a path"):
        utils.get_file(os.path.join("a", "b.bin"), path.as_uri())
    with pytest.raises(OSError, match="URL fetch failure"):
        utils.get_file("missing.bin", (tmp_path / "nowhere.bin").as_uri(), cache_dir=tmp_path / "c")
    assert os.listdir(tmp_path / "c" / "datasets") == []


def test_get_file_extracts_tar_and_zip(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with tarfile.open(src / "corpus.tar.gz", "w:gz") as t:
        payload = b"to be or not to be"
        info = tarfile.TarInfo("corpus/hamlet.txt")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    with zipfile.ZipFile(src / "words.zip", "w") as z:
        z.writestr("words.txt", "a b c")
    cache = tmp_path / "cache"
    out = utils.get_file("corpus.tar.gz", (src / "corpus.tar.gz").as_uri(), extract=True, cache_dir=cache)
    assert out == str(cache / "datasets" / "corpus_extracted")
    assert _read(os.path.join(out, "corpus", "hamlet.txt")) == payload
    out = utils.get_file("words", (src / "words.zip").as_uri(), extract=True, cache_dir=cache)
    assert out == str(cache / "datasets" / "words") and _read(os.path.join(out, "words.txt")) == b"a b c"
    assert os.path.exists(cache / "datasets" / "words_archive")
    evil = src / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        utils.get_file("evil.zip", evil.as_uri(), extract=True, cache_dir=cache)
    with tarfile.open(src / "evil.tar", "w") as t:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises((ValueError, tarfile.TarError), match="outside"):
        utils.get_file("evil.tar", (src / "evil.tar").as_uri(), extract=True, cache_dir=cache)
    assert not os.path.exists(cache / "datasets" / "outside.txt")
    assert not os.path.exists(cache / "datasets" / "evil_extracted")
    assert not [n for n in os.listdir(cache / "datasets") if n.startswith(".")]    # no temporary folders


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_get_file_over_http_on_localhost(tmp_path):
    path, data = _source(tmp_path, data=os.urandom(300_000))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(path.parent)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        got = utils.get_file(origin=f"{base}/data.bin", file_hash=hashlib.sha256(data).hexdigest(),
                             cache_dir=tmp_path / "cache")
        assert _read(got) == data
        with pytest.raises(OSError, match="404"):
            utils.get_file(origin=f"{base}/absent.bin", cache_dir=tmp_path / "cache")
        assert sorted(os.listdir(tmp_path / "cache" / "datasets")) == ["data.bin"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


# ---- PyDataset / Sequence ------------------------------------------------------------------------


class _Batches(utils.PyDataset):
    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n, self.epochs_ended = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index >= self.n:
            raise IndexError(index)
        return np.full((2, 1), index), np.full((2,), index)

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_pydataset_and_sequence():
    assert utils.Sequence is utils.PyDataset
    data = _Batches(3, workers=2)
    assert data.num_batches == 3 and data.workers == 2 and data.max_queue_size == 10
    assert [int(y[0]) for _, y in data] == [0, 1, 2]
    data.on_epoch_begin()
    data.on_epoch_end()
    assert data.epochs_ended == 1

    class Keras2Style(utils.Sequence):                  # never calls super().__init__()
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return index

    assert list(Keras2Style()) == [0] and Keras2Style().workers == 1
    with pytest.raises(NotImplementedError, match="__getitem__"):
        utils.PyDataset()[0]
    with pytest.raises(NotImplementedError, match="__len__"):
        utils.PyDataset().num_batches


# ---- Keras 2 optimizer keywords ------------------------------------------------------------------


def _run(opt, grads):
    var = np.zeros(3)
    for g in grads:
        opt.apply([g], [var])
    return var


def test_lr_and_epsilon_none_map_to_keras3_names():
    with pytest.deprecated_call(match=r"Adam\(learning_rate=") as rec:
        adam = optimizers.Adam(lr=0.01)
    assert adam.learning_rate == 0.01 and rec[0].filename == __file__   # points at the caller
    assert "lr" not in adam.get_config()
    with pytest.deprecated_call(match="default 1e-07"):
        assert optimizers.RMSprop(epsilon=None).epsilon == 1e-7
    for cls in (optimizers.Adam, optimizers.Adagrad, optimizers.AdamW):
        with pytest.deprecated_call():
            assert cls(epsilon=None).epsilon == cls().epsilon
    with pytest.warns(DeprecationWarning) as rec:
        optimizers.AdamW(lr=0.5)                       # AdamW -> Adam.__init__: one warning, not two
    assert len(rec) == 1
    with pytest.raises(TypeError, match="not both"):
        optimizers.SGD(lr=0.1, learning_rate=0.2)
    with pytest.raises(TypeError):
        optimizers.SGD(epsilon=None)                   # SGD never had epsilon
    assert optimizers.Adam(epsilon=1e-8).epsilon == 1e-8       # Keras 3 spelling: no warning (filterwarnings=error)


def test_decay_is_keras2_time_based_decay_exactly():
    grads = [np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -1.0]), np.array([2.0, 0.0, 1.0]),
             np.array([-0.5, 0.4, 0.2])]
    with pytest.deprecated_call() as rec:
        sgd = optimizers.SGD(lr=0.1, decay=0.5)
    assert [str(w.message).split("(")[1][:5] for w in rec] == ["lr=..", "decay"]   # one warning per keyword
    assert "InverseTimeDecay" in str(rec[1].message)
    want = -sum(0.1 / (1 + 0.5 * it) * g for it, g in enumerate(grads))   # lr / (1 + decay * iterations)
    assert_allclose(_run(sgd, grads), want, rtol=1e-14)

    # Keras 2's Adam (keras/optimizers.py, 2.2): lr_t = lr / (1 + decay * it) * sqrt(1 - b2^t) / (1 - b1^t)
    lr, decay, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-7
    m, v, var = np.zeros(3), np.zeros(3), np.zeros(3)
    for it, g in enumerate(grads):
        t = it + 1
        lr_t = lr / (1 + decay * it) * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        var = var - lr_t * m / (np.sqrt(v) + eps)
    with pytest.deprecated_call():
        adam = optimizers.Adam(lr=lr, decay=decay, epsilon=None)
    assert_allclose(_run(adam, grads), var, rtol=1e-12)

    with pytest.deprecated_call():
        default_lr = optimizers.Adam(decay=0.25)                # decay on the default learning rate
    assert default_lr.learning_rate(4) == pytest.approx(0.001 / 2)
    with pytest.deprecated_call():
        assert optimizers.SGD(decay=0.0).learning_rate == 0.01  # Keras 2's default: no decay
    with pytest.deprecated_call(), pytest.raises(ValueError, match="constant learning rate"):
        optimizers.SGD(learning_rate=InverseTimeDecay(0.1, 10, 1.0), decay=0.1)
    with pytest.raises(ValueError, match="decay"):
        optimizers.SGD(decay=-1.0)


def test_decay_survives_serialization():
    with pytest.deprecated_call():
        sgd = optimizers.SGD(lr=0.1, decay=0.5, momentum=0.9)
    back = optimizers.deserialize(optimizers.serialize(sgd))   # no warning: the config is Keras 3's
    assert isinstance(back.learning_rate, InverseTimeDecay) and back.momentum == 0.9
    assert [back.learning_rate(i) for i in range(3)] == [sgd.learning_rate(i) for i in range(3)]


def test_inverse_time_decay_matches_keras():
    keras3 = peer("keras")
    for staircase in (False, True):
        ours = InverseTimeDecay(0.1, 3, 0.5, staircase=staircase)
        theirs = keras3.optimizers.schedules.InverseTimeDecay(0.1, 3, 0.5, staircase=staircase)
        for step in (0, 1, 5, 9):
            assert ours(step) == pytest.approx(float(theirs(step)), rel=1e-6)


# ---- CuDNNLSTM and nb_epoch ----------------------------------------------------------------------


def test_cudnnlstm_is_an_lstm_with_keras2_cudnn_defaults():
    with pytest.deprecated_call(match=r"LSTM\(units\)"):
        layer = keras.layers.CuDNNLSTM(8, return_sequences=True, name="enc")
    assert isinstance(layer, keras.layers.LSTM) and layer.name == "enc" and layer.return_sequences
    assert layer.recurrent_activation == "sigmoid" and layer.activation == "tanh" and layer.unit_forget_bias
    assert layer.dropout == 0.0 and layer.recurrent_dropout == 0.0 and layer.use_bias
    assert keras.layers.serialize(layer)["class_name"] == "LSTM"          # saves and loads as an LSTM
    with pytest.deprecated_call(), pytest.raises(TypeError, match="dropout"):
        keras.layers.CuDNNLSTM(8, dropout=0.2)


def test_fit_accepts_nb_epoch():
    model = keras.models.Sequential([keras.layers.Input((4, 3)), keras.layers.LSTM(5), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 4, 3), np.float32), np.zeros((8, 2), np.float32)
    with pytest.deprecated_call(match=r"fit\(epochs=") as rec:
        history = model.fit(x, y, nb_epoch=3, batch_size=4, verbose=0)
    assert len(history.history["loss"]) == 3 and rec[0].filename == __file__
    with pytest.raises(TypeError, match="unexpected"):
        model.fit(x, y, nb_epochs=3, verbose=0)
