// Packed GEMM micro-kernels and the team-parallel GEMM driver, for one SIMD level (see simd.h).
//
// One register-tile kernel serves every product in the engine: an MR x (NV*VL) tile of
// accumulators, K steps of "broadcast one A element per row, load NV B vectors, NV*MR FMAs".
// A and B are addressed through strides so the same kernel reads packed panels (general GEMM),
// the hidden state rows directly (recurrent step) and per-unit-block weight panels.
//
// Determinism: every C element is one FMA chain over k in a fixed order (K blocked by the fixed
// KC), whatever the tile or thread that computes it, so results do not depend on thread count.
#pragma once
#include <cstdlib>
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num() { return 0; }
static inline int omp_get_num_threads() { return 1; }
#endif

#include "simd.h"
#include "engine_internal.h"

namespace lstmfast {
namespace LF_ISA {

// Register tiling per level: MR rows x NV vectors (AVX-512: 6 x 4 zmm = 24 accumulators).
#if defined(LF_AVX512_SHAPES)
constexpr int kMR = 6;
#elif defined(LSTMFAST_ISA_avx2)
constexpr int kMR = 3;
#else
constexpr int kMR = 2;
#endif
constexpr int kNV = 4;
// The general GEMM's own tile (it need not hold four gates).
#ifndef LF_GEMM_MR
#if defined(LF_AVX512_SHAPES)
#define LF_GEMM_MR 6
#define LF_GEMM_NV 4
#elif defined(LSTMFAST_ISA_avx2)
#define LF_GEMM_MR 6
#define LF_GEMM_NV 2
#else
#define LF_GEMM_MR 2
#define LF_GEMM_NV 4
#endif
#endif
constexpr int kGMR = LF_GEMM_MR;
constexpr int kGNV = LF_GEMM_NV;

LF_INLINE int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
LF_INLINE int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
LF_INLINE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Contiguous share [begin, end) of n items for thread tid of nt.
LF_INLINE void split_range(int64_t n, int nt, int tid, int64_t& begin, int64_t& end) {
  begin = n * tid / nt;
  end = n * (tid + 1) / nt;
}

// 64-byte aligned scratch owned by the engine (never user-visible).
template <typename T>
struct Scratch {
  T* p = nullptr;
  Scratch() = default;
  explicit Scratch(int64_t n) { reset(n); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { free(p); }
  void reset(int64_t n) {
    free(p);
    p = nullptr;
    size_t bytes = size_t(n > 0 ? n : 1) * sizeof(T);
    bytes = (bytes + 63) / 64 * 64;
    p = static_cast<T*>(aligned_alloc(64, bytes));
    if (!p) throw_out_of_memory(bytes);
  }
  T* get() const { return p; }
};

// acc[r][v] = sum_k A(r,k) * B(k, v*VL .. v*VL+VL-1)
//   A(r,k) = a[r*a_rs + k*a_ks]
//   B(k, v-th vector) = b + k*b_ks + v*b_vs (VL contiguous elements)
template <typename T, int MR, int NV>
LF_INLINE void tile_kernel(int64_t K, const T* __restrict a, int64_t a_rs, int64_t a_ks,
                           const T* __restrict b, int64_t b_ks, int64_t b_vs, Vec<T> (&acc)[MR][NV]) {
  using V = Vec<T>;
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + k * b_ks + v * b_vs);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      V av = V::set1(a[r * a_rs + k * a_ks]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = fma(av, bv[v], acc[r][v]);
    }
  }
}

// Calls f.template run<MR, NV>() with MR = mr (1..kMR) and NV = nv (1..kNV) as compile-time values.
template <int NV, typename F>
LF_INLINE void with_rows(int mr, F& f) {
  switch (mr) {
    case 1: f.template run<1, NV>(); break;
    case 2: if constexpr (kMR >= 2) f.template run<(kMR >= 2 ? 2 : 1), NV>(); break;
    case 3: if constexpr (kMR >= 3) f.template run<(kMR >= 3 ? 3 : 1), NV>(); break;
    case 4: if constexpr (kMR >= 4) f.template run<(kMR >= 4 ? 4 : 1), NV>(); break;
    case 5: if constexpr (kMR >= 5) f.template run<(kMR >= 5 ? 5 : 1), NV>(); break;
    default: if constexpr (kMR >= 6) f.template run<(kMR >= 6 ? 6 : 1), NV>(); break;
  }
}
template <typename F>
LF_INLINE void with_tile(int mr, int nv, F& f) {
  static_assert(kNV == 4 && kMR <= 6, "with_tile covers NV 1..4 and MR 1..6");
  switch (nv) {
    case 1: with_rows<1>(mr, f); break;
    case 2: with_rows<2>(mr, f); break;
    case 3: with_rows<3>(mr, f); break;
    default: with_rows<4>(mr, f); break;
  }
}

// ---- general GEMM ---------------------------------------------------------------------------
// C[M,N] = op(A)[M,K] op(B)[K,N] (+ C if accumulate) (+ bias[N] if bias)
// op(A)(m,k) = trans_a ? A[k*lda+m] : A[m*lda+k], optionally times a_scale[(k % scale_period)*lds + m]
// (used for the recurrent-dropout mask on h, which repeats every B rows of the time-major input).
template <typename T>
struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  const T* A = nullptr;
  int64_t lda = 0;
  const T* B = nullptr;
  int64_t ldb = 0;
  T* C = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
  const T* bias = nullptr;         // [N] or null
  const T* a_scale = nullptr;      // only with trans_a; see above
  int64_t scale_period = 1, lds = 0;
};

