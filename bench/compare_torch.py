#!/usr/bin/env python3
"""Time lstmfast against torch.nn.LSTM on the CPU, in one run, with the same weights and inputs.

Measures, per size (X, H, B, T) = (input size, units, batch, time steps), fp32, time-major:
  fwd    inference forward (lstmfast training=False; torch under torch.no_grad())
  train  forward (training=True) + backward with dy, dx included (torch: x.requires_grad_(True),
         y.backward(dy))
and reports median milliseconds, the ratio lstmfast/torch (< 1: lstmfast faster), lstmfast GFLOP/s
and its share of the machine's fp32 FMA peak (bench/fma_peak.cpp). Forward flops = 2*4H*(X+H)*B*T,
a training step counts 3x that. Also: lstmfast thread scaling (1 vs N threads, training, large
sizes) and the peak-RSS increase of one training step per library, each in a fresh subprocess.

The two libraries are timed in alternating rounds (the order flips every round), so drift in clock
speed or background load affects both; warm-up calls are not timed.

    python bench/compare_torch.py                     # full run, 2 threads
    python bench/compare_torch.py --quick             # short run
    python bench/compare_torch.py --sizes 128,128,32,80 512,512,64,100 --markdown bench/out/cmp.md
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
FMA_PEAK_SOURCE = BENCH_DIR / "fma_peak.cpp"
FMA_PEAK_BINARY = BENCH_DIR / "out" / "fma_peak"


@dataclass(frozen=True)
class Size:
    """One benchmark problem: X input size, H units, B batch, T time steps."""

    X: int
    H: int
    B: int
    T: int

    @property
    def label(self) -> str:
        return f"{self.X},{self.H},{self.B},{self.T}"

    @property
    def forward_flops(self) -> float:
        """Multiply-add flops of the two GEMMs of a forward pass: 2*4H*(X+H)*B*T."""
        return 2.0 * 4 * self.H * (self.X + self.H) * self.B * self.T

    @property
    def train_flops(self) -> float:
        """A training step (forward + backward) counts as 3 forward passes."""
        return 3.0 * self.forward_flops


DEFAULT_SIZES = (
    Size(10, 25, 1, 5),
    Size(128, 128, 32, 80),
    Size(256, 256, 16, 150),
    Size(512, 512, 64, 100),
    Size(1024, 1024, 16, 100),
)
MEMORY_SIZE = Size(512, 512, 64, 100)
SCALING_MIN_H = 512  # the thread-scaling section runs the sizes with H >= this
# Settings that change the timings; printed in the header. On VMs, OpenMP's default spin-waiting can
# cost milliseconds per parallel region (PAUSE-loop exits), and OMP_WAIT_POLICY=passive avoids it.
ENV_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND", "LSTMFAST_SIMD")


@dataclass(frozen=True)
class TimingPlan:
    """How long to time: per size and library about `target_s` seconds, at least `min_reps`."""

    target_s: float
    min_reps: int
    max_reps: int
    warmup: int


FULL_PLAN = TimingPlan(target_s=0.75, min_reps=5, max_reps=2000, warmup=2)  # x2 modes: ~1.5 s
QUICK_PLAN = TimingPlan(target_s=0.1, min_reps=3, max_reps=200, warmup=1)


# ----------------------------------------------------------------------------------------------
# Problems and the two libraries


def make_problem(size: Size, seed: int) -> Dict[str, np.ndarray]:
    """Random fp32 inputs, weights (PyTorch's U(-1/sqrt(H), 1/sqrt(H)) init) and dy, C order."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(size.H)

    def uniform(*shape: int) -> np.ndarray:
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    return {
        "x": rng.standard_normal((size.T, size.B, size.X)).astype(np.float32),  # [T,B,X]
        "kernel": uniform(size.X, 4 * size.H),  # [X,4H]
        "recurrent_kernel": uniform(size.H, 4 * size.H),  # [H,4H]
        "bias": uniform(4 * size.H),  # [4H]
        "dy": rng.standard_normal((size.T, size.B, size.H)).astype(np.float32),  # [T,B,H]
    }


class LstmfastRunner:
    """lstmfast.ops on one problem: `forward` (inference) and `train_step` (forward + backward)."""

    name = "lstmfast"

    def __init__(self, lstmfast, problem: Dict[str, np.ndarray]):
        self.ops = lstmfast.ops
        self.p = problem

    def forward(self):
        p = self.p
        return self.ops.lstm_forward(p["x"], p["kernel"], p["recurrent_kernel"], p["bias"], training=False)

    def train_step(self):
        """Returns (y, dx, dkernel). The cache is consumed by backward, so forward runs every time."""
        p = self.p
        out = self.ops.lstm_forward(p["x"], p["kernel"], p["recurrent_kernel"], p["bias"], training=True)
        grads = self.ops.lstm_backward(out.cache, p["dy"])
        return out.y, grads.dx, grads.dkernel


class TorchRunner:
    """torch.nn.LSTM with lstmfast's weights: W_ih = kernel.T, W_hh = recurrent_kernel.T,
    b_ih = bias, b_hh = 0 (the gate order i, f, g, o is the same in both)."""

    name = "torch"

    def __init__(self, torch, problem: Dict[str, np.ndarray]):
        self.torch = torch
        X, H = problem["kernel"].shape[0], problem["recurrent_kernel"].shape[0]
        self.model = torch.nn.LSTM(X, H)  # time-major (batch_first=False), like lstmfast
        with torch.no_grad():
            self.model.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(problem["kernel"].T)))
            self.model.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(problem["recurrent_kernel"].T)))
            self.model.bias_ih_l0.copy_(torch.from_numpy(problem["bias"]))
            self.model.bias_hh_l0.zero_()
        self.x = torch.from_numpy(problem["x"].copy())
        self.x_train = torch.from_numpy(problem["x"].copy()).requires_grad_(True)
        self.dy = torch.from_numpy(problem["dy"])

    def forward(self):
        with self.torch.no_grad():
            return self.model(self.x)

    def train_step(self):
        """Returns (y, dx, dkernel) with dkernel in lstmfast's layout (weight_ih.grad.T)."""
        self.model.zero_grad(set_to_none=True)
        self.x_train.grad = None
        y, _ = self.model(self.x_train)
        y.backward(self.dy)
        return y, self.x_train.grad, self.model.weight_ih_l0.grad.T


