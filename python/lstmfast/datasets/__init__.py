"""Data sets and data preparation for the sample tasks.

Each module loads one kind of data from local files (nothing is downloaded) and prepares it for a
model: ``timeseries`` (CSV columns, sliding windows, scalers, train/test split, naive baselines).
"""
