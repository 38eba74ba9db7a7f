// SIMD vectors for one instruction-set level. Included only by translation units compiled once
// per level (lstm_cpu.cpp), each with LSTMFAST_ISA_<level> defined; everything lives in the
// namespace lstmfast::LF_ISA so that no inline function compiled with AVX-512 flags can be picked
// by the linker for another level. For the same reason this header uses nothing from std::.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

#if defined(LSTMFAST_ISA_avx512)
#define LF_ISA avx512
#include <immintrin.h>
#elif defined(LSTMFAST_ISA_avx2)
#define LF_ISA avx2
#include <immintrin.h>
#elif defined(LSTMFAST_ISA_portable)
#define LF_ISA portable
#elif defined(LSTMFAST_ISA_avx512emu)
// A testing level: the AVX-512 level's shapes (16 float lanes, its register tiles and GEMM
// blocking) with lane arrays that the compiler maps onto AVX2 instructions, so the code paths
// that depend on those shapes run, and are tested, on CPUs without AVX-512.
#define LF_ISA avx512emu
#define LF_LANE_BYTES 64
#define LF_FUSED_FMA 1
#else
#error "compile with one of LSTMFAST_ISA_avx512, LSTMFAST_ISA_avx2, LSTMFAST_ISA_portable, LSTMFAST_ISA_avx512emu"
#endif
#if defined(LSTMFAST_ISA_avx512) || defined(LSTMFAST_ISA_avx512emu)
#define LF_AVX512_SHAPES 1  // the register tiles and GEMM blocking of the AVX-512 level
#endif

#define LF_INLINE inline __attribute__((always_inline))

