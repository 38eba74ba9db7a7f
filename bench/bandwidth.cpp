// Probe of this machine's memory bounds, for bench/roofline.py: read bandwidth at each working-set
// size (so the L1, L2, L3 and DRAM plateaus show) and the cost of one OpenMP barrier.
//
//   g++ -O2 -fopenmp -mavx2 -mfma bench/bandwidth.cpp -o bench/out/bandwidth
//   bench/out/bandwidth [THREADS]
//
// Read bandwidth: every thread sums its own buffer of S bytes (AVX2 loads, 8 independent
// accumulators, so the loads, not the adds, limit it), again and again; the buffers are touched
// by their own thread first, so they live where that thread reads them. Best of 5 repetitions of
// at least ~0.1 s each. This is the rate at which a thread can stream an array that stays in that
// level: what the recurrent step needs when it re-reads its slice of recurrent_kernel every step.
//
// Barrier: ns per `#pragma omp barrier` with THREADS threads, the threads doing nothing else (the
// floor of the engine's one barrier per time step), best of 5 runs of 20,000 barriers.
//
// Output, one line each: `read_gbps <threads> <bytes per thread> <GB/s, all threads together>`,
// then `barrier_ns <threads> <ns>`.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Sum of n floats (n a multiple of 64), 8 accumulators of 8 lanes.
float sum_floats(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t i = 0; i < n; i += 64) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    a4 = _mm256_add_ps(a4, _mm256_load_ps(p + i + 32));
    a5 = _mm256_add_ps(a5, _mm256_load_ps(p + i + 40));
    a6 = _mm256_add_ps(a6, _mm256_load_ps(p + i + 48));
    a7 = _mm256_add_ps(a7, _mm256_load_ps(p + i + 56));
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                           _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

// GB/s of `threads` threads each reading its own `bytes` again and again.
double read_bandwidth(int threads, int64_t bytes) {
  const int64_t n = std::max<int64_t>(64, bytes / 4 / 64 * 64);
  const int64_t passes = std::max<int64_t>(1, int64_t(4e8) / (n * 4));  // ~0.4 GB per thread per repetition
  double best = 0;
  volatile float sink = 0;
#pragma omp parallel num_threads(threads)
  {
    float* buf = static_cast<float*>(aligned_alloc(64, size_t(n) * 4));
    for (int64_t i = 0; i < n; ++i) buf[i] = float(i % 7) * 1e-3f;  // first touch by the reader
    float local = 0;
    local += sum_floats(buf, n);  // warm the caches
    for (int rep = 0; rep < 5; ++rep) {
#pragma omp barrier
      double t0 = now();
      for (int64_t p = 0; p < passes; ++p) {
        asm volatile("" : : "r"(buf) : "memory");  // the buffer may have changed: read it again
        local += sum_floats(buf, n);
      }
#pragma omp barrier
      double seconds = now() - t0;
#pragma omp master
      best = std::max(best, double(threads) * double(passes) * double(n) * 4 / seconds / 1e9);
    }
#pragma omp critical
    sink = sink + local;
    free(buf);
  }
  (void)sink;
  return best;
}

double barrier_ns(int threads) {
  constexpr int kBarriers = 20000;
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    double seconds = 0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp barrier
      double t0 = now();
      for (int i = 0; i < kBarriers; ++i) {
#pragma omp barrier
      }
#pragma omp master
      seconds = now() - t0;
    }
    best = std::min(best, seconds / kBarriers * 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  if (threads < 1) {
    std::fprintf(stderr, "usage: %s [THREADS >= 1]\n", argv[0]);
    return 2;
  }
  for (int64_t kib : {16, 64, 256, 512, 768, 1536, 3072, 6144, 12288, 24576, 65536, 262144}) {
    std::printf("read_gbps %d %lld %.1f\n", threads, (long long)(kib * 1024), read_bandwidth(threads, kib * 1024));
    std::fflush(stdout);
  }
  std::printf("barrier_ns %d %.0f\n", threads, barrier_ns(threads));
  return 0;
}
