"""The IMDB data set and task: Keras's text encoding, ``load_data`` from every supported source
(tiny aclImdb directory, tar.gz, jsonl.gz and Keras-style npz written here), Keras's shuffle and
its skip_top/maxlen/num_words semantics (against a port of Keras's code, and against Keras itself
when it is installed), the 5,000-review Keras subset in ../shared/data, the download path
(file:// URLs), bad input, and ``lstmfast imdb`` end to end on a tiny corpus.
"""
import gzip
import hashlib
import io
import itertools
import json
import os
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from lstmfast import cli, saving
from lstmfast.datasets import imdb

from conftest import peer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

WORD_INDEX = {"the": 1, "a": 2, "movie": 3, "good": 4, "bad": 5, "great": 6, "awful": 7, "it": 8, "was": 9,
              "fun": 10, "cliché": 11, "Åge": 12, "it's": 13, "br": 14, "erm\x85laughs": 15, "end": 16}

# (split, label, id, rating, text). Ids 0, 1000 and 10000 check the file-name order
# ("10000_10.txt" < "1000_8.txt"); the texts exercise case, filters, non-ASCII and unknown words.
REVIEWS = [
    ("train", 1, 0, 9, "The movie was GOOD!"),
    ("train", 1, 1000, 8, "A great, great movie.<br /><br />It was fun"),
    ("train", 1, 10000, 10, "Great fun; it's a cliché..."),
    ("train", 0, 5, 2, "Bad. Awful, awful movie"),
    ("train", 0, 12, 1, "It was bad   and unknownword erm\x85laughs"),
    ("test", 1, 3, 7, "good good"),
    ("test", 1, 20, 9, "ÅGE Åge great"),
    ("test", 0, 7, 4, "awful\tbad\nthe end"),
    ("test", 0, 100, 3, "bad movie, the end"),
]
# Keras's stored order (pos by file name, then neg by file name) and each review's word ranks.
STORED = {
    "train": ([[1, 3, 9, 4], [6, 10, 13, 2, 11], [2, 6, 6, 3, 14, 14, 8, 9, 10], [8, 9, 5, 15], [5, 7, 7, 3]],
              [1, 1, 1, 0, 0]),
    "test": ([[12, 12, 6], [4, 4], [5, 3, 1, 16], [7, 5, 1, 16]], [1, 1, 0, 0]),
}


# ---- fixtures: one tiny corpus in every format --------------------------------------------------

def _name(rid, rating):
    return f"{rid}_{rating}.txt"


def write_word_index(folder: Path, index=WORD_INDEX) -> Path:
    path = folder / "imdb_word_index.json"
    path.write_text(json.dumps(index), encoding="utf-8")
    return path


def write_dir(root: Path, reviews=REVIEWS) -> Path:
    for split, label, rid, rating, text in reviews:
        folder = root / "aclImdb" / split / ("pos" if label else "neg")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / _name(rid, rating)).write_bytes(text.encode("utf-8"))
    (root / "aclImdb" / "imdb.vocab").write_text("the\n")  # present in the real archive; ignored
    return root / "aclImdb"


