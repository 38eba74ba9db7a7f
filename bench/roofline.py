#!/usr/bin/env python3
"""Roofline of lstmfast's CPU engine: for each compare_torch size and each phase of the LSTM, the
work (FLOPs), the bytes that must move, this machine's bounds for them, and how far the measured
time is from the bound.

Phases (a training step is forward with cache + backward; inference is forward alone):
  projection    x kernel + bias: one GEMM [T*B, X] x [X, 4H]
  fwd steps     T recurrent steps: h_{t-1} recurrent_kernel ([B, H] x [H, 4H]) and the gate math
  bwd steps     T reverse steps: the gate gradients and dz_t recurrent_kernel^T ([B, 4H] x [4H, H])
  dkernel       x^T dz          [X, T*B] x [T*B, 4H]
  drecurrent    h^T dz          [H, T*B] x [T*B, 4H]
  dx            dz kernel^T     [T*B, 4H] x [4H, X]

The four GEMMs are timed alone through the engine's own GEMM (lstmfast._core.gemm_f32: the same
packed kernels and blocking the engine calls); the step phases by subtraction: fwd steps =
inference forward - projection, bwd steps = backward - (dkernel + drecurrent + dx), where backward
= training step - forward with cache. Everything of one size is timed in alternating rounds, and
each is the best of its repetitions (see time_phases). The step phases also carry what a whole
call does besides its products: the Python boundary and the first touch of the arrays it allocates.

Bounds (measured on this machine, not from a data sheet):
  compute    GEMM flops / the fp32 FMA peak at the engine's thread count (bench/fma_peak.cpp)
  memory     bytes that must move / the read bandwidth of the level they live in
             (bench/bandwidth.cpp, per working-set size). A recurrent step re-reads every thread's
             slice of recurrent_kernel (16 H^2 / threads bytes) plus the step's state; the level is
             the one that holds that slice (L2 while it fits, else L3, else DRAM). A GEMM moves its
             three operands once (4 (MK + KN + MN) bytes) from the level that holds them all.
  bound      the larger of the two; "x bound" = measured / bound (1.00 = at the roofline).
The gate math (exp, tanh: about 40 flops per unit and step, not FMAs) is not in the flops, so it
shows as distance in the step phases; at small H it is a large part of the step.

    python bench/roofline.py [--sizes X,H,B,T ...] [--threads 2] [--quick] [--markdown PATH]
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_torch as ct  # noqa: E402  (the sizes, the problems, the timing and the FMA peak)

BENCH_DIR = Path(__file__).resolve().parent
BANDWIDTH_SOURCE = BENCH_DIR / "bandwidth.cpp"
BANDWIDTH_BINARY = BENCH_DIR / "out" / "bandwidth"
PEAK_PROBES = 3  # FMA peak measurements before the timings (and one more before each size)
SMALL_WORK_FMAS = 2.0e5  # cpp/lstm_cpu.cpp threads_for: below this many multiply-adds, one thread


@dataclass(frozen=True)
class Bandwidth:
    """Read bandwidth (GB/s, all threads together) by bytes per thread, from bench/bandwidth.cpp."""

    threads: int
    points: Tuple[Tuple[int, float], ...]  # (bytes per thread, GB/s), increasing bytes
    barrier_ns: float

    def level_gbps(self, bytes_per_thread: float) -> float:
        """Bandwidth of the smallest measured working set that holds bytes_per_thread."""
        for size, gbps in self.points:
            if size >= bytes_per_thread:
                return gbps
        return self.points[-1][1]


def measure_bandwidth(threads: int) -> Bandwidth:
    """Compile (when stale) and run bench/bandwidth.cpp."""
    binary = BANDWIDTH_BINARY
    if not binary.exists() or binary.stat().st_mtime < BANDWIDTH_SOURCE.stat().st_mtime:
        binary.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["g++", "-O2", "-fopenmp", "-mavx2", "-mfma", str(BANDWIDTH_SOURCE), "-o", str(binary)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    out = subprocess.run([str(binary), str(threads)], check=True, capture_output=True, text=True, timeout=300)
    points, barrier = [], float("nan")
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields[0] == "read_gbps":
            points.append((int(fields[2]), float(fields[3])))
        elif fields[0] == "barrier_ns":
            barrier = float(fields[2])
    return Bandwidth(threads, tuple(points), barrier)


@dataclass(frozen=True)
class Phase:
    name: str
    flops: float
    bytes: float
    bytes_per_thread: float  # working set that decides the memory level


def gemm_phase(name: str, M: int, N: int, K: int, threads: int) -> Phase:
    moved = 4.0 * (M * K + K * N + M * N)
    return Phase(name, 2.0 * M * N * K, moved, moved / threads)


def phases(size: ct.Size, threads: int) -> List[Phase]:
    X, H, B, T = size.X, size.H, size.B, size.T
    weights = 16.0 * H * H  # recurrent_kernel, fp32, re-read every step
    # Per step besides the weights: forward reads the step's pre-activations [B,4H] and the whole
    # h_{t-1} (every thread), writes y, c and (training) the gates; backward reads the gates, c_t,
    # c_{t-1}, dy and writes dz, and its product reads all of dz_t.
    fwd_state = 4.0 * B * H * (4 + threads + 2 + 5)
    bwd_state = 4.0 * B * H * (4 + 3 + 1 + 4 + 4 * threads)
    return [
        gemm_phase("projection", T * B, 4 * H, X, threads),
        Phase("fwd steps", 2.0 * T * B * H * 4 * H, T * (weights + fwd_state), weights / threads),
        Phase("bwd steps", 2.0 * T * B * 4 * H * H, T * (weights + bwd_state), weights / threads),
        gemm_phase("dkernel", X, 4 * H, T * B, threads),
        gemm_phase("drecurrent", H, 4 * H, T * B, threads),
        gemm_phase("dx", T * B, X, 4 * H, threads),
    ]


def engine_threads(size: ct.Size, requested: int) -> int:
    """Threads the engine gives this size's forward (cpp/lstm_cpu.cpp threads_for)."""
    fmas = size.T * size.B * 4 * size.H * (size.X + size.H)
    return 1 if fmas < SMALL_WORK_FMAS else requested


