#!/usr/bin/env python3
"""Time the seed echo program (bench/echo_seed.py, 10,000 single-example updates) on lstmfast and on
Keras 3 with the torch backend, each in a fresh process, and print a markdown table.

    python bench/echo_compare.py [--updates 10000] [--repeats 1] [--markdown PATH]

Keras is optional (pip install keras torch); without it lstmfast runs alone.
"""
import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(library: str, updates: int, seed: int) -> dict:
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", "torch")
    proc = subprocess.run([sys.executable, str(HERE / "echo_seed.py"), "--library", library, "--updates",
                           str(updates), "--seed", str(seed)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{library} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1, help="runs per library (the median is reported)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    if args.markdown:
        from lstmfast._atomic import check_writable, write_text
        check_writable(args.markdown, "--markdown")  # now, not after the runs
    libraries = ["lstmfast"] + (["keras"] if importlib.util.find_spec("keras") else [])
    results = {lib: [] for lib in libraries}
    for r in range(args.repeats):
        for lib in libraries:  # alternate, so drift affects both
            print(f"run {r + 1}/{args.repeats}: {lib} ...", file=sys.stderr)
            results[lib].append(run(lib, args.updates, args.seed + r))
    lines = [f"Echo experiment, {args.updates:,} single-example `model.fit` updates (LSTM(25) + Dense(10), Adam), "
             f"{datetime.date.today().isoformat()}, {os.cpu_count()} CPUs",
             "", "| library | seconds (median) | updates/s | accuracy on 100 new sequences |", "|---|---|---|---|"]
    medians = {}
    for lib, runs in results.items():
        runs.sort(key=lambda r: r["seconds"])
        mid = runs[len(runs) // 2]
        medians[lib] = mid["seconds"]
        accs = ", ".join(f"{r['accuracy']:.2f}" for r in runs)
        lines.append(f"| {lib} | {mid['seconds']:.2f} | {args.updates / mid['seconds']:,.0f} | {accs} |")
    if "keras" in medians:
        lines.append("")
        lines.append(f"lstmfast / Keras time: {medians['lstmfast'] / medians['keras']:.4f} "
                     f"(Keras takes {medians['keras'] / medians['lstmfast']:.1f}x as long)")
    else:
        lines.append("")
        lines.append("keras is not installed: lstmfast ran alone (pip install keras torch for the comparison)")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        write_text(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
