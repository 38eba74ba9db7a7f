"""The char-level text task: loading and batching text, the model and its inference twin,
``lstmfast text train`` / ``lstmfast text generate`` end to end, and bad input.

Every training run here is tiny (tens of units, a few kilobytes of text, well under a second).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from lstmfast import backend, cli, saving
from lstmfast.datasets import text as text_data
from lstmfast.datasets.text import CharVocab
from lstmfast.layers import Dense
from lstmfast.models import Sequential
from lstmfast.tasks import text as text_task

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHAKESPEARE = DATA / "tinyshakespeare.txt"
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n")
TINY = ["--layers", "1", "--units", "8", "--seq-len", "10", "--batch-size", "4", "--epochs", "1", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 8, encoding="utf-8")  # 1,176 characters
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained once through the CLI, with its metrics."""
    d = tmp_path_factory.mktemp("trained")
    text = d / "corpus.txt"
    text.write_text(TEXT * 8, encoding="utf-8")
    model, metrics = d / "char.lstmfast", d / "train.json"
    rc = cli.main(["text", "train", str(text), "--save", str(model), "--layers", "2", "--units", "16",
                   "--seq-len", "20", "--batch-size", "4", "--epochs", "2", "--seed", "3", "--quiet",
                   "--metrics-json", str(metrics)])
    assert rc == 0
    return model, json.loads(metrics.read_text())


