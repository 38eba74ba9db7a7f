// CUDA kernels of the GPU path: one fused pointwise kernel per time step, forward and backward.
// The GEMMs around them (input projection, recurrent products, weight gradients) go through cuBLAS
// via CuPy; see ops.py beside this file for the order of calls. Templated on T = float or double,
// loaded by _kernels.py with cupy.RawModule(name_expressions=["lstm_forward_step<float>", ...]).
//
// Launch: 1-D grid, one thread per element n = b*H + j of [B,H], n < B*H; any block size.
// Argument lists are those of lstm_forward_element / lstm_backward_element in lstm_pointwise.cuh,
// without n; CuPy checks none of them: the Python wrapper passes contiguous arrays of the right
// dtype and size, int64 scalars for `long long`, int32 for `int`, and None for a null pointer.
#include "lstm_pointwise.cuh"

template <typename T>
__global__ void lstm_forward_step(long long t, long long T_, long long B, long long H, int hard, const T* z_in,
                                  const T* z_rec, const T* bias, const T* peephole, const int* lengths,
                                  const T* mask, T* h, T* c, T* hm, T* y, T* gates, T* cells) {
  const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (n < B * H)
    lstmfast::lstm_forward_element<T>(n, t, T_, B, H, hard, z_in, z_rec, bias, peephole, lengths, mask, h, c, hm,
                                      y, gates, cells);
}

template <typename T>
__global__ void lstm_backward_step(long long t, long long T_, long long B, long long H, int hard, T* gates,
                                   const T* cells, const T* c0, const T* peephole, const int* lengths,
                                   const T* mask, const T* dy, const T* dh_rec, T* dh, T* dc) {
  const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (n < B * H)
    lstmfast::lstm_backward_element<T>(n, t, T_, B, H, hard, gates, cells, c0, peephole, lengths, mask, dy,
                                       dh_rec, dh, dc);
}

// ---------------------------------------------------------------------------------------------
// Sequence kernels: all T steps in one launch, for small batches, where the step path is bound by
// two launches per step and cuBLAS's skinny GEMMs. Each block owns U consecutive hidden units
// j0 .. j0+U-1 and keeps its slice of recurrent_kernel in shared memory for the whole sequence;
// the blocks meet at a grid barrier after every step. They must all be resident at once: the
// wrapper launches them cooperatively (the driver refuses rather than deadlocks when they do not
// fit), at most one block per SM. Launch: grid = ceil(H / U) blocks, blockDim a multiple of 32,
// dynamic shared memory as stated per kernel (the wrapper computes the same sizes). Data written
// by other blocks in this launch is read with __ldcg, past the non-coherent L1.
//
// Each step's product is a small GEMM per block, computed in 4 x 4 register tiles over slices of
// the reduction dimension (float4 / 2 x double2 loads), and the slices' partial sums are added in
// shared memory: rows and columns are padded to multiples of 4 with zeros.
// ---------------------------------------------------------------------------------------------

namespace lstmfast {

__host__ __device__ constexpr long long round4(long long v) { return (v + 3) & ~3LL; }

// Every block waits here until all `blocks` blocks have arrived for the `round`-th time. counter
// starts at 0 (the wrapper zeroes it) and only grows: round r ends when it reaches r * blocks.
__device__ __forceinline__ void grid_barrier(unsigned long long* counter, unsigned long long blocks,
                                             unsigned long long round) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // this block's writes are visible to the grid before it is counted
    atomicAdd(counter, 1ULL);
    const unsigned long long target = round * blocks;
    while (*(volatile unsigned long long*)counter < target) {
    }
    __threadfence();
  }
  __syncthreads();
}