namespace lstmfast {
namespace LF_ISA {

template <typename T>
struct Vec;

#if defined(LSTMFAST_ISA_avx512)

template <>
struct Vec<float> {
  static constexpr int N = 16;
  __m512 v;
  static LF_INLINE __mmask16 m(int n) { return (__mmask16)((1u << n) - 1u); }
  static LF_INLINE Vec zero() { return {_mm512_setzero_ps()}; }
  static LF_INLINE Vec set1(float s) { return {_mm512_set1_ps(s)}; }
  static LF_INLINE Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static LF_INLINE Vec load(const float* p, int n) { return {_mm512_maskz_loadu_ps(m(n), p)}; }
  LF_INLINE void store(float* p) const { _mm512_storeu_ps(p, v); }
  LF_INLINE void store(float* p, int n) const { _mm512_mask_storeu_ps(p, m(n), v); }
};
template <>
struct Vec<double> {
  static constexpr int N = 8;
  __m512d v;
  static LF_INLINE __mmask8 m(int n) { return (__mmask8)((1u << n) - 1u); }
  static LF_INLINE Vec zero() { return {_mm512_setzero_pd()}; }
  static LF_INLINE Vec set1(double s) { return {_mm512_set1_pd(s)}; }
  static LF_INLINE Vec load(const double* p) { return {_mm512_loadu_pd(p)}; }
  static LF_INLINE Vec load(const double* p, int n) { return {_mm512_maskz_loadu_pd(m(n), p)}; }
  LF_INLINE void store(double* p) const { _mm512_storeu_pd(p, v); }
  LF_INLINE void store(double* p, int n) const { _mm512_mask_storeu_pd(p, m(n), v); }
};
LF_INLINE Vec<float> operator+(Vec<float> a, Vec<float> b) { return {_mm512_add_ps(a.v, b.v)}; }
LF_INLINE Vec<float> operator-(Vec<float> a, Vec<float> b) { return {_mm512_sub_ps(a.v, b.v)}; }
LF_INLINE Vec<float> operator*(Vec<float> a, Vec<float> b) { return {_mm512_mul_ps(a.v, b.v)}; }
LF_INLINE Vec<float> operator/(Vec<float> a, Vec<float> b) { return {_mm512_div_ps(a.v, b.v)}; }
LF_INLINE Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
// max/min return the second operand when either is NaN: callers pass the data second.
LF_INLINE Vec<float> vmax(Vec<float> a, Vec<float> x) { return {_mm512_max_ps(a.v, x.v)}; }
LF_INLINE Vec<float> vmin(Vec<float> a, Vec<float> x) { return {_mm512_min_ps(a.v, x.v)}; }
LF_INLINE Vec<double> operator+(Vec<double> a, Vec<double> b) { return {_mm512_add_pd(a.v, b.v)}; }
LF_INLINE Vec<double> operator-(Vec<double> a, Vec<double> b) { return {_mm512_sub_pd(a.v, b.v)}; }
LF_INLINE Vec<double> operator*(Vec<double> a, Vec<double> b) { return {_mm512_mul_pd(a.v, b.v)}; }
LF_INLINE Vec<double> operator/(Vec<double> a, Vec<double> b) { return {_mm512_div_pd(a.v, b.v)}; }
LF_INLINE Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) { return {_mm512_fmadd_pd(a.v, b.v, c.v)}; }
LF_INLINE Vec<double> vmax(Vec<double> a, Vec<double> x) { return {_mm512_max_pd(a.v, x.v)}; }
LF_INLINE Vec<double> vmin(Vec<double> a, Vec<double> x) { return {_mm512_min_pd(a.v, x.v)}; }

// exp for float lanes: 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2].
LF_INLINE Vec<float> exp2i_scale(Vec<float> p, Vec<float> n) {
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127)), 23);
  return {_mm512_mul_ps(p.v, _mm512_castsi512_ps(e))};
}
LF_INLINE Vec<float> vround(Vec<float> x) { return {_mm512_roundscale_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
LF_INLINE Vec<float> vabs(Vec<float> x) { return {_mm512_abs_ps(x.v)}; }
// Sign of s applied to |x|.
LF_INLINE Vec<float> copysign_of(Vec<float> x_abs, Vec<float> s) {
  __m512i sign = _mm512_and_si512(_mm512_castps_si512(s.v), _mm512_set1_epi32(int32_t(0x80000000u)));
  return {_mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(x_abs.v), sign))};
}
// where(|x| < t, a, b)
LF_INLINE Vec<float> select_lt(Vec<float> x, Vec<float> t, Vec<float> a, Vec<float> b) {
  return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, t.v, _CMP_LT_OQ), b.v, a.v)};
}
LF_INLINE Vec<double> vabs(Vec<double> x) { return {_mm512_abs_pd(x.v)}; }
LF_INLINE Vec<double> select_lt(Vec<double> x, Vec<double> t, Vec<double> a, Vec<double> b) {
  return {_mm512_mask_blend_pd(_mm512_cmp_pd_mask(x.v, t.v, _CMP_LT_OQ), b.v, a.v)};
}

#elif defined(LSTMFAST_ISA_avx2)

