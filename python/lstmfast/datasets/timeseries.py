"""Time series for forecasting: CSV columns, sliding windows, scalers, a held-out tail, baselines.

Shapes: a series is ``[N]`` (one variable) or ``[N, F]`` (F variables, one row per time step).
``make_windows`` turns it into supervised pairs ``x [S, lookback, F]``, ``y [S, horizon]`` (or
``[S, horizon, F_target]``): window ``s`` reads the ``lookback`` steps starting at ``s * stride``
and its target is the ``horizon`` steps right after them.

Missing values in CSV files (empty cells, or ``NA``, ``N/A``, ``NaN``, ``null`` in any letter
case) follow one of three rules, ``missing=``:

* ``"interpolate"`` (default): a gap between two valid values of a column is filled by linear
  interpolation over the row positions (rows are taken as equally spaced in time); rows before
  the first or after the last valid value of any selected column are dropped, since there is
  nothing to interpolate from.
* ``"skip"``: rows with a missing value in any selected column are dropped.
* ``"error"``: the first missing value raises ValueError naming its line.

Anything else that does not parse as a finite number raises ValueError naming the line, the
column and the text.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike

from .._typing import PathLike

__all__ = ["TimeSeries", "load_csv", "load_csv_column", "make_windows", "train_test_split", "MinMaxScaler",
           "StandardScaler", "scaler_from_config", "naive_forecast", "seasonal_naive_forecast", "infer_season",
           "MISSING_TOKENS"]

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null"})
_MISSING_RULES = ("interpolate", "skip", "error")


# ---- CSV loading -----------------------------------------------------------------------------------

@dataclass
class TimeSeries:
    """A series read from a CSV file.

    ``values``: float64 ``[N]`` for one column, ``[N, F]`` for a list of columns. ``times``: the
    text of the time column for each kept row (None without a time column). ``lines``: the file
    line of each kept row. ``interpolated`` and ``dropped``: how many values were filled and how
    many rows were left out by the missing-value rule."""

    values: np.ndarray
    columns: List[str]
    times: Optional[List[str]] = None
    lines: List[int] = field(default_factory=list)
    interpolated: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.values)


def _read_rows(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such CSV file: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"expected a CSV file, got a directory: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = None
        rows = []
        try:
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue  # blank line
                if header is None:
                    header = [cell.strip() for cell in row]
                    continue
                rows.append((reader.line_num, row))
        except (csv.Error, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a readable CSV file (line {reader.line_num}): {e}") from None
    if header is None:
        raise ValueError(f"{path}: the file is empty (expected a header row and data rows)")
    return header, rows


def _column_index(header: List[str], name, path) -> int:
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if not -len(header) <= name < len(header):
            raise ValueError(f"{path}: column index {name} is out of range; the file has {len(header)} columns: "
                             f"{', '.join(map(repr, header))}")
        return int(name) % len(header)
    if not isinstance(name, str):
        raise TypeError(f"column must be a name (str) or an index (int), got {type(name).__name__}")
    if name in header:
        return header.index(name)
    folded = [i for i, h in enumerate(header) if h.lower() == name.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError(f"{path}: no column named {name!r}; the columns are: {', '.join(map(repr, header))}")


def _interpolate(values: np.ndarray) -> np.ndarray:
    """Fill NaNs between valid values linearly over the row index (1-D, valid ends assumed)."""
    bad = np.isnan(values)
    if bad.any():
        idx = np.arange(len(values))
        values = values.copy()
        values[bad] = np.interp(idx[bad], idx[~bad], values[~bad])
    return values


def load_csv(path: PathLike, columns: Union[None, str, int, Sequence[Union[str, int]]] = None, *,
             missing: str = "interpolate", time_column: Union[None, str, int] = 0) -> TimeSeries:
    """Read numeric column(s) of a CSV file with a header row.

    ``columns``: a name (values ``[N]``), a list of names (values ``[N, F]``) or None for the last
    column; integer indices are accepted too. Names match exactly, or else case-insensitively when
    that is unambiguous. ``time_column``: the name or index of the column whose text labels the
    rows (``times``), or None. ``missing``: the missing-value rule (module docstring)."""
    if missing not in _MISSING_RULES:
        raise ValueError(f"missing must be one of {', '.join(_MISSING_RULES)}, got {missing!r}")
    header, rows = _read_rows(path)
    single = columns is None or isinstance(columns, (str, int, np.integer))
    wanted = [len(header) - 1] if columns is None else ([columns] if single else list(columns))
    if not wanted:
        raise ValueError("columns must name at least one column")
    idx = [_column_index(header, c, path) for c in wanted]
    t_idx = None if time_column is None else _column_index(header, time_column, path)
    if not rows:
        raise ValueError(f"{path}: no data rows after the header")
    values = np.full((len(rows), len(idx)), np.nan)
    for r, (line, row) in enumerate(rows):
        for k, j in enumerate(idx):
            text = row[j].strip() if j < len(row) else ""
            if text.lower() in MISSING_TOKENS:
                if missing == "error":
                    raise ValueError(f"{path}: line {line}, column {header[j]!r}: missing value "
                                     f"(use missing='interpolate' or 'skip')")
                continue
            try:
                v = float(text)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise ValueError(f"{path}: line {line}, column {header[j]!r}: {text!r} is not a number")
            values[r, k] = v
    lines = [line for line, _ in rows]
    times = None if t_idx is None else [row[t_idx].strip() if t_idx < len(row) else "" for _, row in rows]
    bad = np.isnan(values)
    interpolated = dropped = 0
    if bad.any():
        if missing == "skip":
            keep = ~bad.any(axis=1)
        else:  # interpolate inside, drop the ends
            valid_rows = np.flatnonzero(~bad.any(axis=1))
            first = max(int(np.flatnonzero(~bad[:, k])[0]) if (~bad[:, k]).any() else len(rows)
                        for k in range(len(idx)))
            last = min(int(np.flatnonzero(~bad[:, k])[-1]) if (~bad[:, k]).any() else -1 for k in range(len(idx)))
            if last < first or not len(valid_rows):
                raise ValueError(f"{path}: column(s) {', '.join(repr(header[j]) for j in idx)} have no "
                                 "overlapping valid values")
            keep = np.zeros(len(rows), bool)
            keep[first:last + 1] = True
            inner = values[first:last + 1]
            interpolated = int(np.isnan(inner).sum())
            for k in range(len(idx)):
                inner[:, k] = _interpolate(inner[:, k])
            values[first:last + 1] = inner
        dropped = int((~keep).sum())
        values = values[keep]
        lines = [ln for ln, k in zip(lines, keep) if k]
        if times is not None:
            times = [t for t, k in zip(times, keep) if k]
    if len(values) == 0:
        raise ValueError(f"{path}: no rows with values left in column(s) "
                         f"{', '.join(repr(header[j]) for j in idx)}")
    return TimeSeries(values=values[:, 0] if single else values, columns=[header[j] for j in idx], times=times,
                      lines=lines, interpolated=interpolated, dropped=dropped)


def load_csv_column(path: PathLike, column: Union[None, str, int] = None, *,
                    missing: str = "interpolate") -> np.ndarray:
    """The values ``[N]`` (float64) of one CSV column; see ``load_csv``."""
    return load_csv(path, column, missing=missing, time_column=None).values


def infer_season(times: Optional[Sequence[str]]) -> Optional[int]:
    """The usual season length from the spacing of date labels, or None when the labels are not
    dates (or too irregular): hourly 24, daily 7, weekly 52, monthly 12, quarterly 4.

    Recognised formats: ``YYYY-MM``, ``YYYY-MM-DD``, ``YYYYMMDD``, ``YYYY/MM/DD``, ``YYYY-MM-DD HH:MM``
    and ``YYYY-MM-DD HH:MM:SS``; the median spacing decides."""
    if not times or len(times) < 3:
        return None
    formats = ("%Y-%m", "%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S",
               "%Y-%m-%dT%H:%M:%S")
    sample = list(times[:50])
    for fmt in formats:
        try:
            stamps = [datetime.strptime(t.strip(), fmt) for t in sample]
        except ValueError:
            continue
        days = float(np.median(np.diff([s.timestamp() for s in stamps]))) / 86400.0
        for lo, hi, season in ((0.9 / 24, 1.1 / 24, 24), (0.9, 1.1, 7), (6.5, 7.5, 52), (27.5, 31.5, 12),
                               (88.0, 93.0, 4)):
            if lo <= days <= hi:
                return season
        return None
    return None


# ---- windows and splits -----------------------------------------------------------------------------

def _as_series(series, what="series") -> np.ndarray:
    arr = np.asarray(series)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{what} must be [N] or [N, F], got shape {arr.shape}")
    return arr


def _check_count(value, name, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def make_windows(series: ArrayLike, lookback: int, horizon: int = 1, stride: int = 1,
                 target_columns: Union[None, int, Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Sliding windows over ``series [N]`` or ``[N, F]``.

    Returns ``x [S, lookback, F]`` (F = 1 for a 1-D series) and the targets ``y``: window ``s``
    is ``series[s*stride : s*stride + lookback]`` and its target is the next ``horizon`` steps,
    ``series[s*stride + lookback : s*stride + lookback + horizon]``; ``S = (N - lookback -
    horizon) // stride + 1``. ``y`` is ``[S, horizon]`` for a 1-D series or an int
    ``target_columns``, and ``[S, horizon, len(target_columns)]`` for a list of columns (all
    columns when ``target_columns`` is None and the series is 2-D). Arrays keep the series dtype."""
    arr = _as_series(series)
    lookback = _check_count(lookback, "lookback")
    horizon = _check_count(horizon, "horizon")
    stride = _check_count(stride, "stride")
    n = arr.shape[0]
    if n < lookback + horizon:
        raise ValueError(f"the series has {n} steps, fewer than lookback + horizon = {lookback + horizon}")
    data = arr[:, None] if arr.ndim == 1 else arr
    f = data.shape[1]
    squeeze = arr.ndim == 1
    if target_columns is None:
        cols = list(range(f))
    elif isinstance(target_columns, (int, np.integer)) and not isinstance(target_columns, bool):
        cols, squeeze = [int(target_columns)], True
    else:
        cols = [int(c) for c in target_columns]
        if not cols:
            raise ValueError("target_columns must name at least one column")
    for c in cols:
        if not -f <= c < f:
            raise ValueError(f"target column {c} is out of range for a series with {f} column(s)")
    s = (n - lookback - horizon) // stride + 1
    starts = np.arange(s) * stride
    x = data[starts[:, None] + np.arange(lookback)]                      # [S, lookback, F]
    y = data[(starts + lookback)[:, None] + np.arange(horizon)][:, :, cols]  # [S, horizon, C]
    return x, (y[:, :, 0] if squeeze else y)