// Four consecutive values, 16-byte aligned (32 for double).
template <typename T> struct Quad;
template <> struct Quad<float> {
  float v[4];
  __device__ __forceinline__ void load(const float* p) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  }
  __device__ __forceinline__ void load_cg(const float* p) {
    const float4 q = __ldcg(reinterpret_cast<const float4*>(p));
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  }
  __device__ __forceinline__ void store(float* p) const {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
  __device__ __forceinline__ void zero() { v[0] = v[1] = v[2] = v[3] = 0.0f; }
};
template <> struct Quad<double> {
  double v[4];
  __device__ __forceinline__ void load(const double* p) {
    const double2 a = reinterpret_cast<const double2*>(p)[0], b = reinterpret_cast<const double2*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
  }
  __device__ __forceinline__ void load_cg(const double* p) {
    const double2 a = __ldcg(reinterpret_cast<const double2*>(p)), b = __ldcg(reinterpret_cast<const double2*>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
  }
  __device__ __forceinline__ void store(double* p) const {
    reinterpret_cast<double2*>(p)[0] = make_double2(v[0], v[1]);
    reinterpret_cast<double2*>(p)[1] = make_double2(v[2], v[3]);
  }
  __device__ __forceinline__ void zero() { v[0] = v[1] = v[2] = v[3] = 0.0; }
};

// Copies B rows of H values (global, written by other blocks: __ldcg) into rows of Hp values
// (shared). The loads are what a step waits for, so each thread keeps four in flight.
template <typename T>
__device__ __forceinline__ void stage_rows(T* __restrict__ dst, const T* __restrict__ src, int B, int H, int Hp) {
  if (H == Hp) {  // one contiguous block of B*H values, 4 at a time
    const int quads = B * H / 4, stride = (int)blockDim.x;
    for (int q0 = threadIdx.x; q0 < quads; q0 += 4 * stride) {
      Quad<T> v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u)
        if (q0 + u * stride < quads) v[u].load_cg(src + 4 * (q0 + u * stride));
#pragma unroll
      for (int u = 0; u < 4; ++u)
        if (q0 + u * stride < quads) v[u].store(dst + 4 * (q0 + u * stride));
    }
    return;
  }
  const int total = B * H, stride = (int)blockDim.x;
  for (int i0 = threadIdx.x; i0 < total; i0 += 4 * stride) {
    T v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (i0 + u * stride < total) v[u] = __ldcg(src + i0 + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int i = i0 + u * stride;
      if (i < total) {
        const int b = i / H;
        dst[b * Hp + (i - b * H)] = v[u];
      }
    }
  }
}

// The block's product out[r][q] = sum_k a[r][k] * w[q][k] for r < rows (a multiple of 4) and
// q < cols (a multiple of 4), k < K (a multiple of 4); w is in shared memory ([cols][K]); a is in
// shared memory, or global (A_GLOBAL, read with __ldcg; rows >= a_valid read as 0). Each thread
// takes 4 x 4 tiles and a slice of k; the slices are summed in red. Results are handed to
// store(r, q, value) for every r < rows, q < cols, each by one thread.
template <typename T, bool A_GLOBAL, typename Store>
__device__ __forceinline__ void block_product(const T* a, long long lda, int a_valid, const T* w, int rows,
                                              int cols, int K, T* red, Store store) {
  const int tiles = (rows / 4) * (cols / 4);
  const int slices = tiles >= (int)blockDim.x ? 1 : (int)blockDim.x / tiles;
  const int chunks = K / 4;
  const int lanes = (int)blockDim.x / slices;  // tiles in flight at once
  const int s = (int)threadIdx.x % slices;
  for (int tile = (int)threadIdx.x / slices; tile < tiles; tile += lanes) {
    const int r0 = (tile / (cols / 4)) * 4, q0 = (tile % (cols / 4)) * 4;
    T acc[4][4] = {};
    if ((int)threadIdx.x < lanes * slices) {
      // a's next chunk is loaded before this one is used (global a: hides most of L2's latency).
      Quad<T> next[4];
      auto load_a = [&](int c) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          if (c >= chunks) {
            next[r].zero();
          } else if (A_GLOBAL) {
            if (r0 + r < a_valid) next[r].load_cg(a + (r0 + r) * lda + 4 * c);
            else next[r].zero();
          } else {
            next[r].load(a + (r0 + r) * lda + 4 * c);
          }
        }
      };
      load_a(s);
      for (int c = s; c < chunks; c += slices) {
        Quad<T> x[4], y[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) x[r] = next[r];
        load_a(c + slices);
#pragma unroll
        for (int q = 0; q < 4; ++q) y[q].load(w + (long long)(q0 + q) * K + 4 * c);
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int q = 0; q < 4; ++q)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[r][q] += x[r].v[e] * y[q].v[e];
      }
    }
    T* mine = red + ((long long)tile * slices + s) * 16;
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int q = 0; q < 4; ++q) mine[r * 4 + q] = acc[r][q];
  }
  __syncthreads();
  for (int o = threadIdx.x; o < rows * cols; o += blockDim.x) {
    const int r = o / cols, q = o - r * cols;
    const int tile = (r / 4) * (cols / 4) + q / 4, i = (r % 4) * 4 + q % 4;
    const T* part = red + (long long)tile * slices * 16 + i;
    T sum = T(0);
    for (int p = 0; p < slices; ++p) sum += part[p * 16];
    store(r, q, sum);
  }
  __syncthreads();
}

