"""Time-series forecasting with an LSTM (the classic airline-passengers tutorial, multi-step).

The model is the tutorial's: ``LSTM(units) -> Dense(horizon)``, trained with Adam on the mean
squared error of scaled windows: ``lookback`` past values in, the next ``horizon`` values out.

Data flow, for a series ``y [N]`` with a held-out tail of ``K`` steps (``--test-size``):

1. ``--transform``: ``none`` (the tutorial's); ``log`` (``u = log y``, needs y > 0); ``diff``
   (the default: ``z_t = y_t - y_{t-1}``); ``log-diff`` (differences of ``log y``:
   period-on-period growth). Differencing removes a trend a scaled level cannot extrapolate; the
   log turns multiplicative seasonality (airline passengers) into additive.
2. A scaler (``--scaler minmax``: to [-1, 1]; ``standard``) is fitted on the transformed training
   part only, ``y[:N-K]``: no statistic of the tail leaks into training.
3. Training windows: every window whose inputs and targets lie inside ``y[:N-K]``. The latest
   ``--validation-split`` of them (0.1) are held back for early stopping (``--patience`` 20
   epochs, best weights restored), so ``--epochs`` (200) is a ceiling that suits short and long
   series alike.
4. Evaluation (rolling origin over the tail): for every origin ``t`` in ``N-K .. N-H`` the model
   sees the ``lookback`` values before ``t`` (observed values, which may reach back into the
   training part) and forecasts ``y[t : t+H]`` in one shot. That gives ``K - H + 1`` forecasts of
   ``H`` steps each; ``rmse`` and ``mae`` are taken over all of those values, in the original
   units (after undoing the scaler and the transform; differences are accumulated from the
   last observed value ``y[t-1]``). ``rmse_by_step`` lists the RMSE of each step ahead.
5. Baselines on the same origins and targets: naive (``y[t-1]`` for every step) and
   seasonal-naive (the value one season before each target, from observed values only:
   ``y[t+h-1 - S*ceil(h/S)]``), with the season ``S`` from ``--season`` or inferred from the
   date column (12 for monthly data; ``datasets.timeseries.infer_season``).

``number_patterns()`` is the tutorial's warm-up: a tiny LSTM that continues 6, 7, 8 -> 9 and
2, 4, 8 -> 16.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, Optional, Union

import numpy as np

from .. import backend, distributed
from .._atomic import atomic_file, check_writable
from .._typing import PathLike
from ..callbacks import EarlyStopping, LambdaCallback
from ..datasets import timeseries as ts
from ..layers import LSTM, Dense
from ..models import Sequential
from ..optimizers import Adam

TRANSFORMS = ("none", "log", "diff", "log-diff")
SCALERS = ("minmax", "standard")
MATPLOTLIB_MISSING = "matplotlib is not installed: pip install matplotlib (or lstmfast[plot])"


# ---- small helpers shared with the other tasks ------------------------------------------------------

def require_figure() -> type:
    """matplotlib's ``Figure`` class (used without pyplot, so no global backend or figure state is
    touched), or a ModuleNotFoundError with an install hint."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ModuleNotFoundError(MATPLOTLIB_MISSING, name="matplotlib") from None
    return Figure


def save_figure(fig: Any, path: PathLike) -> None:
    """Write ``fig`` as a PNG to ``path`` atomically (a temporary file renamed over the target)."""
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


# ---- transforms -------------------------------------------------------------------------------------

def _forward_transform(y: np.ndarray, transform: str, lines=None) -> np.ndarray:
    """``y [N] -> z``: ``[N]`` for none/log, ``[N-1]`` for the differenced transforms."""
    u = y
    if transform in ("log", "log-diff"):
        bad = np.flatnonzero(~(y > 0))
        if len(bad):
            where = f"line {lines[bad[0]]}" if lines else f"step {bad[0]}"
            raise ValueError(f"--transform {transform} needs positive values; {where} holds {y[bad[0]]:g}")
        u = np.log(y)
    if transform in ("diff", "log-diff"):
        return u[1:] - u[:-1]
    return u