def time_phases(lstmfast, torch, size: ct.Size, plan: ct.TimingPlan, seed: int) -> Dict[str, float]:
    """Best seconds of each phase (the step phases by subtraction) and of the totals.

    The best of the repetitions, not the median: this VM's speed swings by up to 2x within seconds
    (the host at times runs both vCPUs on one core), and the roofline asks what the code does when
    it has the machine, which the fastest repetition shows best."""
    from lstmfast import _core, ops

    p = ct.make_problem(size, seed)
    X, H, B, T = size.X, size.H, size.B, size.T
    x2d = p["x"].reshape(T * B, X)
    y2d = np.random.default_rng(seed).standard_normal((T * B, H)).astype(np.float32)
    dz = np.random.default_rng(seed + 1).standard_normal((T * B, 4 * H)).astype(np.float32)
    out_proj = np.empty((T * B, 4 * H), np.float32)
    out_dk = np.empty((X, 4 * H), np.float32)
    out_dr = np.empty((H, 4 * H), np.float32)
    out_dx = np.empty((T * B, X), np.float32)

    def forward_inference():
        return ops.lstm_forward(p["x"], p["kernel"], p["recurrent_kernel"], p["bias"], training=False)

    def forward_training():
        return ops.lstm_forward(p["x"], p["kernel"], p["recurrent_kernel"], p["bias"], training=True)

    def train_step():
        out = forward_training()
        return ops.lstm_backward(out.cache, p["dy"])

    calls = {
        "forward": forward_inference,
        "forward_training": forward_training,
        "train": train_step,
        "projection": lambda: _core.gemm_f32(False, False, x2d, p["kernel"], out_proj),
        "dkernel": lambda: _core.gemm_f32(True, False, x2d, dz, out_dk),
        "drecurrent": lambda: _core.gemm_f32(True, False, y2d, dz, out_dr),
        "dx": lambda: _core.gemm_f32(False, True, dz, p["kernel"], out_dx),
    }
    if torch is not None:  # the peer's totals, for what the 0.8x target asks of each phase
        peer = ct.TorchRunner(torch, p)
        calls["torch forward"] = peer.forward
        calls["torch train"] = peer.train_step
    samples = ct.time_interleaved(calls, plan)
    best = {name: min(values) for name, values in samples.items()}
    backward = best["train"] - best["forward_training"]
    best["fwd steps"] = best["forward"] - best["projection"]
    best["bwd steps"] = backward - best["dkernel"] - best["drecurrent"] - best["dx"]
    best["backward"] = backward
    return best