// Elements of the partial-sum buffer block_product needs for a rows x cols product.
// (ops.py's _reduction_elements is the same formula.)
__host__ __device__ constexpr long long reduction_elements(long long rows, long long cols, long long threads) {
  return (rows / 4) * (cols / 4) >= threads ? (rows / 4) * (cols / 4) * 16
                                            : (threads / ((rows / 4) * (cols / 4))) * ((rows / 4) * (cols / 4)) * 16;
}

}  // namespace lstmfast

// Forward, all steps. Shared memory, in elements of T: w [4U][round4(H)] (the block's columns of
// recurrent_kernel, gate-major: column gate*U + u is unit j0+u of that gate), hs [R][round4(H)]
// (h_{t-1} * mask of R rows at a time: R, a multiple of 4, is round4(B) when every row fits, fewer
// for large batches, whose rows then pass in chunks), and the reduction buffer
// (reduction_elements(R, 4U, blockDim.x)). hin is [2,B,H] scratch:
// hin[t % 2] holds what step t multiplies, written by the owners of its elements during step t-1
// (h0 * mask before step 0). z_rec is [B,4H] scratch: each block writes and reads only its own
// columns. Other arguments as lstm_forward_step's.
template <typename T>
__global__ void lstm_forward_sequence(long long T_, long long B, long long H, int hard, long long U, long long R,
                                      const T* z_in, const T* recurrent_kernel, const T* bias,
                                      const T* peephole, const int* lengths, const T* mask, T* h, T* c,
                                      T* hin, T* z_rec, T* y, T* gates, T* cells,
                                      unsigned long long* barrier) {
  extern __shared__ __align__(16) unsigned char lf_shared_bytes[];
  const int Hp = (int)lstmfast::round4(H), Rp = (int)R, G = 4 * (int)U;
  T* w = reinterpret_cast<T*>(lf_shared_bytes);  // [G][Hp]
  T* hs = w + (long long)G * Hp;                  // [R][Hp]
  T* red = hs + (long long)Rp * Hp;               // reduction_elements(R, G, blockDim.x)
  const long long H4 = 4 * H;
  const long long j0 = (long long)blockIdx.x * U;
  const int units = (int)((H - j0 < U) ? H - j0 : U);
  const unsigned long long blocks = gridDim.x;

  for (int i = threadIdx.x; i < G * Hp; i += blockDim.x) {  // i = k*G + g: row k of recurrent_kernel in runs of U
    const int k = i / G, g = i - k * G, gate = g / (int)U, u = g - gate * (int)U;
    w[(long long)g * Hp + k] = (u < units && k < H) ? recurrent_kernel[k * H4 + gate * H + j0 + u] : T(0);
  }
  for (int i = threadIdx.x; i < Rp * Hp; i += blockDim.x) hs[i] = T(0);  // padding columns stay 0
  for (int i = threadIdx.x; i < B * units; i += blockDim.x) {             // hin[0] = h0 * mask, own elements
    const long long b = i / units, n = b * H + j0 + (i - b * units);
    hin[n] = mask ? h[n] * mask[n] : h[n];
  }
  unsigned long long round = 1;
  lstmfast::grid_barrier(barrier, blocks, round++);

  for (long long t = 0; t < T_; ++t) {
    const T* cur = hin + (t & 1) * B * H;
    T* next = hin + ((t + 1) & 1) * B * H;
    for (int r0 = 0; r0 < B; r0 += Rp) {  // rows r0 .. r0+rows-1; past them hs holds finite leftovers
      const int rows = (int)(B - r0 < Rp ? B - r0 : Rp);
      lstmfast::stage_rows(hs, cur + (long long)r0 * H, rows, (int)H, Hp);
      __syncthreads();
      lstmfast::block_product<T, false>(hs, Hp, Rp, w, Rp, G, Hp, red, [&](int r, int g, T v) {
        const int gate = g / (int)U, u = g - gate * (int)U;
        if (r < rows && u < units) z_rec[(r0 + r) * H4 + gate * H + j0 + u] = v;
      });  // ends at a __syncthreads: the next chunk may overwrite hs
    }
    for (int i = threadIdx.x; i < B * units; i += blockDim.x) {
      const long long b = i / units, n = b * H + j0 + (i - b * units);
      lstmfast::lstm_forward_element<T>(n, t, T_, B, H, hard, z_in, z_rec, bias, peephole, lengths, mask, h, c,
                                        nullptr, y, gates, cells);
      next[n] = mask ? h[n] * mask[n] : h[n];  // padded rows keep h, as the step path's GEMM input does
    }
    lstmfast::grid_barrier(barrier, blocks, round++);
  }
}

