// Per-element math of one LSTM time step, forward and backward: the body of the CUDA kernels in
// lstm_kernels.cu. Layout and equations are those of cpp/lstm.h (stated once there).
//
// Every function here is plain C++ marked LF_HD (lf_math.cuh), so the tests check this exact math
// on machines without a GPU.
// Index n = b*H + j names one (batch row b, hidden unit j) pair; one CUDA thread owns one n.
#pragma once

#include "lf_math.cuh"

namespace lstmfast {

// Recurrent activation; hard = 1 selects Keras 2's hard_sigmoid clip(0.2 z + 0.5, 0, 1).
template <typename T>
LF_HD T recurrent_activation(T z, int hard) {
  if (hard) {
    const T v = T(0.2) * z + T(0.5);
    return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);  // comparisons, not fmin/fmax: NaN stays NaN
  }
  return T(1) / (T(1) + lf_exp(-z));  // exp overflows to inf for z << 0: 1/inf = 0, no NaN
}

// Its derivative from the output y (the cached gate), as the backward pass only has outputs.
template <typename T>
LF_HD T recurrent_activation_grad(T y, int hard) {
  if (hard) return (y > T(0) && y < T(1)) ? T(0.2) : T(0);
  return y * (T(1) - y);
}

// One forward step for element n = b*H + j. z_in holds the input projection x_t kernel of every
// step, z_rec the recurrent product hm_{t-1} recurrent_kernel of this step; the bias is added here
// (saves a pass over [T,B,4H]). gates may alias z_in: each element is read before this thread
// writes it, and no other thread touches it.
template <typename T>
LF_HD void lstm_forward_element(long long n, long long t, long long T_, long long B, long long H, int hard,
                                const T* z_in,        // [T,B,4H]
                                const T* z_rec,       // [B,4H]
                                const T* bias,        // [4H]  or null (zeros)
                                const T* peephole,    // [3,H] or null
                                const int* lengths,   // [B]   or null (all T)
                                const T* mask,        // [B,H] or null
                                T* h,                 // [B,H] in: h_{t-1}; out: h_t (unchanged at padded rows)
                                T* c,                 // [B,H] in: c_{t-1}; out: c_t (unchanged at padded rows)
                                T* hm,                // [B,H] out: h_t * mask at valid rows; null without mask
                                T* y,                 // [T,B,H] out: row t (0 at padded rows)
                                T* gates,             // [T,B,4H] out: activated i, f, g, o at step t, or null
                                T* cells) {           // [T,B,H]  out: c_t (carried through padding), or null
  const long long b = n / H, j = n - b * H;
  const long long H4 = 4 * H;
  const long long len = lengths ? (long long)lengths[b] : T_;
  const long long row = t * B + b;  // row of [T,B,·] arrays
  if (t >= len) {  // padded step: state unchanged, y = 0
    y[row * H + j] = T(0);
    if (cells) cells[row * H + j] = c[n];
    return;
  }
  const T* zx = z_in + row * H4;
  const T* zr = z_rec + b * H4;
  T zi = zx[j] + zr[j];
  T zf = zx[H + j] + zr[H + j];
  T zg = zx[2 * H + j] + zr[2 * H + j];
  T zo = zx[3 * H + j] + zr[3 * H + j];
  if (bias) {
    zi += bias[j];
    zf += bias[H + j];
    zg += bias[2 * H + j];
    zo += bias[3 * H + j];
  }
  const T c_prev = c[n];
  if (peephole) {
    zi += peephole[j] * c_prev;
    zf += peephole[H + j] * c_prev;
  }
  const T i = recurrent_activation(zi, hard);
  const T f = recurrent_activation(zf, hard);
  const T g = lf_tanh(zg);
  const T c_new = f * c_prev + i * g;
  if (peephole) zo += peephole[2 * H + j] * c_new;  // o sees c_t, not c_{t-1}
  const T o = recurrent_activation(zo, hard);
  const T h_new = o * lf_tanh(c_new);
  c[n] = c_new;
  h[n] = h_new;
  y[row * H + j] = h_new;
  if (hm) hm[n] = h_new * mask[n];
  if (gates) {
    T* gt = gates + row * H4;
    gt[j] = i;
    gt[H + j] = f;
    gt[2 * H + j] = g;
    gt[3 * H + j] = o;
  }
  if (cells) cells[row * H + j] = c_new;
}

// One backward step (t descending) for element n = b*H + j. Turns the activated gates of step t
// into the gate gradients dz_t in place and moves the state gradients from step t to step t-1.
// dh_rec = dz_{t+1} recurrent_kernel^T from the previous (later) step's GEMM; the dropout mask
// scales it here, because the forward product saw h_t * mask.
template <typename T>
LF_HD void lstm_backward_element(long long n, long long t, long long T_, long long B, long long H, int hard,
                                 T* gates,             // [T,B,4H] in: activated gates; out at step t: dz_t
                                 const T* cells,       // [T,B,H]  c_t per step
                                 const T* c0,          // [B,H]  or null: c_{-1}
                                 const T* peephole,    // [3,H]  or null
                                 const int* lengths,   // [B]    or null (all T)
                                 const T* mask,        // [B,H]  or null
                                 const T* dy,          // [T,B,H] or null
                                 const T* dh_rec,      // [B,H]  or null (the last step has no later step)
                                 T* dh,                // [B,H]  in: dL/dh_t except dh_rec, dy; out: 0 at valid rows
                                 T* dc) {              // [B,H]  in: dL/dc_t; out: dL/dc_{t-1}
  const long long b = n / H, j = n - b * H;
  const long long H4 = 4 * H;
  const long long len = lengths ? (long long)lengths[b] : T_;
  const long long row = t * B + b;
  T* gt = gates + row * H4;
  if (t >= len) {  // padded step: no gate gradient; dh and dc pass through unchanged
    gt[j] = T(0);
    gt[H + j] = T(0);
    gt[2 * H + j] = T(0);
    gt[3 * H + j] = T(0);
    return;
  }
  const T i = gt[j], f = gt[H + j], g = gt[2 * H + j], o = gt[3 * H + j];
  const T c = cells[row * H + j];
  const T c_prev = t > 0 ? cells[(row - B) * H + j] : (c0 ? c0[n] : T(0));
  T dh_t = dh[n];
  if (dh_rec) dh_t += mask ? dh_rec[n] * mask[n] : dh_rec[n];
  if (dy) dh_t += dy[row * H + j];
  const T tanh_c = lf_tanh(c);
  const T dzo = dh_t * tanh_c * recurrent_activation_grad(o, hard);
  T dc_t = dc[n] + dh_t * o * (T(1) - tanh_c * tanh_c);
  T pi = T(0), pf = T(0);
  if (peephole) {
    pi = peephole[j];
    pf = peephole[H + j];
    dc_t += dzo * peephole[2 * H + j];  // o saw c_t through p_o
  }
  const T dzi = dc_t * g * recurrent_activation_grad(i, hard);
  const T dzf = dc_t * c_prev * recurrent_activation_grad(f, hard);
  const T dzg = dc_t * i * (T(1) - g * g);
  dc[n] = dc_t * f + dzi * pi + dzf * pf;
  dh[n] = T(0);  // consumed; the next step adds dz_t recurrent_kernel^T through dh_rec
  gt[j] = dzi;
  gt[H + j] = dzf;
  gt[2 * H + j] = dzg;
  gt[3 * H + j] = dzo;
}

}  // namespace lstmfast