def _inverse_transform(z_hat: np.ndarray, y_before: np.ndarray, transform: str) -> np.ndarray:
    """Forecasts ``z_hat [S, H]`` back to the original units; ``y_before [S]`` is the last observed
    value before each origin (the base that differences accumulate from)."""
    logged = transform in ("log", "log-diff")
    if transform in ("diff", "log-diff"):
        base = np.log(y_before) if logged else y_before
        u_hat = base[:, None] + np.cumsum(z_hat, axis=1)
    else:
        u_hat = z_hat
    return np.exp(u_hat) if logged else u_hat


def _make_scaler(name: str):
    return ts.MinMaxScaler((-1.0, 1.0)) if name == "minmax" else ts.StandardScaler()


# ---- the model --------------------------------------------------------------------------------------

def build_model(lookback: int, horizon: int, units: int = 50, features: int = 1,
                learning_rate: float = 0.001) -> Sequential:
    """The tutorial's forecaster: ``LSTM(units) -> Dense(horizon)``, MSE, Adam."""
    model = Sequential([LSTM(units, input_shape=(lookback, features)), Dense(horizon)])
    model.compile(loss="mse", optimizer=Adam(learning_rate=learning_rate))
    return model


def _errors(y_true: np.ndarray, y_pred: np.ndarray):
    err = y_pred - y_true
    return float(np.sqrt(np.mean(err ** 2))), float(np.mean(np.abs(err)))


