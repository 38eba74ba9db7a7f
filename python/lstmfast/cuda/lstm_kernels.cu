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
