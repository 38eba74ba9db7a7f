// LSTM forward and backward on the CPU, for one SIMD level (compiled once per level; see simd.h).
// The equations and the layout are stated once, in lstm.h.
//
// Forward:  one GEMM projects all T*B input rows (x kernel + bias) into the gate buffer; then per
//           step one recurrent product per block of VL hidden units (all four gates of those units
//           in one register tile) with the gate math fused into the tile's epilogue.
// Backward: per step (reverse) the pointwise gate gradients, then the recurrent product
//           dz recurrent_kernel^T; threads own the same hidden units in both phases, so one barrier
//           per step. Weight and input gradients are three large GEMMs after the loop.
// Threads:  one OpenMP region for the whole call; hidden units are split across threads.
#include "gemm.h"

namespace lstmfast {
namespace LF_ISA {

namespace {

// Threads worth using for a problem of this many multiply-adds (fork/barrier cost ~ microseconds).
int threads_for(int requested, double fmas) {
  if (requested < 1) requested = 1;
  if (fmas < 2.0e5) return 1;
  return requested;
}

template <typename T>
struct Lanes {
  using V = Vec<T>;
  int n;  // valid lanes
  LF_INLINE V load(const T* p) const { return n == V::N ? V::load(p) : V::load(p, n); }
  LF_INLINE void store(V v, T* p) const {
    if (n == V::N)
      v.store(p);
    else
      v.store(p, n);
  }
};

template <typename T>
LF_INLINE Vec<T> recurrent_act(Vec<T> z, bool hard) {
  return hard ? vhard_sigmoid(z) : vsigmoid(z);
}
template <typename T>
LF_INLINE Vec<T> recurrent_act_grad(Vec<T> y, bool hard) {
  return hard ? dhard_sigmoid(y) : dsigmoid(y);
}

// ---- forward ---------------------------------------------------------------------------------

template <typename T>
struct ForwardStep {
  using V = Vec<T>;
  static constexpr int VL = V::N;
  const ForwardArgs<T>* a;
  const T* G;        // pre-activations of steps [g_t0, ...) as [.., B, 4H] (training: all of a->gates)
  int64_t g_t0;      // first step held in G
  const T* Rp;       // packed recurrent kernel, per unit block [H][4][VL]
  const T* A;        // [B,H] h_{t-1} (masked when a mask is given)
  T* hm_next;        // [B,H] masked h_t, or null
  int64_t t, u, r0;  // step, unit block, first batch row

