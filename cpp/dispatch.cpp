// Run-time choice of the SIMD level, the thread count, and the public entry points of lstm.h.
// Compiled for baseline x86-64: it only reads CPUID and calls into the per-level copies.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "engine_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define LSTMFAST_X86 1
#endif

namespace lstmfast {

void throw_out_of_memory(size_t bytes) {
  (void)bytes;
  throw std::bad_alloc();
}

namespace {

#ifdef LSTMFAST_X86
// XCR0 bits the OS must enable: SSE|AVX state (0x6), plus opmask|ZMM_Hi256|Hi16_ZMM (0xe0) for AVX-512.
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

SimdLevel detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return SimdLevel::portable;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12);
  if (!osxsave || !avx) return SimdLevel::portable;
  const uint64_t xcr0 = read_xcr0();
  if ((xcr0 & 0x6) != 0x6) return SimdLevel::portable;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return SimdLevel::portable;
  const bool avx2 = b & (1u << 5);
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));  // F DQ BW VL
  if (avx512 && avx2 && fma && (xcr0 & 0xe0) == 0xe0) return SimdLevel::avx512;
  if (avx2 && fma) return SimdLevel::avx2;
  return SimdLevel::portable;
}
#else
SimdLevel detect() { return SimdLevel::portable; }
#endif

SimdLevel parse_level(const char* s, bool& ok) {
  ok = true;
  std::string v(s ? s : "");
  for (auto& ch : v) ch = char(tolower(ch));
  if (v == "portable" || v == "generic" || v == "scalar") return SimdLevel::portable;
  if (v == "avx2") return SimdLevel::avx2;
  if (v == "avx512") return SimdLevel::avx512;
  if (v == "avx512emu") return SimdLevel::avx512emu;
  ok = false;
  return SimdLevel::portable;
}

// Whether this CPU can run level l (avx512emu needs AVX2 + FMA, the instructions it is built with).
bool runs_here(SimdLevel l, SimdLevel best) {
  if (l == SimdLevel::avx512emu) return best == SimdLevel::avx2 || best == SimdLevel::avx512;
  return int(l) >= 0 && int(l) <= int(best);
}

SimdLevel initial_level() {
  const SimdLevel best = detect();
  const char* env = getenv("LSTMFAST_SIMD");
  if (env && *env) {
    bool ok;
    const SimdLevel want = parse_level(env, ok);
    // An unknown or unsupported request falls back to the best level (bindings report it).
    if (ok && runs_here(want, best)) return want;
  }
  return best;
}

std::atomic<int> g_level{-1};
std::atomic<int> g_threads{0};

SimdLevel level() {
  int l = g_level.load(std::memory_order_relaxed);
  if (l < 0) {
    l = int(initial_level());
    g_level.store(l);
  }
  return SimdLevel(l);
}

int default_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Calls ns::CALL for the SIMD level in use (ns = that level's namespace): the one list of levels.
#define LSTMFAST_ON_LEVEL(CALL)                                  \
  switch (level()) {                                             \
    case SimdLevel::avx512: avx512::CALL; break;                 \
    case SimdLevel::avx512emu: avx512emu::CALL; break;           \
    case SimdLevel::avx2: avx2::CALL; break;                     \
    default: portable::CALL; break;                              \
  }

template <typename Args>
void run_forward(const Args& a) {
  const int nt = num_threads();
  LSTMFAST_ON_LEVEL(forward(a, nt))
}
template <typename Args>
void run_backward(const Args& a) {
  const int nt = num_threads();
  LSTMFAST_ON_LEVEL(backward(a, nt))
}
template <typename T>
void run_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
              T* C, int64_t ldc, bool acc) {
  const int nt = num_threads();
  LSTMFAST_ON_LEVEL(gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, acc, nt))
}
template <typename T>
void run_optim(const OptimArgs<T>& a) {
  const int nt = num_threads();
  LSTMFAST_ON_LEVEL(optim_step(a, nt))
}

}  // namespace

void optim_step(const OptimArgs<float>& a) { run_optim(a); }
void optim_step(const OptimArgs<double>& a) { run_optim(a); }
template <typename T, typename I>
void scatter_add_rows(T* out, int64_t D, const I* index, const T* src, int64_t n) {
  LSTMFAST_ON_LEVEL(scatter_add_rows(out, D, index, src, n))
}
#undef LSTMFAST_ON_LEVEL
template void scatter_add_rows(float*, int64_t, const int32_t*, const float*, int64_t);
template void scatter_add_rows(float*, int64_t, const int64_t*, const float*, int64_t);
template void scatter_add_rows(double*, int64_t, const int32_t*, const double*, int64_t);
template void scatter_add_rows(double*, int64_t, const int64_t*, const double*, int64_t);

void lstm_forward(const ForwardArgs<float>& a) { run_forward(a); }
void lstm_forward(const ForwardArgs<double>& a) { run_forward(a); }
void lstm_backward(const BackwardArgs<float>& a) { run_backward(a); }
void lstm_backward(const BackwardArgs<double>& a) { run_backward(a); }
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
          float* C, int64_t ldc, bool acc) {
  run_gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, acc);
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
          int64_t ldb, double* C, int64_t ldc, bool acc) {
  run_gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, acc);
}

SimdLevel simd_level() { return level(); }
SimdLevel simd_level_supported() { return detect(); }
bool set_simd_level(SimdLevel l) {
  if (!runs_here(l, detect())) return false;
  g_level.store(int(l));
  return true;
}
const char* simd_level_name(SimdLevel l) {
  switch (l) {
    case SimdLevel::avx512: return "avx512";
    case SimdLevel::avx512emu: return "avx512emu";
    case SimdLevel::avx2: return "avx2";
    default: return "portable";
  }
}
int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : default_threads();
}
void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0); }
bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace lstmfast
