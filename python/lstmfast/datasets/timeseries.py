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

Covariates (``load_frame``, ``build_covariates``, ``make_covariate_windows``): target columns are
forecast from their own past and the past of feature columns.

* A feature column is categorical when any of its non-missing cells is not a number, or when it
  is listed in ``categorical`` (numeric codes). Categories are learned from the training part
  only and one-hot encoded (``OneHotEncoder``); a category first seen later, or a missing cell
  kept by "interpolate", encodes as all zeros; more than ``MAX_CATEGORIES`` (50) raise ValueError.
  Targets must be numeric.
* The missing-value rule applies to targets and features alike: "interpolate" fills numeric gaps
  and drops the rows before the first and after the last valid value of any numeric column;
  "skip" drops a row with any missing cell; "error" raises.
* Numeric features enter as levels (never differenced), scaled per column with statistics of the
  training part only.
* Time: one date column (``DATE_FORMATS``) or part columns named year, quarter, month, day, hour
  (``TIME_PARTS``, any letter case) give each row a time stamp. Without ``time_columns`` the
  first column is used if it holds dates, else the columns with those names (year and at least
  one more). The stamps' spacing infers the season (``season_from_stamps``: hourly 24, daily 7,
  weekly 52, monthly 12, quarterly 4) and, on request, calendar inputs: sin and cos of hour of
  day, weekday and month of year (``calendar_features``), for each part that varies and has a
  period of at least two steps (``calendar_parts``). Calendar inputs are exact for future steps too.
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
           "MISSING_TOKENS", "DATE_FORMATS", "TIME_PARTS", "MAX_CATEGORIES", "season_from_stamps", "Frame",
           "load_frame", "OneHotEncoder", "CALENDAR_PARTS", "calendar_parts", "calendar_features", "Covariates",
           "build_covariates", "make_covariate_windows"]

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null"})
_MISSING_RULES = ("interpolate", "skip", "error")
TIME_PARTS = ("year", "quarter", "month", "day", "hour")
MAX_CATEGORIES = 50


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


def _parse_numbers(path, header: List[str], rows, idx: List[int], missing: str) -> np.ndarray:
    """The cells of columns ``idx`` as float64 ``[R, C]``, NaN where missing (``missing="error"``
    raises on the first one); text that is not a finite number raises naming line and column."""
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
    return values


def _apply_missing_rule(path, names: List[str], values: np.ndarray, missing: str,
                        other_missing: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, int]:
    """The missing-value rule (module docstring) over numeric ``values [R, C]`` (NaN = missing):
    returns the filled values, the rows to keep ``[R]`` (bool) and how many values were
    interpolated. ``other_missing [R]``: rows where a non-numeric column is missing; "skip" drops
    them too, "interpolate" keeps them (the caller encodes those cells as "no value")."""
    bad = np.isnan(values)
    keep = np.ones(len(values), bool)
    if missing == "skip":
        keep = ~bad.any(axis=1)
        if other_missing is not None:
            keep &= ~other_missing
        return values, keep, 0
    if not bad.any():
        return values, keep, 0
    # interpolate inside, drop the ends
    valid_rows = np.flatnonzero(~bad.any(axis=1))
    first = max(int(np.flatnonzero(~bad[:, k])[0]) if (~bad[:, k]).any() else len(values)
                for k in range(values.shape[1]))
    last = min(int(np.flatnonzero(~bad[:, k])[-1]) if (~bad[:, k]).any() else -1 for k in range(values.shape[1]))
    if last < first or not len(valid_rows):
        raise ValueError(f"{path}: column(s) {', '.join(map(repr, names))} have no overlapping valid values")
    keep[:] = False
    keep[first:last + 1] = True
    values = values.copy()
    inner = values[first:last + 1]
    interpolated = int(np.isnan(inner).sum())
    for k in range(values.shape[1]):
        inner[:, k] = _interpolate(inner[:, k])
    return values, keep, interpolated


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
    names = [header[j] for j in idx]
    values = _parse_numbers(path, header, rows, idx, missing)
    values, keep, interpolated = _apply_missing_rule(path, names, values, missing)
    lines = [line for line, _ in rows]
    times = None if t_idx is None else [row[t_idx].strip() if t_idx < len(row) else "" for _, row in rows]
    dropped = int((~keep).sum())
    if dropped:
        values = values[keep]
        lines = [ln for ln, k in zip(lines, keep) if k]
        if times is not None:
            times = [t for t, k in zip(times, keep) if k]
    if len(values) == 0:
        raise ValueError(f"{path}: no rows with values left in column(s) {', '.join(map(repr, names))}")
    return TimeSeries(values=values[:, 0] if single else values, columns=names, times=times,
                      lines=lines, interpolated=interpolated, dropped=dropped)