  template <int MR, int NV>
  LF_INLINE void run() {
    static_assert(NV == kNV, "forward tiles always hold the four gates");
    const ForwardArgs<T>& f = *a;
    const int64_t B = f.B, H = f.H, H4 = 4 * H, j0 = u * VL;
    const Lanes<T> L{int(imin(VL, H - j0))};
    const bool hard = f.recurrent_activation == Activation::hard_sigmoid;
    V acc[MR][kNV];
    tile_kernel<T, MR, kNV>(H, A + r0 * H, H, 1, Rp + u * H * 4 * VL, 4 * VL, VL, acc);
    V pi = V::zero(), pf = V::zero(), po = V::zero();
    if (f.peephole) {
      pi = L.load(f.peephole + j0);
      pf = L.load(f.peephole + H + j0);
      po = L.load(f.peephole + 2 * H + j0);
    }
#pragma GCC unroll 1
    for (int r = 0; r < MR; ++r) {
      const int64_t b = r0 + r;
      const int64_t len = f.lengths ? f.lengths[b] : f.T_;
      T* y = f.y + (t * B + b) * H + j0;
      T* c_state = f.c + b * H + j0;
      if (t >= len) {  // padded step: state unchanged, y = 0
        L.store(V::zero(), y);
        if (f.cells) L.store(L.load(c_state), f.cells + (t * B + b) * H + j0);
        continue;
      }
      const T* z = G + ((t - g_t0) * B + b) * H4 + j0;
      V zi = acc[r][0] + L.load(z), zf = acc[r][1] + L.load(z + H);
      V zg = acc[r][2] + L.load(z + 2 * H), zo = acc[r][3] + L.load(z + 3 * H);
      V c_prev = L.load(c_state);
      if (f.peephole) {
        zi = fma(pi, c_prev, zi);
        zf = fma(pf, c_prev, zf);
      }
      V i = recurrent_act(zi, hard), fg = recurrent_act(zf, hard), g = vtanh(zg);
      V c = fma(fg, c_prev, i * g);
      if (f.peephole) zo = fma(po, c, zo);
      V o = recurrent_act(zo, hard);
      V h = o * vtanh(c);
      L.store(c, c_state);
      L.store(h, y);
      if (f.gates) {
        T* gt = f.gates + (t * B + b) * H4 + j0;
        L.store(i, gt);
        L.store(fg, gt + H);
        L.store(g, gt + 2 * H);
        L.store(o, gt + 3 * H);
        L.store(c, f.cells + (t * B + b) * H + j0);
      }
      if (hm_next) L.store(h * L.load(f.recurrent_dropout_mask + b * H + j0), hm_next + b * H + j0);
      if (t == len - 1) L.store(h, f.h + b * H + j0);
    }
  }
};

template <typename T>
void forward_impl(const ForwardArgs<T>& f, int threads) {
  using V = Vec<T>;
  constexpr int VL = V::N;
  const int64_t T_ = f.T_, B = f.B, X = f.X, H = f.H, H4 = 4 * H;
  if (B == 0 || H == 0) return;
  const int64_t BH = B * H;
  if (T_ == 0) {
    for (int64_t k = 0; k < BH; ++k) {
      f.h[k] = f.h0 ? f.h0[k] : T(0);
      f.c[k] = f.c0 ? f.c0[k] : T(0);
    }
    return;
  }
  const int64_t nblocks = ceil_div(H, VL);
  // Training keeps every step's gates (the cache). Inference projects a chunk of steps at a time
  // into a buffer of at most kChunkRows rows (or one step), so its memory does not grow with T;
  // chunks are large enough that re-packing the kernel for each costs little (~2 %).
  constexpr int64_t kChunkRows = 1024;
  const int64_t chunk = f.gates ? T_ : imin(T_, imax(1, kChunkRows / B));
  Scratch<T> g_scratch(f.gates ? 0 : chunk * B * H4);
  T* G = f.gates ? f.gates : g_scratch.get();
  Scratch<T> Rp(nblocks * H * 4 * VL);
  Scratch<T> zeros(f.h0 ? 0 : BH);
  Scratch<T> hm(f.recurrent_dropout_mask ? 2 * BH : 0);
  const int nt = threads_for(threads, double(T_) * B * H4 * (X + H));
  GemmBuffers<T> gb(nt, chunk * B, H4, X);  // the input projection
  if (!f.h0)
    for (int64_t k = 0; k < BH; ++k) zeros.get()[k] = T(0);
  const T* h_init = f.h0 ? f.h0 : zeros.get();

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t u0, u1;
    split_range(nblocks, team, tid, u0, u1);
    // Pack this thread's unit blocks of recurrent_kernel: block u, element (k, gate, v).
    for (int64_t u = u0; u < u1; ++u) {
      T* dst = Rp.get() + u * H * 4 * VL;
      for (int64_t k = 0; k < H; ++k)
        for (int gate = 0; gate < 4; ++gate)
          for (int v = 0; v < VL; ++v) {
            int64_t j = u * VL + v;
            dst[(k * 4 + gate) * VL + v] = j < H ? f.recurrent_kernel[k * H4 + gate * H + j] : T(0);
          }
    }
    // Initial state for this thread's units.
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = imin(u0 * VL, H); j < imin(u1 * VL, H); ++j) {
        const int64_t k = b * H + j;
        f.h[k] = h_init[k];
        f.c[k] = f.c0 ? f.c0[k] : T(0);
        if (f.recurrent_dropout_mask) hm.get()[k] = h_init[k] * f.recurrent_dropout_mask[k];
      }
    for (int64_t t0 = 0; t0 < T_; t0 += chunk) {
      const int64_t t1 = imin(T_, t0 + chunk);
      // Input projection of steps [t0, t1). It ends with a barrier, which publishes the state set
      // up above and, for a later chunk, orders the overwrite after every read of the last one.
      GemmArgs<T> proj;
      proj.M = (t1 - t0) * B;
      proj.N = H4;
      proj.K = X;
      proj.A = f.x + t0 * B * X;
      proj.lda = X;
      proj.B = f.kernel;
      proj.ldb = H4;
      proj.C = f.gates ? G + t0 * B * H4 : G;
      proj.ldc = H4;
      proj.bias = f.bias;
      gemm_team(proj, gb.b.get(), gb.a_for(tid), tid, team);

      for (int64_t t = t0; t < t1; ++t) {
        ForwardStep<T> step{&f, G, f.gates ? 0 : t0, Rp.get(), nullptr, nullptr, t, 0, 0};
        if (f.recurrent_dropout_mask) {
          step.A = hm.get() + (t % 2) * BH;
          step.hm_next = hm.get() + ((t + 1) % 2) * BH;
        } else {
          step.A = t == 0 ? h_init : f.y + (t - 1) * BH;
        }
        for (int64_t u = u0; u < u1; ++u) {
          step.u = u;
          for (int64_t r0 = 0; r0 < B; r0 += kMR) {
            step.r0 = r0;
            with_rows<kNV>(int(imin(kMR, B - r0)), step);
          }
        }
        if (team > 1) {
#pragma omp barrier
        }
      }
    }
  }
}

// ---- backward --------------------------------------------------------------------------------

// Recurrent part of dh_{t-1}: dh_carry[rows, units] += (dz_t recurrent_kernel^T) (* mask).
template <typename T>
struct BackwardStep {
  using V = Vec<T>;
  static constexpr int VL = V::N;
  const BackwardArgs<T>* a;
  const T* RTp;   // packed recurrent_kernel^T, per unit block [4H][VL]
  const T* dz;    // [B,4H] gate gradients of step t
  T* dh_carry;    // [B,H]
  int64_t u, r0;  // first unit block, first row

