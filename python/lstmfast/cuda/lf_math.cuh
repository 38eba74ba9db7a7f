// What every per-element header of the GPU engine shares (lstm_pointwise.cuh, optim_rules.cuh,
// activation_rules.cuh, loss_rules.cuh, lf_random.cuh): the LF_HD marker and the math functions, overloaded for float and double.
//
// LF_HD: NVRTC and nvcc compile a function so marked as __host__ __device__, g++ as ordinary
// inline host code, so the tests run the exact per-element math without a GPU. _kernels.py pastes
// this file into the kernel source in place of the line that includes it (once), as it does the
// headers.
#pragma once

#if defined(__CUDACC__)
#define LF_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define LF_HD inline
#endif

namespace lstmfast {

LF_HD float lf_exp(float v) { return expf(v); }
LF_HD double lf_exp(double v) { return exp(v); }
LF_HD float lf_log(float v) { return logf(v); }
LF_HD double lf_log(double v) { return log(v); }
LF_HD float lf_expm1(float v) { return expm1f(v); }
LF_HD double lf_expm1(double v) { return expm1(v); }
LF_HD float lf_log1p(float v) { return log1pf(v); }
LF_HD double lf_log1p(double v) { return log1p(v); }
LF_HD float lf_tanh(float v) { return tanhf(v); }
LF_HD double lf_tanh(double v) { return tanh(v); }
LF_HD float lf_erf(float v) { return erff(v); }
LF_HD double lf_erf(double v) { return erf(v); }
LF_HD float lf_abs(float v) { return fabsf(v); }
LF_HD double lf_abs(double v) { return fabs(v); }
LF_HD float lf_sqrt(float v) { return sqrtf(v); }
LF_HD double lf_sqrt(double v) { return sqrt(v); }

}  // namespace lstmfast
