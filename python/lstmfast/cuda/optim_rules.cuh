// Per-element math of the fused optimizer step, the one statement of the rules of cpp/optim.h: the
// body of the GPU kernels (optim_kernels.cu) and of the C++ step (cpp/optim_cpu.cpp, which includes
// this file). Each multiply and add is rounded separately in T (the kernels are compiled with
// --fmad=false, the C++ with -ffp-contract=off), every scalar given in double and rounded once to T,
// so the two steps agree bitwise, and with optimizers' NumPy reference.
//
// Plain C++ marked LF_HD (lf_math.cuh), so the tests also run it without a GPU.
#pragma once

#include "lf_math.cuh"

namespace lstmfast {

// Rule codes of cpp/optim.h (OptimRule) and the slots each reads and writes, in that order.
enum OptimRuleCode : int {
  kSgd = 0,                      // var -= lr g
  kSgdMomentum = 1,              // slots: m
  kSgdNesterov = 2,              // slots: m
  kAdam = 3,                     // slots: m, v         (lr holds alpha = lr sqrt(1-b2^t) / (1-b1^t))
  kAdamAmsgrad = 4,              // slots: m, v, vhat
  kRmsprop = 5,                  // slots: v
  kRmspropMomentum = 6,          // slots: v, m
  kRmspropCentered = 7,          // slots: v, mg
  kRmspropCenteredMomentum = 8,  // slots: v, m, mg
  kAdagrad = 9,                  // slots: acc
};
constexpr int kOptimRuleCount = 10;

// Clipping by norm (the scales a step multiplies each gradient by): none, per variable, global.
enum ClipMode : int { kClipNone = 0, kClipNorm = 1, kClipGlobalNorm = 2 };

LF_HD bool lf_finite(double v) { return v - v == 0.0; }  // false for inf and NaN

// The gradient scale of one variable, as optimizers/base.py computes it on the host: clipnorm
// scales a gradient of norm sqrt(sq) > clip by clip / sqrt(sq); global_clipnorm scales all by
// clip / norm when the global norm sqrt(total_sq) exceeds clip, and by NaN when it is not finite.
LF_HD double clip_scale(int mode, double clip, double sq, double total_sq) {
  if (mode == kClipNorm) {
    const double norm = lf_sqrt(sq);
    return norm > clip ? clip / norm : 1.0;
  }
  if (mode == kClipGlobalNorm) {
    const double norm = lf_sqrt(total_sq);
    if (norm > clip || !lf_finite(norm)) return lf_finite(norm) ? clip / norm : norm - norm;  // NaN
  }
  return 1.0;
}

// The step's scalars, each rounded once to T (cpp/optim_cpu.cpp's run_rule does the same).
template <typename T>
struct OptimScalars {
  T lr, mu, c1, c2, rho, crho, eps, cv, ncv, keep;
  bool clip, decay;
  LF_HD OptimScalars(double lr_, double momentum, double one_minus_beta_1, double one_minus_beta_2, double rho_,
                     double one_minus_rho, double epsilon, int clip_value, double clipvalue, double decay_keep)
      : lr(T(lr_)), mu(T(momentum)), c1(T(one_minus_beta_1)), c2(T(one_minus_beta_2)), rho(T(rho_)),
        crho(T(one_minus_rho)), eps(T(epsilon)), cv(T(clipvalue)), ncv(T(-clipvalue)), keep(T(decay_keep)),
        clip(clip_value != 0), decay(decay_keep != 1.0) {}
  // From the kOptimHyper values a kernel reads from device memory, in the constructor's order
  // (clip_value as 0.0 or 1.0).
  LF_HD explicit OptimScalars(const double* h)
      : OptimScalars(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7] != 0.0 ? 1 : 0, h[8], h[9]) {}
};

constexpr int kOptimHyper = 10;  // values of OptimScalars(const double*)