def load_csv_column(path: PathLike, column: Union[None, str, int] = None, *,
                    missing: str = "interpolate") -> np.ndarray:
    """The values ``[N]`` (float64) of one CSV column; see ``load_csv``."""
    return load_csv(path, column, missing=missing, time_column=None).values


DATE_FORMATS = ("%Y-%m", "%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S",
                "%Y-%m-%dT%H:%M:%S")
_SEASONS = ((0.9 / 24, 1.1 / 24, 24), (0.9, 1.1, 7), (6.5, 7.5, 52), (27.5, 31.5, 12), (88.0, 93.0, 4))


def infer_season(times: Optional[Sequence[str]]) -> Optional[int]:
    """The usual season length from the spacing of date labels, or None when the labels are not
    dates (or too irregular): hourly 24, daily 7, weekly 52, monthly 12, quarterly 4.

    Recognised formats: ``YYYY-MM``, ``YYYY-MM-DD``, ``YYYYMMDD``, ``YYYY/MM/DD``, ``YYYY-MM-DD HH:MM``
    and ``YYYY-MM-DD HH:MM:SS``; the median spacing of the first 50 labels decides."""
    if not times or len(times) < 3:
        return None
    sample = list(times[:50])
    for fmt in DATE_FORMATS:
        try:
            stamps = [datetime.strptime(t.strip(), fmt) for t in sample]
        except ValueError:
            continue
        return season_from_stamps(stamps)
    return None


def season_from_stamps(stamps: Optional[Sequence[datetime]]) -> Optional[int]:
    """``infer_season`` for parsed time stamps (from a date column or year/quarter/month/day/hour
    columns): the median spacing of the first 50 decides; None when it fits no usual season."""
    if not stamps or len(stamps) < 3:
        return None
    days = float(np.median(np.diff([(s - stamps[0]).total_seconds() for s in stamps[:50]]))) / 86400.0
    for lo, hi, season in _SEASONS:
        if lo <= days <= hi:
            return season
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


# ---- covariates: targets with other columns, categories, calendar -----------------------------------

@dataclass
class Frame:
    """Target and covariate columns of one CSV file, row-aligned after the missing-value rule.

    ``targets``: float64 ``[N, T]``. ``numeric``: float64 ``[N, Fn]``, the numeric covariates
    (levels). ``categorical``: ``Fc`` lists of ``N`` strings, the categorical covariates' text
    (``""`` where a cell was missing and ``missing="interpolate"`` kept the row). ``stamps``: the
    time of each row (datetime) from ``time_columns``, or None. ``times``: a text label per row
    (the first column's text, or the stamps written out when they come from part columns).
    ``lines``, ``interpolated``, ``dropped``: as in ``TimeSeries``."""

    targets: np.ndarray
    target_names: List[str]
    numeric: np.ndarray
    numeric_names: List[str]
    categorical: List[List[str]]
    categorical_names: List[str]
    stamps: Optional[List[datetime]] = None
    time_columns: List[str] = field(default_factory=list)
    times: Optional[List[str]] = None
    lines: List[int] = field(default_factory=list)
    interpolated: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.targets)


def _names_list(value, argument: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, int, np.integer)):
        return [value]
    items = list(value)
    if any(not isinstance(v, (str, int, np.integer)) or isinstance(v, bool) for v in items):
        raise TypeError(f"{argument} must be column names (str) or indices (int), got {items!r}")
    return items


def _indices(header: List[str], names, path, argument: str) -> List[int]:
    """Column indices of ``names``; an unknown or repeated one raises ValueError naming ``argument``."""
    idx = []
    for name in names:
        try:
            j = _column_index(header, name, path)
        except ValueError as e:
            raise ValueError(f"{argument}: {e}") from None
        if j in idx:
            raise ValueError(f"{argument}: column {header[j]!r} is listed twice")
        idx.append(j)
    return idx


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _time_part_value(text: str, part: str, line: int, column: str, path) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value == int(value)):
        raise ValueError(f"{path}: line {line}, time column {column!r}: {text!r} is not a whole {part} number")
    return int(value)


