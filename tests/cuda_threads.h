// What the sequence kernels of lstm_kernels.cu use of CUDA, on the host, so g++ compiles them as
// they are and the tests run them without a GPU (tests/test_cuda_sequence.py): every CUDA thread is
// an OS thread, a block's threads share its shared memory and meet at a std::barrier in
// __syncthreads, all blocks run at once (as a cooperative launch guarantees), and atomics and fences
// are the host's. Warp-level operations are not provided: the kernels use none.
#pragma once

#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) alignas(n)

struct lf_dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local lf_dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace lf_cuda_threads {
inline thread_local unsigned char* shared = nullptr;      // this thread's block's shared memory
inline thread_local std::barrier<>* block_barrier = nullptr;
inline void spin_pause() { std::this_thread::yield(); }  // in the grid barrier's wait: more threads than cores

// Runs kernel(args...) on blocks x threads OS threads, each block with shared_bytes of its own
// shared memory (64-byte aligned, zeroed), and returns when all have finished.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), unsigned blocks, unsigned threads, std::size_t shared_bytes, A... args) {
  std::vector<std::unique_ptr<unsigned char[]>> memory;
  std::vector<std::unique_ptr<std::barrier<>>> barriers;
  for (unsigned b = 0; b < blocks; ++b) {
    memory.emplace_back(new (std::align_val_t(64)) unsigned char[shared_bytes + 64]());
    barriers.emplace_back(new std::barrier<>(threads));
  }
  std::vector<std::thread> pool;
  pool.reserve(std::size_t(blocks) * threads);
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, b, t] {
        threadIdx.x = t;
        blockIdx.x = b;
        blockDim.x = threads;
        gridDim.x = blocks;
        shared = memory[b].get();
        block_barrier = barriers[b].get();
        kernel(args...);
      });
  for (auto& thread : pool) thread.join();
}
}  // namespace lf_cuda_threads

inline void __syncthreads() { lf_cuda_threads::block_barrier->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

struct float4 {
  float x, y, z, w;
};
struct double2 {
  double x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

// __ldcg: a load past the (non-coherent) L1, for data other blocks wrote in this launch; here a
// load the compiler may not move or merge across the fences around it.
template <typename T>
inline T __ldcg(const T* p) {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  T v;
  std::memcpy(&v, static_cast<const void*>(p), sizeof(T));
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return v;
}
