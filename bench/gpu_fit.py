#!/usr/bin/env python3
"""Whole training steps on one GPU: the Keras IMDB tutorial model (Embedding(20000, 128) ->
LSTM(128, dropout=0.2, recurrent_dropout=0.2) -> Dense(1, sigmoid), maxlen 80, batch 32, Adam,
binary crossentropy) trained with lstmfast's ``model.fit`` after ``lstmfast.set_backend("cuda")``,
and the same network in PyTorch on the same GPU (nn.Embedding, nn.LSTM through cuDNN, nn.Linear,
Adam; torch's LSTM has no recurrent dropout, so its step does less work). Synthetic reviews of
the tutorial's shape (random word ids), so no data set is needed.

    python bench/gpu_fit.py [--batches 200] [--repeats 3]

Reports seconds per batch (median of --repeats runs of --batches batches, after a warm-up run)
and the estimated time of a full 25,000-review epoch (782 batches, training only), for lstmfast
with its training step replayed as a CUDA graph (the default), with every step eager, and with the
mixed_bfloat16 policy (graphs; bfloat16 products on tensor cores). Needs a CUDA GPU, CuPy and a
CUDA build of PyTorch.
"""
import argparse
import statistics
import sys
import time

import numpy as np

VOCAB, MAXLEN, UNITS, BATCH, EPOCH_BATCHES = 20000, 80, 128, 32, 782


def lstmfast_model(policy="float32"):
    """The tutorial network in lstmfast, compiled (seed 1), its layers of dtype ``policy``; the same
    on every backend."""
    from lstmfast.layers import LSTM, Dense, Embedding
    from lstmfast.models import Sequential
    from lstmfast.utils import set_random_seed
    set_random_seed(1)
    model = Sequential([Embedding(VOCAB, 128, dtype=policy), LSTM(UNITS, dropout=0.2, recurrent_dropout=0.2,
                                                                  dtype=policy),
                        Dense(1, activation="sigmoid", dtype=policy)])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def lstmfast_seconds(x, y, repeats, graphs="auto", policy="float32"):
    """Seconds per batch of ``model.fit`` with CUDA graphs ``"auto"`` (the training step captured
    and replayed) or ``"never"`` (every step eager)."""
    import lstmfast
    from lstmfast.cuda import graphs as cuda_graphs
    cuda_graphs.GRAPHS = graphs
    model = lstmfast_model(policy)
    lstmfast.set_backend("cuda")
    import cupy
    times = []
    for r in range(repeats + 1):
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        cupy.cuda.Device().synchronize()
        if r:  # the first run compiles the kernels and fills CuPy's memory pool
            times.append(time.perf_counter() - start)
    return statistics.median(times) / (len(x) // BATCH)


def torch_training(torch, dev):
    """The same network in PyTorch (seed 1) on device dev: (net, optimizer, loss), and one epoch over
    (xs, ys) in batches, written as a plain PyTorch training loop with per-batch accuracy."""
    torch.manual_seed(1)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(VOCAB, 128)
            self.dropout = torch.nn.Dropout(0.2)
            self.lstm = torch.nn.LSTM(128, UNITS, batch_first=True)
            self.dense = torch.nn.Linear(UNITS, 1)

        def forward(self, ids):
            _, (h, _) = self.lstm(self.dropout(self.embedding(ids)))
            return self.dense(h[-1])

    net = Net().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def epoch(xs, ys):
        correct = 0.0
        for lo in range(0, len(xs) - BATCH + 1, BATCH):  # data moves per batch, as lstmfast's does
            bx, by = xs[lo:lo + BATCH].to(dev), ys[lo:lo + BATCH].to(dev)
            opt.zero_grad(set_to_none=True)
            logits = net(bx)
            loss = loss_fn(logits, by)
            loss.backward()
            opt.step()
            correct += float(((logits > 0).float() == by).float().sum())  # accuracy, read back per batch
        return correct

    return epoch


def torch_seconds(x, y, repeats):
    import torch
    dev = torch.device("cuda")
    epoch = torch_training(torch, dev)
    xs = torch.from_numpy(x.astype(np.int64))
    ys = torch.from_numpy(y)
    times = []
    for r in range(repeats + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        epoch(xs, ys)
        torch.cuda.synchronize()
        if r:
            times.append(time.perf_counter() - start)
    return statistics.median(times) / (len(x) // BATCH)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="batches per timed run (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library (default 3)")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.repeats < 1:
        parser.error("--batches and --repeats must be >= 1")
    try:
        from lstmfast import cuda as lcuda
        lcuda.require_gpu()
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no CUDA GPU")
    except (ImportError, RuntimeError) as e:
        print(f"gpu_fit: needs a CUDA GPU, CuPy and PyTorch with CUDA: {e}", file=sys.stderr)
        sys.exit(2)
    rng = np.random.default_rng(0)
    n = args.batches * BATCH
    x = rng.integers(1, VOCAB, (n, MAXLEN)).astype(np.int32)
    y = (rng.random((n, 1)) < 0.5).astype(np.float32)
    eager = lstmfast_seconds(x, y, args.repeats, "never")
    ours = lstmfast_seconds(x, y, args.repeats, "auto")
    mixed = lstmfast_seconds(x, y, args.repeats, "auto", "mixed_bfloat16")
    theirs = torch_seconds(x, y, args.repeats)
    print(f"GPU: {torch.cuda.get_device_name()}; {args.batches} batches of {BATCH} x {MAXLEN}, median of "
          f"{args.repeats} runs")
    print("| library | ms per batch | est. s per 782-batch epoch |")
    print("|---|---:|---:|")
    for name, sec in (("lstmfast (model.fit, CUDA graphs)", ours), ("lstmfast (model.fit, eager steps)", eager),
                      ("lstmfast (CUDA graphs, mixed_bfloat16)", mixed), ("PyTorch (cuDNN LSTM, hand loop)", theirs)):
        print(f"| {name} | {sec * 1e3:.2f} | {sec * EPOCH_BATCHES:.1f} |")
    print(f"torch time / lstmfast time: {theirs / ours:.2f}")


if __name__ == "__main__":
    main()