template <typename T>
struct GemmBlocking {
  static constexpr int VL = Vec<T>::N;
  static constexpr int NR = kGNV * VL;
// Measured on a Zen 4 (AVX-512 and AVX2 levels, 2 threads, best of 8-40 calls, three alternating
// runs; RESULTS.md): KC 512 x MC 10 tiles beats 256 x 20 by 5-18 % on 9 of the engine's 11 shapes
// and loses 6-7 % on x^T dz at X = 128 and 512; KC 96 or 128 (an L1-sized B panel) lost everywhere.
#ifndef LF_GEMM_KC  // overridable only for blocking experiments (bench/)
#define LF_GEMM_KC 512
#define LF_GEMM_MC_TILES 10
#define LF_GEMM_NC 512
#endif
  static constexpr int64_t KC = LF_GEMM_KC;
  static constexpr int64_t MC = kGMR * LF_GEMM_MC_TILES;
  static constexpr int64_t NC = NR * (LF_GEMM_NC / NR > 0 ? LF_GEMM_NC / NR : 1);
};

// Pack op(A)[ic:ic+mc, pc:pc+kc] into panels of kGMR rows: panel p, element (k, r) at p*kc*kGMR + k*kGMR + r.
// Rows past mc are zero.
template <typename T>
void pack_a(const GemmArgs<T>& g, int64_t ic, int64_t mc, int64_t pc, int64_t kc, T* __restrict dst) {
  constexpr int MR = kGMR;
  for (int64_t p = 0; p < mc; p += MR) {
    T* __restrict d = dst + (p / MR) * kc * MR;
    const int64_t rows = imin(MR, mc - p), m0 = ic + p;
    if (!g.trans_a) {
      // Rows of A are contiguous in k: read each row once, write it with stride MR.
      for (int64_t r = 0; r < rows; ++r) {
        const T* __restrict src = g.A + (m0 + r) * g.lda + pc;
        for (int64_t k = 0; k < kc; ++k) d[k * MR + r] = src[k];
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const int64_t kk = pc + k;
        const T* __restrict src = g.A + kk * g.lda + m0;
        T* __restrict dk = d + k * MR;
        if (g.a_scale) {
          const T* __restrict sc = g.a_scale + (kk % g.scale_period) * g.lds + m0;
          if (rows == MR) {
#pragma GCC unroll 16
            for (int r = 0; r < MR; ++r) dk[r] = src[r] * sc[r];
          } else {
            for (int64_t r = 0; r < rows; ++r) dk[r] = src[r] * sc[r];
          }
        } else if (rows == MR) {  // fixed length: register moves, not a memmove call per k
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) dk[r] = src[r];
        } else {
          for (int64_t r = 0; r < rows; ++r) dk[r] = src[r];
        }
      }
    }
    if (rows < MR)
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = rows; r < MR; ++r) d[k * MR + r] = T(0);
  }
}

