#!/usr/bin/env python3
"""Data-parallel scaling on this machine: 1 rank x 2 threads against 2 ranks x 1 thread (MPI), the
cost of the gradient allreduce, and a projection of it to several nodes.

    python bench/scaling.py [--rounds 7] [--steps 200] [--warmup 20] [--models imdb,text]
                            [--latency-us 25] [--markdown PATH] [--quick]

Models (random data, no dataset needed; the same global batch in both configurations):
  imdb  the IMDB tutorial network as ``lstmfast.tasks.imdb.build_model("tutorial", maxlen=80)``
        builds it: Embedding(20000, 128) -> LSTM(128, dropout=0.2, recurrent_dropout=0.2) ->
        Dense(1, sigmoid); Adam, binary cross-entropy, accuracy; global batch 32 (keras-io's
        imdb_lstm); random tokens 1..19999
  text  keras-io's char-level generator (lstm_character_level_text_generation): LSTM(128) over
        40 one-hot characters of a 56-character alphabet -> Dense(56, softmax); RMSprop(0.01),
        categorical cross-entropy; global batch 128; random characters

Each measurement is a fresh process: ``python scaling.py --child`` with OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS = 2 and ``lstmfast.set_num_threads(2)``, or ``mpiexec -n 2`` (the mpiexec next
to this Python) of it with 1 thread per rank. The two configurations alternate, the order flipping
every round. Each child runs one ``model.fit`` of warmup + steps batches and times the last
``steps`` (from the start of batch ``warmup`` to the end of the epoch). In the 2-rank child,
``DataParallel.reduce_step``, ``DataParallel._allreduce_staged`` and the optimizer's ``apply_gradients``
are wrapped with timers (see StepClock; here only, the package is not changed); after fit, the
same allreduce of a buffer of the packed size is timed alone, the ranks lined up by a barrier
before each call.

The projection (printed as such: not a measurement) takes one node as this machine running one
rank with 2 threads and the model's batch per node (the global batch grows with the nodes), with
no overlap of communication and compute (there is none in ``fit``):
  step(N) = compute + local + 2 (N-1)/N x buffer bytes / link rate + c x 2 (N-1) x latency
compute is the measured 1-rank step; local is what the 2-rank step adds besides the allreduce
(packing, unpacking, the copy back: the exchange minus its allreduce, measured); the bytes are
what the fixed-order allreduce (an all-to-all, then an all-gather) sends per rank; c is the
measured number of allreduce calls per step, each taken as N-1 messages of the all-to-all and N-1
of the all-gather per rank. The local summation of the chunks (N-1 adds over buffer/N) is left
out. Efficiency is compute / step(N): throughput over N times one node's.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = {"imdb": 32, "text": 128}  # model -> global batch
CONFIGS = ("1x2", "2x1")  # ranks x threads
NODES = (2, 4, 8, 16)
LINKS_GBIT = (10, 25, 100)
CHARS, MAXLEN_TEXT = 56, 40


# ---- the child: one configuration, one model ------------------------------------------------------

def build(model_name: str, rows: int):
    """The compiled model and random data ``(x, y)`` of ``rows`` rows (the same on every rank)."""
    import numpy as np

    import lstmfast

    lstmfast.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    if model_name == "imdb":
        from lstmfast.tasks.imdb import NUM_WORDS, build_model
        model = build_model("tutorial", NUM_WORDS, maxlen=80)
        x = rng.integers(1, NUM_WORDS, size=(rows, 80)).astype(np.int32)
        y = rng.integers(0, 2, size=(rows, 1)).astype(np.float32)
        return model, x, y
    model = lstmfast.Sequential([lstmfast.Input(shape=(MAXLEN_TEXT, CHARS)), lstmfast.layers.LSTM(128),
                                 lstmfast.layers.Dense(CHARS, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=lstmfast.optimizers.RMSprop(learning_rate=0.01))
    eye = np.eye(CHARS, dtype=bool)
    x = eye[rng.integers(0, CHARS, size=(rows, MAXLEN_TEXT))]
    y = eye[rng.integers(0, CHARS, size=rows)]
    return model, x, y


class StepClock:
    """What data-parallel training adds to each timed step, summed over those steps; wraps
    DataParallel's methods and the optimizer's apply_gradients in this process only (the package is
    not changed):
      exchange        from the start of reduce_step to the start of the optimizer's step: packing,
                      the gradient allreduce, unpacking, the division by the summed count, the copy
                      back into the layers' gradients
      grad_allreduce  the allreduce inside reduce_step
      other           allreduce calls outside reduce_step (output_shares, for several outputs)
      collectives     how many allreduce calls"""

    def __init__(self):
        self.on = False
        self.seconds = {"exchange": 0.0, "grad_allreduce": 0.0, "other": 0.0}
        self.collectives = 0
        self.buffer_elements = 0
        self._exchange_start = None

    def install(self) -> None:
        from lstmfast.distributed import DataParallel
        reduce_step, allreduce = DataParallel.reduce_step, DataParallel._allreduce_staged  # every host allreduce
        clock = self

        def timed_reduce_step(world, grads, values):
            clock.buffer_elements = sum(int(g.size) for g in grads) + len(values)
            clock._exchange_start = time.perf_counter()
            return reduce_step(world, grads, values)

        def timed_allreduce(world, send, n):
            start = time.perf_counter()
            out = allreduce(world, send, n)
            if clock.on:
                clock.collectives += 1
                key = "other" if clock._exchange_start is None else "grad_allreduce"
                clock.seconds[key] += time.perf_counter() - start
            return out

        DataParallel.reduce_step = timed_reduce_step
        DataParallel._allreduce_staged = timed_allreduce

    def watch(self, optimizer) -> None:
        apply_gradients = optimizer.apply_gradients
        clock = self

        def timed_apply_gradients(pairs):
            if clock._exchange_start is not None and clock.on:
                clock.seconds["exchange"] += time.perf_counter() - clock._exchange_start
            clock._exchange_start = None
            return apply_gradients(pairs)

        optimizer.apply_gradients = timed_apply_gradients


def child(model_name: str, ranks: int, threads: int, steps: int, warmup: int, reps: int) -> None:
    import numpy as np

    import lstmfast
    from lstmfast.callbacks import Callback

    lstmfast.set_num_threads(threads)
    clock = StepClock()
    world = None
    if ranks > 1:
        clock.install()
        _, size = lstmfast.distributed.init()
        if size != ranks:
            raise SystemExit(f"expected {ranks} ranks, the job has {size} (is this under mpiexec -n {ranks}?)")
        world = lstmfast.distributed.data_parallel()
    batch = MODELS[model_name]
    model, x, y = build(model_name, batch * (warmup + steps))
    if world is not None:
        clock.watch(model.optimizer)

    class Timer(Callback):
        def __init__(self):
            super().__init__()
            self.start = self.end = 0.0
            self.begins = []

        def on_train_batch_begin(self, batch, logs=None):
            if batch == warmup:
                clock.on = True
                self.start = time.perf_counter()
            if batch >= warmup:
                self.begins.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.end = time.perf_counter()
            clock.on = False

    timer = Timer()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[timer])
    seconds = timer.end - timer.start
    single = [b - a for a, b in zip(timer.begins, timer.begins[1:] + [timer.end])]
    result = {"model": model_name, "threads": threads, "batch": batch, "steps": steps,
              "params": int(sum(int(w.size) for w in model.trainable_weights)),
              "ms_per_step": 1000 * seconds / steps,
              "median_step_ms": 1000 * statistics.median(single), "samples_per_s": steps * batch / seconds}
    if world is not None:
        from mpi4py import MPI
        per_step = {k: 1000 * v / steps for k, v in clock.seconds.items()}
        per_step["collectives"] = clock.collectives / steps
        buffer = np.ones(clock.buffer_elements, np.float32)
        tiny = np.ones(1, np.float64)
        alone, alone_tiny = [], []
        for _ in range(reps):
            world.comm.Barrier()
            start = time.perf_counter()
            world.allreduce(buffer)
            alone.append(time.perf_counter() - start)
            world.comm.Barrier()
            start = time.perf_counter()
            world.allreduce(tiny)
            alone_tiny.append(time.perf_counter() - start)
        per_rank = world.comm.gather(per_step, root=0)
        if world.rank != 0:
            return
        result.update(ranks=world.size, per_rank_ms=per_rank, buffer_bytes=4 * clock.buffer_elements,
                      allreduce_alone_ms=1000 * statistics.median(alone),
                      tiny_allreduce_alone_us=1e6 * statistics.median(alone_tiny),
                      mpi=" ".join(MPI.Get_library_version().splitlines()[0].split()))
    print(json.dumps(result))


# ---- the parent: rounds, table, projection --------------------------------------------------------

def mpiexec_path() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if not found:
        raise SystemExit(f"no mpiexec next to {sys.executable} or on PATH: pip install 'lstmfast[mpi]'")
    return found


def command(config: str, model_name: str, args, reps: int, mpiexec: str):
    ranks, threads = (int(n) for n in config.split("x"))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", model_name, "--ranks", str(ranks),
           "--threads", str(threads), "--steps", str(args.steps), "--warmup", str(args.warmup), "--reps", str(reps)]
    if ranks > 1:
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    return cmd, env


def run_child(cmd, env, timeout: float) -> dict:
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{shlex.join(cmd[:4])} ... did not finish in {timeout:g} s") from None
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def projection(compute_ms: float, local_ms: float, buffer_bytes: int, collectives: float, latency_us: float):
    """``{(nodes, gbit): (step ms, efficiency)}`` of the model in the module docstring."""
    out = {}
    for n in NODES:
        for gbit in LINKS_GBIT:
            wire_ms = 1000 * 2 * (n - 1) / n * buffer_bytes * 8 / (gbit * 1e9)
            latency_ms = collectives * 2 * (n - 1) * latency_us / 1000
            step = compute_ms + local_ms + wire_ms + latency_ms
            out[n, gbit] = (step, compute_ms / step)
    return out


def fmt(values, spec: str = ".1f") -> str:
    return ", ".join(format(v, spec) for v in values)


def markdown(runs: dict, args, info: dict) -> str:
    cpu = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        cpu = next((row.split(":", 1)[1].strip() for row in open("/proc/cpuinfo") if row.startswith("model name")),
                   cpu)
    lines = [
        "## Data-parallel scaling: 1 rank x 2 threads vs 2 ranks x 1 thread — `bench/scaling.py`"
        + (" (--quick)" if args.quick else ""),
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {cpu}, nproc {os.cpu_count()}; lstmfast {info['version']}, simd {info['simd']}; {info['mpi']}",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- {args.rounds} round(s), configurations alternating (order flipped every round), each a fresh "
        f"process (2 ranks: `mpiexec -n 2`); {args.warmup} warm-up + {args.steps} timed steps per run; "
        "medians over rounds (the last column lists every round)",
        "",
        "| model | global batch | trainable params | ranks x threads | samples/s | ms per step | median single step ms "
        "| samples/s, all rounds |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for name in args.models:
        for config in CONFIGS:
            r = runs[name][config]
            sps = [x["samples_per_s"] for x in r]
            lines.append(f"| {name} | {r[0]['batch']} | {r[0]['params']:,} | {config.replace('x', ' x ')} | "
                         f"{statistics.median(sps):.0f} | {statistics.median(x['ms_per_step'] for x in r):.2f} | "
                         f"{statistics.median(x['median_step_ms'] for x in r):.2f} | "
                         f"{fmt(sps, '.0f')} |")
    lines += ["", "Throughput ratio (2 x 1 over 1 x 2, medians): "
              + "; ".join(f"{name} {ratio(runs[name]):.3f}" for name in args.models), ""]

    lines += [
        "What the 2-rank runs add to a step (ms per step, mean over the timed steps, median over rounds; "
        "rank 0 / rank 1). The exchange runs from the start of `DataParallel.reduce_step` to the start of the "
        "optimizer's step (packing, the allreduce, unpacking, the copy back) and includes waiting for the "
        "slower rank; the allreduce alone is timed after fit with the ranks lined up by a barrier (median of "
        "the calls):",
        "",
        "| model | gradient buffer (bytes) | 2-rank step ms | exchange | of it allreduce | other allreduces "
        "| allreduce calls per step | share of the step | allreduce alone (ms) | 1-value allreduce alone (us) |",
        "|---|---:|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for name in args.models:
        c = collectives(runs[name]["2x1"])
        lines.append(f"| {name} | {c['buffer_bytes']:,} ({c['params']:,} params x 4 + {c['values']} values) | "
                     f"{c['step_ms']:.2f} | {pair(c['exchange'])} | {pair(c['grad_allreduce'])} | "
                     f"{pair(c['other'], '.3f')} | {c['collectives']:g} | {100 * c['share']:.1f} % | "
                     f"{c['alone_ms']:.2f} | {c['tiny_us']:.1f} |")

    for name in args.models:
        c = collectives(runs[name]["2x1"])
        compute = statistics.median(x["ms_per_step"] for x in runs[name]["1x2"])
        table = projection(compute, c["local_ms"], c["buffer_bytes"], c["collectives"], args.latency_us)
        lines += [
            "",
            f"**Projection, not a measurement** — {name}: N nodes, each this machine as 1 rank x 2 threads with a "
            f"batch of {c['batch']} (global batch {c['batch']} x N), no overlap of communication and compute. "
            f"step = {compute:.2f} ms compute (the measured 1 x 2 step) + {c['local_ms']:.2f} ms local (exchange "
            f"minus allreduce, measured) + 2 (N-1)/N x {c['buffer_bytes']:,} bytes at the link's full rate + "
            f"{c['collectives']:g} allreduce(s) x 2 (N-1) messages x {args.latency_us:g} us; efficiency = "
            "compute / step:",
            "",
            "| nodes | bytes sent per rank per step | " + " | ".join(f"{g} Gbit/s: step ms, efficiency"
                                                           for g in LINKS_GBIT) + " |",
            "|---:|---:|" + "---:|" * len(LINKS_GBIT),
        ]
        for n in NODES:
            sent = 2 * (n - 1) / n * c["buffer_bytes"]
            lines.append(f"| {n} | {sent:,.0f} | " + " | ".join(
                f"{table[n, g][0]:.1f}, {100 * table[n, g][1]:.0f} %" for g in LINKS_GBIT) + " |")
    return "\n".join(lines)


def pair(values, spec: str = ".2f") -> str:
    return " / ".join(format(v, spec) for v in values)


def ratio(model_runs: dict) -> float:
    return (statistics.median(x["samples_per_s"] for x in model_runs["2x1"])
            / statistics.median(x["samples_per_s"] for x in model_runs["1x2"]))


def collectives(two_rank_runs: list) -> dict:
    """Medians over rounds of the 2-rank runs' timings (per rank where per rank)."""
    first = two_rank_runs[0]
    med, mean = statistics.median, statistics.mean
    per_rank = {k: [med(x["per_rank_ms"][r][k] for x in two_rank_runs) for r in range(first["ranks"])]
                for k in ("exchange", "grad_allreduce", "other")}
    step = med(x["ms_per_step"] for x in two_rank_runs)
    local = med(mean(rank["exchange"] - rank["grad_allreduce"] for rank in x["per_rank_ms"]) for x in two_rank_runs)
    added = med(mean(rank["exchange"] + rank["other"] for rank in x["per_rank_ms"]) for x in two_rank_runs)
    return {**per_rank, "batch": first["batch"], "params": first["params"], "buffer_bytes": first["buffer_bytes"],
            "values": first["buffer_bytes"] // 4 - first["params"], "step_ms": step, "local_ms": local,
            "collectives": med(x["per_rank_ms"][0]["collectives"] for x in two_rank_runs), "share": added / step,
            "alone_ms": med(x["allreduce_alone_ms"] for x in two_rank_runs),
            "tiny_us": med(x["tiny_allreduce_alone_us"] for x in two_rank_runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of both configurations (default 7)")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per run (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before them (default 20)")
    parser.add_argument("--models", default=",".join(MODELS), help="imdb,text (default both)")
    parser.add_argument("--latency-us", type=float, default=25.0,
                        help="per-message latency of the projection, microseconds (default 25: MPI over TCP "
                             "on Ethernet)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per child run (default 600)")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--quick", action="store_true", help="tiny run: check that the bench works")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ranks", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=30, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.ranks, args.threads, args.steps, args.warmup, args.reps)
        return 0
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 5, 2
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"--models: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}")
    if args.rounds < 1 or args.steps < 1 or args.warmup < 1 or args.latency_us < 0:
        parser.error(f"--rounds, --steps and --warmup must be >= 1 and --latency-us >= 0, got {args.rounds}, "
                     f"{args.steps}, {args.warmup}, {args.latency_us:g}")
    if args.markdown:
        from lstmfast._atomic import check_writable
        check_writable(args.markdown, "--markdown")  # now, not after the runs
    mpiexec = mpiexec_path()
    reps = 3 if args.quick else args.reps
    runs = {name: {config: [] for config in CONFIGS} for name in args.models}
    for r in range(args.rounds):
        order = CONFIGS if r % 2 == 0 else CONFIGS[::-1]
        for name in args.models:
            for config in order:
                cmd, env = command(config, name, args, reps, mpiexec)
                result = run_child(cmd, env, args.timeout)
                runs[name][config].append(result)
                print(f"round {r + 1} {name} {config}: {result['samples_per_s']:.0f} samples/s, "
                      f"{result['ms_per_step']:.2f} ms/step", file=sys.stderr, flush=True)
    import lstmfast
    from lstmfast import _core
    info = {"version": lstmfast.__version__, "simd": _core.simd_level(), "mpi": runs[args.models[0]]["2x1"][0]["mpi"]}
    text = markdown(runs, args, info)
    print(text)
    if args.markdown:
        from lstmfast._atomic import write_text
        write_text(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