def write_tar(path: Path, reviews=REVIEWS, extra=()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split, label, rid, rating, text in reviews:
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"aclImdb/{split}/{'pos' if label else 'neg'}/{_name(rid, rating)}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def write_jsonl(path: Path, reviews=REVIEWS) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for split, label, rid, rating, text in reversed(reviews):  # order must not matter
            f.write(json.dumps({"split": split, "label": label, "id": rid, "rating": rating, "text": text}) + "\n")
    return path


def object_array(seqs):
    out = np.empty(len(seqs), dtype=object)
    for i, s in enumerate(seqs):
        out[i] = list(s)
    return out


def write_keras_npz(path: Path, stored=STORED) -> Path:
    """What Keras's imdb.npz holds: word ranks (no start char, no index_from), object arrays."""
    np.savez(path, x_train=object_array(stored["train"][0]), y_train=np.array(stored["train"][1], np.int64),
             x_test=object_array(stored["test"][0]), y_test=np.array(stored["test"][1], np.int64))
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache directory (never ~/.lstmfast)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("LSTMFAST_DATA", str(folder))
    return folder


@pytest.fixture
def sources(tmp_path):
    """The tiny corpus as aclImdb dir, tar.gz, jsonl.gz (each beside a word index) and Keras npz."""
    out = {}
    for kind in ("dir", "tar", "jsonl", "npz"):
        folder = tmp_path / kind
        folder.mkdir()
        write_word_index(folder)
        out[kind] = {"dir": lambda: write_dir(folder), "tar": lambda: write_tar(folder / "aclImdb_v1.tar.gz"),
                     "jsonl": lambda: write_jsonl(folder / "imdb_reviews.jsonl.gz"),
                     "npz": lambda: write_keras_npz(folder / "imdb.npz")}[kind]()
    return out


# ---- Keras's load_data, ported line by line (keras/src/datasets/imdb.py, Keras 3.15) ------------

def keras_reference(stored, num_words=None, skip_top=0, maxlen=None, seed=113, start_char=1, oov_char=2,
                    index_from=3):
    x_train, labels_train = object_array(stored["train"][0]), np.array(stored["train"][1], np.int64)
    x_test, labels_test = object_array(stored["test"][0]), np.array(stored["test"][1], np.int64)
    rng = np.random.RandomState(seed)
    indices = np.arange(len(x_train))
    rng.shuffle(indices)
    x_train, labels_train = x_train[indices], labels_train[indices]
    indices = np.arange(len(x_test))
    rng.shuffle(indices)
    x_test, labels_test = x_test[indices], labels_test[indices]
    if start_char is not None:
        x_train = [[start_char] + [w + index_from for w in x] for x in x_train]
        x_test = [[start_char] + [w + index_from for w in x] for x in x_test]
    elif index_from:
        x_train = [[w + index_from for w in x] for x in x_train]
        x_test = [[w + index_from for w in x] for x in x_test]
    else:
        x_train = [[w for w in x] for x in x_train]
        x_test = [[w for w in x] for x in x_test]
    if maxlen:
        keep = [i for i, x in enumerate(x_train) if len(x) < maxlen]
        x_train, labels_train = [x_train[i] for i in keep], labels_train[keep]
        keep = [i for i, x in enumerate(x_test) if len(x) < maxlen]
        x_test, labels_test = [x_test[i] for i in keep], labels_test[keep]
    xs = x_train + x_test
    labels = np.concatenate([labels_train, labels_test])
    if not num_words:
        num_words = max(max(x) for x in xs)
    if oov_char is not None:
        xs = [[w if (skip_top <= w < num_words) else oov_char for w in x] for x in xs]
    else:
        xs = [[w for w in x if skip_top <= w < num_words] for x in xs]
    idx = len(x_train)
    return (xs[:idx], labels[:idx]), (xs[idx:], labels[idx:])


def assert_same(result, expected):
    (xa, ya), (xb, yb) = result
    (ea, fa), (eb, fb) = expected
    for x, e in ((xa, ea), (xb, eb)):
        assert x.dtype == object and x.ndim == 1
        assert [list(s) for s in x] == [list(s) for s in e]
        assert all(type(w) is int for s in x for w in s)
    for y, f in ((ya, fa), (yb, fb)):
        assert y.dtype == np.int64
        assert_array_equal(y, f)


KERAS_OPTIONS = [
    dict(num_words=None), dict(num_words=10), dict(num_words=10, skip_top=5), dict(maxlen=6),
    dict(maxlen=7, num_words=8, seed=3), dict(start_char=None), dict(start_char=None, index_from=0),
    dict(oov_char=None, num_words=9, skip_top=4), dict(index_from=5, start_char=4, oov_char=3, num_words=12),
    dict(seed=0), dict(seed=2**31),
]


# ---- the encoding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("The movie was GOOD!", ["the", "movie", "was", "good"]),
    ("a,b.c-d'e", ["a", "b", "c", "d'e"]),                          # the apostrophe is not a filter
    ("it's  great\t\nfun", ["it's", "great", "fun"]),
    ("<br /><br />end", ["br", "br", "end"]),
    ("ÅGE Ærø CAFÉ", ["Åge", "Ærø", "cafÉ"]),                         # only ASCII letters are lowercased
    ("erm\x85laughs \x96 x\u00a0y", ["erm\x85laughs", "\x96", "x\u00a0y"]),  # only ' ' splits (no \x85, NBSP)
    ("\r\x0b\x0c", ["\r\x0b\x0c"]),                                    # \r, \v, \f are not filters either
    ("", []),
])
def test_tokenize(text, words):
    assert imdb.tokenize(text) == words


