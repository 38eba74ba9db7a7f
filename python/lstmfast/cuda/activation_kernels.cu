// CUDA kernels of the layer activations: one launch computes an elementwise activation or its
// gradient over a whole array (activation_forward / activation_backward, the function chosen by
// its code), and one launch a softmax over the last axis or its gradient (one warp per row). The
// per-element math is activation_rules.cuh. Loaded by _kernels.py with cupy.RawModule;
// lstmfast.cuda.activations checks every argument (CuPy checks none): int64 scalars for
// `long long`, int32 for `int`, C-contiguous arrays of T.
#include "activation_rules.cuh"
#include "lf_random.cuh"
#include "loss_rules.cuh"

constexpr int kActivationThreads = 256;  // blockDim.x of every kernel here
constexpr int kWarp = 32;

// y[i] = f(x[i]), i < n; grid-stride, any grid.
template <typename T>
__global__ void activation_forward(long long n, int code,
                                   const T* x,   // [n]
                                   T* y) {       // [n] out (may be x)
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    y[i] = lstmfast::activation_value<T>(code, x[i]);
}

// dx[i] = f'(x[i]) dy[i], from x, y = f(x) and dy; grid-stride, any grid.
template <typename T>
__global__ void activation_backward(long long n, int code,
                                    const T* x,    // [n]
                                    const T* y,    // [n]
                                    const T* dy,   // [n]
                                    T* dx) {       // [n] out (may be dy)
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    dx[i] = lstmfast::activation_grad<T>(code, x[i], y[i], dy[i]);
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int s = kWarp / 2; s > 0; s /= 2) {
    const T o = __shfl_xor_sync(0xffffffffu, v, s);
    v = (o > v || o != o) ? o : v;  // NaN wins, as np.max
  }
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int s = kWarp / 2; s > 0; s /= 2) v += __shfl_xor_sync(0xffffffffu, v, s);
  return v;
}

// y = exp(x - max) / sum over each row of cols elements; one warp per row, kActivationThreads / 32
// rows per block.
template <typename T>
__global__ void softmax_forward(long long rows, long long cols,
                                const T* x,   // [rows, cols]
                                T* y) {       // [rows, cols] out (may be x)
  const long long row = (long long)blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= rows) return;  // whole warps leave together
  const int lane = threadIdx.x % kWarp;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  T m = xr[0];
  for (long long c = lane; c < cols; c += kWarp) m = (xr[c] > m || xr[c] != xr[c]) ? xr[c] : m;
  m = warp_max(m);
  T s = T(0);
  for (long long c = lane; c < cols; c += kWarp) {
    const T e = lstmfast::softmax_exp(xr[c], m);
    yr[c] = e;
    s += e;
  }
  s = warp_sum(s);
  for (long long c = lane; c < cols; c += kWarp) yr[c] = yr[c] / s;
}

// dx = y (dy - sum(dy y)) over each row; one warp per row.
template <typename T>
__global__ void softmax_backward(long long rows, long long cols,
                                 const T* y,    // [rows, cols]
                                 const T* dy,   // [rows, cols]
                                 T* dx) {       // [rows, cols] out (may be dy)
  const long long row = (long long)blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= rows) return;
  const int lane = threadIdx.x % kWarp;
  const T* yr = y + row * cols;
  const T* gr = dy + row * cols;
  T* dr = dx + row * cols;
  T dot = T(0);
  for (long long c = lane; c < cols; c += kWarp) dot += gr[c] * yr[c];
  dot = warp_sum(dot);
  for (long long c = lane; c < cols; c += kWarp) dr[c] = lstmfast::softmax_grad(yr[c], gr[c], dot);
}

