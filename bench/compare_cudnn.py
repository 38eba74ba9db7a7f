"""lstmfast's CUDA path against torch.nn.LSTM (cuDNN) on one GPU, float32, timed with CUDA events.

Cases (time-major; X = input size, H = units):
  training  (forward + backward, all gradients incl. dx): DeepBench sizes H in {512, 1024, 2048} x
            B in {16, 64}, T = 25, X = H; larger batches B in {128, 256, 512} x H in {256, 512, 1024},
            T = 25, X = H; and the char-rnn size X = 65 -> H = 256, B = 50, T = 50, 2 layers.
  inference (forward only): H in {512, 1024} x B in {1, 4}, T = 50, X = H.

Each call is timed on its own with CUDA events after the warm-up calls (excluded); the table gives
medians in milliseconds and cuDNN time / lstmfast time (> 1: lstmfast is faster), plus the largest
|y| difference between the two on the same weights as a sanity check. lstmfast is timed twice:
called eagerly, and captured once as a CUDA graph (lstmfast.cuda.graphs) and replayed, as `fit`
and `predict` run it (no column when the capture fails: the reason goes to stderr). TF32 is off on both sides
(strict float32) unless --tf32 is given. With --bf16 two more columns: lstmfast with bfloat16
products (`precision="bfloat16"`, the mixed_bfloat16 policy's; graph replay) and cuDNN under
`torch.autocast(dtype=torch.bfloat16)`, each with its largest |y| difference to the float32 result.

    python bench/compare_cudnn.py [--warmup 5] [--repeats 20] [--only deepbench] [--tf32] [--bf16]
                                  [--sequence-kernels auto|always|never] [--markdown FILE]

Needs a CUDA GPU, CuPy (pip install lstmfast[gpu]) and a CUDA build of PyTorch; exits with status 2
and a message otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, NamedTuple, Optional

import numpy as np


class Case(NamedTuple):
    name: str
    mode: str  # "training" or "inference"
    T: int
    B: int
    X: int
    H: int
    layers: int = 1


class Row(NamedTuple):
    case: Case
    lstmfast_ms: float
    cudnn_ms: float
    max_abs_diff: Optional[float] = None
    graph_ms: Optional[float] = None  # lstmfast replayed as a CUDA graph
    bf16_ms: Optional[float] = None   # lstmfast with bfloat16 products, replayed as a CUDA graph
    cudnn_bf16_ms: Optional[float] = None  # cuDNN under torch.autocast(bfloat16)
    bf16_diffs: Optional[tuple] = None  # max |y - y float32|: lstmfast bf16, cuDNN bf16


def cases() -> List[Case]:
    out = [Case(f"deepbench H{H} B{B}", "training", 25, B, H, H) for H in (512, 1024, 2048) for B in (16, 64)]
    out += [Case(f"large batch H{H} B{B}", "training", 25, B, H, H) for H in (256, 512, 1024) for B in (128, 256, 512)]
    out.append(Case("char-rnn", "training", 50, 50, 65, 256, layers=2))
    out += [Case(f"inference H{H} B{B}", "inference", 50, B, H, H) for H in (512, 1024) for B in (1, 4)]
    return out


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def markdown_table(gpu_name: str, rows) -> str:
    lines = [f"GPU: {gpu_name}", "",
             "| case | mode | T | B | X -> H | layers | lstmfast ms | cuDNN ms | cuDNN / lstmfast "
             "| lstmfast graph ms | cuDNN / graph | max abs y diff |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        row = Row(*row)
        c = row.case
        diff = "" if row.max_abs_diff is None else f"{row.max_abs_diff:.1e}"
        graph = ("| | " if row.graph_ms is None else
                 f"| {row.graph_ms:.3f} | {row.cudnn_ms / row.graph_ms:.2f} ")
        lines.append(f"| {c.name} | {c.mode} | {c.T} | {c.B} | {c.X} -> {c.H} | {c.layers} | {row.lstmfast_ms:.3f} "
                     f"| {row.cudnn_ms:.3f} | {row.cudnn_ms / row.lstmfast_ms:.2f} {graph}| {diff} |")
    rows = [Row(*row) for row in rows]
    if any(row.bf16_ms is not None for row in rows):
        lines += ["", "bfloat16 products (lstmfast: precision='bfloat16', graph replay; cuDNN: torch.autocast):", "",
                  "| case | B | H | lstmfast bf16 ms | cuDNN bf16 ms | cuDNN bf16 / lstmfast bf16 "
                  "| cuDNN fp32 / lstmfast bf16 | max abs y diff to fp32: lstmfast, cuDNN |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for row in rows:
            if row.bf16_ms is not None:
                c = row.case
                lines.append(f"| {c.name} | {c.B} | {c.H} | {row.bf16_ms:.3f} | {row.cudnn_bf16_ms:.3f} "
                             f"| {row.cudnn_bf16_ms / row.bf16_ms:.2f} | {row.cudnn_ms / row.bf16_ms:.2f} "
                             f"| {row.bf16_diffs[0]:.1e}, {row.bf16_diffs[1]:.1e} |")
    return "\n".join(lines)


def fail(message: str) -> None:
    print(f"compare_cudnn: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# GPU side: everything below needs CuPy, torch and a GPU.
# ---------------------------------------------------------------------------------------------

def weights(rng, case: Case):
    """Per layer (kernel [X,4H], recurrent_kernel [H,4H], bias [4H]) in float32, torch's init range."""
    bound = 1.0 / np.sqrt(case.H)
    out = []
    for layer in range(case.layers):
        X = case.X if layer == 0 else case.H
        out.append(tuple(rng.uniform(-bound, bound, shape).astype(np.float32)
                         for shape in ((X, 4 * case.H), (case.H, 4 * case.H), (4 * case.H,))))
    return out


