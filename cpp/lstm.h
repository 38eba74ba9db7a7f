// lstmfast engine contract. Everything the engine computes, in one place.
//
// Layout (the one layout, used by the C++ engine, the CUDA kernels and reference.py):
//   time-major sequences  x [T,B,X], y [T,B,H]      T = time steps, B = batch, X = input size, H = units
//   kernel           [X,4H]   Keras layout; columns are the gates in the order i, f, c(=g), o
//   recurrent_kernel [H,4H]   same gate order
//   bias             [4H]     (PyTorch: W_ih = kernel.T, W_hh = recurrent_kernel.T, b_ih = bias, b_hh = 0)
//   peephole         [3,H]    rows p_i, p_f, p_o
// All arrays are dense row-major (C order); sizes are element counts.
//
// Equations, per step t and batch row b (sigma = recurrent activation, * = elementwise):
//   hm     = h_{t-1} * recurrent_dropout_mask            (mask absent: hm = h_{t-1})
//   z      = x_t kernel + hm recurrent_kernel + bias      split into z_i, z_f, z_g, z_o
//   i      = sigma(z_i + p_i * c_{t-1})
//   f      = sigma(z_f + p_f * c_{t-1})
//   g      = tanh(z_g)
//   c_t    = f * c_{t-1} + i * g
//   o      = sigma(z_o + p_o * c_t)
//   h_t    = o * tanh(c_t)
//   sigma  = sigmoid 1/(1+exp(-z)), or hard_sigmoid clip(0.2 z + 0.5, 0, 1) (Keras 2)
// Right-padded batches (lengths): a step t >= lengths[b] leaves row b's h and c unchanged and
// writes zeros to y[t,b]; the final h, c are the state after the row's last valid step (the
// initial state when lengths[b] == 0). Gradients through padded steps pass straight through.
//
// Non-finite values are not checked: NaN in an input reaches the outputs it feeds.
//
// Memory: the caller allocates every array named here; the engine allocates only private scratch
// (packed weights, per-step buffers). No pointer may alias another unless stated.
#pragma once
#include <cstdint>

namespace lstmfast {

enum class Activation : int32_t { sigmoid = 0, hard_sigmoid = 1 };

// Precision of the matrix products (x kernel, h recurrent_kernel and the backward pass's): native =
// in T; bfloat16 (T = float only) = the products may round their operands to bfloat16 and
// accumulate in float32, where an engine has such products (the CUDA engine's cuBLAS ones). This
// engine has none: it computes a bfloat16 call in float32, the native numbers.
enum class Precision : int32_t { native = 0, bfloat16 = 1 };

// SIMD levels, in increasing order. The dispatcher picks the best the CPU supports unless the
// environment variable LSTMFAST_SIMD ("portable", "avx2", "avx512", "avx512emu") forces one.
// avx512emu is for testing only and never picked by itself: the AVX-512 level's code shapes (16
// float lanes, its tiles and blocking) run with AVX2 instructions, on any CPU that has AVX2.
enum class SimdLevel : int32_t { portable = 0, avx2 = 1, avx512 = 2, avx512emu = 3 };

template <typename T>
struct ForwardArgs {
  int64_t T_ = 0, B = 0, X = 0, H = 0;          // sizes; any may be 0
  const T* x = nullptr;                         // [T,B,X]
  const T* kernel = nullptr;                    // [X,4H]
  const T* recurrent_kernel = nullptr;          // [H,4H]
  const T* bias = nullptr;                      // [4H]   or null (zeros)
  const T* h0 = nullptr;                        // [B,H]  or null (zeros)
  const T* c0 = nullptr;                        // [B,H]  or null (zeros)
  const T* peephole = nullptr;                  // [3,H]  or null (no peepholes)
  const int32_t* lengths = nullptr;             // [B]    values in [0,T], or null (all T)
  const T* recurrent_dropout_mask = nullptr;    // [B,H]  or null; fixed over time, scales h_{t-1}
  Activation recurrent_activation = Activation::sigmoid;
  Precision precision = Precision::native;
  // Outputs: written, never read before written.
  T* y = nullptr;                               // [T,B,H]
  T* h = nullptr;                               // [B,H]  final hidden state
  T* c = nullptr;                               // [B,H]  final cell state
  // Training cache: both set (training) or both null (inference keeps nothing).
  T* gates = nullptr;                           // [T,B,4H] activated i, f, g, o per step
  T* cells = nullptr;                           // [T,B,H]  c_t per step (carried through padding)
};

template <typename T>
struct BackwardArgs {
  int64_t T_ = 0, B = 0, X = 0, H = 0;
  // The forward call's inputs, unchanged.
  const T* x = nullptr;                         // [T,B,X]
  const T* kernel = nullptr;                    // [X,4H]
  const T* recurrent_kernel = nullptr;          // [H,4H]
  const T* h0 = nullptr;                        // [B,H] or null
  const T* c0 = nullptr;                        // [B,H] or null
  const T* peephole = nullptr;                  // [3,H] or null
  const int32_t* lengths = nullptr;             // [B]   or null
  const T* recurrent_dropout_mask = nullptr;    // [B,H] or null
  Activation recurrent_activation = Activation::sigmoid;
  Precision precision = Precision::native;      // the forward call's
  // The forward call's outputs and cache.
  const T* y = nullptr;                         // [T,B,H]
  T* gates = nullptr;                           // [T,B,4H] in: activated gates; out: overwritten
                                                //           with dz (the cache is consumed)
  const T* cells = nullptr;                     // [T,B,H]
  // Incoming gradients, each may be null (zeros).
  const T* dy = nullptr;                        // [T,B,H]  ignored at padded steps
  const T* dh = nullptr;                        // [B,H]    gradient of the final h
  const T* dc = nullptr;                        // [B,H]    gradient of the final c
  // Outputs: written, never read before written.
  T* dx = nullptr;                              // [T,B,X]
  T* dkernel = nullptr;                         // [X,4H]
  T* drecurrent_kernel = nullptr;               // [H,4H]
  T* dbias = nullptr;                           // [4H]  or null (not computed)
  T* dh0 = nullptr;                             // [B,H]
  T* dc0 = nullptr;                             // [B,H]
  T* dpeephole = nullptr;                       // [3,H] or null (must be set iff peephole is)
};

// Entry points. Thread count: set_num_threads(); results are bitwise identical for any thread
// count at a given SIMD level.
void lstm_forward(const ForwardArgs<float>& a);
void lstm_forward(const ForwardArgs<double>& a);
void lstm_backward(const BackwardArgs<float>& a);
void lstm_backward(const BackwardArgs<double>& a);

SimdLevel simd_level();                 // level in use
SimdLevel simd_level_supported();       // best level this CPU (and OS) supports
// Force a level (must be <= supported); returns false if unsupported.
bool set_simd_level(SimdLevel level);
const char* simd_level_name(SimdLevel level);
int num_threads();
void set_num_threads(int n);
bool openmp_enabled();

// Dense C[M,N] = op(A)[M,K] op(B)[K,N] (+ C when accumulate), row-major, for tests and benches.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
          const double* B, int64_t ldb, double* C, int64_t ldc, bool accumulate);

}  // namespace lstmfast