def report(args, lstmfast, torch, peak_samples: Dict[int, List[float]], bandwidths: Dict[int, Bandwidth]) -> ct.Report:
    """Times every size (probing the FMA peak again before each), then prints the table."""
    sized = []
    for size in args.sizes:
        threads = engine_threads(size, args.threads)
        ct.progress(f"roofline {size.label} ({threads} thread(s))")
        peak_samples[threads].append(ct.measure_fma_peak(threads) or 0.0)
        sized.append((size, threads, time_phases(lstmfast, torch, size, args.plan, args.seed)))
    peaks = {threads: max(samples) for threads, samples in peak_samples.items()}
    rep = ct.Report()
    rep.add("# lstmfast roofline")
    rep.add()
    rep.add(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    rep.add(f"- machine: {ct.cpu_model()}, {ct.usable_cpus()} logical CPUs; SIMD level {lstmfast._core.simd_level()}")
    rep.add(f"- command: `python bench/roofline.py {' '.join(sys.argv[1:])}`".rstrip())
    for threads in sorted(peaks):
        bw = bandwidths[threads]
        levels = ", ".join(f"{size // 1024} KiB {gbps:.0f}" for size, gbps in bw.points)
        seen = ", ".join(f"{value:.0f}" for value in peak_samples[threads])
        rep.add(f"- {threads} thread(s): FMA peak {peaks[threads]:.1f} GFLOP/s (highest of {seen}); read GB/s by "
                f"bytes per thread: {levels}; one OpenMP barrier {bw.barrier_ns:.0f} ns")
    rep.add()
    rows, totals = [], []
    for size, threads, times in sized:
        peak, bw = peaks[threads], bandwidths[threads]
        for phase in phases(size, threads):
            seconds = times[phase.name]
            compute_s = phase.flops / (peak * 1e9)
            gbps = bw.level_gbps(phase.bytes_per_thread)
            memory_s = phase.bytes / (gbps * 1e9)
            bound_s = max(compute_s, memory_s)
            kind = "compute" if compute_s >= memory_s else f"memory ({gbps:.0f} GB/s)"
            rows.append([size.label, str(threads), phase.name, f"{1e3 * seconds:.3f}", f"{phase.flops / 1e9:.3f}",
                         f"{phase.bytes / 2**20:.1f}", kind, f"{1e3 * bound_s:.3f}", f"{seconds / bound_s:.2f}",
                         f"{100 * phase.flops / seconds / (peak * 1e9):.0f}"])
        def share(flops: float, seconds: float) -> str:
            """Percent of the FMA peak that `flops` in `seconds` is."""
            return f"{100 * flops / seconds / (peak * 1e9):.0f}"

        rows.append([size.label, str(threads), "**inference / training**",
                     f"{1e3 * times['forward']:.3f} / {1e3 * times['train']:.3f}",
                     f"{size.forward_flops / 1e9:.3f} / {size.train_flops / 1e9:.3f}", "", "", "", "",
                     f"{share(size.forward_flops, times['forward'])} / {share(size.train_flops, times['train'])}"])
        if "torch train" in times:
            total = [size.label]
            for mode, flops in (("forward", size.forward_flops), ("train", size.train_flops)):
                ours, peer = times[mode], times[f"torch {mode}"]
                total += [f"{1e3 * ours:.3f}", f"{1e3 * peer:.3f}", f"{ours / peer:.2f}", share(flops, peer),
                          share(flops, 0.8 * peer)]
            totals.append(total)
    rep.table(["X,H,B,T", "threads", "phase", "ms", "GFLOP", "MiB moved", "bound", "bound ms", "x bound",
               "% of FMA peak"], rows)
    if totals:
        rep.add("Against torch.nn.LSTM, timed in the same rounds (best of each): the share of the FMA peak "
                "torch reaches, and the share lstmfast would need for 0.8x torch's time (the issue's target).")
        rep.add()
        rep.table(["X,H,B,T", "inference ms", "torch ms", "ratio", "torch % of peak", "0.8x needs % of peak",
                   "training ms", "torch ms", "ratio", "torch % of peak", "0.8x needs % of peak"], totals)
    rep.add("Step phases are by subtraction (see the docstring); a negative or tiny value there is noise "
            "of the same order as the GEMM timings.")
    return rep


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", metavar="X,H,B,T", help="sizes (default: compare_torch's five)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="short timing plan")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.sizes = ct.parse_sizes(args.sizes) if args.sizes else list(ct.DEFAULT_SIZES)
    args.plan = ct.QUICK_PLAN if args.quick else ct.FULL_PLAN
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    lstmfast = ct.import_lstmfast()
    lstmfast.set_num_threads(args.threads)
    counts = sorted({engine_threads(size, args.threads) for size in args.sizes})
    peak_samples: Dict[int, List[float]] = {threads: [] for threads in counts}
    bandwidths = {}
    for threads in counts:
        ct.progress(f"measuring the bandwidths at {threads} thread(s)")
        bandwidths[threads] = measure_bandwidth(threads)
    # The FMA peak is measured several times, spread over the run, and the highest is the ceiling:
    # on a VM the host may run the two vCPUs on one core's two hardware threads for a while, which
    # halves the 2-thread peak (seen here: 117 and 234 GFLOP/s in successive runs).
    for _ in range(PEAK_PROBES):
        for threads in counts:
            peak = ct.measure_fma_peak(threads)
            if peak is None:
                sys.exit("roofline: could not measure the FMA peak (bench/fma_peak.cpp); see the warning above")
            peak_samples[threads].append(peak)
    torch = ct.import_torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    rep = report(args, lstmfast, torch, peak_samples, bandwidths)  # printed as it goes
    if args.markdown:
        rep.write(args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