def import_torch():
    """torch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def import_lstmfast():
    """lstmfast; exits with a hint when it is not importable."""
    try:
        import lstmfast
    except ImportError as error:
        sys.exit(f"compare_torch: lstmfast is not importable ({error}); build it first (pip install .)")
    return lstmfast


def set_threads(lstmfast, torch, threads: int) -> None:
    """Same thread count for both libraries."""
    lstmfast.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Timing


def time_interleaved(calls: Dict[str, Callable[[], object]], plan: TimingPlan) -> Dict[str, List[float]]:
    """Seconds per call for each named callable, timed in alternating rounds.

    Each round calls every callable once; the order is reversed every other round. The repetition
    count is chosen from the slowest callable so that it gets about plan.target_s seconds.
    """
    names = list(calls)
    slowest = 0.0
    for _ in range(max(1, plan.warmup)):
        # The first warm-up round may include one-time costs; the last one is the better estimate.
        slowest = 0.0
        for name in names:
            t0 = time.perf_counter()
            calls[name]()
            slowest = max(slowest, time.perf_counter() - t0)
    reps = int(min(plan.max_reps, max(plan.min_reps, math.ceil(plan.target_s / max(slowest, 1e-9)))))

    samples: Dict[str, List[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection would land on whichever call happens to trigger it
    try:
        for r in range(reps):
            for name in names if r % 2 == 0 else reversed(names):
                fn = calls[name]
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def median_ms(samples: Sequence[float]) -> float:
    """Median of per-call seconds, in milliseconds."""
    return 1e3 * statistics.median(samples)


# ----------------------------------------------------------------------------------------------
# Machine facts and the FMA peak


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cpus() -> int:
    """CPUs this process may run on (what nproc prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_fma_peak() -> Optional[Path]:
    """bench/out/fma_peak, compiled with g++ when missing or older than its source; None on failure."""
    binary = FMA_PEAK_BINARY
    if binary.exists() and binary.stat().st_mtime >= FMA_PEAK_SOURCE.stat().st_mtime:
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["g++", "-O2", "-fopenmp", str(FMA_PEAK_SOURCE), "-o", str(binary)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        print(f"warning: could not compile {FMA_PEAK_SOURCE.name} ({' '.join(cmd)}): {detail.strip()}", file=sys.stderr)
        return None
    return binary


def measure_fma_peak(threads: int) -> Optional[float]:
    """fp32 FMA peak in GFLOP/s with `threads` threads, from bench/fma_peak.cpp; None on failure."""
    binary = build_fma_peak()
    if binary is None:
        return None
    try:
        run = subprocess.run([str(binary), str(threads)], check=True, capture_output=True, text=True, timeout=120)
        key, value = run.stdout.strip().splitlines()[-1].split()
        if key != "fma_peak_gflops":
            raise ValueError(f"unexpected last line {run.stdout.strip().splitlines()[-1]!r}")
        return float(value)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        print(f"warning: fma_peak failed: {error}", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------------------------
# Peak memory, one library per fresh subprocess


def _vm_kib(key: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def memory_probe(library: str, size_label: str, threads: int, seed: int) -> None:
    """Run in a fresh interpreter: print JSON with the RSS increase of one training step.

    After the imports and the inputs (and torch's model) exist, the peak-RSS mark is reset
    (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0) and the step's peak is VmHWM minus VmRSS
    before it. Where the reset is not allowed, the fallback is ru_maxrss after minus before, which
    under-reports when the imports peaked higher than the step.
    """
    import resource

    X, H, B, T = (int(v) for v in size_label.split(","))
    problem = make_problem(Size(X, H, B, T), seed)
    if library == "torch":
        import torch

        torch.set_num_threads(threads)
        runner = TorchRunner(torch, problem)
    else:
        import lstmfast

        lstmfast.set_num_threads(threads)
        runner = LstmfastRunner(lstmfast, problem)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM-VmRSS after clear_refs"
        before_kib = _vm_kib("VmRSS")
        result = runner.train_step()
        after_kib = _vm_kib("VmHWM")
    except OSError:
        method = "ru_maxrss delta"
        before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = runner.train_step()
        after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del result
    print(json.dumps({"library": library, "baseline_mib": before_kib / 1024,
                      "increase_mib": (after_kib - before_kib) / 1024, "method": method}))


def run_memory_probe(library: str, size: Size, threads: int, seed: int) -> Optional[dict]:
    """memory_probe in a fresh `python -c` subprocess; its JSON result, or None on failure."""
    code = (f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import compare_torch; "
            f"compare_torch.memory_probe({library!r}, {size.label!r}, {threads}, {seed})")
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    except subprocess.SubprocessError as error:
        print(f"warning: memory probe for {library} failed: {error}", file=sys.stderr)
        return None
    if run.returncode != 0:
        print(f"warning: memory probe for {library} exited {run.returncode}: {run.stderr.strip()[-2000:]}",
              file=sys.stderr)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def training_arrays_mib(size: Size) -> float:
    """MiB of the arrays a training step must hold at once whatever the library: x, dy, y,
    activated gates [T,B,4H], cells [T,B,H], dx and the weight gradients (fp32)."""
    X, H, B, T = size.X, size.H, size.B, size.T
    floats = T * B * X * 2 + T * B * H * 2 + T * B * 4 * H + T * B * H + (X + H + 1) * 4 * H
    return floats * 4 / 2**20


# ----------------------------------------------------------------------------------------------
# Report


class Report:
    """Markdown lines, printed as they come and kept for --markdown."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def add(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.add("| " + " | ".join(header) + " |")
        self.add("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.add("| " + " | ".join(row) + " |")
        self.add()

    def write(self, path: Path) -> None:
        from lstmfast._atomic import write_text
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, "\n".join(self.lines) + "\n")


def progress(message: str) -> None:
    """Progress goes to stderr so stdout stays clean markdown."""
    print(message, file=sys.stderr, flush=True)


def fmt(value: Optional[float], digits: int = 2) -> str:
    """Fixed-point, or "-" for a missing value."""
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_rate(value: Optional[float]) -> str:
    """One decimal, or 3 significant digits below 1 (the smallest size runs at a tiny fraction of peak)."""
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"


def rate_and_share(gflops: float, peak: Optional[float]) -> str:
    """'12.3 (45%)': GFLOP/s and its share of the FMA peak, when the peak is known."""
    return f"{fmt_rate(gflops)} ({100 * gflops / peak:.0f}%)" if peak else fmt_rate(gflops)


def max_abs_diff(a, b) -> float:
    """max |a - b| in float64; a, b NumPy arrays or torch tensors."""
    a = np.asarray(a.detach() if hasattr(a, "detach") else a, dtype=np.float64)
    b = np.asarray(b.detach() if hasattr(b, "detach") else b, dtype=np.float64)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def check_agreement(size: Size, fast: LstmfastRunner, ref: TorchRunner) -> str:
    """One line: max |difference| of y (inference), dx and dkernel (training) against torch."""
    y_fast = fast.forward().y
    y_ref, _ = ref.forward()
    dy = max_abs_diff(y_fast, y_ref)
    _, dx_fast, dk_fast = fast.train_step()
    _, dx_ref, dk_ref = ref.train_step()
    ddx, ddk = max_abs_diff(dx_fast, dx_ref), max_abs_diff(dk_fast, dk_ref)
    flag = "" if dy < 1e-4 else "  <-- MISMATCH (y differs by more than 1e-4)"
    return f"- {size.label}: max |y - y_torch| = {dy:.2e}, |dx| {ddx:.2e}, |dkernel| {ddk:.2e}{flag}"


def parse_sizes(tokens: Sequence[str]) -> List[Size]:
    """'X,H,B,T' tokens (or 'all') to Sizes."""
    sizes = []
    for token in tokens:
        if token == "all":
            sizes.extend(DEFAULT_SIZES)
            continue
        parts = token.split(",")
        try:
            values = [int(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 4 or min(values) < 1:
            raise argparse.ArgumentTypeError(f"--sizes: expected X,H,B,T with four positive integers, got {token!r}")
        sizes.append(Size(*values))
    return sizes


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line, with --sizes turned into Sizes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run: ~0.1 s per size and library, >= 3 reps")
    parser.add_argument("--sizes", nargs="+", default=["all"], metavar="X,H,B,T",
                        help="sizes to run (default: all five)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    parser.add_argument("--peak", type=float, metavar="GFLOPS",
                        help="fp32 FMA peak at --threads threads; default: measure with bench/fma_peak.cpp")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="also write the report to PATH")
    parser.add_argument("--no-scaling", action="store_true", help="skip the thread-scaling section")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory section")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        args.sizes = parse_sizes(args.sizes)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.threads < 1:
        parser.error(f"--threads: expected >= 1, got {args.threads}")
    return args


# ----------------------------------------------------------------------------------------------
# Sections


def section_header(report: Report, lstmfast, torch, args: argparse.Namespace, peak: Optional[float]) -> None:
    """Machine, date, versions, thread count and timing method."""
    report.add("# lstmfast vs torch.nn.LSTM (CPU, fp32)")
    report.add()
    report.add(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    report.add(f"- machine: {cpu_model()}, nproc {usable_cpus()} (os.cpu_count {os.cpu_count()}), "
               f"{platform.system()} {platform.release()}")
    report.add(f"- python {platform.python_version()}, numpy {np.__version__}")
    report.add(f"- lstmfast.build_info(): {lstmfast.build_info()}")
    if torch is None:
        report.add("- torch: not installed; lstmfast runs alone (no ratios, no agreement check)")
    else:
        mkldnn = torch.backends.mkldnn.is_available()
        report.add(f"- torch {torch.__version__} (mkldnn available: {mkldnn})")
    env = {k: os.environ[k] for k in ENV_VARS if k in os.environ}
    report.add(f"- environment: {env or 'none of ' + ', '.join(ENV_VARS) + ' set'}")
    report.add(f"- threads: {args.threads} for both libraries; fp32 FMA peak at {args.threads} threads: "
               f"{fmt(peak, 1)} GFLOP/s ({'--peak' if args.peak else 'bench/fma_peak.cpp'})")
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    report.add(f"- timing: median of interleaved rounds, ~{plan.target_s:g} s per size, mode and library, "
               f">= {plan.min_reps} reps, {plan.warmup} warm-up call(s) untimed{' (--quick)' if args.quick else ''}")
    report.add()


def section_speed(report: Report, lstmfast, torch, args: argparse.Namespace, peak: Optional[float]) -> None:
    """The main table: fwd and train per size, both libraries interleaved."""
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    set_threads(lstmfast, torch, args.threads)
    rows, agreement = [], []
    for size in args.sizes:
        problem = make_problem(size, args.seed)
        fast = LstmfastRunner(lstmfast, problem)
        ref = TorchRunner(torch, problem) if torch is not None else None
        if ref is not None:
            agreement.append(check_agreement(size, fast, ref))
        for mode, flops in (("fwd", size.forward_flops), ("train", size.train_flops)):
            progress(f"timing {size.label} {mode} ...")
            calls = {"lstmfast": getattr(fast, "forward" if mode == "fwd" else "train_step")}
            if ref is not None:
                calls["torch"] = getattr(ref, "forward" if mode == "fwd" else "train_step")
            samples = time_interleaved(calls, plan)
            fast_ms = median_ms(samples["lstmfast"])
            torch_ms = median_ms(samples["torch"]) if ref is not None else None
            gflops = flops / (fast_ms * 1e-3) * 1e-9
            rows.append([size.label, mode, fmt(fast_ms, 3), fmt(torch_ms, 3),
                         fmt(fast_ms / torch_ms if torch_ms else None, 2), fmt_rate(gflops),
                         fmt_rate(100 * gflops / peak if peak else None), str(len(samples["lstmfast"]))])
    report.add(f"## Speed ({args.threads} threads)")
    report.add()
    report.add("ratio = lstmfast ms / torch ms (< 1: lstmfast is faster). Training = forward + backward "
               "with dy (dx included), counted as 3x the forward flops 2*4H*(X+H)*B*T.")
    report.add()
    report.table(["X,H,B,T", "mode", "lstmfast ms", "torch ms", "ratio", "lstmfast GFLOP/s", "% of FMA peak", "reps"],
                 rows)
    if agreement:
        report.add("Agreement with torch (same weights and inputs; y from inference, dx/dkernel from training):")
        report.add()
        for line in agreement:
            report.add(line)
        report.add()


def section_scaling(report: Report, lstmfast, args: argparse.Namespace, peak_1: Optional[float],
                    peak_n: Optional[float]) -> None:
    """lstmfast training step with 1 thread vs args.threads, interleaved, large sizes only."""
    sizes = [s for s in args.sizes if s.H >= SCALING_MIN_H]
    if args.threads == 1 or not sizes:
        return
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    n = args.threads
    rows = []
    for size in sizes:
        progress(f"thread scaling {size.label} ...")
        fast = LstmfastRunner(lstmfast, make_problem(size, args.seed))

        def with_threads(count: int) -> Callable[[], object]:
            def step():
                lstmfast.set_num_threads(count)
                return fast.train_step()
            return step

        samples = time_interleaved({"1": with_threads(1), "n": with_threads(n)}, plan)
        ms_1, ms_n = median_ms(samples["1"]), median_ms(samples["n"])
        gf_1, gf_n = size.train_flops / (ms_1 * 1e-3) * 1e-9, size.train_flops / (ms_n * 1e-3) * 1e-9
        rows.append([size.label, fmt(ms_1, 2), fmt(ms_n, 2), fmt(ms_1 / ms_n, 2),
                     rate_and_share(gf_1, peak_1), rate_and_share(gf_n, peak_n)])
    lstmfast.set_num_threads(n)
    report.add(f"## lstmfast thread scaling (training step, 1 vs {n} threads)")
    report.add()
    report.add(f"FMA peak: {fmt(peak_1, 1)} GFLOP/s at 1 thread, {fmt(peak_n, 1)} at {n}.")
    report.add()
    report.table(["X,H,B,T", "1 thread ms", f"{n} threads ms", "speed-up",
                  "GFLOP/s 1 thread (% peak)", f"GFLOP/s {n} threads (% peak)"], rows)


def section_memory(report: Report, torch, args: argparse.Namespace) -> None:
    """Peak-RSS increase of one training step at MEMORY_SIZE, each library in a fresh process."""
    size = MEMORY_SIZE
    rows = []
    for library in ["lstmfast"] + (["torch"] if torch is not None else []):
        progress(f"peak memory {library} {size.label} ...")
        result = run_memory_probe(library, size, args.threads, args.seed)
        if result is None:
            rows.append([library, "-", "-", "failed (see stderr)"])
        else:
            rows.append([library, fmt(result["increase_mib"], 1), fmt(result["baseline_mib"], 1), result["method"]])
    report.add(f"## Peak memory of one training step ({size.label}, {args.threads} threads)")
    report.add()
    report.add("Peak RSS during the first training step minus RSS before it, in a fresh process after the "
               "imports and inputs exist (includes one-time allocations such as packed weights). "
               f"The arrays any implementation must hold (x, dy, y, gates, cells, dx, weight grads) "
               f"take {training_arrays_mib(size):.1f} MiB.")
    report.add()
    report.table(["library", "peak increase MiB", "RSS before MiB", "method"], rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Measure the FMA peak, then print the speed, scaling and memory sections."""
    args = parse_args(argv)
    lstmfast = import_lstmfast()
    torch = import_torch()
    if torch is None:
        progress("torch is not installed: timing lstmfast alone")

    peak_n = args.peak
    peak_1 = None
    if peak_n is None:
        progress(f"measuring the FMA peak with {args.threads} thread(s) ...")
        peak_n = measure_fma_peak(args.threads)
    if not args.no_scaling and args.threads > 1 and args.peak is None:
        progress("measuring the FMA peak with 1 thread ...")
        peak_1 = measure_fma_peak(1)

    report = Report()
    section_header(report, lstmfast, torch, args, peak_n)
    section_speed(report, lstmfast, torch, args, peak_n)
    if not args.no_scaling:
        section_scaling(report, lstmfast, args, peak_1, peak_n)
    if not args.no_memory:
        section_memory(report, torch, args)
    if args.markdown is not None:
        report.write(args.markdown)
        progress(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