def train_test_split(series: ArrayLike, test_size: Union[int, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Split off the last ``test_size`` steps (an int >= 1, or a fraction in (0, 1), rounded, at
    least 1) as a held-out tail: ``(series[:-k], series[-k:])``. Time order is kept."""
    arr = _as_series(series)
    k = resolve_test_size(len(arr), test_size)
    return arr[:-k], arr[-k:]


def resolve_test_size(n: int, test_size: Union[int, float]) -> int:
    """The number of held-out steps for a series of ``n`` steps (see ``train_test_split``)."""
    if isinstance(test_size, bool):
        raise TypeError("test_size must be an int or a float fraction, got a bool")
    if isinstance(test_size, (float, np.floating)):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"a fractional test_size must lie in (0, 1), got {test_size}")
        k = max(1, int(round(n * float(test_size))))
    elif isinstance(test_size, (int, np.integer)):
        k = int(test_size)
    else:
        raise TypeError(f"test_size must be an int or a float fraction, got {type(test_size).__name__}")
    if not 1 <= k < n:
        raise ValueError(f"test_size must leave at least one training step: got {k} of {n} steps")
    return k


# ---- scalers ----------------------------------------------------------------------------------------

_T = TypeVar("_T", bound="_Scaler")


class _Scaler:
    """Per-column affine scaling ``z = (x - offset) * factor``, fitted on training data only.

    Fitted on ``[N]`` it holds scalars and transforms arrays of any shape; fitted on ``[N, F]`` it
    holds ``[F]`` statistics and transforms arrays whose last axis is F (or, with ``columns=``, the
    given columns' statistics for arrays whose last axis has that many entries)."""

    def __init__(self) -> None:
        self.offset_ = None
        self.factor_ = None

    def _stats(self, data: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def fitted(self) -> bool:
        return self.offset_ is not None

    def fit(self: _T, data: ArrayLike) -> _T:
        arr = _as_series(data, "data").astype(np.float64)
        if arr.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.fit needs at least one row, got shape {arr.shape}")
        self.offset_, self.factor_ = self._stats(arr)
        return self

    def _params(self, data, columns):
        if not self.fitted:
            raise ValueError(f"{type(self).__name__} is not fitted yet: call fit(train) first")
        offset, factor = self.offset_, self.factor_
        if np.ndim(offset) == 0:
            return offset, factor
        if columns is not None:
            offset, factor = offset[list(columns)], factor[list(columns)]
        if np.ndim(data) == 0 or np.shape(data)[-1] != len(offset):
            raise ValueError(f"{type(self).__name__} was fitted on {len(offset)} column(s); expected an array whose "
                             f"last axis has {len(offset)} entries, got shape {np.shape(data)}")
        return offset, factor

    def transform(self, data: ArrayLike, columns: Optional[Sequence[int]] = None) -> np.ndarray:
        arr = np.asarray(data)
        offset, factor = self._params(arr, columns)
        out = (arr - offset) * factor
        return out.astype(arr.dtype, copy=False) if arr.dtype.kind == "f" else out

    def inverse_transform(self, data: ArrayLike, columns: Optional[Sequence[int]] = None) -> np.ndarray:
        arr = np.asarray(data)
        offset, factor = self._params(arr, columns)
        out = arr / factor + offset
        return out.astype(arr.dtype, copy=False) if arr.dtype.kind == "f" else out

    def fit_transform(self, data: ArrayLike) -> np.ndarray:
        return self.fit(data).transform(data)

    def get_config(self) -> dict:
        """JSON-serialisable parameters (``scaler_from_config`` rebuilds the scaler)."""
        def tolist(v):
            return None if v is None else np.asarray(v).tolist()
        return {"class_name": type(self).__name__, "offset": tolist(self.offset_), "factor": tolist(self.factor_),
                **self._extra_config()}

    def _extra_config(self) -> dict:
        return {}


class MinMaxScaler(_Scaler):
    """Scale each column to ``feature_range`` using the training minimum and maximum (scikit-learn's
    MinMaxScaler). A constant column maps to the range's lower end."""

    def __init__(self, feature_range: Tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        lo, hi = (float(v) for v in feature_range)
        if not lo < hi:
            raise ValueError(f"feature_range must be (low, high) with low < high, got {feature_range!r}")
        self.feature_range = (lo, hi)

    def _stats(self, data):
        lo, hi = self.feature_range
        dmin, dmax = data.min(axis=0), data.max(axis=0)
        span = np.where(dmax > dmin, dmax - dmin, 1.0)
        factor = (hi - lo) / span
        return dmin - lo / factor, factor  # z = (x - dmin) * factor + lo

    def _extra_config(self):
        return {"feature_range": list(self.feature_range)}


class StandardScaler(_Scaler):
    """Zero mean and unit variance per column from the training data (population standard
    deviation, as scikit-learn). A constant column is only centred."""

    def _stats(self, data):
        mean, std = data.mean(axis=0), data.std(axis=0)
        return mean, 1.0 / np.where(std > 0, std, 1.0)


def scaler_from_config(config: dict) -> _Scaler:
    """Rebuild a fitted scaler from ``get_config()``."""
    classes = {"MinMaxScaler": MinMaxScaler, "StandardScaler": StandardScaler}
    name = config.get("class_name")
    if name not in classes:
        raise ValueError(f"unknown scaler {name!r}; expected one of {', '.join(classes)}")
    scaler = MinMaxScaler(config.get("feature_range", (0.0, 1.0))) if name == "MinMaxScaler" else StandardScaler()
    if config.get("offset") is not None:
        scaler.offset_ = np.asarray(config["offset"], np.float64)
        scaler.factor_ = np.asarray(config["factor"], np.float64)
        if scaler.offset_.ndim == 0:
            scaler.offset_, scaler.factor_ = float(scaler.offset_), float(scaler.factor_)
    return scaler


# ---- baselines --------------------------------------------------------------------------------------

def naive_forecast(history: ArrayLike, horizon: int) -> np.ndarray:
    """The last observed value repeated: ``history [..., T] -> [..., horizon]``."""
    arr = np.asarray(history)
    horizon = _check_count(horizon, "horizon")
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(f"history must be [..., T] with T >= 1, got shape {arr.shape}")
    return np.repeat(arr[..., -1:], horizon, axis=-1)


def seasonal_naive_forecast(history: ArrayLike, horizon: int, season: int) -> np.ndarray:
    """The value one season earlier: ``history [..., T] -> [..., horizon]`` with
    ``yhat[T + h] = y[T + h - season * ceil(h / season)]`` for h = 1..horizon (so steps beyond
    one season repeat the last observed season). Needs ``T >= season``."""
    arr = np.asarray(history)
    horizon = _check_count(horizon, "horizon")
    season = _check_count(season, "season")
    if arr.ndim == 0 or arr.shape[-1] < season:
        raise ValueError(f"seasonal-naive needs at least season={season} past steps, got history of shape "
                         f"{arr.shape}")
    t = arr.shape[-1]
    h = np.arange(1, horizon + 1)
    idx = t + h - season * np.ceil(h / season).astype(int) - 1  # 0-based index into history
    return arr[..., idx]
