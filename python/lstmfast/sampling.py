"""Choosing the next token: greedy, temperature, top-k, top-p (nucleus) sampling, and beam search.

Used by the text-generation and sequence-to-sequence tasks; independent of any model: a model is
reached only through the ``step`` function given to ``beam_search``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import backend, ops

__all__ = ["sample_next", "beam_search"]


def sample_next(probs: ArrayLike, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                rng: Optional[np.random.Generator] = None) -> int:
    """One token index drawn from ``probs`` (a 1-D probability vector).

    ``temperature`` 0 gives the argmax (greedy); otherwise probabilities are raised to the power
    1/temperature and renormalised. ``top_k`` keeps the k most probable tokens; ``top_p`` keeps the
    smallest set of most probable tokens whose mass reaches p. Both apply before drawing.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probs must be a non-empty 1-D array, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probs must be finite and non-negative")
    if temperature is None or temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
    if temperature == 0:
        return int(np.argmax(p))
    # Temperature in log space, so small probabilities do not underflow to 0 too early.
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    logits = logp / temperature
    logits -= logits.max()
    w = np.exp(logits)
    keep = np.ones(p.size, dtype=bool)
    order = np.argsort(-w, kind="stable")
    if top_k is not None and top_k < p.size:
        keep[order[int(top_k):]] = False
    if top_p is not None and top_p < 1.0:
        sorted_w = w[order] / w.sum()
        cutoff = int(np.searchsorted(np.cumsum(sorted_w), top_p) + 1)  # smallest prefix with mass >= p
        keep[order[cutoff:]] = False
    w = np.where(keep, w, 0.0)
    total = w.sum()
    if total <= 0:
        return int(order[0])
    rng = rng if rng is not None else backend.get_rng()
    return int(rng.choice(p.size, p=w / total))


StepFn = Callable[[np.ndarray, List[np.ndarray]], Tuple[np.ndarray, List[np.ndarray]]]


def beam_search(step: StepFn, state: Sequence[np.ndarray], start_tokens: ArrayLike, beam_width: int, max_length: int,
                end_token: Optional[int] = None) -> Tuple[List[int], float]:
    """The most probable continuation under ``step``, by beam search.

    ``step(tokens [K], state) -> (log_probs [K, V], new_state)`` advances K beams by one token;
    ``state`` is a list of arrays (NumPy, or on a device) whose first axis is the beam (one beam at
    the start); the search reorders them along that axis as beams are kept. ``start_tokens`` ([1])
    is the first token fed. A beam ends at ``end_token`` (kept in its output) or after
    ``max_length`` tokens. Returns the best tokens (the start token excluded) and their total
    log-probability.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    tokens = np.asarray(start_tokens, dtype=np.int64).reshape(-1)
    if tokens.size != 1:
        raise ValueError(f"start_tokens must hold one token, got {tokens.size}")
    state = [ops.as_array(s) for s in state]  # NumPy or device arrays, left where they are
    seqs: List[List[int]] = [[]]
    scores = np.zeros(1)
    finished: List[Tuple[float, List[int]]] = []
    for _ in range(max_length):
        log_probs, state = step(tokens, state)
        log_probs = np.asarray(log_probs, dtype=np.float64)
        K, V = log_probs.shape
        total = scores[:, None] + log_probs                      # [K, V]
        flat = total.reshape(-1)
        n = min(beam_width, flat.size)
        best = np.argpartition(-flat, n - 1)[:n]
        best = best[np.argsort(-flat[best], kind="stable")]
        beam_idx, token_idx = best // V, best % V
        new_seqs, keep_rows, keep_tokens, keep_scores = [], [], [], []
        for b, t, s in zip(beam_idx, token_idx, flat[best]):
            seq = seqs[b] + [int(t)]
            if end_token is not None and t == end_token:
                finished.append((float(s), seq))
            else:
                new_seqs.append(seq)
                keep_rows.append(int(b))
                keep_tokens.append(int(t))
                keep_scores.append(float(s))
        # Stop when no live beam can beat the best finished one (log-probs only decrease).
        if not new_seqs or (finished and max(keep_scores) <= max(f[0] for f in finished)):
            seqs, scores = new_seqs, np.asarray(keep_scores)
            break
        rows = np.asarray(keep_rows)
        state = [s[ops.to_device_of(s, rows)] for s in state]
        seqs, scores, tokens = new_seqs, np.asarray(keep_scores), np.asarray(keep_tokens)
    candidates = finished + [(float(s), q) for s, q in zip(scores, seqs)]
    best_score, best_seq = max(candidates, key=lambda c: c[0])
    return best_seq, best_score