LF_INLINE __m256i lf_lane_mask32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
LF_INLINE __m256i lf_lane_mask64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
template <>
struct Vec<float> {
  static constexpr int N = 8;
  __m256 v;
  static LF_INLINE Vec zero() { return {_mm256_setzero_ps()}; }
  static LF_INLINE Vec set1(float s) { return {_mm256_set1_ps(s)}; }
  static LF_INLINE Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static LF_INLINE Vec load(const float* p, int n) { return {_mm256_maskload_ps(p, lf_lane_mask32(n))}; }
  LF_INLINE void store(float* p) const { _mm256_storeu_ps(p, v); }
  LF_INLINE void store(float* p, int n) const { _mm256_maskstore_ps(p, lf_lane_mask32(n), v); }
};
template <>
struct Vec<double> {
  static constexpr int N = 4;
  __m256d v;
  static LF_INLINE Vec zero() { return {_mm256_setzero_pd()}; }
  static LF_INLINE Vec set1(double s) { return {_mm256_set1_pd(s)}; }
  static LF_INLINE Vec load(const double* p) { return {_mm256_loadu_pd(p)}; }
  static LF_INLINE Vec load(const double* p, int n) { return {_mm256_maskload_pd(p, lf_lane_mask64(n))}; }
  LF_INLINE void store(double* p) const { _mm256_storeu_pd(p, v); }
  LF_INLINE void store(double* p, int n) const { _mm256_maskstore_pd(p, lf_lane_mask64(n), v); }
};
LF_INLINE Vec<float> operator+(Vec<float> a, Vec<float> b) { return {_mm256_add_ps(a.v, b.v)}; }
LF_INLINE Vec<float> operator-(Vec<float> a, Vec<float> b) { return {_mm256_sub_ps(a.v, b.v)}; }
LF_INLINE Vec<float> operator*(Vec<float> a, Vec<float> b) { return {_mm256_mul_ps(a.v, b.v)}; }
LF_INLINE Vec<float> operator/(Vec<float> a, Vec<float> b) { return {_mm256_div_ps(a.v, b.v)}; }
LF_INLINE Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
LF_INLINE Vec<float> vmax(Vec<float> a, Vec<float> x) { return {_mm256_max_ps(a.v, x.v)}; }
LF_INLINE Vec<float> vmin(Vec<float> a, Vec<float> x) { return {_mm256_min_ps(a.v, x.v)}; }
LF_INLINE Vec<double> operator+(Vec<double> a, Vec<double> b) { return {_mm256_add_pd(a.v, b.v)}; }
LF_INLINE Vec<double> operator-(Vec<double> a, Vec<double> b) { return {_mm256_sub_pd(a.v, b.v)}; }
LF_INLINE Vec<double> operator*(Vec<double> a, Vec<double> b) { return {_mm256_mul_pd(a.v, b.v)}; }
LF_INLINE Vec<double> operator/(Vec<double> a, Vec<double> b) { return {_mm256_div_pd(a.v, b.v)}; }
LF_INLINE Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }
LF_INLINE Vec<double> vmax(Vec<double> a, Vec<double> x) { return {_mm256_max_pd(a.v, x.v)}; }
LF_INLINE Vec<double> vmin(Vec<double> a, Vec<double> x) { return {_mm256_min_pd(a.v, x.v)}; }

LF_INLINE Vec<float> exp2i_scale(Vec<float> p, Vec<float> n) {
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23);
  return {_mm256_mul_ps(p.v, _mm256_castsi256_ps(e))};
}
LF_INLINE Vec<float> vround(Vec<float> x) { return {_mm256_round_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
LF_INLINE Vec<float> vabs(Vec<float> x) {
  return {_mm256_and_ps(x.v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)))};
}
LF_INLINE Vec<float> copysign_of(Vec<float> x_abs, Vec<float> s) {
  __m256 sign = _mm256_and_ps(s.v, _mm256_castsi256_ps(_mm256_set1_epi32(int32_t(0x80000000u))));
  return {_mm256_or_ps(x_abs.v, sign)};
}
LF_INLINE Vec<float> select_lt(Vec<float> x, Vec<float> t, Vec<float> a, Vec<float> b) {
  return {_mm256_blendv_ps(b.v, a.v, _mm256_cmp_ps(x.v, t.v, _CMP_LT_OQ))};
}
LF_INLINE Vec<double> vabs(Vec<double> x) {
  return {_mm256_and_pd(x.v, _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL)))};
}
LF_INLINE Vec<double> select_lt(Vec<double> x, Vec<double> t, Vec<double> a, Vec<double> b) {
  return {_mm256_blendv_pd(b.v, a.v, _mm256_cmp_pd(x.v, t.v, _CMP_LT_OQ))};
}

#else  // portable (and avx512emu): fixed-size lane arrays; the compiler vectorises them with
       // baseline SSE2 (portable: 16-byte vectors) or AVX2 (avx512emu: 64-byte, like AVX-512).

#ifndef LF_LANE_BYTES
#define LF_LANE_BYTES 16
#endif
template <typename S>
struct Vec {
  static constexpr int N = LF_LANE_BYTES / int(sizeof(S));
  S v[N];
  static LF_INLINE Vec zero() { return set1(S(0)); }
  static LF_INLINE Vec set1(S s) {
    Vec r;
    for (int l = 0; l < N; ++l) r.v[l] = s;
    return r;
  }
  static LF_INLINE Vec load(const S* p) {
    Vec r;
    for (int l = 0; l < N; ++l) r.v[l] = p[l];
    return r;
  }
  static LF_INLINE Vec load(const S* p, int n) {
    Vec r;
    for (int l = 0; l < N; ++l) r.v[l] = l < n ? p[l] : S(0);
    return r;
  }
  LF_INLINE void store(S* p) const {
    for (int l = 0; l < N; ++l) p[l] = v[l];
  }
  LF_INLINE void store(S* p, int n) const {
    for (int l = 0; l < n; ++l) p[l] = v[l];
  }
};

