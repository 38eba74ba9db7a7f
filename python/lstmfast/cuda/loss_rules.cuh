// Per-element and per-row math of the loss kernels (activation_kernels.cu): the formulas of
// lstmfast/losses.py for binary crossentropy and sparse categorical crossentropy, on probabilities
// or logits, in the same operations and order per element (the row sums are summed in another
// order). NaN propagates as through NumPy's maximum/minimum. LF_HD: see lf_math.cuh.
#pragma once

#include "lf_math.cuh"

namespace lstmfast {

// np.maximum / np.minimum: NaN wins.
template <typename T>
LF_HD T nan_max(T a, T b) { return (a > b || a != a) ? a : b; }
template <typename T>
LF_HD T nan_min(T a, T b) { return (a < b || a != a) ? a : b; }

// Binary crossentropy of probability p against target t, one element: returns t log pc +
// (1 - t) log(1 - pc) (the row's value is minus their sum over C), and sets *grad to
// (pc - t) / (pc (1 - pc) C) where p was not clipped, else 0; pc = clip(p, eps, one_minus_eps).
template <typename T>
LF_HD T bce_probability_term(T p, T t, T eps, T one_minus_eps, T C, T* grad) {
  const T pc = nan_min(nan_max(p, eps), one_minus_eps);
  const T one_minus_pc = T(1) - pc;
  *grad = pc == p ? (pc - t) / (pc * one_minus_pc * C) : T(0);
  return t * lf_log(pc) + (T(1) - t) * lf_log(one_minus_pc);
}

// Binary crossentropy of logit x against target t, one element: returns max(x, 0) - x t +
// log(1 + exp(-|x|)) (the row's value is their sum over C), and sets *grad to
// (sigmoid(x) - t) / C, sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) otherwise.
template <typename T>
LF_HD T bce_logit_term(T x, T t, T C, T* grad) {
  const T e = lf_exp(-lf_abs(x));
  *grad = ((x >= T(0) ? T(1) : e) / (T(1) + e) - t) / C;
  return nan_max(x, T(0)) - x * t + lf_log1p(e);
}

}  // namespace lstmfast