  template <int MR, int NV>
  LF_INLINE void run() {
    const BackwardArgs<T>& g = *a;
    const int64_t H = g.H, H4 = 4 * H;
    V acc[MR][NV];
    tile_kernel<T, MR, NV>(H4, dz + r0 * H4, H4, 1, RTp + u * H4 * VL, VL, H4 * VL, acc);
#pragma GCC unroll 1
    for (int r = 0; r < MR; ++r) {
      const int64_t b = r0 + r;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const int64_t j0 = (u + v) * VL;
        const Lanes<T> L{int(imin(VL, H - j0))};
        T* p = dh_carry + b * H + j0;
        V d = acc[r][v];
        if (g.recurrent_dropout_mask) d = d * L.load(g.recurrent_dropout_mask + b * H + j0);
        L.store(L.load(p) + d, p);
      }
    }
  }
};

template <typename T>
void backward_impl(const BackwardArgs<T>& g, int threads) {
  using V = Vec<T>;
  constexpr int VL = V::N;
  const int64_t T_ = g.T_, B = g.B, X = g.X, H = g.H, H4 = 4 * H;
  const int64_t BH = B * H, TB = T_ * B;
  // Degenerate sizes: no step contributes, state gradients pass straight through.
  if (T_ == 0 || B == 0 || H == 0) {
    for (int64_t k = 0; k < TB * X; ++k) g.dx[k] = T(0);
    for (int64_t k = 0; k < X * H4; ++k) g.dkernel[k] = T(0);
    for (int64_t k = 0; k < H * H4; ++k) g.drecurrent_kernel[k] = T(0);
    if (g.dbias)
      for (int64_t k = 0; k < H4; ++k) g.dbias[k] = T(0);
    if (g.dpeephole)
      for (int64_t k = 0; k < 3 * H; ++k) g.dpeephole[k] = T(0);
    for (int64_t k = 0; k < BH; ++k) {
      g.dh0[k] = g.dh ? g.dh[k] : T(0);
      g.dc0[k] = g.dc ? g.dc[k] : T(0);
    }
    return;
  }
  const int64_t nblocks = ceil_div(H, VL);
  Scratch<T> RTp(nblocks * H4 * VL);
  Scratch<T> dpeep(g.peephole ? 3 * H : 0);
  const int nt = threads_for(threads, 3.0 * T_ * B * H4 * (X + H));
  GemmBuffers<T> gb(nt, imax(TB, imax(X, H)), imax(H4, X), imax(TB, H4));  // dkernel, drecurrent_kernel, dx
  const bool hard = g.recurrent_activation == Activation::hard_sigmoid;
  T* dz_all = g.gates;  // gate gradients overwrite the activated gates, step by step

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t u0, u1;
    split_range(nblocks, team, tid, u0, u1);
    const int64_t j_begin = imin(u0 * VL, H), j_end = imin(u1 * VL, H);
    // Pack recurrent_kernel^T for this thread's unit blocks: block u, element (n, v) = R[u*VL+v, n].
    for (int64_t u = u0; u < u1; ++u) {
      T* dst = RTp.get() + u * H4 * VL;
      for (int64_t n = 0; n < H4; ++n)
        for (int v = 0; v < VL; ++v) {
          int64_t j = u * VL + v;
          dst[n * VL + v] = j < H ? g.recurrent_kernel[j * H4 + n] : T(0);
        }
    }
    // dh0 and dc0 carry the state gradients backwards through time.
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = j_begin; j < j_end; ++j) {
        g.dh0[b * H + j] = g.dh ? g.dh[b * H + j] : T(0);
        g.dc0[b * H + j] = g.dc ? g.dc[b * H + j] : T(0);
      }
    if (g.peephole)
      for (int k = 0; k < 3; ++k)
        for (int64_t j = j_begin; j < j_end; ++j) dpeep.get()[k * H + j] = T(0);

    for (int64_t t = T_ - 1; t >= 0; --t) {
      // Phase 1: pointwise gate gradients for this thread's units.
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t j0 = u * VL;
        const Lanes<T> L{int(imin(VL, H - j0))};
        V pi = V::zero(), pf = V::zero(), po = V::zero(), dpi = V::zero(), dpf = V::zero(), dpo = V::zero();
        if (g.peephole) {
          pi = L.load(g.peephole + j0);
          pf = L.load(g.peephole + H + j0);
          po = L.load(g.peephole + 2 * H + j0);
          dpi = L.load(dpeep.get() + j0);
          dpf = L.load(dpeep.get() + H + j0);
          dpo = L.load(dpeep.get() + 2 * H + j0);
        }
        for (int64_t b = 0; b < B; ++b) {
          T* gt = g.gates + (t * B + b) * H4 + j0;
          const int64_t len = g.lengths ? g.lengths[b] : T_;
          if (t >= len) {  // padded step: no gate gradient; dh, dc pass through unchanged
            L.store(V::zero(), gt);
            L.store(V::zero(), gt + H);
            L.store(V::zero(), gt + 2 * H);
            L.store(V::zero(), gt + 3 * H);
            continue;
          }
          T* dh_carry = g.dh0 + b * H + j0;
          T* dc_carry = g.dc0 + b * H + j0;
          V i = L.load(gt), f = L.load(gt + H), gg = L.load(gt + 2 * H), o = L.load(gt + 3 * H);
          V c = L.load(g.cells + (t * B + b) * H + j0);
          V c_prev = t > 0 ? L.load(g.cells + ((t - 1) * B + b) * H + j0)
                           : (g.c0 ? L.load(g.c0 + b * H + j0) : V::zero());
          V dh = L.load(dh_carry);
          if (g.dy) dh = dh + L.load(g.dy + (t * B + b) * H + j0);
          V tc = vtanh(c);
          V dzo = dh * tc * recurrent_act_grad(o, hard);
          V dc = fma(dh * o, dtanh(tc), L.load(dc_carry));
          if (g.peephole) dc = fma(dzo, po, dc);
          V dzi = dc * gg * recurrent_act_grad(i, hard);
          V dzf = dc * c_prev * recurrent_act_grad(f, hard);
          V dzg = dc * i * dtanh(gg);
          V dc_prev = dc * f;
          if (g.peephole) {
            dc_prev = fma(dzi, pi, fma(dzf, pf, dc_prev));
            dpi = fma(dzi, c_prev, dpi);
            dpf = fma(dzf, c_prev, dpf);
            dpo = fma(dzo, c, dpo);
          }
          L.store(dc_prev, dc_carry);
          L.store(V::zero(), dh_carry);  // consumed; phase 2 adds the recurrent part
          L.store(dzi, gt);
          L.store(dzf, gt + H);
          L.store(dzg, gt + 2 * H);
          L.store(dzo, gt + 3 * H);
        }
        if (g.peephole) {
          L.store(dpi, dpeep.get() + j0);
          L.store(dpf, dpeep.get() + H + j0);
          L.store(dpo, dpeep.get() + 2 * H + j0);
        }
      }
      if (team > 1) {
#pragma omp barrier
      }
      // Phase 2: dh_{t-1} += dz_t recurrent_kernel^T for this thread's units (needs all of dz_t).
      BackwardStep<T> step{&g, RTp.get(), dz_all + t * B * H4, g.dh0, 0, 0};
      for (int64_t u = u0; u < u1; u += kNV) {
        step.u = u;
        const int nv = int(imin(kNV, u1 - u));
        for (int64_t r0 = 0; r0 < B; r0 += kMR) {
          step.r0 = r0;
          with_tile(int(imin(kMR, B - r0)), nv, step);
        }
      }
    }
    if (team > 1) {
#pragma omp barrier
    }

    // Weight and input gradients: large GEMMs over all T*B rows.
    GemmArgs<T> dk;  // dkernel = x^T dz
    dk.trans_a = true;
    dk.M = X;
    dk.N = H4;
    dk.K = TB;
    dk.A = g.x;
    dk.lda = X;
    dk.B = dz_all;
    dk.ldb = H4;
    dk.C = g.dkernel;
    dk.ldc = H4;
    gemm_team(dk, gb.b.get(), gb.a_for(tid), tid, team);

    // drecurrent_kernel = [h0; y_0..y_{T-2}]^T dz (each h masked like the forward product).
    GemmArgs<T> dr;
    dr.trans_a = true;
    dr.M = H;
    dr.N = H4;
    dr.ldb = H4;
    dr.C = g.drecurrent_kernel;
    dr.ldc = H4;
    dr.lda = H;
    dr.a_scale = g.recurrent_dropout_mask;
    dr.scale_period = B;
    dr.lds = H;
    bool written = false;
    if (g.h0) {
      dr.K = B;
      dr.A = g.h0;
      dr.B = dz_all;
      gemm_team(dr, gb.b.get(), gb.a_for(tid), tid, team);
      written = true;
    }
    if (T_ > 1) {
      dr.K = (T_ - 1) * B;
      dr.A = g.y;
      dr.B = dz_all + B * H4;
      dr.accumulate = written;
      gemm_team(dr, gb.b.get(), gb.a_for(tid), tid, team);
      written = true;
    }
    if (!written) {
      int64_t k0, k1;
      split_range(H * H4, team, tid, k0, k1);
      for (int64_t k = k0; k < k1; ++k) g.drecurrent_kernel[k] = T(0);
    }

    GemmArgs<T> dxa;  // dx = dz kernel^T
    dxa.trans_b = true;
    dxa.M = TB;
    dxa.N = X;
    dxa.K = H4;
    dxa.A = dz_all;
    dxa.lda = H4;
    dxa.B = g.kernel;
    dxa.ldb = H4;
    dxa.C = g.dx;
    dxa.ldc = X;
    gemm_team(dxa, gb.b.get(), gb.a_for(tid), tid, team);

    // dbias = column sums of dz, each column summed in row order by one thread.
    if (g.dbias) {
      const int64_t ncb = ceil_div(H4, VL);
      int64_t q0, q1;
      split_range(ncb, team, tid, q0, q1);
      for (int64_t q = q0; q < q1; ++q) {
        const Lanes<T> L{int(imin(VL, H4 - q * VL))};
        V s = V::zero();
        for (int64_t m = 0; m < TB; ++m) s = s + L.load(dz_all + m * H4 + q * VL);
        L.store(s, g.dbias + q * VL);
      }
    }
    if (g.dpeephole)
      for (int k = 0; k < 3; ++k)
        for (int64_t j = j_begin; j < j_end; ++j) g.dpeephole[k * H + j] = dpeep.get()[k * H + j];
  }
}