def _stamps_from_parts(path, parts: dict, texts: dict, lines: List[int]) -> List[datetime]:
    """Datetimes from ``parts`` (part name -> column name) and their cell ``texts`` (column -> list)."""
    if "year" not in parts:
        raise ValueError(f"time_columns: part columns need a 'year' column, got {', '.join(parts.values())}")
    if "day" in parts and "month" not in parts:
        raise ValueError("time_columns: a 'day' column needs a 'month' column")
    if "hour" in parts and "day" not in parts:
        raise ValueError("time_columns: an 'hour' column needs 'month' and 'day' columns")
    if "quarter" in parts and "month" in parts:
        raise ValueError("time_columns: give 'quarter' or 'month', not both")
    stamps = []
    for r, line in enumerate(lines):
        value = {part: _time_part_value(texts[column][r], part, line, column, path) for part, column in parts.items()}
        month = 3 * value["quarter"] - 2 if "quarter" in value else value.get("month", 1)
        if "quarter" in value and not 1 <= value["quarter"] <= 4:
            raise ValueError(f"{path}: line {line}, time column {parts['quarter']!r}: quarter "
                             f"{value['quarter']} is not in 1..4")
        try:
            stamps.append(datetime(value["year"], month, value.get("day", 1), value.get("hour", 0)))
        except ValueError as e:
            raise ValueError(f"{path}: line {line}, time columns {', '.join(map(repr, parts.values()))}: "
                             f"not a valid time ({e})") from None
    return stamps


def _stamps_from_dates(path, column: str, texts: List[str], lines: List[int]) -> List[datetime]:
    """Datetimes from one date column in one of ``DATE_FORMATS`` (the first that reads row 1)."""
    for fmt in DATE_FORMATS:
        try:
            datetime.strptime(texts[0], fmt)
        except ValueError:
            continue
        stamps = []
        for text, line in zip(texts, lines):
            try:
                stamps.append(datetime.strptime(text, fmt))
            except ValueError:
                raise ValueError(f"{path}: line {line}, date column {column!r}: {text!r} does not match the "
                                 f"format {fmt!r} of the first row") from None
        return stamps
    raise ValueError(f"{path}: date column {column!r}: {texts[0]!r} is in none of the formats "
                     f"{', '.join(DATE_FORMATS)} (or name part columns: {', '.join(TIME_PARTS)})")


def _stamp_labels(stamps: List[datetime], parts: dict) -> List[str]:
    if "hour" in parts:
        return [s.strftime("%Y-%m-%d %H:00") for s in stamps]
    if "day" in parts:
        return [s.strftime("%Y-%m-%d") for s in stamps]
    if "quarter" in parts:
        return [f"{s.year}Q{(s.month - 1) // 3 + 1}" for s in stamps]
    return [s.strftime("%Y-%m" if "month" in parts else "%Y") for s in stamps]