// One element i of one variable under rule R (an OptimRuleCode: the C++ step instantiates a loop
// per rule). grad_scale multiplies the gradient when scale is set (clipping by norm); then
// clipvalue, decoupled weight decay, and the rule. Slot pointers the rule does not use may be null.
template <int rule, typename T>
LF_HD void optim_rule_element(long long i, T* __restrict__ var, const T* __restrict__ grad, T* __restrict__ s0,
                              T* __restrict__ s1, T* __restrict__ s2, bool scale, T grad_scale,
                              const OptimScalars<T>& k) {
  T g = grad[i];
  if (scale) g = g * grad_scale;
  if (k.clip) {  // np.minimum(g, c) then np.maximum(g, -c); NaN stays NaN
    g = g > k.cv ? k.cv : g;
    g = g < k.ncv ? k.ncv : g;
  }
  T w = var[i];
  if (k.decay) w = w * k.keep;
  if (rule == kSgd) {
    T d = g * k.lr;
    w = w - d;
  } else if (rule == kSgdMomentum || rule == kSgdNesterov) {
    const T d = g * k.lr;
    T m = s0[i] * k.mu;
    m = m - d;
    s0[i] = m;
    if (rule == kSgdMomentum) {
      w = w + m;
    } else {
      T s = m * k.mu;
      s = s - d;
      w = w + s;
    }
  } else if (rule == kAdam || rule == kAdamAmsgrad) {
    T m = s0[i], v = s1[i];
    T s = g - m;
    s = s * k.c1;
    m = m + s;
    T g2 = g * g;
    g2 = g2 - v;
    g2 = g2 * k.c2;
    v = v + g2;
    s0[i] = m;
    s1[i] = v;
    if (rule == kAdamAmsgrad) {
      T vh = s2[i];
      vh = (vh > v || vh != vh) ? vh : v;  // np.maximum: NaN from either side wins
      s2[i] = vh;
      v = vh;
    }
    s = lf_sqrt(v);
    s = s + k.eps;
    T d = m * k.lr;
    d = d / s;
    w = w - d;
  } else if (rule == kAdagrad) {
    T acc = s0[i];
    T s = g * g;
    acc = acc + s;
    s0[i] = acc;
    s = acc + k.eps;
    s = lf_sqrt(s);
    T d = g * k.lr;
    d = d / s;
    w = w - d;
  } else {  // rmsprop family: slots v, then m (momentum), then mg (centered)
    const bool mom = rule == kRmspropMomentum || rule == kRmspropCenteredMomentum;
    const bool centered = rule == kRmspropCentered || rule == kRmspropCenteredMomentum;
    T v = s0[i] * k.rho;
    T s = g * g;
    s = s * k.crho;
    v = v + s;
    s0[i] = v;
    if (centered) {
      T* mgp = mom ? s2 : s1;
      T mg = mgp[i] * k.rho;
      s = g * k.crho;
      mg = mg + s;
      mgp[i] = mg;
      s = mg * mg;
      s = v - s;
      s = s + k.eps;
    } else {
      s = v + k.eps;
    }
    s = lf_sqrt(s);
    T d = g * k.lr;
    d = d / s;
    if (mom) {
      T m = s1[i] * k.mu;
      m = m + d;
      s1[i] = m;
      w = w - m;
    } else {
      w = w - d;
    }
  }
  var[i] = w;
}

// The same for a rule chosen at run time (the GPU kernel's one launch serves every rule).
template <typename T>
LF_HD void optim_element(int rule, long long i, T* var, const T* grad, T* s0, T* s1, T* s2, bool scale,
                         T grad_scale, const OptimScalars<T>& k) {
  switch (rule) {
    case kSgd: optim_rule_element<kSgd>(i, var, grad, s0, s1, s2, scale, grad_scale, k); break;
    case kSgdMomentum: optim_rule_element<kSgdMomentum>(i, var, grad, s0, s1, s2, scale, grad_scale, k); break;
    case kSgdNesterov: optim_rule_element<kSgdNesterov>(i, var, grad, s0, s1, s2, scale, grad_scale, k); break;
    case kAdam: optim_rule_element<kAdam>(i, var, grad, s0, s1, s2, scale, grad_scale, k); break;
    case kAdamAmsgrad: optim_rule_element<kAdamAmsgrad>(i, var, grad, s0, s1, s2, scale, grad_scale, k); break;
    case kRmsprop: optim_rule_element<kRmsprop>(i, var, grad, s0, s1, s2, scale, grad_scale, k); break;
    case kRmspropMomentum:
      optim_rule_element<kRmspropMomentum>(i, var, grad, s0, s1, s2, scale, grad_scale, k);
      break;
    case kRmspropCentered:
      optim_rule_element<kRmspropCentered>(i, var, grad, s0, s1, s2, scale, grad_scale, k);
      break;
    case kRmspropCenteredMomentum:
      optim_rule_element<kRmspropCenteredMomentum>(i, var, grad, s0, s1, s2, scale, grad_scale, k);
      break;
    default: optim_rule_element<kAdagrad>(i, var, grad, s0, s1, s2, scale, grad_scale, k); break;
  }
}

}  // namespace lstmfast
