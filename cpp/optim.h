// Fused optimizer steps and the embedding gradient: elementwise kernels over one variable.
//
// Each rule does, per element and in float arithmetic of the variable's dtype, exactly the
// operation sequence that optimizers.py's NumPy reference runs (no fused multiply-add: this file
// is compiled with -ffp-contract=off), so the fused step and the NumPy step agree bitwise.
// Every scalar arrives in double and is rounded once to T, as NumPy rounds a Python float.
//
// Per element, before the rule: g = grad * grad_scale (skipped when grad_scale == 1), then
// clipped to [-clipvalue, clipvalue] when clip_value is set, and var *= decay_keep (skipped when
// decay_keep == 1). NaN propagates as in NumPy's minimum/maximum.
//
// One difference from NumPy: subnormal inputs and results are flushed to zero (x86 FTZ/DAZ for
// the duration of the call), so the two agree bitwise only while no value falls below the
// smallest normal number (1.2e-38 in float32). Without it, the moments of embedding rows that
// see no gradient decay into subnormals and each step slows down several times.
#pragma once
#include <cstdint>

namespace lstmfast {

enum class OptimRule : int {
  sgd = 0,              // var -= lr g
  sgd_momentum = 1,     // m = mu m - lr g; var += m                       slots: m
  sgd_nesterov = 2,     // m = mu m - lr g; var += mu m - lr g             slots: m
  adam = 3,             // m += (g-m)(1-b1); v += (g^2-v)(1-b2); var -= alpha m / (sqrt(v)+eps)   slots: m, v
  adam_amsgrad = 4,     // as adam with vhat = max(vhat, v) in place of v  slots: m, v, vhat
  rmsprop = 5,          // v = rho v + (1-rho) g^2; var -= lr g / sqrt(v + eps)                   slots: v
  rmsprop_momentum = 6, // ... m = mom m + lr g / sqrt(v + eps); var -= m  slots: v, m
  rmsprop_centered = 7, // mg = rho mg + (1-rho) g; denominator v - mg^2 + eps                   slots: v, mg
  rmsprop_centered_momentum = 8,  //                                       slots: v, m, mg
  adagrad = 9,          // acc += g^2; var -= lr g / sqrt(acc + eps)      slots: acc
};
constexpr int kOptimRules = 10;

template <typename T>
struct OptimArgs {
  OptimRule rule = OptimRule::sgd;
  int64_t n = 0;                 // elements
  T* var = nullptr;              // [n] updated in place
  const T* grad = nullptr;       // [n] never written
  T* slot[3] = {nullptr, nullptr, nullptr};  // [n] each, in the order listed above
  double lr = 0;                 // learning rate; for Adam alpha = lr sqrt(1-b2^t) / (1-b1^t)
  double momentum = 0;           // sgd_momentum/nesterov: mu; rmsprop*_momentum: momentum
  double one_minus_beta_1 = 0;   // adam*
  double one_minus_beta_2 = 0;   // adam*
  double rho = 0;                // rmsprop*
  double one_minus_rho = 0;      // rmsprop*
  double epsilon = 0;            // adam*, rmsprop*, adagrad
  double grad_scale = 1;         // clipnorm / global_clipnorm factor
  bool clip_value = false;
  double clipvalue = 0;
  double decay_keep = 1;         // 1 - lr weight_decay
};

void optim_step(const OptimArgs<float>& a);
void optim_step(const OptimArgs<double>& a);

// out[index[i], :] += src[i, :] for i in [0, n), rows of D elements, in order of i (so the
// result is the same for any thread count); the caller checks the indices.
// T: float or double; I: int32_t or int64_t (the instantiations that exist).
template <typename T, typename I>
void scatter_add_rows(T* out, int64_t D, const I* index, const T* src, int64_t n);

}  // namespace lstmfast