def run(csv_path: PathLike, column: Union[None, str, int] = None, lookback: int = 12, horizon: int = 1,
        test_size: Union[int, float] = 0.2, season: Optional[int] = None,
        transform: str = "diff", scaler: str = "minmax", units: int = 50, epochs: int = 200, batch_size: int = 16,
        learning_rate: float = 0.001, validation_split: float = 0.1, patience: int = 20,
        missing: str = "interpolate", seed: Optional[int] = 1, verbose: int = 1,
        plot: Optional[str] = None, save: Optional[str] = None, print_fn: Callable[[str], None] = print) -> dict:
    """Train on the series in ``csv_path`` and evaluate on its held-out tail (module docstring).
    Returns the metrics; writes a plot (``plot``) and the model (``save``) when asked."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if scaler not in SCALERS:
        raise ValueError(f"scaler must be one of {', '.join(SCALERS)}, got {scaler!r}")
    for name, value in (("lookback", lookback), ("horizon", horizon), ("units", units), ("epochs", epochs),
                        ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if season is not None and (isinstance(season, bool) or not isinstance(season, (int, np.integer)) or season < 1):
        raise ValueError(f"season must be an int >= 1, got {season!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must lie in [0, 1), got {validation_split!r}")
    if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1:
        raise ValueError(f"patience must be an int >= 1, got {patience!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    check_writable(plot, "--plot", not_same_as=csv_path)
    check_writable(save, "--save", not_same_as=csv_path)
    figure = None
    if plot is not None:
        try:
            figure = require_figure()
        except ModuleNotFoundError as e:
            raise ValueError(str(e)) from None  # the CLI reports ValueError and exits 2

    data = ts.load_csv(csv_path, column, missing=missing)
    y = data.values.astype(np.float64)
    n = len(y)
    k = ts.resolve_test_size(n, test_size)
    d = 1 if transform in ("diff", "log-diff") else 0
    if k < horizon:
        raise ValueError(f"the held-out tail ({k} steps) is shorter than the horizon ({horizon}): use a larger "
                         f"--test-size or a smaller --horizon")
    n_train = n - k
    if n_train - d < lookback + horizon:
        raise ValueError(f"the training part has {n_train} steps, too few for lookback {lookback} + horizon "
                         f"{horizon}{' + 1 (differencing)' if d else ''}: lower --lookback or --test-size")
    inferred = season is None
    if inferred:
        season = ts.infer_season(data.times)
        if season is not None and n_train < season:
            season = None  # too short for the inferred season: no seasonal baseline
    elif n_train < season:
        raise ValueError(f"seasonal-naive needs a full season ({season} steps) before the tail; the training "
                         f"part has {n_train}")

    if seed is not None:
        backend.set_random_seed(seed)
    z = _forward_transform(y, transform, data.lines)                     # z[j] belongs to y[j + d]
    z_scaler = _make_scaler(scaler).fit(z[:n_train - d])                 # training part only
    zs = z_scaler.transform(z).astype(np.float32)
    x_train, y_train = ts.make_windows(zs[:n_train - d], lookback, horizon)
    x_test, _ = ts.make_windows(zs[n_train - d - lookback:], lookback, horizon)   # origins t = n_train .. n-H
    origins = np.arange(n_train, n - horizon + 1)
    targets = y[origins[:, None] + np.arange(horizon)]                   # [S, H] original units

    model = build_model(lookback, horizon, units, 1, learning_rate)
    if verbose:
        print_fn(f"{os.path.basename(os.fspath(csv_path))}: column {data.columns[0]!r}, {n} steps"
                 + (f" ({data.interpolated} interpolated, {data.dropped} dropped)"
                    if data.interpolated or data.dropped else "")
                 + f"; training part {n_train}, held-out tail {k}")
        print_fn(f"transform {transform}, scaler {scaler}, lookback {lookback}, horizon {horizon}: "
                 f"{len(x_train)} training windows, {len(origins)} forecast origins in the tail")
    every = max(1, epochs // 10)

    def report(epoch, logs):
        if (epoch + 1) % every == 0:
            print_fn(f"epoch {epoch + 1}/{epochs} - " + " - ".join(f"{name} {v:.5f}" for name, v in logs.items()))

    callbacks = [LambdaCallback(on_epoch_end=report)] if verbose else []
    n_val = len(x_train) - int(len(x_train) * (1.0 - validation_split))  # fit's split: the latest windows
    if n_val >= len(x_train):
        raise ValueError(f"validation_split {validation_split} of {len(x_train)} training windows leaves none "
                         "to train on: lower it (0: no early stopping)")
    if n_val:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True))
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True,
                        validation_split=validation_split if n_val else 0.0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    epochs_run = len(history.history.get("loss", []))

    z_hat = z_scaler.inverse_transform(model.predict(x_test, batch_size=256, verbose=0).astype(np.float64))
    y_before = y[origins - 1]
    forecast = _inverse_transform(z_hat, y_before, transform)
    naive = ts.naive_forecast(y_before[:, None], horizon)
    rmse, mae = _errors(targets, forecast)
    naive_rmse, naive_mae = _errors(targets, naive)
    result = {
        "rmse": rmse, "mae": mae, "naive_rmse": naive_rmse, "naive_mae": naive_mae,
        "seasonal_naive_rmse": None, "seasonal_naive_mae": None,
        "rmse_by_step": [float(v) for v in np.sqrt(np.mean((forecast - targets) ** 2, axis=0))],
        "season": season, "season_inferred": bool(inferred and season is not None),
        "column": data.columns[0], "steps": n, "test_size": k, "origins": int(len(origins)),
        "lookback": lookback, "horizon": horizon, "transform": transform, "scaler": scaler, "units": units,
        "epochs": epochs_run, "max_epochs": epochs, "batch_size": batch_size,
        "train_windows": int(len(x_train) - n_val), "validation_windows": int(n_val),
        "final_loss": float(history.history["loss"][-1]) if history.history.get("loss") else None,
        "train_seconds": seconds,
    }
    seasonal = None
    if season is not None:
        histories = np.stack([y[t - season:t] for t in origins])
        seasonal = ts.seasonal_naive_forecast(histories, horizon, season)
        result["seasonal_naive_rmse"], result["seasonal_naive_mae"] = _errors(targets, seasonal)

    if verbose:
        print_fn(f"Trained {epochs_run} epochs in {seconds:.1f} s"
                 + (f" (early stopping on the latest {n_val} training windows)" if n_val else ""))
        print_fn(f"Held-out tail, {len(origins)} forecasts of {horizon} step(s):")
        print_fn(f"  {'model':<20}{'RMSE':>10}{'MAE':>10}")
        print_fn(f"  {'LSTM':<20}{rmse:>10.3f}{mae:>10.3f}")
        print_fn(f"  {'naive':<20}{naive_rmse:>10.3f}{naive_mae:>10.3f}")
        if season is not None:
            print_fn(f"  {f'seasonal-naive({season})':<20}{result['seasonal_naive_rmse']:>10.3f}"
                     f"{result['seasonal_naive_mae']:>10.3f}")
        else:
            print_fn("  seasonal-naive: no season given (--season), and none inferred from the time column "
                     "that fits in the training part")
    if figure is not None and distributed.is_chief():
        _plot(figure, plot, y, data.times, origins, forecast, seasonal, result)
        if verbose:
            print_fn(f"Wrote {plot}")
    if save is not None and distributed.is_chief():
        model.save(save, metadata={
            "task": "forecast", "csv": os.path.basename(os.fspath(csv_path)), "column": data.columns[0],
            "lookback": lookback, "horizon": horizon, "transform": transform, "season": season,
            "scaler": z_scaler.get_config()})
        if verbose:
            print_fn(f"Saved the model to {save}")
    return result


def _plot(figure, path, y, times, origins, forecast, seasonal, result) -> None:
    horizon = forecast.shape[1]
    fig = figure(figsize=(10, 4.5))
    ax = fig.subplots()
    # a long series: show the tail after as much context as the tail is long, else it is unreadable
    first = 0 if len(y) <= 300 else max(0, int(origins[0]) - (len(y) - int(origins[0])))
    steps = np.arange(first, len(y))
    ax.plot(steps, y[first:], color="black", linewidth=1.2, label="actual")
    ax.plot(origins, forecast[:, 0], color="tab:blue", linewidth=1.4, label="LSTM, 1 step ahead")
    if horizon > 1:
        ax.plot(origins + horizon - 1, forecast[:, -1], color="tab:orange", linewidth=1.2,
                label=f"LSTM, {horizon} steps ahead")
    if seasonal is not None:
        ax.plot(origins, seasonal[:, 0], color="tab:green", linewidth=1, linestyle=":",
                label=f"seasonal-naive ({result['season']})")
    ax.axvline(origins[0] - 0.5, color="grey", linewidth=0.8, linestyle="--")
    if times:
        ticks = np.linspace(first, len(y) - 1, num=min(8, len(steps))).astype(int)
        ax.set_xticks(ticks)
        ax.set_xticklabels([times[i] for i in ticks], rotation=0)
    ax.set_ylabel(result["column"])
    title = f"{result['column']}: LSTM RMSE {result['rmse']:.2f}, naive {result['naive_rmse']:.2f}"
    if result["seasonal_naive_rmse"] is not None:
        title += f", seasonal-naive {result['seasonal_naive_rmse']:.2f}"
    ax.set_title(title + " (held-out tail)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)


# ---- the tutorial's warm-up -------------------------------------------------------------------------

def number_patterns(epochs: int = 60, seed: int = 1, verbose: int = 0) -> dict:
    """Learn to continue three-number progressions: arithmetic (6, 7, 8 -> 9) and geometric
    (2, 4, 8 -> 16). Each sequence is divided by its last value before it enters the model and the
    output multiplied back, so the LSTM only has to learn the ratios (0.75, 0.875, 1 -> 1.125;
    0.25, 0.5, 1 -> 2), which makes one tiny model handle any scale.

    Returns ``{"6,7,8": prediction, "2,4,8": prediction, ...}`` for the two tutorial sequences
    and a few more."""
    backend.set_random_seed(seed)
    rng = backend.get_rng()
    n = 4000
    start = rng.uniform(1, 50, n)
    step = rng.uniform(0.5, 10, n)
    ratio = rng.uniform(1.5, 3.5, n)
    arithmetic = start[:, None] + step[:, None] * np.arange(4)
    geometric = rng.uniform(0.5, 10, n)[:, None] * ratio[:, None] ** np.arange(4)
    seqs = np.concatenate([arithmetic, geometric])
    x = (seqs[:, :3] / seqs[:, 2:3])[:, :, None].astype(np.float32)
    y = (seqs[:, 3:] / seqs[:, 2:3]).astype(np.float32)
    model = Sequential([LSTM(16, input_shape=(3, 1)), Dense(1)])
    model.compile(loss="mse", optimizer=Adam(learning_rate=0.01))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=verbose)
    queries = [[6, 7, 8], [2, 4, 8], [10, 20, 30], [3, 9, 27]]
    q = np.asarray(queries, np.float64)
    pred = model.predict((q / q[:, 2:3])[:, :, None].astype(np.float32), verbose=0)[:, 0] * q[:, 2]
    return {",".join(str(v) for v in query): float(p) for query, p in zip(queries, pred)}


# ---- the command ------------------------------------------------------------------------------------

def _test_size(text: str):
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        import argparse
        raise argparse.ArgumentTypeError(f"expected a number of steps or a fraction, got {text!r}") from None
    return value


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``lstmfast forecast`` sub-command."""
    from ..cli import positive_int
    p = subparsers.add_parser(
        "forecast", parents=[common], help="forecast a CSV time series with an LSTM, against naive baselines",
        description="Train LSTM -> Dense(horizon) on scaled windows of one CSV column, forecast HORIZON steps "
                    "from every origin in the held-out tail, and compare RMSE/MAE with the naive and "
                    "seasonal-naive forecasts. Airline passengers: best with --transform log-diff.")
    p.add_argument("csv", metavar="CSV", help="CSV file with a header row (the first column labels the rows)")
    p.add_argument("--column", default=None, help="column to forecast (default: the last column)")
    p.add_argument("--lookback", type=positive_int, default=12, help="past steps the model sees (default 12)")
    p.add_argument("--horizon", type=positive_int, default=1, help="steps forecast at once (default 1)")
    p.add_argument("--test-size", type=_test_size, default=0.2,
                   help="held-out tail: a number of steps, or a fraction of the series (default 0.2)")
    p.add_argument("--season", type=positive_int, default=None,
                   help="season length for seasonal-naive (default: inferred from the dates, 12 for monthly)")
    p.add_argument("--transform", choices=TRANSFORMS, default="diff",
                   help="applied before scaling: none, log, diff (first differences) or log-diff (default diff)")
    p.add_argument("--scaler", choices=SCALERS, default="minmax",
                   help="minmax (to [-1, 1]) or standard, fitted on the training part (default minmax)")
    p.add_argument("--missing", choices=("interpolate", "skip", "error"), default="interpolate",
                   help="empty cells: interpolate inside the series and drop leading/trailing ones, skip the "
                        "rows, or error (default interpolate)")
    p.add_argument("--units", type=positive_int, default=50, help="LSTM units (default 50)")
    p.add_argument("--epochs", type=positive_int, default=200, help="most training epochs (default 200)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="batch size (default 16)")
    p.add_argument("--learning-rate", type=float, default=0.001, help="Adam learning rate (default 0.001)")
    p.add_argument("--validation-split", type=float, default=0.1,
                   help="latest fraction of the training windows used for early stopping; 0: train all epochs "
                        "(default 0.1)")
    p.add_argument("--patience", type=positive_int, default=20,
                   help="early stopping: epochs without a better validation loss (default 20)")
    p.add_argument("--plot", metavar="PNG", default=None, help="draw actual vs forecast to PNG (needs matplotlib)")
    p.add_argument("--save", metavar="MODEL", default=None, help="save the trained model (with its settings)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--quiet", action="store_true", help="print nothing (use with --metrics-json)")

    def func(args):
        return run(args.csv, column=args.column, lookback=args.lookback, horizon=args.horizon,
                   test_size=args.test_size, season=args.season, transform=args.transform, scaler=args.scaler,
                   units=args.units, epochs=args.epochs, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, validation_split=args.validation_split,
                   patience=args.patience, missing=args.missing, seed=args.seed,
                   verbose=0 if args.quiet else 1, plot=args.plot, save=args.save)

    p.set_defaults(func=func)
