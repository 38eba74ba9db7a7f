"""Time-series forecasting with an LSTM (the classic airline-passengers tutorial, multi-step,
with covariates).

The model is the tutorial's: ``LSTM(units) -> Dense(horizon * targets)``, trained with Adam on the
mean squared error of scaled windows: ``lookback`` past steps in, the next ``horizon`` values of
every target out (output ``h * targets + j``: step ``h + 1`` of target ``j``).

Data flow, for targets ``y [N, T]`` (``--column A [B ...]``; one target is the tutorial) with a
held-out tail of ``K`` steps (``--test-size``):

1. ``--transform``, per target: ``none`` (the tutorial's); ``log`` (``u = log y``, needs y > 0);
   ``diff`` (the default: ``z_t = y_t - y_{t-1}``); ``log-diff`` (differences of ``log y``:
   period-on-period growth). Differencing removes a trend a scaled level cannot extrapolate; the
   log turns multiplicative seasonality (airline passengers) into additive.
2. A scaler (``--scaler minmax``: to [-1, 1]; ``standard``) is fitted per target on the
   transformed training part only, ``y[:N-K]``: no statistic of the tail leaks into training.
3. Covariates (``--features``; ``datasets.timeseries`` documents the rules): numeric features are
   levels, not transformed, scaled per column by the same kind of scaler fitted on the training
   part; text (or ``--categorical``) features are one-hot over the training part's categories;
   ``--calendar`` adds sin/cos of hour of day, weekday and month from the time columns
   (``--time-columns``: a date column or year/quarter/month/day/hour columns). The inputs of a
   step are ``[targets (transformed, scaled), numeric features, one-hot, calendar]``; a window
   holds ``lookback`` past steps of all of them, so the forecast of ``y_t`` sees covariates up
   to ``t - 1`` only.
4. Training windows: every window whose inputs and targets lie inside ``y[:N-K]``. The latest
   ``--validation-split`` of them (0.1) are held back for early stopping (``--patience`` 20
   epochs, best weights restored), so ``--epochs`` (200) is a ceiling that suits short and long
   series alike.
5. ``--strategy``: ``direct`` (the default) trains the model above and forecasts all ``H`` steps
   at once. ``recursive`` trains a one-step model whose outputs are the next step of every
   numeric input (targets and numeric features, equally weighted in the loss) and applies it
   ``H`` times, appending each forecast to the window (``recursive_forecast``). The other inputs
   of a future step: calendar values are exact (the step's own time); a category is assumed to
   stay as last observed. Without covariates and with ``H = 1`` both strategies are one model.
6. Evaluation (rolling origin over the tail): for every origin ``t`` in ``N-K .. N-H`` the model
   sees the ``lookback`` steps before ``t`` (observed values, which may reach back into the
   training part) and forecasts ``y[t : t+H]``. That gives ``K - H + 1`` forecasts of ``H``
   steps each; ``rmse`` and ``mae`` are taken per target over all of those values, in the
   original units (after undoing the scaler and the transform; differences are accumulated from
   the last observed value ``y[t-1]``), and per step ahead (``rmse_by_step``, ``mae_by_step``).
7. Baselines on the same origins and targets, overall and per step: naive (``y[t-1]`` for every
   step) and seasonal-naive (the value one season before each target, from observed values
   only: ``y[t+h-1 - S*ceil(h/S)]``), with the season ``S`` from ``--season`` or inferred from the
   first column's dates (12 for monthly data; ``datasets.timeseries.infer_season``) or else the
   time columns (hourly 24, daily 7, quarterly year + quarter 4).

The result: ``targets`` maps each target to its metrics (``rmse``, ``mae``, ``naive_rmse``,
``naive_mae``, ``seasonal_naive_rmse``, ``seasonal_naive_mae``, each also ``..._by_step``); with
one target they are also at the top level (as before covariates), with several those keys are
None there. ``--plot``: per target, actual vs the forecasts and the baselines over the tail, and
for ``H > 1`` the RMSE by step of the LSTM and the baselines.

``number_patterns()`` is the tutorial's warm-up: a tiny LSTM that continues 6, 7, 8 -> 9 and
2, 4, 8 -> 16.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, Optional, Sequence, Tuple, Union

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
STRATEGIES = ("direct", "recursive")
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

def _forward_transform(y: np.ndarray, transform: str, lines=None, names=None) -> np.ndarray:
    """``y [N, T] -> z``: ``[N, T]`` for none/log, ``[N-1, T]`` for the differenced transforms."""
    u = y
    if transform in ("log", "log-diff"):
        rows, cols = np.nonzero(~(y > 0))
        if len(rows):
            r, c = int(rows[0]), int(cols[0])
            where = f"line {lines[r]}" if lines else f"step {r}"
            if names and len(names) > 1:
                where += f", column {names[c]!r},"
            raise ValueError(f"--transform {transform} needs positive values; {where} holds {y[r, c]:g}")
        u = np.log(y)
    if transform in ("diff", "log-diff"):
        return u[1:] - u[:-1]
    return u


def _inverse_transform(z_hat: np.ndarray, y_before: np.ndarray, transform: str) -> np.ndarray:
    """Forecasts ``z_hat [S, H, T]`` back to the original units; ``y_before [S, T]`` is the last
    observed value before each origin (the base that differences accumulate from)."""
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
                learning_rate: float = 0.001, targets: int = 1) -> Sequential:
    """The tutorial's forecaster: ``LSTM(units) -> Dense(horizon * targets)``, MSE, Adam; output
    ``h * targets + j`` is step ``h + 1`` of target ``j``."""
    model = Sequential([LSTM(units, input_shape=(lookback, features)), Dense(horizon * targets)])
    model.compile(loss="mse", optimizer=Adam(learning_rate=learning_rate))
    return model


def model_inputs(data: ts.Frame, n_train: int, transform: str = "diff", scaler: str = "minmax",
                 calendar: bool = False) -> Tuple[np.ndarray, Any, ts.Covariates]:
    """The model's inputs for every step: float32 ``[N - d, T + F]`` (``d = 1`` for the differenced
    transforms), row ``i`` = step ``i + d`` of the file: the targets transformed and scaled, then
    the covariates (``ts.build_covariates``) of the same step. Returns it with the targets' scaler
    and the covariates, both fitted on the first ``n_train`` steps only."""
    d = 1 if transform in ("diff", "log-diff") else 0
    z = _forward_transform(data.targets, transform, data.lines, data.target_names)   # z[i] belongs to y[i + d]
    z_train = z[:n_train - d]
    # one target: scalar statistics, so a saved model's scaler reads as it did before several targets
    z_scaler = _make_scaler(scaler).fit(z_train[:, 0] if z.shape[1] == 1 else z_train)
    covariates = ts.build_covariates(data, n_train, _make_scaler(scaler), calendar)
    inputs = np.concatenate([z_scaler.transform(z), covariates.values[d:]], axis=1).astype(np.float32)
    return inputs, z_scaler, covariates


def known_future_inputs(inputs: np.ndarray, first_rows: np.ndarray, horizon: int, outputs: int,
                        onehot_count: int) -> np.ndarray:
    """What is known in advance of the inputs of the ``horizon`` steps from each of ``first_rows``
    (rows of ``inputs [R, F]``, laid out as ``model_inputs``'): ``[S, H, F]``. Columns
    ``0..outputs-1`` (targets, numeric covariates) are the recursion's to fill; the one-hot columns
    after them repeat the row before ``first_rows`` (a category stays as last observed); the
    calendar columns after those are the steps' own (exact)."""
    future = inputs[np.asarray(first_rows)[:, None] + np.arange(horizon)]     # [S, H, F]
    onehot = slice(outputs, outputs + onehot_count)
    future[:, :, onehot] = inputs[np.asarray(first_rows) - 1][:, None, onehot]
    return future


def recursive_forecast(predict: Callable[[np.ndarray], np.ndarray], windows: np.ndarray,
                       future_inputs: np.ndarray, outputs: int) -> np.ndarray:
    """Roll a one-step model forward ``H`` steps.

    ``windows [S, L, F]``: the inputs before each origin. ``predict``: ``[S, L, F] -> [S, P]``, the
    next step of input columns ``0..P-1`` (``P = outputs``). ``future_inputs [S, H, F]``: the
    inputs of the ``H`` future steps as far as they are known in advance; its columns ``0..P-1``
    are ignored. Step ``h`` appends ``[prediction, future_inputs[:, h, P:]]`` to the window and
    drops its oldest row. Returns the predictions ``[S, H, P]``."""
    s, h_steps = len(windows), future_inputs.shape[1]
    if future_inputs.shape[0] != s or future_inputs.shape[2] != windows.shape[2]:
        raise ValueError(f"future_inputs must be [S, H, F] = [{s}, H, {windows.shape[2]}], got shape "
                         f"{future_inputs.shape}")
    window = np.array(windows, copy=True)
    predictions = np.empty((s, h_steps, outputs), np.float64)
    for h in range(h_steps):
        step = np.asarray(predict(window)).reshape(s, outputs)
        predictions[:, h] = step
        row = np.array(future_inputs[:, h], dtype=window.dtype, copy=True)
        row[:, :outputs] = step
        window = np.concatenate([window[:, 1:], row[:, None]], axis=1)
    return predictions


def _errors(y_true: np.ndarray, y_pred: np.ndarray):
    err = y_pred - y_true
    return float(np.sqrt(np.mean(err ** 2))), float(np.mean(np.abs(err)))


def _step_errors(y_true: np.ndarray, y_pred: np.ndarray):
    """Per-step RMSE and MAE of ``[S, H]`` forecasts: two lists of ``H``."""
    err = y_pred - y_true
    return ([float(v) for v in np.sqrt(np.mean(err ** 2, axis=0))],
            [float(v) for v in np.mean(np.abs(err), axis=0)])


def _target_metrics(actual: np.ndarray, model: np.ndarray, naive: np.ndarray,
                    seasonal: Optional[np.ndarray]) -> dict:
    """RMSE and MAE, overall and per step, of the model and the baselines for one target (``[S, H]`` each)."""
    metrics = {}
    for name, forecast in (("", model), ("naive_", naive), ("seasonal_naive_", seasonal)):
        if forecast is None:
            metrics.update({f"{name}rmse": None, f"{name}mae": None, f"{name}rmse_by_step": None,
                            f"{name}mae_by_step": None})
            continue
        metrics[f"{name}rmse"], metrics[f"{name}mae"] = _errors(actual, forecast)
        metrics[f"{name}rmse_by_step"], metrics[f"{name}mae_by_step"] = _step_errors(actual, forecast)
    return metrics


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def run(csv_path: PathLike, column: Union[None, str, int, Sequence[Union[str, int]]] = None, lookback: int = 12,
        horizon: int = 1, test_size: Union[int, float] = 0.2, season: Optional[int] = None,
        transform: str = "diff", scaler: str = "minmax", units: int = 50, epochs: int = 200, batch_size: int = 16,
        learning_rate: float = 0.001, validation_split: float = 0.1, patience: int = 20,
        missing: str = "interpolate", seed: Optional[int] = 1, verbose: int = 1,
        plot: Optional[str] = None, save: Optional[str] = None, print_fn: Callable[[str], None] = print, *,
        features: Union[None, str, int, Sequence[Union[str, int]]] = (),
        categorical: Union[None, str, int, Sequence[Union[str, int]]] = (),
        time_columns: Union[None, str, int, Sequence[Union[str, int]]] = None, calendar: bool = False,
        strategy: str = "direct") -> dict:
    """Train on the series in ``csv_path`` and evaluate on its held-out tail (module docstring).
    ``column``: one target or a list; ``features``, ``categorical``, ``time_columns``, ``calendar``
    and ``strategy`` as the module docstring says. Returns the metrics; writes a plot (``plot``)
    and the model (``save``) when asked."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if scaler not in SCALERS:
        raise ValueError(f"scaler must be one of {', '.join(SCALERS)}, got {scaler!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    for name, value in (("lookback", lookback), ("horizon", horizon), ("units", units), ("epochs", epochs),
                        ("batch_size", batch_size), ("patience", patience)):
        _check_int(name, value)
    if season is not None:
        _check_int("season", season)
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must lie in [0, 1), got {validation_split!r}")
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

    data = ts.load_frame(csv_path, column, features, categorical=categorical, time_columns=time_columns,
                         missing=missing)
    y = data.targets                                                     # [N, T] original units
    names = data.target_names
    n, n_targets = y.shape
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
        # as before covariates: the first column's date labels; else the time columns (year + quarter: 4)
        season = ts.infer_season(data.times) if time_columns is None else None
        if season is None:
            season = ts.season_from_stamps(data.stamps)
        if season is not None and n_train < season:
            season = None  # too short for the inferred season: no seasonal baseline
    elif n_train < season:
        raise ValueError(f"seasonal-naive needs a full season ({season} steps) before the tail; the training "
                         f"part has {n_train}")

    if seed is not None:
        backend.set_random_seed(seed)
    inputs, z_scaler, covariates = model_inputs(data, n_train, transform, scaler, calendar)   # [N-d, F]
    n_inputs = inputs.shape[1]
    # direct: every step of every target at once; recursive: one step of every numeric input
    outputs = n_targets + covariates.numeric_count if strategy == "recursive" else n_targets
    train_horizon = horizon if strategy == "direct" else 1
    x_train, y_train = ts.make_windows(inputs[:n_train - d], lookback, train_horizon,
                                       target_columns=list(range(outputs)))
    y_train = y_train.reshape(len(y_train), -1)                          # [S, steps * outputs], step-major
    x_test, _ = ts.make_windows(inputs[n_train - d - lookback:], lookback, horizon)  # origins t = n_train .. n-H
    origins = np.arange(n_train, n - horizon + 1)
    targets = y[origins[:, None] + np.arange(horizon)]                   # [S, H, T] original units

    model = build_model(lookback, train_horizon, units, n_inputs, learning_rate, outputs)
    if verbose:
        print_fn(f"{os.path.basename(os.fspath(csv_path))}: column{'s' if n_targets > 1 else ''} "
                 f"{', '.join(map(repr, names))}, {n} steps"
                 + (f" ({data.interpolated} interpolated, {data.dropped} dropped)"
                    if data.interpolated or data.dropped else "")
                 + f"; training part {n_train}, held-out tail {k}")
        if covariates.names:
            print_fn(f"covariates ({len(covariates.names)} inputs): " + _describe_covariates(data, covariates))
        print_fn(f"transform {transform}, scaler {scaler}, lookback {lookback}, horizon {horizon}, strategy "
                 f"{strategy}: {len(x_train)} training windows, {len(origins)} forecast origins in the tail")
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

    def predict(windows):
        return model.predict(windows, batch_size=256, verbose=0)

    if strategy == "direct":
        z_scaled = predict(x_test).reshape(len(x_test), horizon, n_targets)
    else:
        # future inputs: calendar columns are known exactly (the rows' own times); a category is
        # taken to stay as last observed; the targets and numeric covariates come from the model
        future = known_future_inputs(inputs, origins - d, horizon, outputs, covariates.onehot_count)
        z_scaled = recursive_forecast(predict, x_test, future, outputs)[:, :, :n_targets]
    z_hat = z_scaler.inverse_transform(z_scaled.astype(np.float64))
    y_before = y[origins - 1]                                            # [S, T]
    forecast = _inverse_transform(z_hat, y_before, transform)            # [S, H, T]
    naive = np.repeat(y_before[:, None], horizon, axis=1)                # [S, H, T]
    seasonal = None
    if season is not None:
        histories = np.stack([y[t - season:t].T for t in origins])      # [S, T, season]
        seasonal = ts.seasonal_naive_forecast(histories, horizon, season).transpose(0, 2, 1)   # [S, H, T]
    per_target = {name: _target_metrics(targets[..., j], forecast[..., j], naive[..., j],
                                        None if seasonal is None else seasonal[..., j])
                  for j, name in enumerate(names)}
    result = {
        **(per_target[names[0]] if n_targets == 1 else {key: None for key in per_target[names[0]]}),
        "targets": per_target, "column": names[0] if n_targets == 1 else None, "columns": names,
        "features": data.numeric_names + data.categorical_names, "inputs": names + covariates.names,
        "categories": {e.name: e.categories_ for e in covariates.encoders},
        "calendar": covariates.calendar_parts, "time_columns": data.time_columns, "strategy": strategy,
        "season": season, "season_inferred": bool(inferred and season is not None),
        "steps": n, "test_size": k, "origins": int(len(origins)),
        "lookback": lookback, "horizon": horizon, "transform": transform, "scaler": scaler, "units": units,
        "epochs": epochs_run, "max_epochs": epochs, "batch_size": batch_size,
        "train_windows": int(len(x_train) - n_val), "validation_windows": int(n_val),
        "final_loss": float(history.history["loss"][-1]) if history.history.get("loss") else None,
        "train_seconds": seconds,
    }

    if verbose:
        print_fn(f"Trained {epochs_run} epochs in {seconds:.1f} s"
                 + (f" (early stopping on the latest {n_val} training windows)" if n_val else ""))
        print_fn(f"Held-out tail, {len(origins)} forecasts of {horizon} step(s):")
        for name in names:
            _print_target(print_fn, name if n_targets > 1 else None, per_target[name], season, horizon)
        if season is None:
            print_fn("  seasonal-naive: no season given (--season), and none inferred from the time column "
                     "that fits in the training part")
    if figure is not None and distributed.is_chief():
        _plot(figure, plot, y, names, data.times, origins, forecast, naive, seasonal, per_target, season)
        if verbose:
            print_fn(f"Wrote {plot}")
    if save is not None and distributed.is_chief():
        model.save(save, metadata={
            "task": "forecast", "csv": os.path.basename(os.fspath(csv_path)), "column": result["column"],
            "columns": names, "features": result["features"], "inputs": result["inputs"],
            "categories": result["categories"], "calendar": result["calendar"],
            "time_columns": data.time_columns, "strategy": strategy,
            "lookback": lookback, "horizon": horizon, "transform": transform, "season": season,
            "scaler": z_scaler.get_config(),
            "covariate_scaler": None if covariates.scaler is None else covariates.scaler.get_config()})
        if verbose:
            print_fn(f"Saved the model to {save}")
    return result


def _describe_covariates(data: ts.Frame, covariates: ts.Covariates) -> str:
    described = [f"{name} (numeric)" for name in data.numeric_names]
    described += [f"{e.name} (categorical: {len(e.categories_ or [])} categories)" for e in covariates.encoders]
    if covariates.calendar_parts:
        described.append(f"calendar {', '.join(covariates.calendar_parts)} (sin/cos)")
    return ", ".join(described)


def _print_target(print_fn, name: Optional[str], metrics: dict, season: Optional[int], horizon: int) -> None:
    rows = [("LSTM", ""), ("naive", "naive_")]
    if season is not None:
        rows.append((f"seasonal-naive({season})", "seasonal_naive_"))
    if name is not None:
        print_fn(f"  {name}:")
    print_fn(f"  {'model':<20}{'RMSE':>10}{'MAE':>10}" + ("   RMSE by step" if horizon > 1 else ""))
    for label, prefix in rows:
        by_step = "   " + " ".join(f"{v:.3f}" for v in metrics[f"{prefix}rmse_by_step"]) if horizon > 1 else ""
        print_fn(f"  {label:<20}{metrics[prefix + 'rmse']:>10.3f}{metrics[prefix + 'mae']:>10.3f}{by_step}")


def _plot(figure, path, y, names, times, origins, forecast, naive, seasonal, per_target, season) -> None:
    """One row per target: actual vs the LSTM (1 and H steps ahead), naive and seasonal-naive over
    the tail; with H > 1 a second panel: RMSE by step of the LSTM and the baselines."""
    horizon = forecast.shape[1]
    columns = 2 if horizon > 1 else 1
    fig = figure(figsize=(10 + 4 * (columns - 1), 4.5 * len(names)))
    axes = np.asarray(fig.subplots(len(names), columns, squeeze=False))
    # a long series: show the tail after as much context as the tail is long, else it is unreadable
    first = 0 if len(y) <= 300 else max(0, int(origins[0]) - (len(y) - int(origins[0])))
    steps = np.arange(first, len(y))
    for j, name in enumerate(names):
        metrics = per_target[name]
        ax = axes[j, 0]
        ax.plot(steps, y[first:, j], color="black", linewidth=1.2, label="actual")
        ax.plot(origins, forecast[:, 0, j], color="tab:blue", linewidth=1.4, label="LSTM, 1 step ahead")
        if horizon > 1:
            ax.plot(origins + horizon - 1, forecast[:, -1, j], color="tab:orange", linewidth=1.2,
                    label=f"LSTM, {horizon} steps ahead")
        ax.plot(origins, naive[:, 0, j], color="tab:grey", linewidth=1, linestyle="--", label="naive")
        if seasonal is not None:
            ax.plot(origins, seasonal[:, 0, j], color="tab:green", linewidth=1, linestyle=":",
                    label=f"seasonal-naive ({season})")
        ax.axvline(origins[0] - 0.5, color="grey", linewidth=0.8, linestyle="--")
        if times:
            ticks = np.linspace(first, len(y) - 1, num=min(8, len(steps))).astype(int)
            ax.set_xticks(ticks)
            ax.set_xticklabels([times[i] for i in ticks], rotation=0)
        ax.set_ylabel(name)
        title = f"{name}: LSTM RMSE {metrics['rmse']:.2f}, naive {metrics['naive_rmse']:.2f}"
        if metrics["seasonal_naive_rmse"] is not None:
            title += f", seasonal-naive {metrics['seasonal_naive_rmse']:.2f}"
        ax.set_title(title + " (held-out tail)")
        ax.legend(loc="upper left")
        if horizon > 1:
            ax = axes[j, 1]
            step = np.arange(1, horizon + 1)
            ax.plot(step, metrics["rmse_by_step"], marker="o", color="tab:blue", label="LSTM")
            ax.plot(step, metrics["naive_rmse_by_step"], marker="s", color="tab:grey", linestyle="--", label="naive")
            if seasonal is not None:
                ax.plot(step, metrics["seasonal_naive_rmse_by_step"], marker="^", color="tab:green", linestyle=":",
                        label=f"seasonal-naive ({season})")
            ax.set_xticks(step)
            ax.set_xlabel("steps ahead")
            ax.set_ylabel(f"RMSE ({name})")
            ax.set_title(f"{name}: error by step")
            ax.legend(loc="best")
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
        description="Train LSTM -> Dense(horizon x targets) on scaled windows of CSV column(s) and, with "
                    "--features, other columns' past values, forecast HORIZON steps from every origin in the "
                    "held-out tail, and compare RMSE/MAE (overall and per step) with the naive and "
                    "seasonal-naive forecasts. Airline passengers: best with --transform log-diff.")
    p.add_argument("csv", metavar="CSV", help="CSV file with a header row (the first column labels the rows)")
    p.add_argument("--column", nargs="+", default=None, metavar="TARGET",
                   help="column(s) to forecast, each with its own metrics (default: the last column); "
                        "give CSV before the lists")
    p.add_argument("--features", nargs="+", default=[], metavar="COL",
                   help="covariate columns: their past values are inputs too; a column with text is "
                        "categorical (one-hot)")
    p.add_argument("--categorical", nargs="+", default=[], metavar="COL",
                   help="features to one-hot encode even though they hold numbers (codes)")
    p.add_argument("--time-columns", nargs="+", default=None, metavar="COL",
                   help="one date column, or columns named year, quarter, month, day, hour (default: the first "
                        "column if it holds dates, else columns with those names)")
    p.add_argument("--calendar", action="store_true",
                   help="add the time of each step as inputs: sin/cos of hour of day, weekday, month")
    p.add_argument("--strategy", choices=STRATEGIES, default="direct",
                   help="horizon > 1: direct (one output per step, the default) or recursive (a one-step model "
                        "fed its own forecasts)")
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
        column = args.column[0] if args.column and len(args.column) == 1 else args.column
        return run(args.csv, column=column, lookback=args.lookback, horizon=args.horizon,
                   test_size=args.test_size, season=args.season, transform=args.transform, scaler=args.scaler,
                   units=args.units, epochs=args.epochs, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, validation_split=args.validation_split,
                   patience=args.patience, missing=args.missing, seed=args.seed,
                   verbose=0 if args.quiet else 1, plot=args.plot, save=args.save, features=args.features,
                   categorical=args.categorical, time_columns=args.time_columns, calendar=args.calendar,
                   strategy=args.strategy)

    p.set_defaults(func=func)
