// Fused optimizer steps (optim.h), compiled once per SIMD level like lstm_cpu.cpp. The loops run
// the per-element rules of python/lstmfast/cuda/optim_rules.cuh (the GPU kernels' too), which the
// compiler vectorizes; -ffp-contract=off (CMakeLists.txt) keeps every multiply and add separately
// rounded, so the results equal optimizers.py's NumPy reference bitwise.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "optim.h"
#include "simd.h"  // defines LF_ISA

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define LF_HAVE_MXCSR 1
#endif

namespace lstmfast {
namespace LF_ISA {

namespace {

// Elementwise work is memory bound; a second thread pays once a step moves a few hundred KiB.
constexpr int64_t kParallelMin = 1 << 15;

// The rules' per-element code, shared with the CUDA kernels. It is included inside this file's
// per-level namespace (and an unnamed one): each SIMD level's copy is its own, so the linker
// never merges an AVX-512 instantiation into the portable level.
#include "optim_rules.cuh"
namespace rules = lstmfast;  // the copy just included (lstmfast::LF_ISA::<unnamed>::lstmfast)

static_assert(rules::kSgd == int(OptimRule::sgd) && rules::kAdam == int(OptimRule::adam) &&
                  rules::kAdagrad == int(OptimRule::adagrad) &&
                  rules::kRmspropCenteredMomentum == int(OptimRule::rmsprop_centered_momentum) &&
                  rules::kOptimRuleCount == kOptimRules,
              "optim_rules.cuh numbers the rules as optim.h does");

template <typename T, OptimRule R>
void run_rule(const OptimArgs<T>& a, int64_t lo, int64_t hi) {
  T* __restrict var = a.var;
  const T* __restrict grad = a.grad;
  T* __restrict s0 = a.slot[0];
  T* __restrict s1 = a.slot[1];
  T* __restrict s2 = a.slot[2];
  const bool scale = a.grad_scale != 1.0;
  const T grad_scale = T(a.grad_scale);
  const rules::OptimScalars<T> k(a.lr, a.momentum, a.one_minus_beta_1, a.one_minus_beta_2, a.rho, a.one_minus_rho,
                          a.epsilon, a.clip_value ? 1 : 0, a.clipvalue, a.decay_keep);
  for (int64_t i = lo; i < hi; ++i) rules::optim_rule_element<int(R)>(i, var, grad, s0, s1, s2, scale, grad_scale, k);
}

// Subnormal numbers are flushed to zero (FTZ and DAZ in MXCSR, for this thread and this call only).
// Adam's moments of rows that get no gradient (most of an embedding) decay geometrically into
// the subnormal range after about a thousand steps, where every operation on them takes a
// microcode assist and the step runs several times slower; oneDNN and TensorFlow flush too.
struct FlushSubnormals {
#ifdef LF_HAVE_MXCSR
  unsigned saved = _mm_getcsr();
  FlushSubnormals() { _mm_setcsr(saved | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
  ~FlushSubnormals() { _mm_setcsr(saved); }
#endif
};

template <typename T, OptimRule R>
void run_flushed(const OptimArgs<T>& a, int64_t lo, int64_t hi) {
  FlushSubnormals ftz;
  run_rule<T, R>(a, lo, hi);
}

template <typename T, OptimRule R>
void run_parallel(const OptimArgs<T>& a, int threads) {
  const int64_t n = a.n;
  const int nt = n >= kParallelMin ? std::max(1, std::min<int>(threads, int(n / (kParallelMin / 2)))) : 1;
  if (nt <= 1) {
    run_flushed<T, R>(a, 0, n);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num(), k = omp_get_num_threads();
#else
    const int t = 0, k = 1;
#endif
    // Chunks of whole 64-byte lines so that no two threads write the same cache line.
    const int64_t per = ((n + k - 1) / k + 15) / 16 * 16;
    const int64_t lo = std::min(n, per * t), hi = std::min(n, lo + per);
    if (lo < hi) run_flushed<T, R>(a, lo, hi);
  }
}

template <typename T>
void step(const OptimArgs<T>& a, int threads) {
  switch (a.rule) {
    case OptimRule::sgd: run_parallel<T, OptimRule::sgd>(a, threads); break;
    case OptimRule::sgd_momentum: run_parallel<T, OptimRule::sgd_momentum>(a, threads); break;
    case OptimRule::sgd_nesterov: run_parallel<T, OptimRule::sgd_nesterov>(a, threads); break;
    case OptimRule::adam: run_parallel<T, OptimRule::adam>(a, threads); break;
    case OptimRule::adam_amsgrad: run_parallel<T, OptimRule::adam_amsgrad>(a, threads); break;
    case OptimRule::rmsprop: run_parallel<T, OptimRule::rmsprop>(a, threads); break;
    case OptimRule::rmsprop_momentum: run_parallel<T, OptimRule::rmsprop_momentum>(a, threads); break;
    case OptimRule::rmsprop_centered: run_parallel<T, OptimRule::rmsprop_centered>(a, threads); break;
    case OptimRule::rmsprop_centered_momentum:
      run_parallel<T, OptimRule::rmsprop_centered_momentum>(a, threads);
      break;
    case OptimRule::adagrad: run_parallel<T, OptimRule::adagrad>(a, threads); break;
  }
}

}  // namespace

void optim_step(const OptimArgs<float>& a, int threads) { step(a, threads); }
void optim_step(const OptimArgs<double>& a, int threads) { step(a, threads); }
template <typename T, typename I>
void scatter_add_rows(T* out, int64_t D, const I* index, const T* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T* __restrict row = out + int64_t(index[i]) * D;
    const T* __restrict s = src + i * D;
    for (int64_t d = 0; d < D; ++d) row[d] += s[d];
  }
}
template void scatter_add_rows(float*, int64_t, const int32_t*, const float*, int64_t);
template void scatter_add_rows(float*, int64_t, const int64_t*, const float*, int64_t);
template void scatter_add_rows(double*, int64_t, const int32_t*, const double*, int64_t);
template void scatter_add_rows(double*, int64_t, const int64_t*, const double*, int64_t);

}  // namespace LF_ISA
}  // namespace lstmfast
