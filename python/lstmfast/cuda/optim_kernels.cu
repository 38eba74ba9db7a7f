// CUDA kernels of the fused optimizer step: one launch updates every variable of one dtype
// (optim_update<T>), and one launch computes the gradient scales of clipping by norm
// (optim_clip_scales), so a step reads nothing back and costs one launch per dtype (+1 when
// clipping by norm) whatever the number of variables. The per-element math is optim_rules.cuh.
// Loaded by _kernels.py with cupy.RawModule (options add --fmad=false: every multiply and add
// rounded separately, as the C++ step); lstmfast.cuda.optim builds the tables and checks every
// argument (CuPy checks none): int64 scalars for `long long`, int32 for `int`, float64 for
// `double`, None for a null pointer.
//
// The variables of a launch are described by a table of int64 rows, one per variable, whose
// elements are numbered as if the variables were concatenated ("first element" = the sum of the
// sizes before it). The step's scalars (learning rate, bias corrections, ...) are read from device
// memory, not passed by value, so that a CUDA graph of a training step reads each replay's values
// (lstmfast.cuda.staging.StepValues). Launch: 1-D grid of ceil(total / chunk) blocks of kOptimThreads threads; block
// b handles elements [b*chunk, (b+1)*chunk) of the concatenation, variable by variable, its
// threads striding through each (coalesced).
#include "optim_rules.cuh"

constexpr int kOptimThreads = 256;  // blockDim.x of both kernels (the reduction's shared array)

// The first variable whose elements reach past element lo: rows sorted by first element.
__device__ __forceinline__ long long first_variable(const long long* table, long long width, long long n_vars,
                                                    long long first_col, long long lo) {
  long long a = 0, b = n_vars;  // invariant: the answer lies in [a, b)
  while (a < b) {
    const long long m = (a + b) / 2;
    if (table[m * width + first_col] + table[m * width + first_col + 1] > lo) b = m; else a = m + 1;
  }
  return a;
}

template <typename T>
__global__ void optim_update(long long n_vars,
                             const long long* table,   // [n_vars,7] var, grad, slot 0, 1, 2 pointers (0: none),
                                                       //            first element, elements
                             long long total,          // elements of all variables
                             long long chunk,          // elements per block
                             int rule,
                             const double* hyper,      // [kOptimHyper] the step's scalars (OptimScalars order)
                             const double* scales) {   // [n_vars] gradient scales (clipping by norm), or null
  const lstmfast::OptimScalars<T> k(hyper);
  const long long lo = (long long)blockIdx.x * chunk;
  const long long hi = lo + chunk < total ? lo + chunk : total;
  for (long long v = first_variable(table, 7, n_vars, 5, lo); v < n_vars && table[v * 7 + 5] < hi; ++v) {
    const long long* row = table + v * 7;
    T* var = reinterpret_cast<T*>(row[0]);
    const T* grad = reinterpret_cast<const T*>(row[1]);
    T* s0 = reinterpret_cast<T*>(row[2]);
    T* s1 = reinterpret_cast<T*>(row[3]);
    T* s2 = reinterpret_cast<T*>(row[4]);
    const long long first = row[5], end = row[5] + row[6];
    const T grad_scale = scales ? T(scales[v]) : T(1);
    const long long a = (lo > first ? lo : first) - first, b = (hi < end ? hi : end) - first;
    for (long long i = a + threadIdx.x; i < b; i += blockDim.x)
      lstmfast::optim_element<T>(rule, i, var, grad, s0, s1, s2, scales != nullptr, grad_scale, k);
  }
}

// Sums of squares per variable (in double, float32 and float64 gradients alike), then, in the last
// block to finish, the scales: scales[v] = clip_scale(mode, clip, sq[v], sum of all sq). The last
// block also zeroes sq and done again, so the next launch starts from zero without a memset.
__global__ void optim_clip_scales(long long n_vars,
                                  const long long* table,  // [n_vars,4] gradient pointer, 1 for double (else
                                                           //            float), first element, elements
                                  long long total,         // elements of all gradients
                                  long long chunk,         // elements per block
                                  int mode, double clip,
                                  double* sq,              // [n_vars] zero between launches
                                  unsigned int* done,      // [1] blocks finished: zero between launches
                                  double* scales) {        // [n_vars] out
  __shared__ double partial[kOptimThreads];
  __shared__ bool last;
  const long long lo = (long long)blockIdx.x * chunk;
  const long long hi = lo + chunk < total ? lo + chunk : total;
  for (long long v = first_variable(table, 4, n_vars, 2, lo); v < n_vars && table[v * 4 + 2] < hi; ++v) {
    const long long* row = table + v * 4;
    const long long first = row[2], end = row[2] + row[3];
    const long long a = (lo > first ? lo : first) - first, b = (hi < end ? hi : end) - first;
    double acc = 0;
    if (row[1]) {
      const double* g = reinterpret_cast<const double*>(row[0]);
      for (long long i = a + threadIdx.x; i < b; i += blockDim.x) acc += g[i] * g[i];
    } else {
      const float* g = reinterpret_cast<const float*>(row[0]);
      for (long long i = a + threadIdx.x; i < b; i += blockDim.x) {
        const double x = g[i];
        acc += x * x;
      }
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int s = kOptimThreads / 2; s > 0; s /= 2) {
      if ((int)threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(&sq[v], partial[0]);
    __syncthreads();  // partial is reused by the next variable
  }
  __threadfence();  // this block's sums are visible before it counts itself done
  if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last || threadIdx.x != 0) return;
  volatile double* sums = sq;  // written by other blocks' atomics: read past L1
  double all = 0;
  for (long long v = 0; v < n_vars; ++v) all += sums[v];
  for (long long v = 0; v < n_vars; ++v) {
    scales[v] = lstmfast::clip_scale(mode, clip, sums[v], all);
    sums[v] = 0;
  }
  *done = 0;
}