def time_calls(step, new_event, elapsed_ms, synchronize, warmup: int, repeats: int) -> float:
    """Median milliseconds of step() over `repeats` calls after `warmup` untimed ones; each call
    is bracketed by two CUDA events on the current stream."""
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeats):
        start, end = new_event(), new_event()
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(elapsed_ms(start, end))
    return median(times)


def run_case(case: Case, warmup: int, repeats: int, bf16: bool = False) -> Row:
    import cupy
    import torch

    from lstmfast import ops

    rng = np.random.default_rng(0)
    params = weights(rng, case)
    x_host = rng.standard_normal((case.T, case.B, case.X)).astype(np.float32)
    dy_host = rng.standard_normal((case.T, case.B, case.H)).astype(np.float32)

    # lstmfast on CuPy arrays.
    x = cupy.asarray(x_host)
    dy = cupy.asarray(dy_host)
    layers = [tuple(cupy.asarray(w) for w in p) for p in params]
    training = case.mode == "training"

    def lstmfast_step(precision=None):
        inputs, caches = x, []
        for kernel, recurrent_kernel, bias in layers:
            out = ops.lstm_forward(inputs, kernel, recurrent_kernel, bias, training=training, precision=precision)
            caches.append(out.cache)
            inputs = out.y
        if training:
            grad = dy
            for cache in reversed(caches):
                grad = ops.lstm_backward(cache, grad).dx
        return inputs

    # torch.nn.LSTM (cuDNN) with the same weights: W_ih = kernel.T, W_hh = recurrent_kernel.T, b_hh = 0.
    lstm = torch.nn.LSTM(case.X, case.H, num_layers=case.layers).cuda()
    with torch.no_grad():
        for layer, (kernel, recurrent_kernel, bias) in enumerate(params):
            getattr(lstm, f"weight_ih_l{layer}").copy_(torch.from_numpy(kernel.T.copy()))
            getattr(lstm, f"weight_hh_l{layer}").copy_(torch.from_numpy(recurrent_kernel.T.copy()))
            getattr(lstm, f"bias_ih_l{layer}").copy_(torch.from_numpy(bias))
            getattr(lstm, f"bias_hh_l{layer}").zero_()
    tx = torch.from_numpy(x_host).cuda().requires_grad_(training)  # dx is computed on both sides
    tdy = torch.from_numpy(dy_host).cuda()
    weights_t = list(lstm.parameters())

    def cudnn_step():
        if not training:
            with torch.no_grad():
                return lstm(tx)[0]
        y = lstm(tx)[0]
        torch.autograd.grad(y, [tx] + weights_t, tdy)  # no .grad accumulation
        return y

    y_ours = cupy.asnumpy(lstmfast_step())
    with torch.no_grad():
        y_theirs = lstm(tx)[0].cpu().numpy()
    diff = float(np.max(np.abs(y_ours - y_theirs)))

    ours = time_calls(lstmfast_step, cupy.cuda.Event, cupy.cuda.get_elapsed_time, cupy.cuda.Device().synchronize,
                      warmup, repeats)
    graphed = None
    try:
        from lstmfast.cuda import graphs
        captured = graphs.capture(cupy, lambda inputs: lstmfast_step(), [x], [])
        graphed = time_calls(lambda: captured.launch(cupy, [x]), cupy.cuda.Event, cupy.cuda.get_elapsed_time,
                             cupy.cuda.Device().synchronize, warmup, repeats)
    except Exception as e:  # report it, time the rest
        print(f"{case.name}: the CUDA graph capture failed ({type(e).__name__}: {e})", file=sys.stderr)
    torch_timer = (lambda: torch.cuda.Event(enable_timing=True), lambda a, b: a.elapsed_time(b), torch.cuda.synchronize)
    theirs = time_calls(cudnn_step, *torch_timer, warmup, repeats)
    if not bf16:
        return Row(case, ours, theirs, diff, graphed)
    from lstmfast.cuda import graphs
    captured_bf16 = graphs.capture(cupy, lambda inputs: lstmfast_step("bfloat16"), [x], [])
    ours_bf16 = time_calls(lambda: captured_bf16.launch(cupy, [x]), cupy.cuda.Event, cupy.cuda.get_elapsed_time,
                           cupy.cuda.Device().synchronize, warmup, repeats)
    y_bf16 = cupy.asnumpy(lstmfast_step("bfloat16"))

    def cudnn_bf16_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return cudnn_step()

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        y_theirs_bf16 = lstm(tx)[0].float().cpu().numpy()
    theirs_bf16 = time_calls(cudnn_bf16_step, *torch_timer, warmup, repeats)
    diffs = (float(np.max(np.abs(y_bf16 - y_ours))), float(np.max(np.abs(y_theirs_bf16 - y_theirs))))
    return Row(case, ours, theirs, diff, graphed, ours_bf16, theirs_bf16, diffs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per case (default 5)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case (default 20)")
    parser.add_argument("--only", default="", help="run the cases whose name contains this text")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in cuBLAS (CuPy) and cuDNN (torch)")
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 products on both sides")
    parser.add_argument("--sequence-kernels", choices=("auto", "always", "never"), default="auto",
                        help="when lstmfast runs the recurrence as one launch (lstmfast.cuda.ops.SEQUENCE_KERNELS)")
    parser.add_argument("--markdown", help="also write the table to this file (atomically)")
    args = parser.parse_args(argv)
    if args.markdown:
        from lstmfast._atomic import check_writable
        check_writable(args.markdown, "--markdown")
    if args.tf32:
        os.environ["CUPY_TF32"] = "1"  # read when CuPy is imported

    try:
        from lstmfast import cuda as lstmfast_cuda
    except ImportError as e:
        fail(f"lstmfast is not importable (pip install -e . first): {e}")
    try:
        cupy = lstmfast_cuda.require_gpu()
    except (ImportError, RuntimeError) as e:
        fail(f"needs a CUDA GPU through CuPy: {e}")
    try:
        import torch
    except ImportError as e:
        fail(f"needs PyTorch with CUDA for the cuDNN side (GPU): {e}")
    if not torch.cuda.is_available():
        fail(f"torch {torch.__version__} sees no CUDA GPU (a CPU-only build?)")
    from lstmfast.cuda import ops as cuda_ops
    cuda_ops.SEQUENCE_KERNELS = args.sequence_kernels
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    gpu = (f"{name}; CuPy {cupy.__version__} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}), "
           f"torch {torch.__version__} (cuDNN {torch.backends.cudnn.version()}); float32, TF32 "
           f"{'on' if args.tf32 else 'off'}; lstmfast sequence kernels: {args.sequence_kernels}; "
           f"median of {args.repeats} after {args.warmup} warm-up calls")
    rows = []
    for case in cases():
        if args.only in case.name:
            row = run_case(case, args.warmup, args.repeats, args.bf16)
            rows.append(row)
            lines = markdown_table(gpu, [row]).splitlines()  # each row as measured: a stopped run keeps them
            print(lines[4], file=sys.stderr)
            if row.bf16_ms is not None:
                print(lines[-1], file=sys.stderr)
    table = markdown_table(gpu, rows)
    print(table)
    if args.markdown:
        from lstmfast._atomic import write_text
        write_text(args.markdown, table + "\n")


if __name__ == "__main__":
    main()
