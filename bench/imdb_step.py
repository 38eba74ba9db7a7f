#!/usr/bin/env python3
"""Whole training steps on the CPU: the Keras IMDB tutorial network (bench/gpu_fit.py's network:
Embedding(20000, 128) -> LSTM(128, dropout=0.2, recurrent_dropout=0.2) -> Dense(1, sigmoid),
maxlen 80, batch 32, Adam, binary crossentropy) trained with lstmfast's ``model.fit``, against the
same network as a plain PyTorch training loop (nn.Embedding, nn.Dropout, nn.LSTM, nn.Linear, Adam;
torch's LSTM has no recurrent dropout, so its step does a little less work). Synthetic reviews of
the tutorial's shape (random word ids), so no data set is needed.

Each measurement is a fresh process running one library alone (two thread pools in one process
would fight over the cores); the libraries alternate, the order flipping every round, so drift in
this VM's speed affects both. A process times --runs epochs of --batches batches after one warm-up
epoch and reports its median; the table shows the median over rounds.

    python bench/imdb_step.py [--rounds 5] [--batches 60] [--threads 2] [--markdown PATH]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_fit  # noqa: E402  (the network, in both libraries)

LIBRARIES = ("lstmfast", "torch")


def data(batches: int):
    rng = np.random.default_rng(0)
    n = batches * gpu_fit.BATCH
    x = rng.integers(1, gpu_fit.VOCAB, (n, gpu_fit.MAXLEN)).astype(np.int32)
    y = (rng.random((n, 1)) < 0.5).astype(np.float32)
    return x, y


def worker(library: str, batches: int, runs: int, threads: int) -> None:
    """Median seconds per batch of `runs` epochs (after a warm-up epoch), as one JSON line."""
    x, y = data(batches)
    if library == "lstmfast":
        import lstmfast
        lstmfast.set_num_threads(threads)
        model = gpu_fit.lstmfast_model()

        def epoch():
            model.fit(x, y, batch_size=gpu_fit.BATCH, epochs=1, shuffle=False, verbose=0)
    else:
        import torch
        torch.set_num_threads(threads)
        train = gpu_fit.torch_training(torch, torch.device("cpu"))
        xs, ys = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)

        def epoch():
            train(xs, ys)
    times = []
    for r in range(runs + 1):
        start = time.perf_counter()
        epoch()
        if r:  # the first epoch warms caches, allocators and thread pools
            times.append(time.perf_counter() - start)
    print(json.dumps({"library": library, "ms_per_batch": 1e3 * statistics.median(times) / batches}))


def measure(library: str, args) -> float:
    cmd = [sys.executable, __file__, "--worker", library, "--batches", str(args.batches), "--runs", str(args.runs),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        sys.exit(f"imdb_step: the {library} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["ms_per_batch"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="processes per library, alternating (default 5)")
    parser.add_argument("--batches", type=int, default=60, help="batches per timed epoch (default 60)")
    parser.add_argument("--runs", type=int, default=3, help="timed epochs per process (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("rounds", "batches", "runs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.worker:
        worker(args.worker, args.batches, args.runs, args.threads)
        return 0
    samples = {library: [] for library in LIBRARIES}
    for r in range(args.rounds):
        for library in LIBRARIES if r % 2 == 0 else reversed(LIBRARIES):
            samples[library].append(measure(library, args))
            print(f"round {r + 1}: {library} {samples[library][-1]:.2f} ms", file=sys.stderr, flush=True)
    ours, theirs = (statistics.median(samples[library]) for library in LIBRARIES)
    lines = [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {args.threads} threads",
        f"- command: `python bench/imdb_step.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip(),
        "",
        "| library | ms per batch (median of rounds) | rounds |",
        "|---|---:|---|",
    ]
    for library, label in (("lstmfast", "lstmfast `model.fit`"), ("torch", "PyTorch, plain training loop")):
        lines.append(f"| {label} | {statistics.median(samples[library]):.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in samples[library])} |")
    lines += ["", f"PyTorch time / lstmfast time: {theirs / ours:.2f}"]
    print("\n".join(lines))
    if args.markdown:
        from lstmfast._atomic import write_text
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.markdown, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
