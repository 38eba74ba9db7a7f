#!/usr/bin/env python3
"""Inference with and without CUDA graphs on one GPU (lstmfast.cuda.graphs), against PyTorch:

* predict: the Keras IMDB tutorial network (Embedding(20000, 128) -> LSTM(128) -> Dense(1,
  sigmoid), maxlen 80) over --batches batches of 32 synthetic reviews;
* one-step decoding: char-rnn (Embedding(65, 64) -> 2 x LSTM(256, stateful) -> Dense(65, softmax)),
  B=1, one character per call for --chars characters (``predict_on_batch``), and the same network
  in PyTorch (nn.LSTM through cuDNN, the state carried by hand).

    python bench/gpu_graphs.py [--batches 200] [--chars 500] [--repeats 3]

Prints milliseconds per batch / per character (median of --repeats, after a warm-up run) with
``GRAPHS = "never"`` (every step eager) and ``"auto"`` (graph replays), and PyTorch's. Needs a CUDA
GPU, CuPy, and a CUDA build of PyTorch for its column.
"""
import argparse
import statistics
import time

import numpy as np


def timed(fn, repeats):
    fn()  # warm-up: kernels compiled, graphs captured
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def lstmfast_models():
    from lstmfast.layers import LSTM, Dense, Embedding
    from lstmfast.models import Sequential
    from lstmfast.utils import set_random_seed
    set_random_seed(1)
    imdb = Sequential([Embedding(20000, 128), LSTM(128), Dense(1, activation="sigmoid")])
    charrnn = Sequential([Embedding(65, 64, batch_input_shape=(1, 1)), LSTM(256, stateful=True, return_sequences=True),
                          LSTM(256, stateful=True), Dense(65, activation="softmax")])
    return imdb, charrnn


def torch_decode_seconds(chars, repeats):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dev = torch.device("cuda")
    emb, lstm, dense = (torch.nn.Embedding(65, 64).to(dev), torch.nn.LSTM(64, 256, 2, batch_first=True).to(dev),
                        torch.nn.Linear(256, 65).to(dev))
    ids = torch.randint(0, 65, (chars,), device=dev)

    def decode():
        with torch.no_grad():
            state = None
            for t in range(chars):
                out, state = lstm(emb(ids[t].view(1, 1)), state)
                torch.softmax(dense(out[:, -1]), -1)
            torch.cuda.synchronize()
    return timed(decode, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--chars", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import cupy

    import lstmfast
    from lstmfast.cuda import graphs
    imdb, charrnn = lstmfast_models()
    reviews = np.random.default_rng(0).integers(1, 20000, (32 * args.batches, 80))
    chars = np.random.default_rng(1).integers(0, 65, args.chars)
    lstmfast.set_backend("cuda")
    rows = []
    for mode in ("never", "auto"):
        graphs.GRAPHS = mode

        def predict():
            imdb.predict(reviews, batch_size=32, verbose=0)

        def decode():
            charrnn.reset_states()
            for c in chars:
                charrnn.predict_on_batch(np.array([[c]]))
            cupy.cuda.get_current_stream().synchronize()
        rows.append((mode, timed(predict, args.repeats) / args.batches, timed(decode, args.repeats) / args.chars))
    torch_s = torch_decode_seconds(args.chars, args.repeats)
    print(f"GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy {cupy.__version__}")
    print("| GRAPHS | predict ms/batch (B=32, T=80) | decode ms/char (B=1) |")
    print("|---|---|---|")
    for mode, p, d in rows:
        print(f"| {mode} | {p * 1e3:.3f} | {d * 1e3:.3f} |")
    if torch_s is not None:
        print(f"| PyTorch (cuDNN) | | {torch_s / args.chars * 1e3:.3f} |")


if __name__ == "__main__":
    main()