// Pack op(B)[pc:pc+kc, jc+panel*NR ...] panels [p0, p1) of NR columns: panel p, element (k, n)
// at p*kc*NR + k*NR + n. Columns past N are zero.
template <typename T>
void pack_b(const GemmArgs<T>& g, int64_t pc, int64_t kc, int64_t jc, int64_t nc, int64_t p0, int64_t p1,
            T* __restrict dst) {
  constexpr int NR = GemmBlocking<T>::NR;
  for (int64_t p = p0; p < p1; ++p) {
    T* __restrict d = dst + p * kc * NR;
    const int64_t n0 = jc + p * NR, cols = imin(NR, jc + nc - n0);
    if (!g.trans_b) {
      if (cols == NR) {
        // Whole panel rows: vector copies (a scalar loop here becomes a memmove call per row).
        using V = Vec<T>;
        for (int64_t k = 0; k < kc; ++k) {
          const T* src = g.B + (pc + k) * g.ldb + n0;
#pragma GCC unroll 4
          for (int v = 0; v < kGNV; ++v) V::load(src + v * V::N).store(d + k * NR + v * V::N);
        }
      } else {
        for (int64_t k = 0; k < kc; ++k) {
          const T* __restrict src = g.B + (pc + k) * g.ldb + n0;
          T* __restrict dk = d + k * NR;
          for (int64_t n = 0; n < cols; ++n) dk[n] = src[n];
        }
      }
    } else {
      // Columns of op(B) are rows of B: read each once, write with stride NR.
      for (int64_t n = 0; n < cols; ++n) {
        const T* __restrict src = g.B + (n0 + n) * g.ldb + pc;
        for (int64_t k = 0; k < kc; ++k) d[k * NR + n] = src[k];
      }
    }
    if (cols < NR)
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t n = cols; n < NR; ++n) d[k * NR + n] = T(0);
  }
}

// Store a kGMR x NR tile of accumulators into C rows [m0, m0+rows), columns [n0, n0+cols).
template <typename T>
LF_INLINE void store_tile(Vec<T> (&acc)[kGMR][kGNV], T* C, int64_t ldc, int64_t m0, int64_t rows, int64_t n0,
                          int64_t cols, bool add_c, const T* bias) {
  using V = Vec<T>;
  constexpr int VL = V::N;
  for (int64_t r = 0; r < rows; ++r) {
    T* c = C + (m0 + r) * ldc + n0;
#pragma GCC unroll 4
    for (int v = 0; v < kGNV; ++v) {
      int64_t n = int64_t(v) * VL;
      if (n >= cols) break;
      int len = int(imin(VL, cols - n));
      V x = acc[r][v];
      if (add_c) x = x + (len == VL ? V::load(c + n) : V::load(c + n, len));
      if (bias) x = x + (len == VL ? V::load(bias + n0 + n) : V::load(bias + n0 + n, len));
      if (len == VL)
        x.store(c + n);
      else
        x.store(c + n, len);
    }
  }
}