// An inverted-dropout mask: keep[i] = scale where the uniform of element i of draw *offset is
// >= rate, else 0 (lf_random.cuh: Philox4x32-10, key (key0, key1), four elements per counter).
// Then *offset += 1, by the last block to finish (every block has read it by then), so the next
// launch draws anew: the generator's state lives on the device, and a CUDA graph replaying this
// launch draws a new mask each time. Grid-stride over groups of four elements, any grid.
template <typename T>
__global__ void dropout_keep(long long n, double rate, double scale, unsigned int key0, unsigned int key1,
                             unsigned long long* offset,  // [1] the generator's draws so far
                             unsigned int* done,          // [1] blocks finished: zero between launches
                             T* keep) {                   // [n] out
  const unsigned long long draw = *offset;
  const T s = T(scale);
  for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g * 4 < n; g += (long long)gridDim.x * blockDim.x) {
    const lstmfast::Philox4 r = lstmfast::dropout_words((unsigned long long)g, draw, key0, key1);
    for (int j = 0; j < 4 && g * 4 + j < n; ++j) keep[g * 4 + j] = lstmfast::dropout_value<T>(r.w[j], rate, s);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(done, 1u) == gridDim.x - 1) {
      *offset = draw + 1;
      *done = 0;
    }
  }
}

// Binary crossentropy over rows of cols elements (probabilities p, or logits when from_logits):
// values[r] = the row's loss (mean over its elements), grad = d values[r] / d p, unscaled by the
// reduction (losses.py scales it). One warp per row.
template <typename T>
__global__ void binary_crossentropy(long long rows, long long cols, int from_logits, double eps, double one_minus_eps,
                                    const T* p,      // [rows, cols]
                                    const T* t,      // [rows, cols] targets
                                    T* values,       // [rows] out
                                    T* grad) {       // [rows, cols] out
  const long long row = (long long)blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= rows) return;
  const int lane = threadIdx.x % kWarp;
  const T C = T(cols), lo = T(eps), hi = T(one_minus_eps);
  T sum = T(0);
  for (long long c = lane; c < cols; c += kWarp) {
    const long long i = row * cols + c;
    sum += from_logits ? lstmfast::bce_logit_term(p[i], t[i], C, grad + i)
                       : lstmfast::bce_probability_term(p[i], t[i], lo, hi, C, grad + i);
  }
  sum = warp_sum(sum);
  if (lane == 0) values[row] = from_logits ? sum / C : -sum / C;
}

// Sparse categorical crossentropy over rows of cols classes (probabilities p, renormalised and
// clipped as Keras does, or logits when from_logits) with one integer label per row (checked on
// the host): values[r] = the row's loss, grad = d values[r] / d p. One warp per row.
template <typename T>
__global__ void sparse_crossentropy(long long rows, long long cols, int from_logits, double eps, double one_minus_eps,
                                    const T* p,                  // [rows, cols]
                                    const long long* labels,     // [rows] in [0, cols)
                                    T* values,                   // [rows] out
                                    T* grad) {                   // [rows, cols] out
  const long long row = (long long)blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= rows) return;
  const int lane = threadIdx.x % kWarp;
  const T* pr = p + row * cols;
  T* gr = grad + row * cols;
  const long long label = labels[row];
  if (from_logits) {  // logsumexp(x) - x_label; softmax(x) - one_hot(label)
    T m = pr[0];
    for (long long c = lane; c < cols; c += kWarp) m = lstmfast::nan_max(pr[c], m);
    m = warp_max(m);
    T se = T(0);
    for (long long c = lane; c < cols; c += kWarp) {
      const T e = lstmfast::lf_exp(pr[c] - m);
      gr[c] = e;
      se += e;
    }
    se = warp_sum(se);
    for (long long c = lane; c < cols; c += kWarp) gr[c] = c == label ? gr[c] / se - T(1) : gr[c] / se;
    if (lane == 0) values[row] = (lstmfast::lf_log(se) + m) - pr[label];
    return;
  }
  // q = p_label / s, qc = clip(q); -log(qc); u = [q == qc] / (qc s); d p_c = u q - u [c == label]
  T s = T(0);
  for (long long c = lane; c < cols; c += kWarp) s += pr[c];
  s = warp_sum(s);
  const T q = pr[label] / s;
  const T qc = lstmfast::nan_min(lstmfast::nan_max(q, T(eps)), T(one_minus_eps));
  const T u = T(q == qc ? 1 : 0) / (qc * s);
  const T uq = u * q;
  for (long long c = lane; c < cols; c += kWarp) gr[c] = c == label ? uq - u : uq;
  if (lane == 0) values[row] = -lstmfast::lf_log(qc);
}
