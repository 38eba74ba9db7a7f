// Per-element math of the activations Dense and Activation layers apply on the GPU: the body of
// activation_kernels.cu. The formulas are those of lstmfast/activations.py (the NumPy path), written
// per element in the same order of operations; tests compare the two on both sides of every branch.
//
// Plain C++ marked LF_HD (lf_math.cuh), so the tests run this exact math (on the CuPy stand-in)
// without a GPU.
#pragma once

#include "lf_math.cuh"

namespace lstmfast {

// Activation codes; lstmfast.cuda.activations.CODES holds the same numbers (a test compares them).
enum ActivationCode : int {
  kRelu = 0,
  kSigmoid = 1,
  kTanh = 2,
  kHardSigmoid = 3,  // Keras 3: relu6(x + 3) / 6
  kSoftplus = 4,
  kSoftsign = 5,
  kElu = 6,
  kSelu = 7,
  kSwish = 8,
  kGelu = 9,         // exact: x Phi(x)
  kExponential = 10,
};

constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSqrtHalf = 0.70710678118654752440084436210485;
constexpr double kInvSqrt2Pi = 0.39894228040143267793994605993438;

// exp of -|x| only, so no overflow for any x.
template <typename T>
LF_HD T sigmoid_of(T x) {
  const T e = lf_exp(-lf_abs(x));
  return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// y = f(x). Comparisons are written so that NaN comes out NaN, as in NumPy.
template <typename T>
LF_HD T activation_value(int code, T x) {
  switch (code) {
    case kRelu: return x < T(0) ? T(0) : x;
    case kSigmoid: return sigmoid_of(x);
    case kTanh: return lf_tanh(x);
    case kHardSigmoid: {
      const T v = x / T(6) + T(0.5);
      return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
    }
    case kSoftplus: return (x < T(0) ? T(0) : x) + lf_log1p(lf_exp(-lf_abs(x)));
    case kSoftsign: return x / (T(1) + lf_abs(x));
    case kElu: return x > T(0) ? x : lf_expm1(x);
    case kSelu: return T(kSeluScale) * (x > T(0) ? x : T(kSeluAlpha) * lf_expm1(x));
    case kSwish: return x * sigmoid_of(x);
    case kGelu: return T(0.5) * x * (T(1) + lf_erf(x * T(kSqrtHalf)));
    case kExponential: return lf_exp(x);
    default: return x;  // not reached: lstmfast.cuda.activations checks the code
  }
}

// dL/dx from the input x, the output y = f(x) and dL/dy.
template <typename T>
LF_HD T activation_grad(int code, T x, T y, T dy) {
  switch (code) {
    case kRelu: return dy * (y > T(0) ? T(1) : T(0));
    case kSigmoid: return dy * y * (T(1) - y);
    case kTanh: return dy * (T(1) - y * y);
    case kHardSigmoid: return dy * ((y > T(0) && y < T(1)) ? T(1) : T(0)) / T(6);
    case kSoftplus: return dy * sigmoid_of(x);
    case kSoftsign: {
      const T d = T(1) + lf_abs(x);
      return dy / (d * d);
    }
    case kElu: return dy * (x > T(0) ? T(1) : y + T(1));
    case kSelu: return dy * (x > T(0) ? T(kSeluScale) : y + T(kSeluScale) * T(kSeluAlpha));
    case kSwish: {
      const T s = sigmoid_of(x);
      return dy * (s + x * s * (T(1) - s));
    }
    case kGelu: {
      const T cdf = T(0.5) * (T(1) + lf_erf(x * T(kSqrtHalf)));
      return dy * (cdf + x * T(kInvSqrt2Pi) * lf_exp(T(-0.5) * x * x));
    }
    case kExponential: return dy * y;
    default: return dy;  // not reached
  }
}

// Softmax over a row, given the row's maximum m and the sum s of exp(x - m): exp(x - m) / s.
template <typename T>
LF_HD T softmax_exp(T x, T m) { return lf_exp(x - m); }

// Its backward pass (the Jacobian-vector product) given dot = sum over the row of dy * y.
template <typename T>
LF_HD T softmax_grad(T y, T dy, T dot) { return y * (dy - dot); }

}  // namespace lstmfast
