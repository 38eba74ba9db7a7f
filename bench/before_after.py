#!/usr/bin/env python3
"""Time two installs of lstmfast against each other (say, the last release and a change), in one run.

Each measurement runs in a fresh process of the given interpreter; the two installs alternate, the
order flipping every round, so drift in clock speed or background load falls on both alike.

    python bench/before_after.py --before /tmp/venv_before/bin/python --after .venv/bin/python \
        [--rounds 3] [--updates 10000] [--markdown PATH]

Measures:
  echo   bench/echo_seed.py on lstmfast: 10,000 single-example updates (seconds, lower is better)
  imdb   the Keras IMDB tutorial network (Embedding(20000,128), LSTM(128, dropout=0.2,
         recurrent_dropout=0.2), Dense(1, sigmoid); Adam, binary cross-entropy) fitted on 1,024
         synthetic reviews of 80 words, batch 32: milliseconds per training step (fit's whole step)
compare_torch.py (engine against torch.nn.LSTM) is run separately, once per install.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

IMDB_WORKER = r"""
import json, time
import numpy as np
import lstmfast
from lstmfast.models import Sequential
from lstmfast.layers import Dense, Embedding, LSTM
lstmfast.utils.set_random_seed(1)
rng = np.random.default_rng(1)
x = rng.integers(1, 20000, size=(1024, 80))
y = rng.integers(0, 2, size=(1024, 1)).astype("float32")
model = Sequential()
model.add(Embedding(20000, 128))
model.add(LSTM(128, dropout=0.2, recurrent_dropout=0.2))
model.add(Dense(1, activation="sigmoid"))
model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # warm-up: build, first allocations
start = time.perf_counter()
model.fit(x, y, batch_size=32, epochs=2, verbose=0)
seconds = time.perf_counter() - start
print(json.dumps({"ms_per_step": 1000 * seconds / (2 * 1024 // 32)}))
"""


def run_json(command: list) -> dict:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(python: str, updates: int) -> dict:
    echo = run_json([python, str(HERE / "echo_seed.py"), "--library", "lstmfast", "--updates", str(updates)])
    imdb = run_json([python, "-c", IMDB_WORKER])
    return {"echo_s": echo["seconds"], "imdb_ms": imdb["ms_per_step"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="python of the first install")
    parser.add_argument("--after", required=True, help="python of the second install")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    if args.rounds < 1 or args.updates < 1:
        parser.error(f"--rounds and --updates must be >= 1, got {args.rounds} and {args.updates}")
    if args.markdown:
        from lstmfast._atomic import check_writable
        check_writable(args.markdown, "--markdown")
    runs = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for which in order:
            result = measure(getattr(args, which), args.updates)
            runs[which].append(result)
            print(f"round {r + 1} {which}: {result}", file=sys.stderr)
    lines = [f"before/after, {datetime.date.today()}, {args.rounds} rounds alternating, medians "
             f"(all runs in brackets)", "",
             "| measure | before | after | after/before |", "|---|---|---|---|"]
    for key, label in (("echo_s", f"echo, {args.updates} updates (s)"), ("imdb_ms", "IMDB tutorial step (ms)")):
        b = [m[key] for m in runs["before"]]
        a = [m[key] for m in runs["after"]]
        fmt = lambda v: ", ".join(f"{x:.3f}" for x in v)  # noqa: E731
        lines.append(f"| {label} | {statistics.median(b):.3f} [{fmt(b)}] | {statistics.median(a):.3f} [{fmt(a)}] "
                     f"| {statistics.median(a) / statistics.median(b):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        from lstmfast._atomic import write_text
        write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
