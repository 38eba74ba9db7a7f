// Probe of this machine's fp32 FMA peak: the ceiling that bench/compare_torch.py divides by.
//
//   g++ -O2 -fopenmp bench/fma_peak.cpp -o bench/out/fma_peak
//   bench/out/fma_peak [THREADS] [avx512|avx2|sse]
//
// Each thread runs 24 (AVX-512) or 12 (AVX2, SSE) independent FMA chains in registers, enough to
// cover FMA latency x FMA ports on current x86 cores. The ISA is chosen at run time with
// __builtin_cpu_supports (the kernels carry __attribute__((target(...))), never -march=native).
// Prints one line per repetition and, last, the best of them: `fma_peak_gflops <GFLOP/s>`.
#include <immintrin.h>
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// Each chain is acc = acc * a + b with 0 < a < 1: it converges to b / (1 - a), so no overflow and
// no denormals however long it runs. a depends on the command line so it is not a compile-time
// constant; every chain starts from a different value so the compiler cannot merge identical
// chains; the sum of all chains is returned and printed, so the loop must run.

#define FMA_CHAINS_12(FMA, v) \
  FMA(v##0); FMA(v##1); FMA(v##2); FMA(v##3); FMA(v##4); FMA(v##5); \
  FMA(v##6); FMA(v##7); FMA(v##8); FMA(v##9); FMA(v##10); FMA(v##11)

__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iters, float a_scalar, float b_scalar) {
  const __m512 a = _mm512_set1_ps(a_scalar), b = _mm512_set1_ps(b_scalar);
#define INIT512(v, k) __m512 v = _mm512_set1_ps(b_scalar * (k))
  INIT512(p0, 1); INIT512(p1, 2); INIT512(p2, 3); INIT512(p3, 4); INIT512(p4, 5); INIT512(p5, 6);
  INIT512(p6, 7); INIT512(p7, 8); INIT512(p8, 9); INIT512(p9, 10); INIT512(p10, 11); INIT512(p11, 12);
  INIT512(q0, 13); INIT512(q1, 14); INIT512(q2, 15); INIT512(q3, 16); INIT512(q4, 17); INIT512(q5, 18);
  INIT512(q6, 19); INIT512(q7, 20); INIT512(q8, 21); INIT512(q9, 22); INIT512(q10, 23); INIT512(q11, 24);
#undef INIT512
#define FMA512(acc) acc = _mm512_fmadd_ps(acc, a, b)
  for (int64_t it = 0; it < iters; ++it) {
    FMA_CHAINS_12(FMA512, p);
    FMA_CHAINS_12(FMA512, q);
  }
#undef FMA512
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(p0, p1), _mm512_add_ps(p2, p3)),
                           _mm512_add_ps(_mm512_add_ps(p4, p5), _mm512_add_ps(p6, p7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(p8, p9), _mm512_add_ps(p10, p11)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(q0, q1), _mm512_add_ps(q2, q3)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(q4, q5), _mm512_add_ps(q6, q7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(q8, q9), _mm512_add_ps(q10, q11)));
  alignas(64) float lanes[16];  // not _mm512_reduce_add_ps: GCC 12 warns inside its header
  _mm512_store_ps(lanes, s);
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  return sum;
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters, float a_scalar, float b_scalar) {
  const __m256 a = _mm256_set1_ps(a_scalar), b = _mm256_set1_ps(b_scalar);
#define INIT256(v, k) __m256 v = _mm256_set1_ps(b_scalar * (k))
  INIT256(p0, 1); INIT256(p1, 2); INIT256(p2, 3); INIT256(p3, 4); INIT256(p4, 5); INIT256(p5, 6);
  INIT256(p6, 7); INIT256(p7, 8); INIT256(p8, 9); INIT256(p9, 10); INIT256(p10, 11); INIT256(p11, 12);
#undef INIT256
#define FMA256(acc) acc = _mm256_fmadd_ps(acc, a, b)
  for (int64_t it = 0; it < iters; ++it) {
    FMA_CHAINS_12(FMA256, p);
  }
#undef FMA256
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(p0, p1), _mm256_add_ps(p2, p3)),
                           _mm256_add_ps(_mm256_add_ps(p4, p5), _mm256_add_ps(p6, p7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(p8, p9), _mm256_add_ps(p10, p11)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  return sum;
}

// Baseline x86-64 has no FMA: a multiply and an add per "FMA" (2 flops), for machines without AVX2.
float fma_loop_sse(int64_t iters, float a_scalar, float b_scalar) {
  const __m128 a = _mm_set1_ps(a_scalar), b = _mm_set1_ps(b_scalar);
#define INIT128(v, k) __m128 v = _mm_set1_ps(b_scalar * (k))
  INIT128(p0, 1); INIT128(p1, 2); INIT128(p2, 3); INIT128(p3, 4); INIT128(p4, 5); INIT128(p5, 6);
  INIT128(p6, 7); INIT128(p7, 8); INIT128(p8, 9); INIT128(p9, 10); INIT128(p10, 11); INIT128(p11, 12);
#undef INIT128
#define MULADD128(acc) acc = _mm_add_ps(_mm_mul_ps(acc, a), b)
  for (int64_t it = 0; it < iters; ++it) {
    FMA_CHAINS_12(MULADD128, p);
  }
#undef MULADD128
  __m128 s = _mm_add_ps(_mm_add_ps(_mm_add_ps(p0, p1), _mm_add_ps(p2, p3)),
                        _mm_add_ps(_mm_add_ps(p4, p5), _mm_add_ps(p6, p7)));
  s = _mm_add_ps(s, _mm_add_ps(_mm_add_ps(p8, p9), _mm_add_ps(p10, p11)));
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

struct Isa {
  const char* name;
  float (*loop)(int64_t, float, float);
  int64_t flops_per_iter;  // chains x lanes x 2
};

const Isa kAvx512{"avx512", fma_loop_avx512, 24 * 16 * 2};
const Isa kAvx2{"avx2", fma_loop_avx2, 12 * 8 * 2};
const Isa kSse{"sse", fma_loop_sse, 12 * 4 * 2};

// Runs `iters` iterations on every thread at once; returns the wall time and adds to checksum.
double run_parallel(const Isa& isa, int threads, int64_t iters, float a, float b, double* checksum) {
  double sum = 0.0;
  const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
  { sum += isa.loop(iters, a, b); }
  const double t1 = omp_get_wtime();
  *checksum += sum;
  return t1 - t0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads();
  if (argc > 1) threads = std::atoi(argv[1]);
  if (threads < 1) {
    std::fprintf(stderr, "fma_peak: THREADS must be >= 1, got '%s'\n", argv[1]);
    return 2;
  }

  __builtin_cpu_init();
  const Isa* isa = &kSse;
  if (__builtin_cpu_supports("avx512f")) {
    isa = &kAvx512;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    isa = &kAvx2;
  }
  if (argc > 2) {
    const std::string want = argv[2];
    if (want == "avx512" && __builtin_cpu_supports("avx512f")) {
      isa = &kAvx512;
    } else if (want == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      isa = &kAvx2;
    } else if (want == "sse") {
      isa = &kSse;
    } else {
      std::fprintf(stderr, "fma_peak: ISA must be one this CPU supports (avx512, avx2, sse), got '%s'\n",
                   argv[2]);
      return 2;
    }
  }

  // The multiplier depends on argc so the compiler cannot fold the chains to a constant.
  const float a = 0.999f - 1e-6f * static_cast<float>(argc);
  const float b = 1e-3f;
  double checksum = 0.0;

  // Calibrate: grow the iteration count until one repetition takes about 0.15 s.
  int64_t iters = 1 << 16;
  double t = run_parallel(*isa, threads, iters, a, b, &checksum);
  while (t < 0.05) {
    iters *= 4;
    t = run_parallel(*isa, threads, iters, a, b, &checksum);
  }
  iters = static_cast<int64_t>(static_cast<double>(iters) * 0.15 / t) + 1;

  const int reps = 7;
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    t = run_parallel(*isa, threads, iters, a, b, &checksum);
    const double gflops = static_cast<double>(isa->flops_per_iter) * static_cast<double>(iters) *
                          static_cast<double>(threads) / t * 1e-9;
    std::printf("rep %d isa %s threads %d iters %lld time_s %.4f gflops %.1f\n", r, isa->name, threads,
                static_cast<long long>(iters), t, gflops);
    if (gflops > best) best = gflops;
  }
  std::printf("checksum %g\n", checksum);
  std::printf("fma_peak_gflops %.1f\n", best);
  return 0;
}