template <typename T>
void gemm_impl(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
               int64_t ldb, T* C, int64_t ldc, bool accumulate, int threads) {
  GemmArgs<T> g;
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.M = M;
  g.N = N;
  g.K = K;
  g.A = A;
  g.lda = lda;
  g.B = B;
  g.ldb = ldb;
  g.C = C;
  g.ldc = ldc;
  g.accumulate = accumulate;
  const int nt = threads_for(threads, double(M) * N * K);
  GemmBuffers<T> gb(nt, M, N, K);
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
    gemm_team(g, gb.b.get(), gb.a_for(tid), tid, omp_get_num_threads());
  }
}

}  // namespace

void forward(const ForwardArgs<float>& a, int threads) { forward_impl(a, threads); }
void forward(const ForwardArgs<double>& a, int threads) { forward_impl(a, threads); }
void backward(const BackwardArgs<float>& a, int threads) { backward_impl(a, threads); }
void backward(const BackwardArgs<double>& a, int threads) { backward_impl(a, threads); }
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float* C, int64_t ldc, bool acc, int threads) {
  gemm_impl(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, acc, threads);
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
          int64_t ldb, double* C, int64_t ldc, bool acc, int threads) {
  gemm_impl(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, acc, threads);
}

}  // namespace LF_ISA
}  // namespace lstmfast
