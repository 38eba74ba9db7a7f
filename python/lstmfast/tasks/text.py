"""Character-level text generation (char-rnn): ``lstmfast text train`` and ``lstmfast text generate``.

The model reads one character per step, as a one-hot vector or through an ``Embedding``, and
predicts the next one::

    one-hot [B, T, V] or Embedding(V, E) -> LSTM(units, stateful, return_sequences) -> Dropout
        -> ... (``layers`` times) -> TimeDistributed(Dense(V, softmax))        # [B, T, V]

trained on ``sparse_categorical_crossentropy`` (nats per character) with Adam and a global
gradient-norm clip, by stateful truncated backpropagation through time: the training text is cut
into ``B`` contiguous streams read ``T`` characters at a time (``lstmfast.datasets.text``), the
LSTM state is carried from batch to batch (no gradient flows between them) and reset at the start
of every epoch. The last 10% of the file is held out; it is read the same way, with the state
carried across chunks, to give the validation loss and perplexity ``exp(loss)``.

Data-parallel (``mpiexec -n N``, ``lstmfast.distributed``): ``B`` stays the global batch. Each rank
holds a contiguous block of the streams, ``distributed.shard(B, rank, N)``, and builds its stateful
model with that many rows: ``train_on_batch`` gives each rank those rows of every batch (and sums
the gradients), so a stream's state always lives on the same rank. The validation streams are split
the same way and their log-likelihoods summed. Only rank 0 saves the model.

The best model by validation loss is saved with ``model.save(path, metadata={"task": "text",
"vocab": [...], "config": {...}})``. Generation rebuilds the network from those weights as
:class:`CharLM`, which runs the same layers with explicit states of any batch size (1 to sample,
the beam width for beam search) through ``lstmfast.ops``.

``tutorial()`` is the classic blog-post version instead: 50-character windows of integers
scaled to [0, 1], two LSTM(300) with Dropout(0.2), one prediction per window.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .. import backend, distributed, ops
from .._atomic import check_writable
from .._typing import PathLike
from ..callbacks import Progbar
from ..datasets import text as text_data
from ..datasets.text import CharVocab
from ..layers import LSTM, Dense, Dropout, Embedding, Input, TimeDistributed
from ..models import Model, Sequential
from ..optimizers import Adam, AdamW

TASK = "text"
DEFAULTS = dict(layers=2, units=256, dropout=0.2, seq_len=100, batch_size=64, embedding=0, lr=2e-3,
                clipnorm=5.0, lr_schedule="constant", val_fraction=0.1, weight_decay=0.0)
LR_SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.1  # the cosine schedule ends at this fraction of --lr


# ---- the model ---------------------------------------------------------------------------------

def build_model(vocab_size: int, layers: int = 2, units: int = 256, dropout: float = 0.2, embedding: int = 0,
                batch_size: int = 64) -> Sequential:
    """The training model (uncompiled): stateful, so the batch size is part of it; any length T."""
    if embedding:
        model = Sequential([Input(batch_shape=(batch_size, None), dtype="int32"),
                            Embedding(vocab_size, embedding)])
    else:
        model = Sequential([Input(batch_shape=(batch_size, None, vocab_size))])
    for _ in range(layers):
        model.add(LSTM(units, return_sequences=True, stateful=True))
        if dropout:
            model.add(Dropout(dropout))
    # TimeDistributed runs the Dense as one [B*T, units] product.
    model.add(TimeDistributed(Dense(vocab_size, activation="softmax")))
    return model


class CharLM:
    """The trained network run with explicit states (inference only, any batch size).

    ``state`` is a list ``[h_1, c_1, h_2, c_2, ...]`` of ``[K, units]`` arrays, one pair per LSTM
    layer; ``log_probs(ids [K, T], state)`` returns ``(log p [K, T, V], new state)`` where
    ``log p[k, t]`` is the distribution of the character after ``ids[k, t]``."""

    def __init__(self, lstm_weights: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], dense_kernel: np.ndarray,
                 dense_bias: np.ndarray, embeddings: Optional[np.ndarray] = None) -> None:
        self.lstm_weights = [tuple(np.ascontiguousarray(w, np.float32) for w in triple) for triple in lstm_weights]
        self.dense_kernel = np.ascontiguousarray(dense_kernel, np.float32)   # [units, V]
        self.dense_bias = np.ascontiguousarray(dense_bias, np.float32)       # [V]
        self.embeddings = None if embeddings is None else np.ascontiguousarray(embeddings, np.float32)  # [V, E]
        self.vocab_size = self.dense_kernel.shape[1]
        self._eye = np.eye(self.vocab_size, dtype=np.float32)

    @classmethod
    def from_model(cls, model: Model) -> "CharLM":
        """Read the weights of a model made by :func:`build_model` (layer by layer, by kind), as
        NumPy copies wherever the model is."""
        lstm, dense, embeddings = [], None, None
        for layer in model.layers:
            w = {name: ops.to_numpy(value) for name, value in layer.weights.items()}
            if isinstance(layer, Embedding):
                embeddings = w["embeddings"]
            elif isinstance(layer, LSTM):
                if layer.peephole or not layer.use_bias or layer.recurrent_activation != "sigmoid":
                    raise ValueError(f"LSTM layer {layer.name!r} is not the text task's kind (peephole, no bias "
                                     f"or {layer.recurrent_activation})")
                lstm.append((w["kernel"], w["recurrent_kernel"], w["bias"]))
            elif isinstance(layer, (Dense, TimeDistributed)):
                dense = (w["kernel"], w["bias"])
        if not lstm or dense is None:
            raise ValueError("not a text model: it needs LSTM layers followed by a Dense softmax layer")
        return cls(lstm, dense[0], dense[1], embeddings)

    @property
    def units(self) -> List[int]:
        return [rk.shape[0] for _, rk, _ in self.lstm_weights]

    def initial_state(self, batch: int) -> List[np.ndarray]:
        return [np.zeros((batch, h), np.float32) for h in self.units for _ in (0, 1)]

    def on_backend(self, backend_name: str) -> "CharLM":
        """This model with its arrays on ``backend_name`` ("cpu" or "cuda"). On a GPU a call of
        ``log_probs``/``step`` is one input copy, one CUDA graph launch per input shape
        (``ops.GraphedCalls``, from a shape's third call) and one copy of the log-probabilities
        back; the state stays on the GPU, and the state returned is valid until the next call."""
        moved = CharLM.__new__(CharLM)
        moved.lstm_weights = [tuple(ops.to_backend(w, backend_name) for w in triple) for triple in self.lstm_weights]
        moved.dense_kernel, moved.dense_bias, moved.embeddings, moved._eye = (
            ops.to_backend(a, backend_name) for a in (self.dense_kernel, self.dense_bias, self.embeddings, self._eye))
        moved.vocab_size = self.vocab_size
        return moved

    def log_probs(self, ids: np.ndarray, state: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[np.ndarray]]:
        ids_tm = np.ascontiguousarray(np.asarray(ids).T)                     # [T, K]
        if type(self.dense_kernel) is np.ndarray:
            logp, new_state = self._forward([ids_tm, *state])
            return logp, list(new_state)
        inputs = ops.batch_to_device([ids_tm]) + [ops.to_device_of(self.dense_kernel, s) for s in state]
        graphs = self.__dict__.get("_graphs")
        if graphs is None:
            graphs = self._graphs = ops.GraphedCalls("one-step decoding")
        weights = [w for triple in self.lstm_weights for w in triple] + [self.dense_kernel, self.dense_bias]
        logp, new_state = graphs(tuple(a.shape for a in inputs), self._forward, inputs, [], weights)
        return ops.to_numpy(logp), list(new_state)

    def _forward(self, inputs: list) -> Tuple[np.ndarray, list]:
        """``(log p [K, T, V], new state)`` from ``[ids [T, K], h0, c0, h1, c1, ...]``, where the
        weights are."""
        ids_tm, state = inputs[0], inputs[1:]
        x = self._eye[ids_tm] if self.embeddings is None else self.embeddings[ids_tm]   # [T, K, X]
        new_state = []
        for k, (kernel, recurrent_kernel, bias) in enumerate(self.lstm_weights):
            out = ops.lstm_forward(x, kernel, recurrent_kernel, bias, state[2 * k], state[2 * k + 1],
                                   training=False)
            x = out.y                                                        # [T, K, H]
            new_state += [out.h, out.c]
        T, K, H = x.shape
        xp = ops.array_module(x)
        z = ops.matmul(x.transpose(1, 0, 2).reshape(K * T, H), self.dense_kernel).reshape(K, T, -1)  # [K, T, V]
        z += self.dense_bias
        z -= z.max(axis=-1, keepdims=True)
        z -= xp.log(xp.exp(z).sum(axis=-1, keepdims=True))                  # log-softmax
        return z, new_state

    def step(self, tokens: np.ndarray, state: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[np.ndarray]]:
        """One character per beam: ``tokens [K] -> (log p [K, V], new state)`` (``sampling.beam_search``)."""
        logp, state = self.log_probs(np.asarray(tokens).reshape(-1, 1), state)
        return logp[:, 0], state

    def evaluate(self, ids: np.ndarray, batch_size: int, seq_len: int) -> float:
        """Mean negative log-likelihood (nats/char) of every next character of ``ids``, read as
        ``batch_size`` contiguous streams in chunks of ``seq_len`` with the state carried along."""
        total, count = self.negative_log_likelihood(ids, batch_size, seq_len)
        return total / count

    def negative_log_likelihood(self, ids: np.ndarray, batch_size: int, seq_len: int,
                                streams: slice = slice(None)) -> Tuple[float, int]:
        """``(summed negative log-likelihood in nats, characters)`` of the next characters of the
        ``streams`` (a slice of the ``batch_size`` streams that :meth:`evaluate` reads)."""
        rows = len(range(batch_size)[streams])
        if not rows:
            return 0.0, 0
        state = self.initial_state(rows)
        total, count = 0.0, 0
        for x, y in text_data.stateful_batches(ids, batch_size, seq_len):
            x, y = x[streams], y[streams]
            logp, state = self.log_probs(x, state)
            total -= float(np.take_along_axis(logp, y[..., None].astype(np.intp), axis=-1).sum(dtype=np.float64))
            count += y.size
        return total, count


# ---- training ----------------------------------------------------------------------------------

def _check_train_args(layers, units, dropout, seq_len, batch_size, embedding, lr, clipnorm, epochs, minutes,
                      lr_schedule, val_fraction, val_every, weight_decay):
    for name, value in (("layers", layers), ("units", units), ("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(embedding, bool) or not isinstance(embedding, (int, np.integer)) or embedding < 0:
        raise ValueError(f"embedding must be an integer >= 0 (0 = one-hot input), got {embedding!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if clipnorm is not None and not clipnorm > 0:
        raise ValueError(f"clipnorm must be > 0 (or None for no clipping), got {clipnorm!r}")
    if not 0.0 <= weight_decay < 1.0:
        raise ValueError(f"weight_decay must lie in [0, 1), got {weight_decay!r}")
    if epochs is not None and (isinstance(epochs, bool) or epochs < 1):
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    if val_every is not None and val_every < 1:
        raise ValueError(f"val_every must be >= 1 batch, got {val_every!r}")


def prepare_data(path: PathLike, seq_len: int, batch_size: int,
                 val_fraction: float = 0.1) -> Tuple[CharVocab, np.ndarray, np.ndarray]:
    """Read ``path`` and check it is long enough: ``(vocab, train_ids, val_ids)``."""
    text = text_data.read_text(path, min_chars=seq_len + 1)
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    train_ids, val_ids = text_data.train_val_split(ids, val_fraction)
    need = batch_size * seq_len + 1
    if len(train_ids) < need:
        raise ValueError(f"{path}: the training part ({len(train_ids):,} of {len(ids):,} characters, the first "
                         f"{1 - val_fraction:.0%}) is too short for {batch_size} streams of one {seq_len}-character "
                         f"window each (needs {need:,}); lower --batch-size or --seq-len")
    return vocab, train_ids, val_ids


def _val_batch_size(n_val: int, batch_size: int, seq_len: int) -> int:
    """Validation streams: the training batch size, fewer when the held-out part is short
    (each stream gets at least one window when possible)."""
    return max(1, min(batch_size, (n_val - 1) // seq_len))


def train(path: PathLike, save: PathLike, epochs: Optional[int] = None, minutes: Optional[float] = None,
          layers: int = 2, units: int = 256, dropout: float = 0.2, seq_len: int = 100, batch_size: int = 64,
          embedding: int = 0, lr: float = 2e-3, clipnorm: Optional[float] = 5.0, lr_schedule: str = "constant",
          val_fraction: float = 0.1, val_every: Optional[int] = None, weight_decay: float = 0.0,
          seed: Optional[int] = 1, verbose: int = 1, print_fn: Callable[[str], None] = print) -> dict:
    """Train a char-level LSTM on the text file ``path`` and save the best model (by validation
    loss) to ``save``. Stops after ``epochs`` epochs or ``minutes`` minutes, whichever comes first
    (10 epochs when neither is given); validates after every epoch, every ``val_every`` batches
    and when stopping. ``weight_decay`` > 0 trains with AdamW (decoupled: every weight shrinks by
    ``lr * weight_decay`` per step, with the scheduled ``lr``). Returns the metrics (losses in nats
    per character)."""
    if epochs is None and minutes is None:
        epochs = 10
    _check_train_args(layers, units, dropout, seq_len, batch_size, embedding, lr, clipnorm, epochs, minutes,
                      lr_schedule, val_fraction, val_every, weight_decay)
    rank, ranks = distributed.rank(), distributed.size()
    if batch_size < ranks:
        raise ValueError(f"batch_size {batch_size} must be at least the number of ranks ({ranks}): "
                         f"each rank trains its own streams")
    save = os.fspath(save)
    check_writable(save, "--save", not_same_as=path)
    vocab, train_ids, val_ids = prepare_data(path, seq_len, batch_size, val_fraction)
    V = len(vocab)
    val_batch = _val_batch_size(len(val_ids), batch_size, seq_len)
    if seed is not None:
        backend.set_random_seed(seed)
    config = dict(layers=layers, units=units, dropout=dropout, seq_len=seq_len, batch_size=batch_size,
                  embedding=embedding, lr=lr, clipnorm=clipnorm, lr_schedule=lr_schedule, val_fraction=val_fraction,
                  weight_decay=weight_decay, seed=seed, source=os.path.basename(os.fspath(path)))
    world = distributed.data_parallel()
    streams, val_streams = distributed.shard(batch_size, rank, ranks), distributed.shard(val_batch, rank, ranks)
    model = build_model(V, layers, units, dropout, embedding, streams.stop - streams.start)  # this rank's rows
    optimizer = AdamW(learning_rate=lr, weight_decay=weight_decay, global_clipnorm=clipnorm) if weight_decay else \
        Adam(learning_rate=lr, global_clipnorm=clipnorm)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    n_batches = text_data.count_batches(len(train_ids), batch_size, seq_len)
    if verbose:
        model.summary(print_fn=print_fn)
        budget = [f"{epochs} epochs" if epochs else "", f"{minutes:g} minutes" if minutes else ""]
        print_fn(f"{path}: {len(train_ids) + len(val_ids):,} characters, vocabulary {V}; training on "
                 f"{len(train_ids):,} ({n_batches} batches of {batch_size}x{seq_len} per epoch"
                 + (f", the streams split over {ranks} ranks" if ranks > 1 else "") + f"), validating on "
                 f"{len(val_ids):,}; budget {' or '.join(b for b in budget if b)}")
    eye = np.eye(V, dtype=np.float32)
    inputs = (lambda x: x) if embedding else (lambda x: eye[x])
    budget_s = None if minutes is None else 60.0 * minutes
    total_steps = None if epochs is None else epochs * n_batches

    start = time.perf_counter()
    train_seconds, train_chars, steps = 0.0, 0, 0
    val_seconds_est = None  # the last validation pass's duration, to stop in time for the final one
    best = {"val_loss": math.inf, "epoch": None}
    history: List[dict] = []

    def validate(epoch_float: float, train_loss: float) -> None:
        nonlocal val_seconds_est
        t0 = time.perf_counter()
        total, count = CharLM.from_model(model).on_backend(ops.get_backend()).negative_log_likelihood(
            val_ids, val_batch, seq_len, val_streams)
        if world is not None:
            total, count = world.reduce_values([total, count])
        val_loss = total / count
        val_seconds_est = time.perf_counter() - t0
        entry = {"epoch": round(epoch_float, 4), "train_loss": train_loss, "val_loss": val_loss,
                 "val_perplexity": math.exp(min(val_loss, 700.0)), "seconds": time.perf_counter() - start,
                 "lr": optimizer.current_learning_rate()}
        history.append(entry)
        saved = ""
        if val_loss < best["val_loss"]:
            best.update(val_loss=val_loss, epoch=entry["epoch"], train_loss=train_loss)
            if distributed.is_chief():
                model.save(save, metadata={"task": TASK, "vocab": list(vocab.chars), "config": config,
                                           "val_loss": val_loss, "epoch": entry["epoch"]})
            saved = f" - saved {save}"
        if verbose:
            print_fn(f"epoch {entry['epoch']:g}: val_loss {val_loss:.4f} nats/char - perplexity "
                     f"{entry['val_perplexity']:.3f} - train_loss {train_loss:.4f} - {entry['seconds']:.0f}s{saved}")

    def out_of_time(batch_seconds: float) -> bool:
        if budget_s is None:
            return False
        # Leave room for this batch and the final validation pass (estimated before the first one:
        # a forward pass costs about a third of a training step).
        val_est = val_seconds_est if val_seconds_est is not None else \
            batch_seconds * len(val_ids) / (batch_size * seq_len) / 3
        # Data-parallel, every rank stops where rank 0's clock says: a rank that went on alone would hang.
        return distributed.from_chief(time.perf_counter() - start + batch_seconds + val_est >= budget_s)

    epoch, stop, batch_seconds = 0, False, 0.0
    last_train_loss = math.nan
    while not stop and (epochs is None or epoch < epochs):
        if epoch and out_of_time(batch_seconds):
            break
        if verbose:
            print_fn(f"Epoch {epoch + 1}" + (f"/{epochs}" if epochs else ""))
        bar = Progbar(n_batches, verbose=1 if verbose else 0, unit_name="step")
        model.reset_states()
        loss_sum, loss_chars, done = 0.0, 0, 0
        for k, (x, y) in enumerate(text_data.stateful_batches(train_ids, batch_size, seq_len)):
            if out_of_time(batch_seconds):
                stop = True
                break
            if lr_schedule == "cosine":
                # data-parallel, rank 0's clock, so every rank takes the same rate
                progress = max(steps / total_steps if total_steps else 0.0,
                               distributed.from_chief(time.perf_counter() - start) / budget_s if budget_s else 0.0)
                optimizer.learning_rate = lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 *
                                                (1 + math.cos(math.pi * min(1.0, progress))))
            t0 = time.perf_counter()
            loss = float(model.train_on_batch(inputs(x), y))
            batch_seconds = time.perf_counter() - t0
            train_seconds += batch_seconds
            train_chars += y.size
            steps += 1
            done = k + 1
            loss_sum += loss * y.size
            loss_chars += y.size
            bar.update(done, values=[("loss", loss)])
            if not math.isfinite(loss):
                stop = True
                break
            if val_every and done % val_every == 0 and done < n_batches:
                validate(epoch + done / n_batches, loss_sum / loss_chars)
        if done and done < n_batches:
            bar.update(done, finalize=True)
        if done:
            last_train_loss = loss_sum / loss_chars
            if not (history and history[-1]["epoch"] == round(epoch + done / n_batches, 4)):
                validate(epoch + done / n_batches, last_train_loss)  # unless --val-every just did
        elif not history:  # out of time before the first batch: still validate and save
            validate(0.0, math.nan)
        epoch += 1
    seconds = time.perf_counter() - start
    if best["epoch"] is None:
        raise ValueError("training diverged: the validation loss is not a finite number, nothing was saved "
                         "(try a lower --lr or a --clipnorm)")
    result = {
        "val_loss": best["val_loss"],
        "val_perplexity": math.exp(best["val_loss"]),
        "best_epoch": best["epoch"],
        "train_loss": last_train_loss,
        "epochs": history[-1]["epoch"],
        "seconds": seconds,
        "train_seconds": train_seconds,
        "chars_per_second": train_chars / train_seconds if train_seconds > 0 else 0.0,
        "train_chars": int(len(train_ids)),
        "val_chars": int(len(val_ids)),
        "vocab_size": V,
        "parameters": model.count_params(),
        "config": config,
        "model": save,
        "history": history,
    }
    if verbose:
        print_fn(f"best val_loss {best['val_loss']:.4f} nats/char (perplexity {result['val_perplexity']:.3f}) at "
                 f"epoch {best['epoch']:g}; {seconds:.0f}s, {result['chars_per_second']:,.0f} chars/s; saved {save}")
    return result


# ---- generation --------------------------------------------------------------------------------

def load(path: PathLike) -> Tuple[CharLM, CharVocab, dict]:
    """``(CharLM, vocab, metadata)`` of a model saved by :func:`train`; ValueError for another kind."""
    from .. import models, saving
    meta = saving.read_metadata(path)
    task = meta.get("task")
    if task != TASK:
        if task is None:
            raise ValueError(f"{path} is not a text model (its metadata names no task; train one with "
                             f"'lstmfast text train')")
        raise ValueError(f"{path} was saved by the {task!r} task, not {TASK!r}")
    vocab = CharVocab.from_list(meta.get("vocab"))
    model = models.load_model(path, compile=False)
    charlm = CharLM.from_model(model)
    if charlm.vocab_size != len(vocab):
        raise ValueError(f"{path} is damaged: the model predicts {charlm.vocab_size} characters, its vocabulary "
                         f"holds {len(vocab)}")
    return charlm, vocab, meta


def generate(path: PathLike, length: int = 500, prime: Optional[str] = None, temperature: Optional[float] = None,
             top_k: Optional[int] = None, top_p: Optional[float] = None, beam: Optional[int] = None,
             seed: Optional[int] = None, verbose: int = 1, print_fn: Callable[[str], None] = print) -> dict:
    """Generate ``length`` characters after ``prime`` with the model saved at ``path``.

    Sampling: ``temperature`` (default 1; 0 = greedy argmax), ``top_k``, ``top_p``; or beam
    search of width ``beam`` (deterministic: the most probable continuation it finds)."""
    from .. import sampling
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    if beam is not None:
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam!r}")
        if temperature is not None or top_k is not None or top_p is not None:
            raise ValueError("--beam searches for the most probable text; it does not combine with "
                             "--temperature, --top-k or --top-p")
    temperature = 1.0 if temperature is None else float(temperature)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
    charlm, vocab, meta = load(path)
    if ops.get_backend() != "cpu":  # lstmfast.set_backend("cuda"): one CUDA graph launch per character
        charlm = charlm.on_backend(ops.get_backend())
    rng = np.random.default_rng(seed)
    if prime is None or prime == "":
        prime = "\n" if "\n" in vocab.chars else vocab.chars[int(rng.integers(len(vocab)))]
    bad = vocab.unknown(prime)
    if bad:
        raise ValueError(f"--prime holds {len(bad)} character(s) the model never saw: "
                         f"{', '.join(repr(c) for c in bad[:20])}{' ...' if len(bad) > 20 else ''} "
                         f"(its vocabulary: {''.join(vocab.chars)!r})")
    ids = vocab.encode(prime)
    t0 = time.perf_counter()
    state = charlm.initial_state(1)
    if len(ids) > 1:  # all but the last character set the state; the last one is fed first
        _, state = charlm.log_probs(ids[None, :-1], state)
    last = int(ids[-1])
    if beam is not None:
        out, score = sampling.beam_search(charlm.step, state, np.array([last]), int(beam), length)
        method = {"method": "beam", "beam": int(beam), "log_prob": float(score)}
    else:
        out = []
        for _ in range(length):
            logp, state = charlm.step(np.array([last]), state)
            last = sampling.sample_next(np.exp(logp[0]), temperature=temperature, top_k=top_k, top_p=top_p,
                                        rng=rng)
            out.append(last)
        method = {"method": "greedy" if temperature == 0 else "sample", "temperature": temperature,
                  "top_k": top_k, "top_p": top_p, "seed": seed}
    seconds = time.perf_counter() - t0
    text = vocab.decode(out)
    if verbose:
        print_fn(prime + text)
    return {"text": text, "prime": prime, "length": len(text), **method, "seconds": seconds,
            "chars_per_second": len(text) / seconds if seconds > 0 else 0.0,
            "model_val_loss": meta.get("val_loss")}


# ---- the tutorial's model ----------------------------------------------------------------------

def tutorial(path: PathLike, epochs: int = 20, window: int = 50, units: int = 300, dropout: float = 0.2,
             batch_size: int = 64, lowercase: bool = True, max_windows: Optional[int] = None, generate_chars: int = 200,
             seed: Optional[int] = 1, verbose: int = 1, print_fn: Callable[[str], None] = print) -> dict:
    """The classic blog-post character model, as written there, through the Keras-style API.

    Every ``window``-character slice of the (lower-cased) text is one example: its character
    indices divided by the vocabulary size as a ``[window, 1]`` float input, the next character
    one-hot as the target. Model: LSTM(units, return_sequences) -> Dropout -> LSTM(units) ->
    Dropout -> Dense(V, softmax), categorical cross-entropy, Adam, shuffled mini-batches.
    Generation is greedy (argmax) from a random window of the text, sliding the window along.
    ``max_windows`` keeps the first N examples (for a quick run). Returns the model, the loss
    history and the generated text."""
    if window < 1 or units < 1 or epochs < 1 or batch_size < 1:
        raise ValueError(f"window, units, epochs and batch_size must be >= 1, got {window}, {units}, {epochs}, "
                         f"{batch_size}")
    text = text_data.read_text(path, min_chars=window + 1)
    if lowercase:
        text = text.lower()
    if seed is not None:
        backend.set_random_seed(seed)
    rng = backend.get_rng()
    vocab = CharVocab.from_text(text)
    V = len(vocab)
    ids = vocab.encode(text)
    n = len(ids) - window
    if max_windows is not None:
        n = min(n, int(max_windows))
    starts = np.arange(n)[:, None] + np.arange(window)[None, :]                # [n, window]
    x = (ids[starts] / float(V)).astype(np.float32)[..., None]                  # [n, window, 1] in [0, 1)
    y = np.zeros((n, V), np.float32)
    y[np.arange(n), ids[window:window + n]] = 1.0                               # [n, V] one-hot
    model = Sequential([
        LSTM(units, input_shape=(window, 1), return_sequences=True),
        Dropout(dropout),
        LSTM(units),
        Dropout(dropout),
        Dense(V, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    if verbose:
        model.summary(print_fn=print_fn)
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=1 if verbose else 0)
    pattern = list(ids[int(rng.integers(0, len(ids) - window)):][:window])
    seed_text = vocab.decode(pattern)
    out = []
    for _ in range(generate_chars):
        probs = model.predict(np.asarray(pattern, np.float32)[None, :, None] / V, verbose=0)[0]
        nxt = int(np.argmax(probs))
        out.append(nxt)
        pattern = pattern[1:] + [nxt]
    generated = vocab.decode(out)
    if verbose:
        print_fn(f"Seed: {seed_text!r}")
        print_fn(generated)
    return {"model": model, "vocab": vocab, "loss": history.history["loss"], "seed": seed_text,
            "text": generated}


# ---- command line ------------------------------------------------------------------------------

def _positive_float(text: str) -> float:
    import argparse
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _run_train(args) -> dict:
    return train(args.file, args.save, epochs=args.epochs, minutes=args.minutes, layers=args.layers,
                 units=args.units, dropout=args.dropout, seq_len=args.seq_len, batch_size=args.batch_size,
                 embedding=args.embedding, lr=args.lr, clipnorm=args.clipnorm or None, lr_schedule=args.lr_schedule,
                 val_every=args.val_every, weight_decay=args.weight_decay, seed=args.seed,
                 verbose=0 if args.quiet else 1)


def _run_generate(args) -> dict:
    return generate(args.model, length=args.length, prime=args.prime, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, beam=args.beam, seed=args.seed,
                    verbose=0 if args.quiet else 1)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``lstmfast text train FILE --save MODEL ...`` and ``lstmfast text generate MODEL ...``."""
    from ..cli import positive_int
    p = subparsers.add_parser("text", help="character-level text generation (char-rnn): train, generate",
                              description="Character-level language model: 'train' learns the next character of "
                                          "a text file, 'generate' writes new text with a trained model.")
    sub = p.add_subparsers(dest="text_command", metavar="{train,generate}")
    sub.required = True
    d = DEFAULTS
    t = sub.add_parser("train", parents=[common], help="train a char-level LSTM on a text file",
                       description="Stacked stateful LSTMs trained by truncated backpropagation through time on "
                                   "contiguous chunks of FILE; the last 10% is held out. Reports the validation "
                                   "loss (nats/char) and perplexity per epoch and saves the best model to MODEL.")
    t.add_argument("file", metavar="FILE", help="UTF-8 text file")
    t.add_argument("--save", metavar="MODEL", required=True, help="where to save the best model (by val_loss)")
    t.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs (default 10; with --minutes: stop at whichever comes first)")
    t.add_argument("--minutes", type=_positive_float, default=None,
                   help="time budget in minutes, final validation and save included")
    t.add_argument("--layers", type=positive_int, default=d["layers"], help=f"LSTM layers (default {d['layers']})")
    t.add_argument("--units", type=positive_int, default=d["units"], help=f"units per layer (default {d['units']})")
    t.add_argument("--dropout", type=float, default=d["dropout"],
                   help=f"dropout after each LSTM layer (default {d['dropout']})")
    t.add_argument("--seq-len", type=positive_int, default=d["seq_len"],
                   help=f"characters per chunk: the truncated-BPTT length (default {d['seq_len']})")
    t.add_argument("--batch-size", type=positive_int, default=d["batch_size"],
                   help=f"contiguous streams per batch (default {d['batch_size']})")
    t.add_argument("--embedding", type=int, default=d["embedding"],
                   help="embedding size; 0 = one-hot input (default 0)")
    t.add_argument("--lr", type=_positive_float, default=d["lr"], help=f"Adam learning rate (default {d['lr']})")
    t.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d["lr_schedule"],
                   help=f"'cosine' decays to {COSINE_FLOOR:g}x --lr over --epochs/--minutes (default constant)")
    t.add_argument("--clipnorm", type=float, default=d["clipnorm"],
                   help=f"global gradient-norm clip, 0 = none (default {d['clipnorm']})")
    t.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help="decoupled weight decay (AdamW); 0 = plain Adam (default 0)")
    t.add_argument("--val-every", type=positive_int, default=None, metavar="BATCHES",
                   help="also validate (and checkpoint) every BATCHES batches")
    t.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    t.add_argument("--quiet", action="store_true", help="print nothing (use with --metrics-json)")
    t.set_defaults(func=_run_train)
    g = sub.add_parser("generate", parents=[common], help="generate text with a trained model",
                       description="Prime the model with --prime, then write LENGTH characters by sampling "
                                   "(--temperature, --top-k, --top-p; --temperature 0 = greedy) or beam search.")
    g.add_argument("model", metavar="MODEL", help="a model saved by 'lstmfast text train'")
    g.add_argument("--length", type=positive_int, default=500, help="characters to generate (default 500)")
    g.add_argument("--prime", default=None, help="text to start from (default: a newline)")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 1; 0 = greedy)")
    g.add_argument("--top-k", type=positive_int, default=None, help="sample among the K most probable characters")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set with mass >= P")
    g.add_argument("--beam", type=positive_int, default=None, metavar="W", help="beam search of width W")
    g.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    g.add_argument("--quiet", action="store_true", help="print nothing (use with --metrics-json)")
    g.set_defaults(func=_run_generate)
