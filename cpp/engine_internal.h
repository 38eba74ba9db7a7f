// Internal interface between the dispatcher (dispatch.cpp, baseline x86-64) and the per-SIMD-level
// copies of the engine (lstm_cpu.cpp compiled once per level into its own namespace).
#pragma once
#include <cstddef>
#include <cstdint>

#include "lstm.h"
#include "optim.h"

namespace lstmfast {

// Defined in dispatch.cpp so no per-level copy instantiates exception machinery.
[[noreturn]] void throw_out_of_memory(size_t bytes);

#define LSTMFAST_DECLARE_LEVEL(ns)                                                                 \
  namespace ns {                                                                                   \
  void forward(const ForwardArgs<float>& a, int threads);                                          \
  void forward(const ForwardArgs<double>& a, int threads);                                         \
  void backward(const BackwardArgs<float>& a, int threads);                                        \
  void backward(const BackwardArgs<double>& a, int threads);                                       \
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,  \
            const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate, int threads);     \
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, \
            const double* B, int64_t ldb, double* C, int64_t ldc, bool accumulate, int threads);   \
  void optim_step(const OptimArgs<float>& a, int threads);                                         \
  void optim_step(const OptimArgs<double>& a, int threads);                                        \
  template <typename T, typename I>                                                                \
  void scatter_add_rows(T* out, int64_t D, const I* index, const T* src, int64_t n);               \
  }
LSTMFAST_DECLARE_LEVEL(portable)
LSTMFAST_DECLARE_LEVEL(avx2)
LSTMFAST_DECLARE_LEVEL(avx512)
LSTMFAST_DECLARE_LEVEL(avx512emu)
#undef LSTMFAST_DECLARE_LEVEL

}  // namespace lstmfast