#define LF_LANEWISE(expr)                              \
  Vec<S> r;                                            \
  for (int l = 0; l < Vec<S>::N; ++l) r.v[l] = (expr); \
  return r;
template <typename S>
LF_INLINE Vec<S> operator+(Vec<S> a, Vec<S> b) { LF_LANEWISE(a.v[l] + b.v[l]) }
template <typename S>
LF_INLINE Vec<S> operator-(Vec<S> a, Vec<S> b) { LF_LANEWISE(a.v[l] - b.v[l]) }
template <typename S>
LF_INLINE Vec<S> operator*(Vec<S> a, Vec<S> b) { LF_LANEWISE(a.v[l] * b.v[l]) }
template <typename S>
LF_INLINE Vec<S> operator/(Vec<S> a, Vec<S> b) { LF_LANEWISE(a.v[l] / b.v[l]) }
#ifdef LF_FUSED_FMA
// avx512emu: one rounding, as _mm512_fmadd does (compiled with -mfma: the FMA instruction).
LF_INLINE Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) {
  using S = float;
  LF_LANEWISE(__builtin_fmaf(a.v[l], b.v[l], c.v[l]))
}
LF_INLINE Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) {
  using S = double;
  LF_LANEWISE(__builtin_fma(a.v[l], b.v[l], c.v[l]))
}
#else
// Portable fma is a multiply then an add (no fused instruction at baseline x86-64).
template <typename S>
LF_INLINE Vec<S> fma(Vec<S> a, Vec<S> b, Vec<S> c) { LF_LANEWISE(a.v[l] * b.v[l] + c.v[l]) }
#endif
// NaN in x wins, like the x86 instructions with the data as second operand.
template <typename S>
LF_INLINE Vec<S> vmax(Vec<S> a, Vec<S> x) { LF_LANEWISE(a.v[l] > x.v[l] ? a.v[l] : x.v[l]) }
template <typename S>
LF_INLINE Vec<S> vmin(Vec<S> a, Vec<S> x) { LF_LANEWISE(a.v[l] < x.v[l] ? a.v[l] : x.v[l]) }

LF_INLINE Vec<float> exp2i_scale(Vec<float> p, Vec<float> n) {
  Vec<float> r;
  for (int l = 0; l < Vec<float>::N; ++l) {
    int32_t ni = n.v[l] == n.v[l] ? int32_t(n.v[l]) : 0;  // NaN: p is NaN already
    int32_t e = (ni + 127) * (1 << 23);
    float s;
    memcpy(&s, &e, sizeof s);
    r.v[l] = p.v[l] * s;
  }
  return r;
}
LF_INLINE Vec<float> vround(Vec<float> x) {
  using S = float;
  LF_LANEWISE(nearbyintf(x.v[l]))
}
template <typename S>
LF_INLINE Vec<S> vabs(Vec<S> x) { LF_LANEWISE(x.v[l] < S(0) ? -x.v[l] : x.v[l]) }
LF_INLINE Vec<float> copysign_of(Vec<float> x_abs, Vec<float> s) {
  using S = float;
  LF_LANEWISE(copysignf(x_abs.v[l], s.v[l]))
}
template <typename S>
LF_INLINE Vec<S> select_lt(Vec<S> x, Vec<S> t, Vec<S> a, Vec<S> b) { LF_LANEWISE(x.v[l] < t.v[l] ? a.v[l] : b.v[l]) }
#undef LF_LANEWISE

#endif

// ---- activations --------------------------------------------------------------------------
// float: vectorised, a few ulp; double: the C library, lane by lane (float64 is for testing).