// Backward, all steps (t descending). Shared memory, in elements of T: w [round4(U)][4H] (rows
// j0 .. j0+U-1 of recurrent_kernel, zero rows past the block's units) and the reduction buffer.
// dh_rec is [B,H] scratch (each block uses its own elements). gates holds the activated gates in
// and the gate gradients dz out, as in lstm_backward_step; dh ends as the step path leaves it
// after its loop and the final dh += (dz_0 recurrent_kernel^T) * mask.
template <typename T>
__global__ void lstm_backward_sequence(long long T_, long long B, long long H, int hard, long long U,
                                       const T* recurrent_kernel, T* gates, const T* cells, const T* c0,
                                       const T* peephole, const int* lengths, const T* mask, const T* dy,
                                       T* dh_rec, T* dh, T* dc, unsigned long long* barrier) {
  extern __shared__ __align__(16) unsigned char lf_shared_bytes[];
  const int Up = (int)lstmfast::round4(U), Bp = (int)lstmfast::round4(B), K = 4 * (int)H;
  T* w = reinterpret_cast<T*>(lf_shared_bytes);  // [Up][K]
  T* red = w + (long long)Up * K;                 // reduction_elements(Bp, Up, blockDim.x)
  const long long j0 = (long long)blockIdx.x * U;
  const int units = (int)((H - j0 < U) ? H - j0 : U);
  const unsigned long long blocks = gridDim.x;

  for (int i = threadIdx.x; i < Up * K; i += blockDim.x) {
    const int u = i / K;
    w[i] = u < units ? recurrent_kernel[j0 * K + i] : T(0);
  }
  __syncthreads();
  unsigned long long round = 1;
  for (long long t = T_ - 1; t >= -1; --t) {  // t = -1: the pass after the loop, dz_0 recurrent_kernel^T into dh
    const bool has_later = t < T_ - 1;        // dz_{t+1} exists
    if (has_later) {
      lstmfast::block_product<T, true>(gates + (t + 1) * B * K, K, (int)B, w, Bp, Up, K, red, [&](int b, int u, T v) {
        if (b < B && u < units) dh_rec[b * H + j0 + u] = v;
      });
    }
    if (t < 0) {
      for (int i = threadIdx.x; i < B * units; i += blockDim.x) {
        const long long b = i / units, n = b * H + j0 + (i - b * units);
        if (has_later) dh[n] += mask ? dh_rec[n] * mask[n] : dh_rec[n];
      }
      break;
    }
    for (int i = threadIdx.x; i < B * units; i += blockDim.x) {
      const long long b = i / units, n = b * H + j0 + (i - b * units);
      lstmfast::lstm_backward_element<T>(n, t, T_, B, H, hard, gates, cells, c0, peephole, lengths, mask, dy,
                                         has_later ? dh_rec : nullptr, dh, dc);
    }
    lstmfast::grid_barrier(barrier, blocks, round++);
  }
}