// Team GEMM: call from every thread of an OpenMP team (or from one thread with nt = 1).
// pack_b_buf: shared, KC*NC elements; pack_a_buf: this thread's, MC*KC elements.
// Ends with a team barrier.
template <typename T>
void gemm_team(const GemmArgs<T>& g, T* pack_b_buf, T* pack_a_buf, int tid, int nt) {
  using BL = GemmBlocking<T>;
  constexpr int64_t NR = BL::NR, KC = BL::KC, MC = BL::MC, NC = BL::NC;
  if (g.M <= 0 || g.N <= 0) {
    if (nt > 1) {
#pragma omp barrier
    }
    return;
  }
  if (g.K <= 0) {
    // Empty sum: C = bias or 0 (or unchanged when accumulating).
    int64_t m0, m1;
    split_range(g.M, nt, tid, m0, m1);
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t n = 0; n < g.N; ++n) {
        T v = g.bias ? g.bias[n] : T(0);
        g.C[m * g.ldc + n] = g.accumulate ? g.C[m * g.ldc + n] + v : v;
      }
    if (nt > 1) {
#pragma omp barrier
    }
    return;
  }
  for (int64_t jc = 0; jc < g.N; jc += NC) {
    int64_t nc = imin(NC, g.N - jc);
    int64_t npanels = ceil_div(nc, NR);
    for (int64_t pc = 0; pc < g.K; pc += KC) {
      int64_t kc = imin(KC, g.K - pc);
      int64_t p0, p1;
      split_range(npanels, nt, tid, p0, p1);
      pack_b(g, pc, kc, jc, nc, p0, p1, pack_b_buf);
      if (nt > 1) {
#pragma omp barrier
      }
      bool add_c = g.accumulate || pc > 0;
      const T* bias = pc == 0 ? g.bias : nullptr;
      // Work items: (row block, column-panel range). Row blocks of equal size; with few row
      // blocks, column panels are split too so every thread gets a similar share.
      const int64_t mblocks = ceil_div(g.M, MC);
      const int64_t mc_even = ceil_div(ceil_div(g.M, mblocks), kGMR) * kGMR;
      const int64_t nsplit = nt == 1 ? 1 : imax(1, imin(npanels, ceil_div(4 * int64_t(nt), mblocks)));
      const int64_t items = mblocks * nsplit;
      // Measured (AVX2, 2 threads): in place is 7-12 % faster for N <= 256, 3-5 % slower for N >= 512.
      const bool direct_a = !g.trans_a && !g.a_scale && g.N <= 256;
      for (int64_t item = tid; item < items; item += nt) {
        const int64_t ib = item / nsplit, is = item % nsplit;
        const int64_t ic = ib * mc_even, mc = imin(mc_even, g.M - ic);
        if (mc <= 0) continue;
        int64_t q0, q1;
        split_range(npanels, int(nsplit), int(is), q0, q1);
        if (q0 == q1) continue;
        // With few columns (dx = dz kernel^T at small X) a row-major op(A) is read in place (its
        // kGMR rows stay in L1 across the column panels): packing it would cost a large share of
        // the product. A partial last row tile is still packed (it is zero-padded).
        const int64_t full = direct_a ? mc / kGMR * kGMR : 0;
        if (!direct_a)
          pack_a(g, ic, mc, pc, kc, pack_a_buf);
        else if (full < mc)
          pack_a(g, ic + full, mc - full, pc, kc, pack_a_buf);
        for (int64_t p = q0; p < q1; ++p) {
          const T* bp = pack_b_buf + p * kc * NR;
          int64_t n0 = jc + p * NR, cols = imin(NR, g.N - n0);
          for (int64_t ir = 0; ir < mc; ir += kGMR) {
            Vec<T> acc[kGMR][kGNV];
            if (ir < full)
              tile_kernel<T, kGMR, kGNV>(kc, g.A + (ic + ir) * g.lda + pc, g.lda, 1, bp, NR, Vec<T>::N, acc);
            else
              tile_kernel<T, kGMR, kGNV>(kc, pack_a_buf + ((ir - full) / kGMR) * kc * kGMR, 1, kGMR, bp, NR,
                                         Vec<T>::N, acc);
            store_tile<T>(acc, g.C, g.ldc, ic + ir, imin(kGMR, mc - ir), n0, cols, add_c, bias);
          }
        }
      }
      if (nt > 1) {
#pragma omp barrier
      }
    }
  }
}

// Packing buffers for a series of GEMMs whose sizes are at most max_m x max_n x max_k: sized to
// the problem (small calls stay small), shared B panel plus one A block per thread.
template <typename T>
struct GemmBuffers {
  using BL = GemmBlocking<T>;
  int64_t a_stride;
  Scratch<T> b, a;
  GemmBuffers(int nt, int64_t max_m, int64_t max_n, int64_t max_k)
      : a_stride(imin(BL::MC, ceil_div(imax(max_m, 1), kGMR) * kGMR) * imin(BL::KC, imax(max_k, 1))),
        b(imin(BL::KC, imax(max_k, 1)) * imin(BL::NC, ceil_div(imax(max_n, 1), BL::NR) * BL::NR)),
        a(int64_t(nt) * a_stride) {}
  T* a_for(int tid) { return a.get() + int64_t(tid) * a_stride; }
};

}  // namespace LF_ISA
}  // namespace lstmfast
