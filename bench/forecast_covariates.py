#!/usr/bin/env python3
"""Covariates vs a univariate forecaster where they carry signal: the synthetic hourly series of
tests/test_forecast_covariates.py (``hourly_csv``, the Beijing PM2.5 layout), 2 data seeds x 3
model seeds, with the test's settings. Prints the markdown table in bench/RESULTS.md.

    python bench/forecast_covariates.py
"""
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_forecast_covariates import hourly_csv  # noqa: E402

from lstmfast.tasks import forecast  # noqa: E402

SETTINGS = dict(lookback=6, test_size=120, units=16, epochs=40, batch_size=32, learning_rate=0.01, verbose=0)


def main() -> int:
    print("| data seed | model seed | univariate RMSE | covariates RMSE | ratio | naive | seasonal-naive (24) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for data_seed in (0, 1):
            path = hourly_csv(Path(d) / f"pm{data_seed}.csv", seed=data_seed)
            for seed in (1, 2, 3):
                u = forecast.run(path, "pm2.5", seed=seed, **SETTINGS)
                c = forecast.run(path, "pm2.5", features=["DEWP", "cbwd"], calendar=True, seed=seed, **SETTINGS)
                print(f"| {data_seed} | {seed} | {u['rmse']:.2f} | {c['rmse']:.2f} | {c['rmse'] / u['rmse']:.2f} | "
                      f"{u['naive_rmse']:.2f} | {u['seasonal_naive_rmse']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