def load_frame(path: PathLike, targets: Union[str, int, Sequence[Union[str, int]], None] = None,
               features: Union[str, int, Sequence[Union[str, int]], None] = (), *,
               categorical: Union[str, int, Sequence[Union[str, int]], None] = (),
               time_columns: Union[None, str, int, Sequence[Union[str, int]]] = None,
               missing: str = "interpolate") -> Frame:
    """Read target column(s) and covariate column(s) of a CSV file (module docstring, "Covariates").

    ``targets``: a name, index or list of them (None: the last column); they must be numeric.
    ``features``: the covariate columns; a column with any non-missing cell that is not a number is
    categorical, and so is every column in ``categorical`` (a numeric code, say). ``time_columns``:
    one date column, or part columns named year, quarter, month, day, hour; None looks for them
    (the first column if it holds dates, else columns with those names), and then a time that
    does not parse just leaves ``stamps`` None, where named columns raise ValueError.
    ``missing``: the missing-value rule, applied to every target and feature column."""
    if missing not in _MISSING_RULES:
        raise ValueError(f"missing must be one of {', '.join(_MISSING_RULES)}, got {missing!r}")
    header, rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no data rows after the header")
    target_idx = _indices(header, _names_list(targets, "column") or [len(header) - 1], path, "column")
    feature_idx = _indices(header, _names_list(features, "features"), path, "features")
    forced_idx = _indices(header, _names_list(categorical, "categorical"), path, "categorical")
    for j in feature_idx:
        if j in target_idx:
            raise ValueError(f"features: {header[j]!r} is also a target (--column); a target's past values are "
                             "inputs already")
    for j in forced_idx:
        if j in target_idx:
            raise ValueError(f"categorical: {header[j]!r} is a target; targets must be numeric")
        if j not in feature_idx:
            raise ValueError(f"categorical: {header[j]!r} is not one of the features "
                             f"({', '.join(repr(header[f]) for f in feature_idx) or 'none given'})")

    def cell(row, j):
        return row[j].strip() if j < len(row) else ""

    for j in target_idx:  # a categorical target gets a message of its own, not "'NE' is not a number"
        filled = [(line, cell(row, j)) for line, row in rows if cell(row, j).lower() not in MISSING_TOKENS]
        if filled and not any(_is_number(text) for _, text in filled):
            raise ValueError(f"column: {header[j]!r} is not numeric (line {filled[0][0]} holds {filled[0][1]!r}); "
                             "a target must be numeric (a categorical column can be a feature)")
    categorical_idx = [j for j in feature_idx if j in forced_idx or any(
        cell(row, j).lower() not in MISSING_TOKENS and not _is_number(cell(row, j)) for _, row in rows)]
    numeric_idx = [j for j in feature_idx if j not in categorical_idx]
    number_idx = target_idx + numeric_idx
    values = _parse_numbers(path, header, rows, number_idx, missing)
    texts = [[cell(row, j) for _, row in rows] for j in categorical_idx]
    text_missing = np.zeros(len(rows), bool)
    for j, column in zip(categorical_idx, texts):
        for r, text in enumerate(column):
            if text.lower() in MISSING_TOKENS:
                if missing == "error":
                    raise ValueError(f"{path}: line {rows[r][0]}, column {header[j]!r}: missing value "
                                     f"(use missing='interpolate' or 'skip')")
                column[r] = ""
                text_missing[r] = True
    values, keep, interpolated = _apply_missing_rule(path, [header[j] for j in number_idx], values, missing,
                                                     text_missing)
    if not keep.any():
        raise ValueError(f"{path}: no rows with values left in column(s) "
                         f"{', '.join(repr(header[j]) for j in number_idx + categorical_idx)}")
    kept = np.flatnonzero(keep)
    rows = [rows[r] for r in kept]
    lines = [line for line, _ in rows]
    texts = [[column[r] for r in kept] for column in texts]

    stamps, used, times = _frame_stamps(path, header, rows, time_columns)
    if times is None:
        times = [cell(row, 0) for _, row in rows]
    t = len(target_idx)
    return Frame(targets=values[kept, :t], target_names=[header[j] for j in target_idx],
                 numeric=values[kept, t:], numeric_names=[header[j] for j in numeric_idx],
                 categorical=texts, categorical_names=[header[j] for j in categorical_idx],
                 stamps=stamps, time_columns=used, times=times, lines=lines, interpolated=interpolated,
                 dropped=int((~keep).sum()))


def _frame_stamps(path, header: List[str], rows, time_columns):
    """``(stamps, time column names, labels)`` for ``load_frame``; labels None: use the first column."""
    lines = [line for line, _ in rows]

    def column_texts(j):
        return [row[j].strip() if j < len(row) else "" for _, row in rows]

    if time_columns is None:  # look: the first column's dates, else columns named like time parts
        try:
            return _stamps_from_dates(path, header[0], column_texts(0), lines), [header[0]], None
        except ValueError:
            pass
        named = {h.lower(): j for j, h in enumerate(header) if h.lower() in TIME_PARTS}
        if "year" not in named or len(named) < 2:
            return None, [], None
        if "quarter" in named and "month" in named:
            del named["quarter"]
        try:
            return _parts_stamps(path, header, named, column_texts, lines)
        except ValueError:
            return None, [], None
    idx = _indices(header, _names_list(time_columns, "time_columns"), path, "time_columns")
    if not idx:
        raise ValueError("time_columns must name at least one column")
    parts = {header[j].lower(): j for j in idx if header[j].lower() in TIME_PARTS}
    if len(idx) == 1 and not parts:
        return _stamps_from_dates(path, header[idx[0]], column_texts(idx[0]), lines), [header[idx[0]]], None
    others = [header[j] for j in idx if header[j].lower() not in TIME_PARTS]
    if others:
        raise ValueError(f"time_columns: {', '.join(map(repr, others))} is not a part column; expected one date "
                         f"column, or columns named {', '.join(TIME_PARTS)}")
    return _parts_stamps(path, header, parts, column_texts, lines)