// exp(x) for float lanes. Inputs are clamped so 2^n stays a normal number; NaN passes through.
LF_INLINE Vec<float> vexp(Vec<float> x) {
  using V = Vec<float>;
  x = vmin(V::set1(88.0f), vmax(V::set1(-87.0f), x));
  V n = vround(x * V::set1(1.44269504088896341f));
  // r = x - n*ln2 in two parts so r keeps its low bits.
  V r = fma(n, V::set1(-0.693359375f), x);
  r = fma(n, V::set1(2.12194440e-4f), r);
  // Taylor series of exp(r) to degree 7: error < 1e-8 relative on |r| <= ln2/2.
  V p = V::set1(1.0f / 5040.0f);
  p = fma(p, r, V::set1(1.0f / 720.0f));
  p = fma(p, r, V::set1(1.0f / 120.0f));
  p = fma(p, r, V::set1(1.0f / 24.0f));
  p = fma(p, r, V::set1(1.0f / 6.0f));
  p = fma(p, r, V::set1(0.5f));
  p = fma(p, r, V::set1(1.0f));
  p = fma(p, r, V::set1(1.0f));
  return exp2i_scale(p, n);
}

// Below z = -88 exp(-z) is clamped, so the quotient would stay at 6e-39: return 0 there instead (the
// true value is subnormal or 0), so that sigmoid(-inf) * inf is NaN as in the reference, not inf.
LF_INLINE Vec<float> vsigmoid(Vec<float> z) {
  using V = Vec<float>;
  V s = V::set1(1.0f) / (V::set1(1.0f) + vexp(V::zero() - z));
  return select_lt(z, V::set1(-88.0f), V::zero(), s);
}

// tanh: odd Taylor polynomial near 0 (where 1 - 2/(e^{2x}+1) would cancel), the exp form elsewhere.
LF_INLINE Vec<float> vtanh(Vec<float> z) {
  using V = Vec<float>;
  V a = vabs(z);
  V big = V::set1(1.0f) - V::set1(2.0f) / (vexp(a + a) + V::set1(1.0f));
  V z2 = z * z;
  V p = V::set1(-1382.0f / 155925.0f);
  p = fma(p, z2, V::set1(62.0f / 2835.0f));
  p = fma(p, z2, V::set1(-17.0f / 315.0f));
  p = fma(p, z2, V::set1(2.0f / 15.0f));
  p = fma(p, z2, V::set1(-1.0f / 3.0f));
  V small = fma(p * z2, z, z);
  return select_lt(a, V::set1(0.25f), small, copysign_of(big, z));
}

template <typename F>
LF_INLINE Vec<double> lanewise(Vec<double> x, F f) {
  double buf[Vec<double>::N];
  x.store(buf);
  for (int l = 0; l < Vec<double>::N; ++l) buf[l] = f(buf[l]);
  return Vec<double>::load(buf);
}
LF_INLINE Vec<double> vsigmoid(Vec<double> z) {
  return lanewise(z, [](double v) { return 1.0 / (1.0 + exp(-v)); });
}
LF_INLINE Vec<double> vtanh(Vec<double> z) {
  return lanewise(z, [](double v) { return tanh(v); });
}

// Keras 2 hard sigmoid: clip(0.2 z + 0.5, 0, 1).
template <typename S>
LF_INLINE Vec<S> vhard_sigmoid(Vec<S> z) {
  using V = Vec<S>;
  return vmin(V::set1(S(1)), vmax(V::zero(), fma(z, V::set1(S(0.2)), V::set1(S(0.5)))));
}

// Derivatives from the activation's output y.
template <typename S>
LF_INLINE Vec<S> dsigmoid(Vec<S> y) { return y * (Vec<S>::set1(S(1)) - y); }
// 0.2 where 0 < y < 1 (|y - 1/2| < 1/2), else 0.
template <typename S>
LF_INLINE Vec<S> dhard_sigmoid(Vec<S> y) {
  using V = Vec<S>;
  return select_lt(vabs(y - V::set1(S(0.5))), V::set1(S(0.5)), V::set1(S(0.2)), V::zero());
}
template <typename S>
LF_INLINE Vec<S> dtanh(Vec<S> y) { return Vec<S>::set1(S(1)) - y * y; }

}  // namespace LF_ISA
}  // namespace lstmfast