def run_cli(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---- reading text and the vocabulary ----------------------------------------------------------

def test_read_text_and_vocab_roundtrip(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffhello wörld ☃\n".encode("utf-8"))
    text = text_data.read_text(path)
    assert text == "hello wörld ☃\n"  # the byte-order mark is dropped
    vocab = CharVocab.from_text(text)
    assert list(vocab.chars) == sorted(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == np.int32 and vocab.decode(ids) == text
    assert CharVocab.from_list(list(vocab.chars)) == vocab


def test_vocab_fast_path_matches_dict_path():
    text = TEXT * 3
    vocab = CharVocab.from_text(text)
    index = vocab.index
    assert_array_equal(vocab.encode(text), [index[c] for c in text])


def test_encode_lists_unknown_characters():
    vocab = CharVocab.from_text("abc")
    with pytest.raises(ValueError, match=r"2 character\(s\) are not in the model's vocabulary: 'x', 'z'"):
        vocab.encode("abxzx")


@pytest.mark.parametrize("chars", [[], ["ab"], ["a", "a"], "abc", [1]])
def test_vocab_from_bad_list(chars):
    with pytest.raises(ValueError, match="vocabulary"):
        CharVocab.from_list(chars)


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        text_data.read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        text_data.read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("line one\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8 text: byte 0xe9 at offset 12 \(line 2\)"):
        text_data.read_text(tmp_path / "latin1.txt")
    (tmp_path / "short.txt").write_text("abc", encoding="utf-8")
    with pytest.raises(ValueError, match="holds 3 characters, fewer than the 11 needed"):
        text_data.read_text(tmp_path / "short.txt", min_chars=11)
    with pytest.raises(IsADirectoryError):
        text_data.read_text(tmp_path)


def test_train_val_split_holds_out_the_tail():
    ids = np.arange(1000)
    train, val = text_data.train_val_split(ids)
    assert_array_equal(train, np.arange(900))
    assert_array_equal(val, np.arange(900, 1000))
    with pytest.raises(ValueError, match="too short"):
        text_data.train_val_split(np.arange(5))


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} is not present")
def test_tinyshakespeare_loads():
    vocab, train, val = text_task.prepare_data(SHAKESPEARE, seq_len=100, batch_size=64)
    assert len(vocab) == 65 and vocab.chars[0] == "\n" and vocab.chars[1] == " "
    assert len(train) + len(val) == 1_115_394
    assert len(val) == round(1_115_394 * 0.1)
    text = SHAKESPEARE.read_text(encoding="utf-8")
    assert vocab.decode(val[:50]) == text[len(train):len(train) + 50]


# ---- stateful batches --------------------------------------------------------------------------

@pytest.mark.parametrize("n,B,T", [(101, 4, 7), (1000, 8, 10), (50, 1, 49), (23, 5, 1), (30, 3, 100)])
def test_stateful_batches_are_contiguous_streams(n, B, T):
    ids = np.arange(n)
    batches = list(text_data.stateful_batches(ids, B, T))
    L = (n - 1) // B
    assert len(batches) == text_data.count_batches(n, B, T) == math.ceil(L / T)
    x = np.concatenate([b[0] for b in batches], axis=1)        # [B, L]: the streams, batch after batch
    y = np.concatenate([b[1] for b in batches], axis=1)
    assert x.shape == y.shape == (B, L)
    for b in range(B):
        assert_array_equal(x[b], np.arange(b * L, b * L + L))  # row b of batch k+1 continues row b of batch k
    assert_array_equal(y, x + 1)                                # targets are the next character
    assert all(bx.shape[1] == T for bx, _ in batches[:-1]) and 1 <= batches[-1][0].shape[1] <= T


def test_stateful_batches_drop_remainder():
    batches = list(text_data.stateful_batches(np.arange(101), 4, 7, drop_remainder=True))
    assert len(batches) == 25 // 7 == text_data.count_batches(101, 4, 7, drop_remainder=True)
    assert all(x.shape == (4, 7) for x, _ in batches)


def test_stateful_batches_errors():
    with pytest.raises(ValueError, match="lower the batch size"):
        list(text_data.stateful_batches(np.arange(4), 8, 2))
    with pytest.raises(ValueError, match="1-D"):
        list(text_data.stateful_batches(np.zeros((2, 2)), 1, 1))


# ---- the model and its inference twin ----------------------------------------------------------

@pytest.mark.parametrize("embedding", [0, 6])
def test_charlm_matches_the_stateful_keras_model(embedding):
    backend.set_random_seed(0)
    V, B, T = 11, 3, 7
    model = text_task.build_model(V, layers=2, units=9, dropout=0.3, embedding=embedding, batch_size=B)
    charlm = text_task.CharLM.from_model(model)
    ids = np.random.default_rng(1).integers(0, V, 200)
    eye = np.eye(V, dtype=np.float32)
    model.reset_states()
    state = charlm.initial_state(B)
    for x, _ in text_data.stateful_batches(ids, B, T):
        probs = model.predict_on_batch(x if embedding else eye[x])       # state carried by the layers
        logp, state = charlm.log_probs(x, state)                          # state carried explicitly
        assert_allclose(np.exp(logp), probs, rtol=1e-5, atol=1e-6)


def test_charlm_step_by_step_equals_whole_sequence():
    backend.set_random_seed(2)
    model = text_task.build_model(7, layers=2, units=5, dropout=0.0, batch_size=2)
    charlm = text_task.CharLM.from_model(model)
    ids = np.random.default_rng(3).integers(0, 7, (2, 12))
    whole, end_state = charlm.log_probs(ids, charlm.initial_state(2))
    state = charlm.initial_state(2)
    for t in range(12):
        logp, state = charlm.step(ids[:, t], state)
        assert_allclose(logp, whole[:, t], rtol=1e-5, atol=1e-6)
    for a, b in zip(state, end_state):
        assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert_allclose(np.exp(whole).sum(-1), 1.0, rtol=1e-5)


# ---- end to end through the CLI ----------------------------------------------------------------

def test_train_writes_metrics_and_model(trained):
    model, m = trained
    for key in ("val_loss", "val_perplexity", "train_loss", "epochs", "seconds", "chars_per_second", "history"):
        assert key in m
    assert m["epochs"] == 2 and len(m["history"]) == 2
    assert m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"]))
    assert m["val_loss"] == min(h["val_loss"] for h in m["history"])
    assert m["val_loss"] < math.log(m["vocab_size"])  # better than a uniform guess
    meta = saving.read_metadata(model)
    assert meta["task"] == "text" and "".join(meta["vocab"]) == "".join(sorted(set(TEXT)))
    assert meta["config"]["units"] == 16 and meta["val_loss"] == m["val_loss"]


def test_saved_model_reproduces_the_validation_loss(trained):
    model, m = trained
    charlm, vocab, meta = text_task.load(model)
    ids = vocab.encode(TEXT * 8)
    _, val = text_data.train_val_split(ids)
    B = text_task._val_batch_size(len(val), 4, 20)
    assert charlm.evaluate(val, B, 20) == pytest.approx(m["val_loss"], rel=1e-6)


def test_generate_greedy_sampling_and_beam(trained, tmp_path, capsys):
    model, _ = trained
    out_json = tmp_path / "gen.json"
    rc, out, _ = run_cli(["text", "generate", str(model), "--length", "40", "--prime", "All:\n",
                          "--temperature", "0", "--metrics-json", str(out_json)], capsys)
    assert rc == 0
    g = json.loads(out_json.read_text())
    assert g["length"] == 40 and len(g["text"]) == 40 and g["method"] == "greedy" and g["prime"] == "All:\n"
    assert out == "All:\n" + g["text"] + "\n"
    assert set(g["text"]) <= set(TEXT)
    # greedy is deterministic; a width-1 beam is greedy too
    rc, out2, _ = run_cli(["text", "generate", str(model), "--length", "40", "--prime", "All:\n",
                           "--temperature", "0"], capsys)
    assert rc == 0 and out2 == out
    rc, _, _ = run_cli(["text", "generate", str(model), "--length", "40", "--prime", "All:\n", "--beam", "1",
                        "--quiet", "--metrics-json", str(out_json)], capsys)
    assert rc == 0 and json.loads(out_json.read_text())["text"] == g["text"]
    rc, _, _ = run_cli(["text", "generate", str(model), "--length", "30", "--beam", "3", "--quiet",
                        "--metrics-json", str(out_json)], capsys)
    b = json.loads(out_json.read_text())
    assert rc == 0 and b["method"] == "beam" and len(b["text"]) == 30 and b["log_prob"] <= 0
    # sampling: seeded runs repeat; top-k 1 is greedy
    texts = []
    for _ in range(2):
        rc, _, _ = run_cli(["text", "generate", str(model), "--length", "50", "--seed", "5", "--temperature", "1.2",
                            "--top-p", "0.9", "--quiet", "--metrics-json", str(out_json)], capsys)
        assert rc == 0
        texts.append(json.loads(out_json.read_text())["text"])
    assert texts[0] == texts[1] and len(texts[0]) == 50
    rc, _, _ = run_cli(["text", "generate", str(model), "--length", "40", "--prime", "All:\n", "--top-k", "1",
                        "--quiet", "--metrics-json", str(out_json)], capsys)
    assert rc == 0 and json.loads(out_json.read_text())["text"] == g["text"]


def test_train_with_embedding_and_time_budget(corpus, tmp_path, capsys):
    model, metrics = tmp_path / "m.lstmfast", tmp_path / "m.json"
    rc, out, err = run_cli(["text", "train", str(corpus), "--save", str(model), "--layers", "1", "--units", "8",
                            "--seq-len", "10", "--batch-size", "4", "--embedding", "5", "--minutes", "0.01",
                            "--lr-schedule", "cosine", "--metrics-json", str(metrics)], capsys)
    assert rc == 0, err
    m = json.loads(metrics.read_text())
    assert model.exists() and m["seconds"] < 10 and m["history"]
    assert m["val_loss"] == min(h["val_loss"] for h in m["history"])
    assert "val_loss" in out and "perplexity" in out
    assert text_task.load(model)[0].embeddings.shape == (len(set(TEXT)), 5)


def test_val_every_adds_checkpoints(corpus, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    rc, _, err = run_cli(["text", "train", str(corpus), "--save", str(tmp_path / "m.lstmfast"), *TINY,
                          "--val-every", "10", "--metrics-json", str(metrics)], capsys)
    assert rc == 0, err
    epochs = [h["epoch"] for h in json.loads(metrics.read_text())["history"]]
    n = text_data.count_batches(len(TEXT * 8) - round(len(TEXT * 8) * 0.1), 4, 10)
    assert epochs == [round(k / n, 4) for k in range(10, n, 10)] + [1.0]


def test_weight_decay_trains_with_adamw_and_shrinks_the_weights(corpus, tmp_path, capsys):
    norms = {}
    for decay in ("0", "0.3"):
        model, metrics = tmp_path / f"m{decay}.lstmfast", tmp_path / f"m{decay}.json"
        rc, _, err = run_cli(["text", "train", str(corpus), "--save", str(model), *TINY, "--epochs", "3",
                              "--lr", "0.01", "--weight-decay", decay, "--metrics-json", str(metrics)], capsys)
        assert rc == 0, err
        assert json.loads(metrics.read_text())["config"]["weight_decay"] == float(decay)
        charlm = text_task.load(model)[0]
        norms[decay] = math.sqrt(sum(float(np.sum(w.astype(np.float64) ** 2))
                                     for triple in charlm.lstm_weights for w in triple))
    # 3 epochs x 26 steps at lr 0.01: each weight is scaled by (1 - 0.003) per step (0.79 in all, less
    # what the gradients put back: 0.86 measured); without decay the two runs are identical
    assert norms["0.3"] < 0.95 * norms["0"], norms


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_weight_decay_out_of_range_is_refused(corpus, tmp_path, capsys, value):
    rc, _, err = run_cli(["text", "train", str(corpus), "--save", str(tmp_path / "m.lstmfast"), *TINY,
                          "--weight-decay", value], capsys)
    assert rc == 2 and "weight_decay must lie in [0, 1)" in err and value in err


def test_tutorial_configuration_runs(corpus):
    r = text_task.tutorial(corpus, epochs=1, window=10, units=8, max_windows=64, generate_chars=15, verbose=0)
    assert len(r["text"]) == 15 and len(r["seed"]) == 10 and len(r["loss"]) == 1
    layers = r["model"].layers
    assert [type(layer).__name__ for layer in layers] == ["LSTM", "Dropout", "LSTM", "Dropout", "Dense"]
    assert layers[0].weights["kernel"].shape == (1, 32)  # one scaled integer per step


# ---- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content,message", [
    (b"", "is empty"),
    (b"short text", "fewer than the 11 needed"),
    (b"\xff\xfe not utf-8", "not UTF-8 text"),
    ("abcdefghij" * 4, "too short for 4 streams"),
])
def test_train_bad_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    save = tmp_path / "out.lstmfast"
    rc, _, err = run_cli(["text", "train", str(path), "--save", str(save), *TINY], capsys)
    assert rc == 2 and message in err and err.startswith("lstmfast text: error:")
    assert not save.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.txt"]  # no temporary files left behind


def test_train_failure_keeps_an_existing_model(tmp_path, capsys):
    path = tmp_path / "short.txt"
    path.write_text("too short", encoding="utf-8")
    save = tmp_path / "old.lstmfast"
    save.write_bytes(b"previous model")
    rc, _, err = run_cli(["text", "train", str(path), "--save", str(save), *TINY], capsys)
    assert rc == 2 and "fewer than" in err
    assert save.read_bytes() == b"previous model"


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_an_unwritable_metrics_file_fails_before_training(corpus, tmp_path, capsys, where):
    # Checked by the CLI before any task runs, so no training time is lost and nothing is saved.
    metrics = tmp_path / "no" / "m.json" if where == "missing-dir" else tmp_path
    save = tmp_path / "m.lstmfast"
    rc, out, err = run_cli(["text", "train", str(corpus), "--save", str(save), *TINY,
                            "--metrics-json", str(metrics)], capsys)
    assert rc == 2 and "--metrics-json" in err
    assert ("does not exist" if where == "missing-dir" else "is a directory") in err
    assert not save.exists() and "epoch" not in out.lower()


def test_train_missing_file_and_bad_save_path(corpus, tmp_path, capsys):
    rc, _, err = run_cli(["text", "train", str(tmp_path / "nope.txt"), "--save", str(tmp_path / "m"), *TINY], capsys)
    assert rc == 2 and "no such file" in err and not (tmp_path / "m").exists()
    rc, _, err = run_cli(["text", "train", str(corpus), "--save", str(tmp_path / "no" / "m"), *TINY], capsys)
    assert rc == 2 and "does not exist" in err
    rc, _, err = run_cli(["text", "train", str(corpus), "--save", str(corpus), *TINY], capsys)
    assert rc == 2 and "is the input file" in err and "itself" in err
    assert corpus.read_text(encoding="utf-8") == TEXT * 8
    rc, _, err = run_cli(["text", "train", str(corpus), "--save", str(tmp_path / "m"), *TINY, "--dropout", "1.5"],
                         capsys)
    assert rc == 2 and "dropout must lie in [0, 1)" in err


def test_generate_rejects_unknown_prime_characters(trained, capsys):
    model, _ = trained
    rc, out, err = run_cli(["text", "generate", str(model), "--length", "5", "--prime", "All: ZQ"], capsys)
    assert rc == 2 and out == ""
    assert "2 character(s) the model never saw: 'Q', 'Z'" in err


def test_generate_refuses_other_models(tmp_path, capsys):
    other = Sequential([Dense(2, input_shape=(3,))])
    other.save(tmp_path / "imdb.lstmfast", metadata={"task": "imdb"})
    rc, _, err = run_cli(["text", "generate", str(tmp_path / "imdb.lstmfast"), "--length", "5"], capsys)
    assert rc == 2 and "was saved by the 'imdb' task, not 'text'" in err
    other.save(tmp_path / "plain.lstmfast")
    rc, _, err = run_cli(["text", "generate", str(tmp_path / "plain.lstmfast"), "--length", "5"], capsys)
    assert rc == 2 and "is not a text model" in err
    (tmp_path / "junk.lstmfast").write_text("not a model")
    rc, _, err = run_cli(["text", "generate", str(tmp_path / "junk.lstmfast"), "--length", "5"], capsys)
    assert rc == 2 and "not an lstmfast model file" in err
    rc, _, err = run_cli(["text", "generate", str(tmp_path / "missing.lstmfast")], capsys)
    assert rc == 2 and "no such file" in err


def test_generate_bad_options(trained, capsys):
    model, _ = trained
    rc, _, err = run_cli(["text", "generate", str(model), "--beam", "2", "--temperature", "0.5"], capsys)
    assert rc == 2 and "does not combine" in err
    rc, _, err = run_cli(["text", "generate", str(model), "--top-p", "1.5"], capsys)
    assert rc == 2 and "top_p must lie in (0, 1]" in err
    rc, _, err = run_cli(["text", "generate", str(model), "--temperature", "-1"], capsys)
    assert rc == 2 and "temperature must be >= 0" in err