def _parts_stamps(path, header, parts: dict, column_texts, lines):
    by_part = {part: header[j] for part, j in parts.items()}
    texts = {header[j]: column_texts(j) for j in parts.values()}
    stamps = _stamps_from_parts(path, by_part, texts, lines)
    ordered = [by_part[p] for p in TIME_PARTS if p in by_part]
    return stamps, ordered, _stamp_labels(stamps, by_part)


class OneHotEncoder:
    """One column per category, in sorted order, learned from the training part by ``fit``: a
    category seen only later, or a missing cell (``""``), encodes as all zeros. More than
    ``max_categories`` categories in the training part raises ValueError (a numeric column with a
    typo reads as categorical; thousands of one-hot inputs are never what was meant)."""

    def __init__(self, name: str = "column", max_categories: int = MAX_CATEGORIES) -> None:
        self.name = name
        self.max_categories = _check_count(max_categories, "max_categories")
        self.categories_: Optional[List[str]] = None

    def fit(self, values: Sequence[str]) -> "OneHotEncoder":
        categories = sorted({v for v in values if v != ""})
        if not categories:
            raise ValueError(f"categorical column {self.name!r} has no values in the training part")
        if len(categories) > self.max_categories:
            texts = [v for v in categories if not _is_number(v)]
            if not texts:
                hint = "; all of them are numbers: leave it out of categorical to use it as a numeric feature"
            elif len(texts) < len(categories):
                hint = (f"; {len(categories) - len(texts)} of them are numbers: is it a numeric column with a typo? "
                        f"(first non-number: {texts[0]!r})")
            else:
                hint = ""
            raise ValueError(f"categorical column {self.name!r} has {len(categories)} categories in the training "
                             f"part, more than max_categories={self.max_categories}{hint}")
        self.categories_ = categories
        return self

    def transform(self, values: Sequence[str]) -> np.ndarray:
        """``values [N]`` -> float64 one-hot ``[N, K]``."""
        if self.categories_ is None:
            raise ValueError("OneHotEncoder is not fitted yet: call fit(train) first")
        index = {c: k for k, c in enumerate(self.categories_)}
        out = np.zeros((len(values), len(self.categories_)))
        for r, v in enumerate(values):
            if v in index:
                out[r, index[v]] = 1.0
        return out

    @property
    def feature_names(self) -> List[str]:
        return [f"{self.name}={c}" for c in (self.categories_ or [])]


# calendar part -> (period in days, its value in [0, cycle) for a stamp, cycle)
CALENDAR_PARTS = {
    "hour": (1.0, lambda s: s.hour + s.minute / 60.0, 24),
    "weekday": (7.0, lambda s: s.weekday(), 7),
    "month": (365.25, lambda s: s.month - 1, 12),
}


def calendar_parts(stamps: Sequence[datetime]) -> List[str]:
    """The calendar parts worth encoding for these (training) stamps: those that take at least two
    values and whose period is at least twice the median spacing (so each cycle is sampled at
    least twice): hourly data gets hour, weekday and month; daily weekday and month; monthly and
    quarterly month; yearly none."""
    if len(stamps) < 2:
        return []
    spacing = float(np.median(np.diff([(s - stamps[0]).total_seconds() for s in stamps]))) / 86400.0
    parts = []
    for name, (period, value, _) in CALENDAR_PARTS.items():
        if spacing <= period / 2 and len({value(s) for s in stamps}) > 1:
            parts.append(name)
    return parts


