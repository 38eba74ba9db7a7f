"""Forecasting with covariates, several steps and several targets (datasets.timeseries: load_frame,
build_covariates, make_covariate_windows, calendar; tasks.forecast: --features, --strategy,
--column A B, --plot): windows and baselines checked against values computed by hand from the
shared CSV files (read with the csv module), a synthetic hourly series whose target follows a
lagged covariate, the recursive roll-forward, plots and bad inputs."""
from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import lstmfast
from lstmfast import cli, saving
from lstmfast.datasets import timeseries as ts
from lstmfast.tasks import forecast

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(units=4, epochs=1, verbose=0)   # training that only has to run: the baselines are checked


@pytest.fixture(autouse=True)
def one_engine_thread():
    """One engine thread: results do not depend on it, and the tests share a busy machine."""
    original = lstmfast.get_num_threads()
    lstmfast.set_num_threads(1)
    yield
    lstmfast.set_num_threads(original)


def shared(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"shared data file {path} not present")
    return path


def read_columns(path: Path, *names: str) -> dict:
    """Columns of a CSV file as float64 arrays, read with the csv module (the hand computation)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {name: np.array([float(row[name]) for row in rows]) for name in names}


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def rmse_by_step(actual, predicted):
    return np.sqrt(np.mean((predicted - actual) ** 2, axis=0))


def hourly_csv(path: Path, hours: int = 24 * 40, seed: int = 0) -> Path:
    """The Beijing PM2.5 layout (No,year,month,day,hour,pm2.5,DEWP,TEMP,cbwd,Iws) with a target
    built to follow the covariates: pm2.5[t] = 60 + 8 DEWP[t-1] + 10 [cbwd[t-1] = SE] + 5 sin(hour)
    + noise (sd 0.5), DEWP an AR(1) (0.6) with unit innovations, the wind direction persistent.
    Its own past tells pm2.5 little (DEWP's innovations are 8x the noise); DEWP's past nearly all.
    NA in pm2.5 (rows 0, 100, 101, 500), DEWP (300) and an empty cbwd cell (400); TEMP and Iws are noise."""
    rng = np.random.default_rng(seed)
    dewp = np.zeros(hours)
    for t in range(1, hours):
        dewp[t] = 0.6 * dewp[t - 1] + rng.normal()
    wind, current = [], "NW"
    for _ in range(hours):
        if rng.random() < 0.2:
            current = str(rng.choice(["NE", "NW", "SE", "cv"]))
        wind.append(current)
    stamps = [datetime(2010, 1, 1) + timedelta(hours=t) for t in range(hours)]
    lines = ["No,year,month,day,hour,pm2.5,DEWP,TEMP,cbwd,Iws"]
    for t, s in enumerate(stamps):
        pm = (60 + 8 * dewp[t - 1] + 10 * (wind[t - 1] == "SE") + 5 * np.sin(2 * np.pi * s.hour / 24)
              + rng.normal(scale=0.5)) if t else 0.0
        pm_text = "NA" if t in (0, 100, 101, 500) else f"{pm:.3f}"
        dewp_text = "NA" if t == 300 else f"{dewp[t]:.3f}"
        wind_text = "" if t == 400 else wind[t]
        lines.append(f"{t + 1},{s.year},{s.month},{s.day},{s.hour},{pm_text},{dewp_text},{rng.normal():.3f},"
                     f"{wind_text},{rng.uniform(0, 10):.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def hourly(tmp_path_factory):
    return hourly_csv(tmp_path_factory.mktemp("hourly") / "pm25.csv")


# ---- the feature matrix and windows, by hand on macrodata -----------------------------------------

def test_macrodata_frame_covariates_and_windows_by_hand():
    path = shared("statsmodels-macrodata.csv")
    raw = read_columns(path, "year", "quarter", "realgdp", "realcons", "infl")
    frame = ts.load_frame(path, "realgdp", ["realcons", "infl"])
    n = len(raw["realgdp"])
    assert len(frame) == n and frame.dropped == 0 and frame.interpolated == 0
    assert frame.target_names == ["realgdp"] and frame.numeric_names == ["realcons", "infl"]
    assert frame.categorical_names == [] and frame.time_columns == ["year", "quarter"]
    assert_array_equal(frame.targets[:, 0], raw["realgdp"])
    assert frame.stamps[5] == datetime(int(raw["year"][5]), 3 * int(raw["quarter"][5]) - 2, 1)
    assert frame.times[:2] == ["1959Q1", "1959Q2"]
    assert ts.season_from_stamps(frame.stamps) == 4                      # quarterly from year + quarter

    n_train = 160
    covariates = ts.build_covariates(frame, n_train)                   # MinMaxScaler to [-1, 1]
    assert covariates.names == ["realcons", "infl"] and covariates.numeric_count == 2
    for k, name in enumerate(["realcons", "infl"]):
        lo, hi = raw[name][:n_train].min(), raw[name][:n_train].max()   # the training part only
        assert_allclose(covariates.values[:, k], 2 * (raw[name] - lo) / (hi - lo) - 1, rtol=1e-12, atol=1e-12)
    assert covariates.values[n_train:, 0].max() > 1.0                    # the tail is not squeezed in

    target = np.diff(raw["realgdp"])                                     # diff: z[j] belongs to row j + 1
    x, y = ts.make_covariate_windows(target, covariates.values[1:], lookback=4, horizon=2)
    assert x.shape == (n - 1 - 4 - 2 + 1, 4, 3) and y.shape == (n - 1 - 4 - 2 + 1, 2, 1)
    s = 37
    for i in range(4):                                                  # window s: rows s+1 .. s+4 of the file
        row = s + 1 + i
        lo, hi = raw["infl"][:n_train].min(), raw["infl"][:n_train].max()
        assert x[s, i, 0] == pytest.approx(raw["realgdp"][row] - raw["realgdp"][row - 1])
        assert x[s, i, 2] == pytest.approx(2 * (raw["infl"][row] - lo) / (hi - lo) - 1)
    assert_allclose(y[s, :, 0], [raw["realgdp"][s + 5] - raw["realgdp"][s + 4],
                                 raw["realgdp"][s + 6] - raw["realgdp"][s + 5]])


def test_model_inputs_row_by_row_by_hand():
    path = shared("statsmodels-macrodata.csv")
    raw = read_columns(path, "realgdp", "realcons", "infl")
    frame = ts.load_frame(path, "realgdp", ["realcons", "infl"])
    n_train = 150
    inputs, z_scaler, covariates = forecast.model_inputs(frame, n_train, "diff", "standard")
    n = len(raw["realgdp"])
    assert inputs.shape == (n - 1, 3) and inputs.dtype == np.float32
    dz = np.diff(raw["realgdp"])
    z_mean, z_std = dz[:n_train - 1].mean(), dz[:n_train - 1].std()    # differences inside the training part
    for i in (0, 77, n_train - 2, n - 2):                               # row i holds file step i + 1
        expected = [(dz[i] - z_mean) / z_std]
        for name in ("realcons", "infl"):                               # levels, same step, not later
            level = raw[name][:n_train]
            expected.append((raw[name][i + 1] - level.mean()) / level.std())
        assert_allclose(inputs[i], expected, rtol=1e-5, atol=1e-6)
    assert z_scaler.offset_ == pytest.approx(z_mean)


def test_known_future_inputs():
    # columns: target, numeric, one-hot (2), calendar (1); rows are steps
    inputs = np.array([[0.0, 10, 1, 0, 100], [1, 11, 0, 1, 101], [2, 12, 1, 0, 102], [3, 13, 1, 0, 103],
                       [4, 14, 0, 1, 104]])
    future = forecast.known_future_inputs(inputs, np.array([2, 3]), horizon=2, outputs=2, onehot_count=2)
    assert future.shape == (2, 2, 5)
    assert_array_equal(future[0, :, 2:], [[0, 1, 102], [0, 1, 103]])   # category of row 1, own calendar
    assert_array_equal(future[1, :, 2:], [[1, 0, 103], [1, 0, 104]])   # category of row 2


def test_macrodata_multi_step_baselines_by_hand():
    path = shared("statsmodels-macrodata.csv")
    raw = read_columns(path, "realgdp")["realgdp"]
    result = forecast.run(path, "realgdp", features=["realcons", "infl"], lookback=4, horizon=3, test_size=20,
                          **TINY)
    n = len(raw)
    origins = np.arange(n - 20, n - 3 + 1)
    actual = raw[origins[:, None] + np.arange(3)]
    naive = np.repeat(raw[origins - 1][:, None], 3, axis=1)
    seasonal = raw[origins[:, None] + np.arange(3) - 4]                 # season 4, all steps within one season
    assert result["season"] == 4 and result["season_inferred"] and result["origins"] == len(origins)
    assert result["inputs"] == ["realgdp", "realcons", "infl"] and result["features"] == ["realcons", "infl"]
    assert_allclose(result["naive_rmse_by_step"], rmse_by_step(actual, naive), rtol=1e-12)
    assert_allclose(result["seasonal_naive_rmse_by_step"], rmse_by_step(actual, seasonal), rtol=1e-12)
    assert result["naive_mae"] == pytest.approx(np.mean(np.abs(naive - actual)))
    assert len(result["rmse_by_step"]) == 3 and len(result["mae_by_step"]) == 3
    assert np.all(np.isfinite(result["rmse_by_step"]))
    assert result["targets"]["realgdp"]["rmse"] == result["rmse"]
    json.dumps(result)                                                   # --metrics-json writes it


def test_several_targets_each_with_their_own_metrics(tmp_path, capsys):
    path = shared("statsmodels-macrodata.csv")
    raw = read_columns(path, "realgdp", "realcons")
    metrics_path, model_path = tmp_path / "m.json", tmp_path / "f.lstmfast"
    code, out, err = run_cli(["forecast", path, "--column", "realgdp", "realcons", "--features", "infl", "unemp",
                              "--lookback", "4", "--horizon", "2", "--test-size", "16", "--units", "4", "--epochs",
                              "2", "--metrics-json", metrics_path, "--save", model_path], capsys)
    assert code == 0, err
    assert "realgdp:" in out and "realcons:" in out and "RMSE by step" in out
    metrics = json.loads(metrics_path.read_text())
    assert metrics["columns"] == ["realgdp", "realcons"] and metrics["column"] is None and metrics["rmse"] is None
    n = len(raw["realgdp"])
    origins = np.arange(n - 16, n - 2 + 1)
    for name in ("realgdp", "realcons"):
        y = raw[name]
        actual = y[origins[:, None] + np.arange(2)]
        naive = np.repeat(y[origins - 1][:, None], 2, axis=1)
        seasonal = y[origins[:, None] + np.arange(2) - 4]
        target = metrics["targets"][name]
        assert target["naive_rmse"] == pytest.approx(np.sqrt(np.mean((naive - actual) ** 2)))
        assert_allclose(target["seasonal_naive_mae_by_step"], np.mean(np.abs(seasonal - actual), axis=0))
        assert len(target["rmse_by_step"]) == 2 and np.isfinite(target["rmse"]) and np.isfinite(target["mae"])
    assert metrics["targets"]["realgdp"]["naive_rmse"] != metrics["targets"]["realcons"]["naive_rmse"]
    meta = saving.read_metadata(model_path)
    assert meta["columns"] == ["realgdp", "realcons"] and meta["inputs"] == ["realgdp", "realcons", "infl", "unemp"]
    # two targets: the scaler holds per-target statistics of the differenced training part
    z_train = np.diff(np.stack([raw["realgdp"], raw["realcons"]], axis=1)[:n - 16], axis=0)
    assert_allclose(meta["scaler"]["offset"], ts.MinMaxScaler((-1, 1)).fit(z_train).offset_)


# ---- covariates carry the signal: the synthetic hourly series -------------------------------------

def test_covariates_beat_the_univariate_model(hourly):
    settings = dict(lookback=6, test_size=120, units=16, epochs=40, batch_size=32, learning_rate=0.01, seed=3,
                    verbose=0)
    univariate = forecast.run(hourly, "pm2.5", **settings)
    with_covariates = forecast.run(hourly, "pm2.5", features=["DEWP", "cbwd"], calendar=True, **settings)
    assert univariate["season"] == with_covariates["season"] == 24          # hourly, from year/month/day/hour
    assert with_covariates["categories"] == {"cbwd": ["NE", "NW", "SE", "cv"]}
    assert with_covariates["calendar"] == ["hour", "weekday", "month"]
    assert with_covariates["inputs"][:6] == ["pm2.5", "DEWP", "cbwd=NE", "cbwd=NW", "cbwd=SE", "cbwd=cv"]
    assert with_covariates["rmse"] < 0.7 * univariate["rmse"], (with_covariates["rmse"], univariate["rmse"])
    assert with_covariates["rmse"] < 0.7 * with_covariates["naive_rmse"]
    # the same baselines: the covariates change the inputs, not the rows
    assert with_covariates["naive_rmse"] == univariate["naive_rmse"]


def test_hourly_frame_missing_categories_and_time(hourly, tmp_path):
    frame = ts.load_frame(hourly, "pm2.5", ["DEWP", "cbwd"])
    assert frame.time_columns == ["year", "month", "day", "hour"] and frame.times[0] == "2010-01-01 01:00"
    assert frame.dropped == 1 and frame.interpolated == 4                # row 0's NA dropped; 3 + 1 filled
    assert frame.categorical_names == ["cbwd"] and frame.categorical[0][399] == ""   # file row 400, kept
    skipped = ts.load_frame(hourly, "pm2.5", ["DEWP", "cbwd"], missing="skip")
    assert skipped.dropped == 6 and "" not in skipped.categorical[0]
    with pytest.raises(ValueError, match="line 2, column 'pm2.5': missing value"):
        ts.load_frame(hourly, "pm2.5", ["DEWP"], missing="error")
    covariates = ts.build_covariates(frame, 600)
    onehot = covariates.values[:, 1:5]
    assert_array_equal(onehot[399], 0)                                   # missing: no category
    assert_array_equal(onehot.sum(axis=1)[np.arange(len(frame)) != 399], 1)
    # a category first seen after the training part encodes as zeros
    late = tmp_path / "late.csv"
    late.write_text("t,y,w\n" + "".join(f"{i},{i % 5},{'calm' if i < 8 else 'storm'}\n" for i in range(10)))
    encoded = ts.build_covariates(ts.load_frame(late, "y", ["w"], time_columns=None), 8).values
    assert_array_equal(encoded[:, 0], [1] * 8 + [0, 0])
    # a numeric code forced categorical
    forced = ts.build_covariates(ts.load_frame(late, "y", ["t"], categorical=["t"]), 8)
    assert forced.names == [f"t={i}" for i in sorted(str(i) for i in range(8))]


def test_calendar_features_and_parts():
    hourly = [datetime(2024, 1, 1) + timedelta(hours=h) for h in range(24 * 40)]
    assert ts.calendar_parts(hourly) == ["hour", "weekday", "month"]
    values, names = ts.calendar_features(hourly[:3], ["hour", "weekday"])
    assert names == ["hour_sin", "hour_cos", "weekday_sin", "weekday_cos"]
    assert_allclose(values[1, :2], [np.sin(2 * np.pi / 24), np.cos(2 * np.pi / 24)])
    assert_allclose(values[0, 2:], [0.0, 1.0], atol=1e-15)              # 2024-01-01 is a Monday
    daily = [datetime(2024, 1, 1) + timedelta(days=d) for d in range(60)]
    assert ts.calendar_parts(daily) == ["weekday", "month"]
    monthly = [datetime(2000 + m // 12, m % 12 + 1, 1) for m in range(36)]
    assert ts.calendar_parts(monthly) == ["month"]
    assert ts.calendar_parts([datetime(2000 + y, 1, 1) for y in range(10)]) == []
    with pytest.raises(ValueError, match="calendar part must be one of hour, weekday, month, got 'minute'"):
        ts.calendar_features(hourly, ["minute"])


@pytest.mark.parametrize("header, rows, season", [
    ("year,month,day,hour,v", [f"2020,1,{1 + h // 24},{h % 24},{h}" for h in range(30)], 24),
    ("date,v", [f"2020-01-{d:02d},{d}" for d in range(1, 30)], 7),
    ("year,month,v", [f"{2000 + m // 12},{m % 12 + 1},{m}" for m in range(30)], 12),
    ("Year,Quarter,v", [f"{2000 + q // 4},{q % 4 + 1},{q}" for q in range(30)], 4),
    ("year,v", [f"{2000 + y},{y}" for y in range(30)], None),
])
def test_season_from_time_columns(tmp_path, header, rows, season):
    path = tmp_path / "s.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    assert ts.season_from_stamps(ts.load_frame(path, "v").stamps) == season


def test_explicit_time_columns(hourly, tmp_path):
    frame = ts.load_frame(hourly, "pm2.5", time_columns=["year", "month", "day", "hour"])
    assert frame.stamps[0] == datetime(2010, 1, 1, 1)
    dated = tmp_path / "d.csv"
    dated.write_text("id,when,v\n" + "".join(f"{i},2021-03-{i + 1:02d},{i}\n" for i in range(20)))
    assert ts.load_frame(dated, "v").stamps is None                       # the first column holds no dates
    frame = ts.load_frame(dated, "v", time_columns="when")
    assert frame.time_columns == ["when"] and ts.season_from_stamps(frame.stamps) == 7
    with pytest.raises(ValueError, match="line 3, date column 'when': 'x' does not match the format"):
        dated.write_text("id,when,v\n1,2021-03-01,1\n2,x,2\n")
        ts.load_frame(dated, "v", time_columns="when")


# ---- multi-step: recursive and direct ---------------------------------------------------------------

def test_recursive_forecast_rolls_the_window():
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((3, 4, 3))                            # columns: target, numeric, calendar
    future = rng.standard_normal((3, 5, 3))

    def predict(w):                                                     # next target, next numeric input
        return np.stack([w[:, -1, 0] + w[:, -2, 1], 0.5 * w[:, -1, 1] + w[:, -1, 2]], axis=1)

    expected = np.empty((3, 5, 2))
    window = windows.copy()
    for h in range(5):                                                  # by hand, one origin at a time
        for s in range(3):
            w = window[s]
            nxt = [w[-1, 0] + w[-2, 1], 0.5 * w[-1, 1] + w[-1, 2]]
            expected[s, h] = nxt
        row = np.concatenate([expected[:, h], future[:, h, 2:]], axis=1)
        window = np.concatenate([window[:, 1:], row[:, None]], axis=1)
    assert_allclose(forecast.recursive_forecast(predict, windows, future, 2), expected, rtol=1e-12)
    assert_array_equal(windows.shape, (3, 4, 3))                         # the caller's windows are untouched
    with pytest.raises(ValueError, match="future_inputs must be"):
        forecast.recursive_forecast(predict, windows, future[:, :, :2], 2)


def test_recursive_is_direct_for_one_step_without_covariates(tmp_path):
    path = shared("airline-passengers.csv")
    settings = dict(lookback=6, test_size=24, units=8, epochs=5, transform="log-diff", verbose=0)
    direct = forecast.run(path, "Passengers", **settings)
    recursive = forecast.run(path, "Passengers", strategy="recursive", **settings)
    for key in ("rmse", "mae", "naive_rmse", "seasonal_naive_rmse", "rmse_by_step"):
        assert recursive[key] == direct[key], key
    assert recursive["strategy"] == "recursive" and direct["strategy"] == "direct"


@pytest.mark.parametrize("strategy", ["direct", "recursive"])
def test_multi_step_strategies_per_step(hourly, strategy):
    result = forecast.run(hourly, "pm2.5", features=["DEWP", "cbwd"], calendar=True, strategy=strategy, horizon=3,
                          lookback=6, test_size=120, units=16, epochs=40, batch_size=32, learning_rate=0.01,
                          seed=3, verbose=0)
    frame = ts.load_frame(hourly, "pm2.5")
    y = frame.targets[:, 0]
    n = len(y)
    origins = np.arange(n - 120, n - 3 + 1)
    actual = y[origins[:, None] + np.arange(3)]
    naive = np.repeat(y[origins - 1][:, None], 3, axis=1)
    seasonal = y[origins[:, None] - 24 + np.arange(3)]                  # season 24 from the hour columns
    assert_allclose(result["naive_rmse_by_step"], rmse_by_step(actual, naive))
    assert_allclose(result["seasonal_naive_rmse_by_step"], rmse_by_step(actual, seasonal))
    by_step = result["rmse_by_step"]
    assert len(by_step) == 3 and result["origins"] == len(origins)
    # one step ahead DEWP's last value is known: far better than naive; later steps need its forecast
    assert by_step[0] < 0.4 * result["naive_rmse_by_step"][0], result
    assert by_step[0] < by_step[2] and by_step[2] < result["seasonal_naive_rmse_by_step"][2]


# ---- plots ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--column", "realgdp", "realcons", "--features", "infl", "--horizon", "3"],
    ["--column", "realgdp", "--horizon", "1"],
])
def test_forecast_plots(tmp_path, capsys, argv):
    pytest.importorskip("matplotlib")
    png = tmp_path / "f.png"
    png.write_bytes(b"old")
    code, _, err = run_cli(["forecast", shared("statsmodels-macrodata.csv"), "--lookback", "4", "--test-size", "12",
                            "--units", "4", "--epochs", "1", "--plot", png, "--quiet"] + argv, capsys)
    assert code == 0, err
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]            # replaced whole: no temporary left


# ---- bad inputs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(features=["DEWX"]), "features: "),
    (dict(features=["pm2.5"]), "features: 'pm2.5' is also a target"),
    (dict(features=["DEWP", "DEWP"]), "features: column 'DEWP' is listed twice"),
    (dict(column="cbwd"), "column: 'cbwd' is not numeric (line 2 holds 'NW'); a target must be numeric"),
    (dict(features=["DEWP"], categorical=["TEMP"]), "categorical: 'TEMP' is not one of the features ('DEWP')"),
    (dict(categorical=["pm2.5"]), "categorical: 'pm2.5' is a target"),
    (dict(features=["Iws"], categorical=["Iws"]), "categorical column 'Iws' has"),
    (dict(horizon=200), "shorter than the horizon (200)"),
    (dict(strategy="seq2seq"), "strategy must be one of direct, recursive, got 'seq2seq'"),
    (dict(time_columns=["year", "TEMP"]), "time_columns: 'TEMP' is not a part column"),
    (dict(time_columns=["hour"]), "part columns need a 'year' column"),
    (dict(time_columns=["year", "hour"]), "an 'hour' column needs 'month' and 'day' columns"),
])
def test_bad_arguments(hourly, kwargs, message):
    kwargs = {"column": "pm2.5", "test_size": 120, **kwargs}
    with pytest.raises(ValueError) as error:
        forecast.run(hourly, **kwargs, **TINY)
    assert message in str(error.value)


def test_bad_input_files(tmp_path, capsys):
    no_time = tmp_path / "n.csv"
    no_time.write_text("a,b\n" + "".join(f"{i % 3},{i}\n" for i in range(40)))
    with pytest.raises(ValueError, match="calendar: the file has no time information"):
        forecast.run(no_time, "b", features=["a"], calendar=True, test_size=5, lookback=3, **TINY)
    many = tmp_path / "many.csv"                                        # a numeric column with one typo
    many.write_text("t,v,x\n" + "".join(f"{i},{i},{'12O' if i == 7 else i * 1.5}\n" for i in range(80)))
    with pytest.raises(ValueError, match=r"'x' has 64 categories .* more than max_categories=50; 63 of them are "
                                         r"numbers: is it a numeric column with a typo\? \(first non-number: '12O'\)"):
        forecast.run(many, "v", features=["x"], **TINY)
    metrics_path = tmp_path / "m.json"
    metrics_path.write_text("old")
    code, _, err = run_cli(["forecast", many, "--column", "v", "--features", "nope", "--metrics-json", metrics_path],
                           capsys)
    assert code == 2 and "lstmfast forecast: error: features: " in err and "no column named 'nope'" in err
    assert metrics_path.read_text() == "old"
    bad_hour = tmp_path / "h.csv"
    bad_hour.write_text("year,month,day,hour,v\n2020,1,1,0,1\n2020,1,1,x,2\n")
    with pytest.raises(ValueError, match="line 3, time column 'hour': 'x' is not a whole hour number"):
        ts.load_frame(bad_hour, "v", time_columns=["year", "month", "day", "hour"])
    assert ts.load_frame(bad_hour, "v").stamps is None                    # looked for, not asked for: no error
