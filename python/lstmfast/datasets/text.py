"""Character-level text: reading a file, a character vocabulary, a held-out tail, and the batches
of stateful truncated backpropagation through time (char-rnn style).

Stateful batches: the encoded stream ``ids [N]`` is cut into ``B`` contiguous streams of ``L``
characters each (``L = (N - 1) // B``; stream ``b`` reads ``ids[b*L : b*L + L + 1]``, the last few
characters are dropped). Batch ``k`` holds steps ``k*T .. k*T + T - 1`` of every stream::

    x[b, t] = ids[b*L + k*T + t]        # [B, T] inputs
    y[b, t] = ids[b*L + k*T + t + 1]    # [B, T] targets: the next character

so row ``b`` of batch ``k + 1`` continues row ``b`` of batch ``k``, and a stateful LSTM carries its
state across batches. The last batch is shorter (``L % T`` steps) unless ``drop_remainder``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .._typing import PathLike

__all__ = ["CharVocab", "read_text", "train_val_split", "stateful_batches", "count_batches", "stream_length"]


def read_text(path: PathLike, min_chars: int = 2) -> str:
    """The UTF-8 text of ``path``; ValueError for an empty or undecodable file, or one shorter
    than ``min_chars`` characters (e.g. one window), FileNotFoundError for a missing one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a text file")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw:
        raise ValueError(f"{path} is empty: a text file with at least {min_chars} characters is needed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                         f"(line {line}) cannot be decoded ({e.reason})") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not part of the text
    if len(text) < min_chars:
        raise ValueError(f"{path} holds {len(text)} characters, fewer than the {min_chars} needed "
                         f"(one window of the sequence length plus the next character)")
    return text


@dataclass(frozen=True)
class CharVocab:
    """The sorted distinct characters of a text; ``encode`` maps characters to their positions."""

    chars: Tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        return cls(tuple(sorted(set(text))))

    @classmethod
    def from_list(cls, chars: Sequence[str]) -> "CharVocab":
        """Rebuild from ``list(vocab.chars)`` (e.g. from a model file's metadata), checked."""
        if not isinstance(chars, (list, tuple)) or not chars:
            raise ValueError(f"a vocabulary must be a non-empty list of characters, got {chars!r:.80}")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"a vocabulary must hold single characters, got {c!r:.80}")
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary holds a character twice")
        return cls(tuple(chars))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict:
        return {c: i for i, c in enumerate(self.chars)}

    def unknown(self, text: str) -> List[str]:
        """The distinct characters of ``text`` that are not in the vocabulary, sorted."""
        return sorted(set(text) - set(self.chars))

    def encode(self, text: str) -> np.ndarray:
        """``int32 [len(text)]``; ValueError listing the characters outside the vocabulary."""
        bad = self.unknown(text)
        if bad:
            shown = ", ".join(repr(c) for c in bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
            raise ValueError(f"{len(bad)} character(s) are not in the model's vocabulary: {shown}")
        if len(self.chars) <= 256 and all(ord(c) < 256 for c in self.chars):
            # Fast path for Latin-1 vocabularies: one table lookup over the whole text.
            table = np.zeros(256, np.int32)
            table[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
            return table[np.frombuffer(text.encode("latin-1"), np.uint8)]
        index = self.index
        return np.fromiter((index[c] for c in text), np.int32, len(text))

    def decode(self, ids: ArrayLike) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in np.asarray(ids).reshape(-1))


def train_val_split(ids: np.ndarray, val_fraction: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """The first ``1 - val_fraction`` of the stream for training, the last part held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
    n_val = int(round(len(ids) * val_fraction))
    if n_val < 2 or len(ids) - n_val < 2:
        raise ValueError(f"a text of {len(ids)} characters is too short to hold out {val_fraction:.0%} "
                         f"for validation (each part needs at least 2 characters)")
    return ids[:-n_val], ids[-n_val:]


def stream_length(n: int, batch_size: int) -> int:
    """``L``: the characters each of ``batch_size`` streams gets from a stream of ``n`` (the
    inputs; the targets need one more)."""
    return (n - 1) // batch_size


def count_batches(n: int, batch_size: int, seq_len: int, drop_remainder: bool = False) -> int:
    L = stream_length(n, batch_size)
    return L // seq_len if drop_remainder else -(-L // seq_len)


def stateful_batches(ids: np.ndarray, batch_size: int, seq_len: int,
                     drop_remainder: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x [B, T], y [B, T])`` int32 chunks in order (see the module docstring)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D array of character indices, got shape {ids.shape}")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    L = stream_length(len(ids), batch_size)
    if L < 1:
        raise ValueError(f"{len(ids)} characters cannot make {batch_size} streams of at least one "
                         f"input and its target (needs {batch_size + 1}); lower the batch size")
    streams = np.stack([ids[b * L: b * L + L + 1] for b in range(batch_size)]).astype(np.int32)  # [B, L+1]
    for k in range(count_batches(len(ids), batch_size, seq_len, drop_remainder)):
        start = k * seq_len
        stop = min(start + seq_len, L)
        yield streams[:, start:stop], streams[:, start + 1:stop + 1]