def calendar_features(stamps: Sequence[datetime], parts: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
    """Cyclic encoding of calendar ``parts`` (``CALENDAR_PARTS``): ``sin(2 pi v / cycle)`` and
    ``cos(2 pi v / cycle)`` of each part's value ``v`` (hour of day 0..23, weekday 0..6 from Monday,
    month 0..11), so hour 23 lies next to hour 0. Returns float64 ``[N, 2 * len(parts)]`` and names
    (``hour_sin``, ``hour_cos``, ...)."""
    columns, names = [], []
    for name in parts:
        if name not in CALENDAR_PARTS:
            raise ValueError(f"calendar part must be one of {', '.join(CALENDAR_PARTS)}, got {name!r}")
        _, value, cycle = CALENDAR_PARTS[name]
        angle = 2.0 * np.pi * np.array([value(s) for s in stamps], np.float64) / cycle
        columns += [np.sin(angle), np.cos(angle)]
        names += [f"{name}_sin", f"{name}_cos"]
    values = np.stack(columns, axis=1) if columns else np.zeros((len(stamps), 0))
    return values, names


@dataclass
class Covariates:
    """The covariate inputs of a ``Frame``, ready for the model: ``values`` float64 ``[N, F]`` with
    the columns in this order: ``numeric_count`` scaled numeric covariates, then the one-hot
    categories, then the calendar's sin/cos pairs. ``names`` names each column; ``scaler`` (None
    without numeric covariates), ``encoders`` and ``calendar_parts`` were fitted on the training
    part."""

    values: np.ndarray
    names: List[str]
    numeric_count: int
    onehot_count: int
    scaler: Optional[_Scaler] = None
    encoders: List[OneHotEncoder] = field(default_factory=list)
    calendar_parts: List[str] = field(default_factory=list)


def build_covariates(frame: Frame, n_train: int, scaler: Optional[_Scaler] = None, calendar: bool = False,
                     max_categories: int = MAX_CATEGORIES) -> Covariates:
    """Encode ``frame``'s covariates with statistics of its first ``n_train`` rows only: numeric
    columns scaled per column by ``scaler`` (unfitted; default ``MinMaxScaler((-1, 1))``), levels
    as they are (no differencing); categorical columns one-hot (``OneHotEncoder``); with
    ``calendar``, the cyclic calendar parts of ``frame.stamps`` (``calendar_parts``)."""
    n = len(frame)
    n_train = _check_count(n_train, "n_train")
    if n_train > n:
        raise ValueError(f"n_train must be <= the {n} rows of the frame, got {n_train}")
    blocks, names = [], []
    fitted = None
    if frame.numeric.shape[1]:
        fitted = (scaler if scaler is not None else MinMaxScaler((-1.0, 1.0))).fit(frame.numeric[:n_train])
        blocks.append(fitted.transform(frame.numeric))
        names += frame.numeric_names
    encoders = []
    for name, texts in zip(frame.categorical_names, frame.categorical):
        encoder = OneHotEncoder(name, max_categories).fit(texts[:n_train])
        encoders.append(encoder)
        blocks.append(encoder.transform(texts))
        names += encoder.feature_names
    parts: List[str] = []
    if calendar:
        if frame.stamps is None:
            raise ValueError("calendar: the file has no time information; name a date column or year/month/day/"
                             "hour columns with time_columns (--time-columns)")
        parts = calendar_parts(frame.stamps[:n_train])
        values, calendar_names = calendar_features(frame.stamps, parts)
        blocks.append(values)
        names += calendar_names
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    return Covariates(values=matrix, names=names, numeric_count=frame.numeric.shape[1],
                      onehot_count=sum(len(e.categories_ or []) for e in encoders), scaler=fitted,
                      encoders=encoders, calendar_parts=parts)


def make_covariate_windows(targets: ArrayLike, covariates: ArrayLike, lookback: int, horizon: int = 1,
                           stride: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Windows of past targets plus past covariates: ``targets [N]`` or ``[N, T]`` and
    ``covariates [N, F]`` (row ``i`` of each is the same time step) give ``x [S, lookback, T + F]``
    (the targets' columns first) and ``y [S, horizon, T]``, the targets' next ``horizon`` steps;
    the covariates of those steps are not inputs. ``make_windows`` over the columns side by side."""
    target_arr = _as_series(targets, "targets")
    target_arr = target_arr[:, None] if target_arr.ndim == 1 else target_arr
    covariate_arr = _as_series(covariates, "covariates")
    if covariate_arr.ndim != 2 or len(covariate_arr) != len(target_arr):
        raise ValueError(f"covariates must be [N, F] with the targets' N = {len(target_arr)} rows, got shape "
                         f"{covariate_arr.shape}")
    data = np.concatenate([target_arr, covariate_arr], axis=1)
    return make_windows(data, lookback, horizon, stride, target_columns=list(range(target_arr.shape[1])))
