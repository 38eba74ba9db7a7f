"""Forecasting (datasets.timeseries, tasks.forecast), sequence to sequence (tasks.seq2seq) and
History.plot: data utilities on hand-made inputs, the two commands end to end in tiny
configurations, the forecaster against its baselines on the shared data, beam search on a toy
decoder, plots, and bad inputs (exit status 2, nothing overwritten)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast
from lstmfast import cli, saving
from lstmfast.callbacks import History
from lstmfast.datasets import timeseries as ts
from lstmfast.layers import Dense
from lstmfast.models import Sequential
from lstmfast.sampling import beam_search
from lstmfast.tasks import forecast, seq2seq

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MISSING_MPL = "matplotlib is not installed: pip install matplotlib (or lstmfast[plot])"


@pytest.fixture(autouse=True)
def one_engine_thread():
    """Results do not depend on the thread count; on a busy two-core machine two engine threads
    per small problem made these trainings ten to a hundred times slower (see the report)."""
    original = lstmfast.get_num_threads()
    lstmfast.set_num_threads(1)
    yield
    lstmfast.set_num_threads(original)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def monthly_csv(path: Path, n: int = 72, column: str = "Sales") -> Path:
    """A trend plus a yearly cycle, positive, labelled by month."""
    t = np.arange(n)
    values = 100 + 2 * t + 20 * np.sin(2 * np.pi * t / 12)
    rows = [f"{1990 + i // 12}-{i % 12 + 1:02d},{v:.3f}" for i, v in enumerate(values)]
    return write(path, f"Month,{column}\n" + "\n".join(rows) + "\n")


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def hide_matplotlib(monkeypatch):
    """Make ``import matplotlib`` fail as if it were not installed."""
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


# ---- windows --------------------------------------------------------------------------------------

def test_windows_one_column():
    x, y = ts.make_windows(np.arange(10.0), lookback=3, horizon=2)
    assert x.shape == (6, 3, 1) and y.shape == (6, 2)
    assert_array_equal(x[0, :, 0], [0, 1, 2])
    assert_array_equal(y[0], [3, 4])
    assert_array_equal(x[-1, :, 0], [5, 6, 7])
    assert_array_equal(y[-1], [8, 9])


def test_windows_stride_drops_the_incomplete_tail():
    x, y = ts.make_windows(np.arange(11), lookback=3, horizon=1, stride=3)
    assert_array_equal(x[:, 0, 0], [0, 3, 6])          # (11 - 3 - 1) // 3 + 1 = 3 windows
    assert_array_equal(y[:, 0], [3, 6, 9])


def test_windows_multi_column_and_targets():
    series = np.stack([np.arange(8), 100 + np.arange(8), 200 + np.arange(8)], axis=1)   # [8, 3]
    x, y = ts.make_windows(series, lookback=4, horizon=2)
    assert x.shape == (3, 4, 3) and y.shape == (3, 2, 3)
    assert_array_equal(x[1, :, 1], [101, 102, 103, 104])
    assert_array_equal(y[1, :, 2], [205, 206])
    _, y_one = ts.make_windows(series, 4, 2, target_columns=1)
    assert y_one.shape == (3, 2)
    assert_array_equal(y_one[0], [104, 105])
    _, y_two = ts.make_windows(series, 4, 2, target_columns=[0, 2])
    assert y_two.shape == (3, 2, 2)
    assert_array_equal(y_two[2, 1], [7, 207])


def test_windows_bad_arguments():
    with pytest.raises(ValueError, match="fewer than lookback \\+ horizon"):
        ts.make_windows(np.arange(4), 3, 2)
    with pytest.raises(ValueError, match="lookback"):
        ts.make_windows(np.arange(10), 0)
    with pytest.raises(ValueError, match="target column 3"):
        ts.make_windows(np.zeros((10, 2)), 3, target_columns=3)
    with pytest.raises(ValueError, match="\\[N\\] or \\[N, F\\]"):
        ts.make_windows(np.zeros((4, 2, 2)), 1)


def test_train_test_split_keeps_the_tail():
    train, test = ts.train_test_split(np.arange(10), 3)
    assert_array_equal(train, np.arange(7))
    assert_array_equal(test, [7, 8, 9])
    assert len(ts.train_test_split(np.arange(10), 0.25)[1]) == 2       # round(2.5) = 2
    with pytest.raises(ValueError, match="at least one training step"):
        ts.train_test_split(np.arange(10), 10)
    with pytest.raises(ValueError, match="fraction"):
        ts.train_test_split(np.arange(10), 1.5)


# ---- scalers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [ts.MinMaxScaler, ts.StandardScaler])
def test_scaler_uses_training_statistics_only(cls):
    series = np.concatenate([np.linspace(0, 10, 40), np.linspace(50, 90, 10)])   # the tail is far larger
    train, test = ts.train_test_split(series, 10)
    scaler = cls().fit(train)
    z_train = scaler.transform(train)
    if cls is ts.MinMaxScaler:
        assert z_train.min() == pytest.approx(0.0) and z_train.max() == pytest.approx(1.0)
        assert scaler.transform(test).min() > 1.0          # the tail is not squeezed into [0, 1]
    else:
        assert z_train.mean() == pytest.approx(0.0, abs=1e-12) and z_train.std() == pytest.approx(1.0)
    assert_allclose(scaler.inverse_transform(scaler.transform(test)), test, rtol=1e-12)
    again = ts.scaler_from_config(json.loads(json.dumps(scaler.get_config())))
    assert_allclose(again.transform(test), scaler.transform(test))


def test_scaler_columns_and_errors():
    data = np.array([[0.0, 10.0], [2.0, 30.0], [4.0, 10.0]])
    scaler = ts.MinMaxScaler((-1, 1)).fit(data)
    assert_allclose(scaler.transform(data), [[-1, -1], [0, 1], [1, -1]])
    assert_allclose(scaler.inverse_transform(np.array([[0.0]]), columns=[1]), [[20.0]])   # one target column
    constant = ts.StandardScaler().fit(np.full(5, 3.0))
    assert_allclose(constant.transform([3.0, 4.0]), [0.0, 1.0])
    with pytest.raises(ValueError, match="not fitted"):
        ts.MinMaxScaler().transform([1.0])
    with pytest.raises(ValueError, match="2 column"):
        scaler.transform(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="low < high"):
        ts.MinMaxScaler((1, 1))


# ---- baselines ------------------------------------------------------------------------------------

def test_naive_and_seasonal_naive():
    history = np.array([1.0, 2, 3, 4, 5, 6, 7])
    assert_array_equal(ts.naive_forecast(history, 3), [7, 7, 7])
    # season 3: the last season is 5, 6, 7; horizons beyond one season repeat it
    assert_array_equal(ts.seasonal_naive_forecast(history, 5, 3), [5, 6, 7, 5, 6])
    batch = np.array([[1.0, 2, 3, 4], [10, 20, 30, 40]])
    assert_array_equal(ts.seasonal_naive_forecast(batch, 2, 2), [[3, 4], [30, 40]])
    assert_array_equal(ts.naive_forecast(batch, 2), [[4, 4], [40, 40]])
    with pytest.raises(ValueError, match="at least season=12"):
        ts.seasonal_naive_forecast(history, 1, 12)


def test_seasonal_naive_is_exact_on_a_pure_cycle():
    cycle = np.tile([3.0, 1.0, 4.0, 1.0, 5.0], 4)
    assert_array_equal(ts.seasonal_naive_forecast(cycle[:15], 5, 5), cycle[15:])


# ---- CSV ------------------------------------------------------------------------------------------

def test_csv_loads_a_column_and_times(tmp_path):
    path = write(tmp_path / "s.csv", '\ufeff"Month","Sales","Other"\r\n"2000-01",1.5,x\r\n"2000-02",2.5,y\r\n\r\n')
    series = ts.load_csv(path, "Sales")
    assert_array_equal(series.values, [1.5, 2.5])
    assert series.times == ["2000-01", "2000-02"] and series.columns == ["Sales"] and series.lines == [2, 3]
    assert_array_equal(ts.load_csv_column(path, "sales"), [1.5, 2.5])             # case-insensitive
    assert_array_equal(ts.load_csv(tmp_path / "s.csv", ["Sales", "Sales"]).values, [[1.5, 1.5], [2.5, 2.5]])


def test_csv_missing_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "s.csv", "Month,Sales\n2000-01,1\n")
    with pytest.raises(ValueError, match="no column named 'Passengers'; the columns are: 'Month', 'Sales'"):
        ts.load_csv(path, "Passengers")


def test_csv_non_numeric_names_line_column_and_text(tmp_path):
    path = write(tmp_path / "s.csv", "Month,Sales\n2000-01,1\n2000-02,12O\n")
    with pytest.raises(ValueError, match="line 3, column 'Sales': '12O' is not a number"):
        ts.load_csv(path, "Sales")


def test_csv_missing_values_rules(tmp_path):
    path = write(tmp_path / "s.csv", "t,v\n0,\n1,1\n2,NA\n3,\n4,4\n5,5\n6,\n")
    interp = ts.load_csv(path, "v")                          # default: interpolate inside, drop the ends
    assert_allclose(interp.values, [1, 2, 3, 4, 5])
    assert interp.times == ["1", "2", "3", "4", "5"] and interp.interpolated == 2 and interp.dropped == 2
    skipped = ts.load_csv(path, "v", missing="skip")
    assert_array_equal(skipped.values, [1, 4, 5]) and skipped.dropped == 4
    with pytest.raises(ValueError, match="line 2, column 'v': missing value"):
        ts.load_csv(path, "v", missing="error")
    with pytest.raises(ValueError, match="missing must be one of"):
        ts.load_csv(path, "v", missing="zero")


def test_csv_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such CSV file"):
        ts.load_csv(tmp_path / "absent.csv", "v")
    with pytest.raises(ValueError, match="empty"):
        ts.load_csv(write(tmp_path / "e.csv", ""), "v")
    with pytest.raises(ValueError, match="no data rows"):
        ts.load_csv(write(tmp_path / "h.csv", "t,v\n"), "v")


def test_infer_season():
    assert ts.infer_season([f"2000-{m:02d}" for m in range(1, 13)]) == 12
    assert ts.infer_season(["2000-01-01", "2000-04-01", "2000-07-01", "2000-10-01"]) == 4
    assert ts.infer_season(["19580329", "19580405", "19580412"]) == 52
    assert ts.infer_season(["1700", "1701", "1702"]) is None
    assert ts.infer_season(None) is None


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")
def test_shared_data_loads():
    airline = ts.load_csv(DATA / "airline-passengers.csv", "Passengers")
    assert len(airline) == 144 and airline.values[0] == 112 and airline.values[-1] == 432
    assert ts.infer_season(airline.times) == 12
    sunspots = ts.load_csv(DATA / "monthly-sunspots.csv", "Sunspots")
    assert len(sunspots) == 2820 and sunspots.values.min() == 0
    co2 = ts.load_csv(DATA / "statsmodels-co2.csv", "co2")          # 59 empty cells, none at the ends
    assert co2.interpolated == 59 and co2.dropped == 0 and not np.isnan(co2.values).any()
    assert len(ts.load_csv(DATA / "statsmodels-co2.csv", "co2", missing="skip")) == len(co2) - 59


# ---- forecast -------------------------------------------------------------------------------------

def test_forecast_end_to_end(tmp_path, capsys):
    csv_path = monthly_csv(tmp_path / "sales.csv")
    metrics_path, model_path = tmp_path / "m.json", tmp_path / "f.lstmfast"
    code, out, err = run_cli(["forecast", csv_path, "--column", "Sales", "--lookback", "6", "--horizon", "3",
                              "--test-size", "12", "--units", "8", "--epochs", "3", "--transform", "log-diff",
                              "--metrics-json", metrics_path, "--save", model_path], capsys)
    assert code == 0, err
    assert "seasonal-naive(12)" in out and "RMSE" in out
    metrics = json.loads(metrics_path.read_text())
    for key in ("rmse", "mae", "naive_rmse", "naive_mae", "seasonal_naive_rmse", "seasonal_naive_mae"):
        assert np.isfinite(metrics[key]), key
    assert metrics["season"] == 12 and metrics["origins"] == 12 - 3 + 1 and len(metrics["rmse_by_step"]) == 3
    # the saved scaler was fitted on the training part only (the first 72 - 12 steps, log-differenced)
    meta = saving.read_metadata(model_path)
    assert meta["task"] == "forecast" and meta["lookback"] == 6 and meta["transform"] == "log-diff"
    y = ts.load_csv_column(csv_path, "Sales")
    z_train = np.diff(np.log(y[:60]))
    expected = ts.MinMaxScaler((-1, 1)).fit(z_train)
    assert_allclose(meta["scaler"]["offset"], expected.offset_)
    assert_allclose(meta["scaler"]["factor"], expected.factor_)


def test_forecast_baselines_match_their_definitions(tmp_path):
    csv_path = monthly_csv(tmp_path / "sales.csv", n=48)
    result = forecast.run(csv_path, "Sales", lookback=4, horizon=2, test_size=8, units=4, epochs=1, verbose=0)
    y = ts.load_csv_column(csv_path, "Sales")
    origins = np.arange(40, 47)
    targets = y[origins[:, None] + np.arange(2)]
    naive = y[origins - 1][:, None].repeat(2, axis=1)
    seasonal = y[origins[:, None] + np.arange(2) - 12]
    assert result["naive_rmse"] == pytest.approx(np.sqrt(np.mean((naive - targets) ** 2)))
    assert result["seasonal_naive_mae"] == pytest.approx(np.mean(np.abs(seasonal - targets)))


def test_forecast_without_season(tmp_path):
    path = write(tmp_path / "y.csv", "year,v\n" + "\n".join(f"{1900 + i},{np.sin(i / 3):.4f}" for i in range(40)))
    result = forecast.run(path, "v", lookback=3, test_size=5, units=4, epochs=1, verbose=0, transform="none")
    assert result["season"] is None and result["seasonal_naive_rmse"] is None and np.isfinite(result["rmse"])
    assert forecast.run(path, "v", lookback=3, test_size=5, units=4, epochs=1, verbose=0,
                        season=4)["seasonal_naive_rmse"] is not None


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")
def test_forecast_beats_seasonal_naive_on_airline_passengers():
    result = forecast.run(DATA / "airline-passengers.csv", "Passengers", transform="log-diff", verbose=0)
    assert result["rmse"] < 0.7 * result["seasonal_naive_rmse"], result
    assert result["rmse"] < result["naive_rmse"]


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")
def test_forecast_beats_naive_on_sunspots():
    result = forecast.run(DATA / "monthly-sunspots.csv", "Sunspots", verbose=0)
    assert result["rmse"] < 0.98 * result["naive_rmse"], result


def test_number_patterns():
    predictions = forecast.number_patterns()
    assert predictions["6,7,8"] == pytest.approx(9, abs=0.4)
    assert predictions["2,4,8"] == pytest.approx(16, abs=0.8)


# ---- seq2seq --------------------------------------------------------------------------------------

def test_seq2seq_data():
    rng = np.random.default_rng(0)
    questions, answers = seq2seq.generate("addition", 200, 2, rng)
    assert len(set(questions)) == 200
    for q, a in zip(questions, answers):
        left, right = q.split("+")
        assert int(left) + int(right) == int(a) and len(left) <= 2 and len(right) <= 2
    test_q, _ = seq2seq.generate("addition", 50, 2, rng, exclude=set(questions))
    assert not set(test_q) & set(questions)
    every, _ = seq2seq.generate("reverse", 110, 2, rng)             # the whole space: 10 + 100 strings
    assert len(set(every)) == 110
    with pytest.raises(ValueError, match="only 10 distinct"):
        seq2seq.generate("reverse", 11, 1, rng)
    enc, dec_in, dec_out = seq2seq.vectorize("addition", 2, ["12+5"], ["17"])
    decode = lambda a: "".join(seq2seq.VOCAB[i] for i in a[0].argmax(-1))   # noqa: E731
    assert decode(enc) == " 5+21"                   # left-padded, read backwards
    assert decode(dec_in) == "^71 " and decode(dec_out) == "71$ "   # least-significant digit first


def test_seq2seq_end_to_end_tiny(tmp_path, capsys):
    metrics_path, model_path = tmp_path / "s.json", tmp_path / "s.lstmfast"
    code, out, err = run_cli(["seq2seq", "--task", "addition", "--digits", "2", "--samples", "300",
                              "--test-samples", "30", "--epochs", "2", "--units", "16", "--beam", "2",
                              "--metrics-json", metrics_path, "--save", model_path], capsys)
    assert code == 0, err
    assert "Held-out exact match" in out
    metrics = json.loads(metrics_path.read_text())
    for key in ("exact_match", "greedy_exact_match", "beam_exact_match"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["epochs"] == 2 and metrics["seconds"] > 0 and metrics["exact_match"] == metrics["beam_exact_match"]
    meta = saving.read_metadata(model_path)
    assert meta["task"] == "seq2seq" and meta["vocab"] == seq2seq.VOCAB and meta["reversed"] is True
    # the saved model decodes like the trained one: rebuild the encoder and decoder from its layers
    encoder, decoder = seq2seq.inference_models(lstmfast.load_model(model_path))
    shown = [e["question"] for e in metrics["examples"]]
    decoded = seq2seq.greedy_decode(encoder, decoder, seq2seq.vectorize("addition", 2, shown),
                                    meta["answer_length"], "addition")
    assert decoded == [e["greedy"] for e in metrics["examples"]]


def test_seq2seq_learns_to_reverse():
    result = seq2seq.run(task="reverse", digits=3, samples=900, test_samples=100, epochs=15, units=32,
                         batch_size=32, beam=2, verbose=0)
    assert result["greedy_exact_match"] >= 0.95 and result["beam_exact_match"] >= 0.95, result
    assert result["epochs"] < 15          # stopped once greedy validation decoding reached 99.5%


class ToyDecoder:
    """A decoder with fixed next-token probabilities that depend only on the fed token: greedy
    takes "1" (0.6) then at best 0.35; the best sequence is "2" then end (0.4 * 0.9 = 0.36)."""

    def __init__(self):
        v = len(seq2seq.VOCAB)
        start, end = seq2seq.CHAR_INDEX[seq2seq.START], seq2seq.CHAR_INDEX[seq2seq.END]
        one, two = seq2seq.CHAR_INDEX["1"], seq2seq.CHAR_INDEX["2"]
        self.table = np.full((v, v), 1e-9)
        self.table[start, [one, two]] = [0.6, 0.4]
        self.table[one, [one, two, end]] = [0.35, 0.35, 0.3]
        self.table[two, [end, one]] = [0.9, 0.1]
        self.table /= self.table.sum(axis=1, keepdims=True)
        self.start, self.end, self.one, self.two = start, end, one, two

    def predict_on_batch(self, inputs):
        tokens, h, c = inputs
        return self.table[tokens[:, 0].argmax(-1)][:, None, :].astype(np.float32), h, c


class ToyEncoder:
    def predict_on_batch(self, x):
        return np.zeros((len(x), 2), np.float32), np.zeros((len(x), 2), np.float32)

    def predict(self, x, batch_size=None, verbose=0):
        return self.predict_on_batch(x)


def test_beam_search_finds_what_greedy_misses():
    toy = ToyDecoder()

    def step(tokens, state):
        return np.log(toy.table[tokens]), state

    best, score = beam_search(step, [np.zeros((1, 1))], np.array([toy.start]), beam_width=2, max_length=4,
                              end_token=toy.end)
    assert best == [toy.two, toy.end] and score == pytest.approx(np.log(0.4 * 0.9), rel=1e-6)
    greedy, _ = beam_search(step, [np.zeros((1, 1))], np.array([toy.start]), beam_width=1, max_length=4,
                            end_token=toy.end)
    assert greedy[0] == toy.one
    # the same through the task's decoders (reverse task: the text is shown as decoded)
    enc_x = np.zeros((3, 4, len(seq2seq.VOCAB)), np.float32)
    assert seq2seq.beam_decode(ToyEncoder(), toy, enc_x, 4, 2, "reverse") == ["2"] * 3
    assert all(text.startswith("1") for text in seq2seq.greedy_decode(ToyEncoder(), toy, enc_x, 4, "reverse"))


# ---- plots ----------------------------------------------------------------------------------------

def fitted_history():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    model = Sequential([Dense(1, input_shape=(3,))])
    model.compile(loss="mse", optimizer="adam", metrics=["mae"])
    return model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0)


def test_history_plot(tmp_path):
    pytest.importorskip("matplotlib")
    history = fitted_history()
    path = tmp_path / "history.png"
    history.plot(path)
    assert path.read_bytes().startswith(PNG_MAGIC)
    history.plot(tmp_path / "loss.png", metrics="loss")
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="no recorded metric 'acc'; recorded: 'loss', 'mae'"):
        history.plot(tmp_path / "x.png", metrics=["acc"])
    with pytest.raises(ValueError, match="nothing recorded"):
        History().plot(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_history_plot_without_matplotlib(tmp_path, monkeypatch):
    history = fitted_history()
    hide_matplotlib(monkeypatch)
    with pytest.raises(ModuleNotFoundError, match="matplotlib is not installed: pip install matplotlib"):
        history.plot(tmp_path / "h.png")
    assert list(tmp_path.iterdir()) == []


def test_forecast_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    csv_path = monthly_csv(tmp_path / "sales.csv")
    png = tmp_path / "f.png"
    code, _, err = run_cli(["forecast", csv_path, "--lookback", "6", "--horizon", "2", "--test-size", "12",
                            "--units", "4", "--epochs", "1", "--plot", png, "--quiet"], capsys)
    assert code == 0, err
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_forecast_plot_without_matplotlib(tmp_path, capsys, monkeypatch):
    csv_path = monthly_csv(tmp_path / "sales.csv")
    metrics_path = write(tmp_path / "m.json", "old")
    hide_matplotlib(monkeypatch)
    code, _, err = run_cli(["forecast", csv_path, "--epochs", "1", "--plot", tmp_path / "f.png",
                            "--metrics-json", metrics_path, "--save", tmp_path / "f.lstmfast"], capsys)
    assert code == 2
    assert MISSING_MPL in err
    assert metrics_path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "sales.csv"]


# ---- bad inputs -----------------------------------------------------------------------------------

@pytest.fixture
def sales(tmp_path):
    return monthly_csv(tmp_path / "sales.csv")


@pytest.mark.parametrize("extra, message", [
    (["--column", "Passengers"], "no column named 'Passengers'; the columns are: 'Month', 'Sales'"),
    (["--lookback", "70"], "too few for lookback 70"),
    (["--test-size", "72"], "at least one training step"),
    (["--test-size", "2", "--horizon", "3"], "shorter than the horizon"),
    (["--test-size", "1.5"], "fraction"),
    (["--season", "100"], "needs a full season (100 steps)"),
    (["--validation-split", "0.99"], "leaves none to train on"),
])
def test_forecast_bad_arguments(sales, tmp_path, capsys, extra, message):
    metrics_path, model_path = write(tmp_path / "m.json", "old"), write(tmp_path / "model.lstmfast", "old")
    code, out, err = run_cli(["forecast", sales, "--epochs", "1", "--metrics-json", metrics_path,
                              "--save", model_path] + extra, capsys)
    assert code == 2
    assert err.startswith("lstmfast forecast: error: ") and message in err
    assert metrics_path.read_text() == "old" and model_path.read_text() == "old"


def test_forecast_bad_files(tmp_path, capsys):
    bad = write(tmp_path / "bad.csv", "Month,Sales\n2000-01,1\n2000-02,n/a?\n")
    code, _, err = run_cli(["forecast", bad, "--column", "Sales"], capsys)
    assert code == 2 and "line 3, column 'Sales': 'n/a?' is not a number" in err
    code, _, err = run_cli(["forecast", tmp_path / "absent.csv"], capsys)
    assert code == 2 and "no such CSV file" in err
    zero = write(tmp_path / "zero.csv", "t,v\n" + "\n".join(f"{i},{i % 7}" for i in range(60)))
    code, _, err = run_cli(["forecast", zero, "--transform", "log"], capsys)
    assert code == 2 and "needs positive values; line 2 holds 0" in err
    code, _, err = run_cli(["forecast", zero, "--save", tmp_path / "no" / "dir" / "m.lstmfast"], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["forecast", zero, "--metrics-json", tmp_path], capsys)
    assert code == 2 and "is a directory" in err


def test_seq2seq_bad_arguments(tmp_path, capsys):
    metrics_path = write(tmp_path / "m.json", "old")
    code, _, err = run_cli(["seq2seq", "--task", "reverse", "--digits", "1", "--samples", "20",
                            "--metrics-json", metrics_path], capsys)
    assert code == 2 and "only 10 distinct questions" in err
    code, _, err = run_cli(["seq2seq", "--digits", "12", "--metrics-json", metrics_path], capsys)
    assert code == 2 and "digits must be <= 9" in err
    code, _, err = run_cli(["seq2seq", "--decay-steps", "-5", "--metrics-json", metrics_path], capsys)
    assert code == 2 and "decay_steps" in err
    code, _, err = run_cli(["seq2seq", "--save", tmp_path / "absent" / "m.lstmfast"], capsys)
    assert code == 2 and "does not exist" in err
    assert metrics_path.read_text() == "old"
