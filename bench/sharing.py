"""Two trainings side by side on one machine (issue 16, item 5).

Each configuration runs one process alone, then two identical processes at once, and reports the
mean step time of each and the slowdown (side by side over alone). Configurations, interleaved
over ``--rounds`` rounds (medians reported):

* ``lstmfast``: the engine as installed (its OpenMP threads spin 1,000 times, then sleep);
* ``lstmfast, libgomp's spinning``: ``GOMP_SPINCOUNT=300000``, libgomp's default, as before;
* ``torch``: ``torch.nn.LSTM`` on the same step, when torch is installed.

The workload is the (X, H, B, T) = (128, 128, 32, 80) LSTM training step (forward and backward;
torch also computes the weight gradients), and, to check what the setting costs on an idle
machine, the IMDB tutorial network's whole ``model.fit`` step (batch 32, maxlen 80) alone.

    python bench/sharing.py [--rounds 3] [--steps 30]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys

ENGINE_STEP = """
import sys, time
import numpy as np
from lstmfast import ops
X, H, B, T = 128, 128, 32, 80
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, X)).astype(np.float32)
k = (rng.standard_normal((X, 4 * H)) * 0.1).astype(np.float32)
r = (rng.standard_normal((H, 4 * H)) * 0.1).astype(np.float32)
b = np.zeros(4 * H, np.float32)
dy = np.ones((T, B, H), np.float32)
def step():
    ops.lstm_backward(ops.lstm_forward(x, k, r, b, training=True).cache, dy=dy)
"""

TORCH_STEP = """
import sys, time
import torch
torch.manual_seed(0)
X, H, B, T = 128, 128, 32, 80
lstm = torch.nn.LSTM(X, H)
x = torch.randn(T, B, X)
def step():
    lstm.zero_grad()
    y, _ = lstm(x)
    y.sum().backward()
"""

FIT_STEP = """
import sys, time
import numpy as np
import lstmfast
from lstmfast.tasks import imdb
lstmfast.utils.set_random_seed(0)
model = imdb.build_model("tutorial", 20000, maxlen=80)
rng = np.random.default_rng(0)
xs, ys = rng.integers(1, 20000, (32 * 200, 80)), rng.integers(0, 2, 32 * 200)
n = 0
def step():
    global n
    lo = (n % 200) * 32
    model.train_on_batch(xs[lo:lo + 32], ys[lo:lo + 32])
    n += 1
"""

TIMING = """
for _ in range(5):
    step()
steps = int(sys.argv[1])
t = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - t) / steps)
"""


def environment(spincount=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if spincount is not None:
        env["GOMP_SPINCOUNT"] = spincount
    return env


def run(code: str, env: dict, count: int, steps: int) -> list:
    """Mean step seconds of ``count`` processes started together."""
    procs = [subprocess.Popen([sys.executable, "-c", code + TIMING, str(steps)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(count)]
    return [float(p.communicate()[0]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    configs = [("lstmfast", ENGINE_STEP, environment()),
               ("lstmfast, libgomp's spinning (GOMP_SPINCOUNT=300000)", ENGINE_STEP, environment("300000"))]
    try:
        import torch  # noqa: F401
        configs.append(("torch.nn.LSTM", TORCH_STEP, environment()))
    except ImportError:
        print("torch is not installed: its row is left out", file=sys.stderr)
    alone = {name: [] for name, _, _ in configs}
    together = {name: [] for name, _, _ in configs}
    fit = {"lstmfast": [], "lstmfast, libgomp's spinning (GOMP_SPINCOUNT=300000)": []}
    for rnd in range(args.rounds):
        for name, code, env in configs if rnd % 2 == 0 else configs[::-1]:
            alone[name].append(run(code, env, 1, args.steps)[0])
            together[name].append(max(run(code, env, 2, args.steps)))
            print(f"round {rnd + 1} {name}: alone {alone[name][-1] * 1e3:.1f} ms, side by side "
                  f"{together[name][-1] * 1e3:.1f} ms", file=sys.stderr)
        for name, code, env in configs[:2]:
            fit[name].append(run(FIT_STEP, env, 1, args.steps * 2)[0])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print("## Two trainings side by side — `bench/sharing.py`\n")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- machine: {cpu}, {os.cpu_count()} logical CPUs")
    print(f"- command: `python bench/sharing.py --rounds {args.rounds} --steps {args.steps}`")
    print(f"- (128, 128, 32, 80) LSTM training step, mean over {args.steps} steps; median of {args.rounds} rounds; "
          "side by side: the slower of the two processes\n")
    print("| configuration | alone ms | side by side ms | slowdown |")
    print("|---|---:|---:|---:|")
    for name, _, _ in configs:
        a, t = statistics.median(alone[name]), statistics.median(together[name])
        print(f"| {name} | {a * 1e3:.1f} | {t * 1e3:.1f} | {t / a:.1f}x |")
    print("\nIdle machine, the IMDB tutorial network's `train_on_batch` step alone (batch 32, maxlen 80):\n")
    print("| configuration | ms per step |")
    print("|---|---:|")
    for name, times in fit.items():
        print(f"| {name} | {statistics.median(times) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