def test_encode_review_drops_unknown_words_and_matches_the_bytes_path():
    assert imdb.encode_review("It was bad   and unknownword erm\x85laughs", WORD_INDEX) == [8, 9, 5, 15]
    assert imdb.encode_review("ÅGE åge", WORD_INDEX) == [12]
    texts = [r[4] for r in REVIEWS] + ["", "  ", "the the", "x" * 100]
    fast = imdb._encode_many([t.encode("utf-8") for t in texts], {k.encode(): v for k, v in WORD_INDEX.items()})
    assert [fast.ids[a:b].tolist() for a, b in zip(fast.offsets[:-1], fast.offsets[1:])] == \
        [imdb.encode_review(t, WORD_INDEX) for t in texts]


# ---- load_data from every source ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dir", "tar", "jsonl", "npz"])
@pytest.mark.parametrize("options", KERAS_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_load_data_every_source_matches_keras_reference(sources, kind, options):
    got = imdb.load_data(sources[kind], **{"num_words": None, **options}, verbose=False)
    assert_same(got, keras_reference(STORED, **options))


def test_a_folder_stands_for_the_known_file_in_it(sources):
    assert_same(imdb.load_data(sources["jsonl"].parent, num_words=None, verbose=False), keras_reference(STORED))
    assert_same(imdb.load_data(sources["npz"].parent, num_words=None, verbose=False), keras_reference(STORED))


def test_load_data_defaults(sources):
    (x_train, y_train), (x_test, y_test) = imdb.load_data(sources["jsonl"], verbose=False)
    assert len(x_train) == 5 and len(x_test) == 4 and y_train.sum() == 3 and y_test.sum() == 2
    assert_same(((x_train, y_train), (x_test, y_test)), keras_reference(STORED, num_words=20000))
    assert all(s[0] == 1 for s in itertools.chain(x_train, x_test))


def test_load_data_matches_keras_itself(sources, monkeypatch):
    """Keras's own load_data on the same npz (keras/src/datasets/imdb.py fetches it with get_file)."""
    keras_imdb = peer("keras.src.datasets.imdb")
    monkeypatch.setattr(keras_imdb, "get_file", lambda *a, **k: str(sources["npz"]))
    for options in KERAS_OPTIONS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = keras_imdb.load_data(**options)
        for kind in ("npz", "tar"):
            assert_same(imdb.load_data(sources[kind], **{"num_words": None, **options}, verbose=False), expected)


def test_maxlen_that_keeps_nothing_raises_like_keras(sources):
    with pytest.raises(ValueError, match="no sequence was kept"):
        imdb.load_data(sources["npz"], maxlen=2)


def test_sequences_of_equal_length_still_give_a_1d_object_array(tmp_path):
    path = write_keras_npz(tmp_path / "same.npz", {"train": ([[4, 5], [6, 7]], [0, 1]), "test": ([[4, 4]], [1])})
    (x_train, _), (x_test, _) = imdb.load_data(path, verbose=False)
    assert x_train.shape == (2,) and x_train.dtype == object and x_test.shape == (1,)


def test_shared_subset_is_reproduced_exactly():
    """The definitive check: the first 5,000 train / 1,000 test items of Keras's
    load_data(num_words=500), from the raw review texts."""
    subset, reviews = DATA / "imdb_keras_subset_nw500.npz", DATA / "imdb_reviews.jsonl.gz"
    if not (subset.is_file() and reviews.is_file() and (DATA / "imdb_word_index.json").is_file()):
        pytest.skip(f"the shared IMDB data are not in {DATA}")
    (x_train, y_train), (x_test, y_test) = imdb.load_data(reviews, num_words=500, verbose=False)
    assert len(x_train) == len(x_test) == 25000
    with np.load(subset, allow_pickle=True) as z:  # a file of ours, read-only, from a known source
        keras_x_train, keras_y_train, keras_x_test, keras_y_test = z["arr_0"], z["arr_1"], z["arr_2"], z["arr_3"]
    assert x_train[0][:6] == [1, 14, 22, 16, 43, 2]
    assert [list(s) for s in keras_x_train] == list(x_train[:5000])
    assert [list(s) for s in keras_x_test] == list(x_test[:1000])
    assert_array_equal(keras_y_train, y_train[:5000])
    assert_array_equal(keras_y_test, y_test[:1000])


# ---- the encoded cache ----------------------------------------------------------------------------

def test_text_sources_are_cached_without_pickles(sources, cache):
    first = imdb.load_data(sources["tar"], num_words=None, verbose=False)
    files = list(cache.glob("imdb_encoded-*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as z:  # plain int arrays
        assert z["train_ids"].dtype == np.int32
    assert_same(imdb.load_data(sources["tar"], num_words=None, verbose=False), first)
    assert_same(imdb.load_data(files[0], num_words=None, verbose=False), first)  # the cache is a source too
    files[0].write_bytes(b"PK\x03\x04 damaged")  # a damaged cache is rebuilt
    assert_same(imdb.load_data(sources["tar"], num_words=None, verbose=False), first)


def test_cache_false_writes_nothing(sources, cache):
    imdb.load_data(sources["jsonl"], cache=False, verbose=False)
    assert not cache.exists()


def test_word_index_argument_and_lookup_order(tmp_path, sources):
    other = dict(WORD_INDEX, good=20, great=21)
    (x_train, _), _ = imdb.load_data(sources["jsonl"], num_words=None, seed=0, word_index=other, verbose=False)
    (y_train, _), _ = imdb.load_data(sources["jsonl"], num_words=None, seed=0, verbose=False)
    assert x_train.tolist() != y_train.tolist()
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    (z_train, _), _ = imdb.load_data(sources["jsonl"], num_words=None, seed=0, word_index=path, verbose=False)
    assert z_train.tolist() == x_train.tolist()
    assert imdb.get_word_index(sources["jsonl"].parent / "imdb_word_index.json") == WORD_INDEX


# ---- downloads (file:// URLs) ---------------------------------------------------------------------

def test_path_none_downloads_to_the_cache(tmp_path, cache, monkeypatch, capsys):
    tar = write_tar(tmp_path / "served.tar.gz")
    index = write_word_index(tmp_path)
    monkeypatch.setattr(imdb, "ACLIMDB_URL", tar.as_uri())
    monkeypatch.setattr(imdb, "WORD_INDEX_URL", index.as_uri())
    monkeypatch.setattr(imdb, "WORD_INDEX_MD5", hashlib.md5(index.read_bytes()).hexdigest())
    got = imdb.load_data(num_words=None)
    assert_same(got, keras_reference(STORED))
    assert (cache / "aclImdb_v1.tar.gz").read_bytes() == tar.read_bytes()
    assert json.loads((cache / "imdb_word_index.json").read_text()) == WORD_INDEX
    assert not list(cache.glob("*.part"))
    assert "Downloading" in capsys.readouterr().err
    # Now everything is local: unreachable URLs are never touched.
    monkeypatch.setattr(imdb, "ACLIMDB_URL", (tmp_path / "gone.tar.gz").as_uri())
    monkeypatch.setattr(imdb, "WORD_INDEX_URL", (tmp_path / "gone.json").as_uri())
    assert_same(imdb.load_data(num_words=None), got)
    assert imdb.get_word_index() == WORD_INDEX


def test_failed_or_corrupt_downloads_leave_nothing(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(imdb, "ACLIMDB_URL", (tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(FileNotFoundError, match="could not download .*missing.tar.gz"):
        imdb.load_data(verbose=False)
    index = write_word_index(tmp_path)
    monkeypatch.setattr(imdb, "WORD_INDEX_URL", index.as_uri())
    monkeypatch.setattr(imdb, "WORD_INDEX_MD5", "0" * 32)
    with pytest.raises(FileNotFoundError, match="MD5"):
        imdb.get_word_index()
    assert not any(cache.iterdir())


# ---- bad or hostile input -------------------------------------------------------------------------

def test_unknown_format_names_the_path_and_the_formats(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngood,1\n")
    with pytest.raises(ValueError, match=r"reviews\.csv.*supported formats: aclImdb_v1\.tar\.gz.*jsonl.*imdb\.npz"):
        imdb.load_data(path)
    with pytest.raises(FileNotFoundError, match="nothere"):
        imdb.load_data(tmp_path / "nothere.tar.gz")
    with pytest.raises(ValueError, match="without train/, test/"):
        imdb.load_data(tmp_path)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="without x_train"):
        imdb.load_data(tmp_path / "other.npz")


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 1"), ('{"split": "dev", "label": 1, "id": 1, "rating": 8, "text": "a"}', "split must be"),
    ('{"split": "train", "label": 2, "id": 1, "rating": 8, "text": "a"}', "label 0 or 1"),
    ('{"split": "train", "label": 1}', "line 1"),
])
def test_bad_jsonl_lines(tmp_path, line, message):
    path = tmp_path / "r.jsonl"
    write_word_index(tmp_path)
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        imdb.load_data(path)


@pytest.mark.parametrize("option, value", [("num_words", -1), ("maxlen", 1.5), ("skip_top", None), ("seed", "1"),
                                           ("oov_char", True)])
def test_bad_options(sources, option, value):
    with pytest.raises(ValueError, match=option):
        imdb.load_data(sources["npz"], **{option: value})


class _Mkdir:
    """Pickles as a call to os.mkdir: what a hostile .npz would do to run code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_hostile_npz_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    x = np.empty(1, dtype=object)
    x[0] = _Mkdir(str(marker))
    np.savez(tmp_path / "evil.npz", x_train=x, y_train=np.zeros(1, np.int64), x_test=x, y_test=np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="refusing to load .*mkdir"):
        imdb.load_data(tmp_path / "evil.npz")
    assert not marker.exists()


def test_tar_members_outside_the_layout_are_ignored_and_nothing_is_extracted(tmp_path):
    extra = []
    for name in ("../evil/train/pos/99_9.txt", "/abs/aclImdb/train/pos/98_9.txt", "aclImdb/train/unsup/0_0.txt",
                 "aclImdb/train/pos/../../../x/97_9.txt", "aclImdb/train/urls_pos.txt"):
        info = tarfile.TarInfo(name)
        info.size = 4
        extra.append((info, b"bad!"))
    link = tarfile.TarInfo("aclImdb/train/pos/96_9.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    extra.append((link, None))
    folder = tmp_path / "src"
    folder.mkdir()
    path = write_tar(folder / "a.tar.gz", extra=extra)
    write_word_index(folder)
    assert_same(imdb.load_data(path, num_words=None, verbose=False), keras_reference(STORED))
    assert sorted(p.name for p in folder.iterdir()) == ["a.tar.gz", "imdb_word_index.json"]
    assert not (tmp_path / "evil").exists() and not (folder / "aclImdb").exists()


# ---- lstmfast imdb ------------------------------------------------------------------------------

def tiny_corpus(folder: Path, n: int = 48) -> Path:
    """n train and n test reviews whose words say their label; the word index beside them."""
    rng = np.random.default_rng(0)
    positive, negative, neutral = ["good", "great", "fun"], ["bad", "awful", "end"], ["the", "a", "movie", "it", "was"]
    reviews = []
    for split in ("train", "test"):
        for i in range(n):
            label = i % 2
            words = list(rng.choice(neutral, 8)) + list(rng.choice(positive if label else negative, 3))
            rng.shuffle(words)
            reviews.append((split, label, i, 8 if label else 2, " ".join(words)))
    folder.mkdir(parents=True, exist_ok=True)
    write_word_index(folder)
    return write_jsonl(folder / "tiny.jsonl.gz", reviews)


def test_cli_end_to_end(tmp_path, capsys):
    data = tiny_corpus(tmp_path / "data")
    metrics, model = tmp_path / "m.json", tmp_path / "imdb.lstmfast"
    rc = cli.main(["imdb", "--data", str(data), "--limit", "40", "--epochs", "2", "--maxlen", "12",
                   "--batch-size", "16", "--quiet", "--metrics-json", str(metrics), "--save", str(model)])
    assert rc == 0, capsys.readouterr().err
    m = json.loads(metrics.read_text())
    assert m["task"] == "imdb" and m["config"] == "tutorial" and m["train_samples"] == m["test_samples"] == 40
    assert len(m["epoch_seconds"]) == len(m["val_accuracy"]) == 2 and m["test_accuracy"] == m["val_accuracy"][-1]
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["params"] == 2_691_713  # Keras's imdb_lstm.py count
    meta = saving.read_metadata(model)
    assert meta["task"] == "imdb" and meta["maxlen"] == 12 and meta["num_words"] == 20000
    assert capsys.readouterr().out == ""


def test_cli_bidirectional_builds_keras_io_model(tmp_path):
    data = tiny_corpus(tmp_path / "data", n=16)
    metrics = tmp_path / "m.json"
    assert cli.main(["imdb", "--config", "bidirectional", "--data", str(data), "--limit", "16", "--epochs", "1",
                     "--maxlen", "8", "--quiet", "--metrics-json", str(metrics)]) == 0
    m = json.loads(metrics.read_text())
    assert m["params"] == 2_757_761 and m["maxlen"] == 8  # keras.io's "Bidirectional LSTM on IMDB" count


@pytest.mark.parametrize("bad, message", [
    (["--data", "{tmp}/nothere.jsonl.gz"], "nothere.jsonl.gz does not exist"),
    (["--data", "{tmp}/notes.txt"], "supported formats"),
    (["--save", "{tmp}/no/such/dir/m.lstmfast"], "does not exist"),
    (["--save", "{tmp}"], "is a directory"),
    (["--metrics-json", "{tmp}/no/such/dir/m.json"], "does not exist"),
])
def test_cli_bad_input_exits_2_and_overwrites_nothing(tmp_path, capsys, bad, message):
    data = tiny_corpus(tmp_path / "data", n=8)
    (tmp_path / "notes.txt").write_text("just some notes\n")
    metrics, model = tmp_path / "old.json", tmp_path / "old.lstmfast"
    metrics.write_text("old metrics")
    model.write_text("old model")
    argv = ["imdb", "--data", str(data), "--epochs", "1", "--quiet", "--metrics-json", str(metrics),
            "--save", str(model)] + [a.format(tmp=tmp_path) for a in bad]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lstmfast imdb: error:") and message in err
    assert metrics.read_text() == "old metrics" and model.read_text() == "old model"


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--limit", "-3"], ["--config", "cnn"], ["--maxlen", "x"]])
def test_cli_rejects_bad_options(bad, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["imdb"] + bad)
    assert e.value.code == 2 and "imdb" in capsys.readouterr().err
