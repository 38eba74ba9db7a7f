// Python bindings (the stub python/lstmfast/_core.pyi lists them). lstmfast.ops validates the
// arguments, with the messages users see, and allocates every array; this layer checks again
// (dtype, shape, contiguity, writability) so that a direct call into _core can raise but never
// crash, then releases the GIL for the computation. forward/backward take the arguments of
// ForwardArgs/BackwardArgs (lstm.h) by the same names, as the GPU engine (lstmfast.cuda.ops) does.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "lstm.h"
#include "optim.h"

namespace py = pybind11;
using lstmfast::Activation;
using lstmfast::Precision;

namespace {

// More threads than this is a mistake (OpenMP itself fails to create tens of thousands).
constexpr int kMaxThreads = 1024;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t k = 0; k < s.size(); ++k) r += (k ? ", " : "") + std::to_string(s[k]);
  return r + (s.size() == 1 ? ",)" : ")");
}

constexpr int kNumpyAligned = 0x0100;  // NPY_ARRAY_ALIGNED, numpy/ndarraytypes.h

// Checks one array argument; returns its data pointer (null for None when optional).
template <typename T>
T* checked(const py::object& obj, const char* name, const std::vector<int64_t>& shape, bool optional,
           bool writable) {
  if (obj.is_none()) {
    if (optional) return nullptr;
    throw py::value_error(std::string(name) + " is required, got None");
  }
  if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(name) + " must be a numpy array");
  py::array arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().equal(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(py::dtype::of<T>())) +
                         ", got " + std::string(py::str(arr.dtype())));
  std::vector<int64_t> got(arr.shape(), arr.shape() + arr.ndim());
  if (got != shape)
    throw py::value_error(std::string(name) + " must have shape " + shape_str(shape) + ", got " + shape_str(got));
  if (!(arr.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  // NumPy can hand out arrays whose data is not aligned to their dtype (a view of a byte buffer at an
  // odd offset); the kernels read T through T*, which needs the alignment.
  if (!(arr.flags() & kNumpyAligned))
    throw py::value_error(std::string(name) + " must be aligned to its dtype (a copy, np.array(a), is)");
  if (writable && !arr.writeable()) throw py::value_error(std::string(name) + " must be writable");
  return static_cast<T*>(const_cast<void*>(arr.data()));
}

const int32_t* checked_lengths(const py::object& obj, int64_t T, int64_t B) {
  if (obj.is_none()) return nullptr;
  const int32_t* p = checked<int32_t>(obj, "lengths", {B}, false, false);
  for (int64_t b = 0; b < B; ++b)
    if (p[b] < 0 || p[b] > T)
      throw py::value_error("lengths must lie in [0, " + std::to_string(T) + "], got lengths[" + std::to_string(b) +
                            "] = " + std::to_string(p[b]));
  return p;
}

Activation checked_activation(int a) {
  if (a != int(Activation::sigmoid) && a != int(Activation::hard_sigmoid))
    throw py::value_error("recurrent_activation code must be 0 (sigmoid) or 1 (hard_sigmoid), got " +
                          std::to_string(a));
  return Activation(a);
}

template <typename T>
Precision checked_precision(int p) {
  if (p != int(Precision::native) && p != int(Precision::bfloat16))
    throw py::value_error("precision code must be 0 (native) or 1 (bfloat16), got " + std::to_string(p));
  if (p == int(Precision::bfloat16) && !std::is_same<T, float>::value)
    throw py::value_error("precision code 1 (bfloat16) needs float32 arrays, got float64");
  return Precision(p);
}

struct Sizes {
  int64_t T, B, X, H;
};

template <typename T>
Sizes sizes_of(const py::object& x, const py::object& recurrent_kernel) {
  if (!py::isinstance<py::array>(x) || !py::isinstance<py::array>(recurrent_kernel))
    throw py::type_error("x and recurrent_kernel must be numpy arrays");
  py::array xa = py::reinterpret_borrow<py::array>(x), ra = py::reinterpret_borrow<py::array>(recurrent_kernel);
  if (xa.ndim() != 3) throw py::value_error("x must have 3 dims [T, B, X], got " + std::to_string(xa.ndim()));
  if (ra.ndim() != 2) throw py::value_error("recurrent_kernel must have 2 dims [H, 4H]");
  return {xa.shape(0), xa.shape(1), xa.shape(2), ra.shape(0)};
}

// The inputs forward and backward share (ForwardArgs and BackwardArgs name them alike): sizes,
// x, the weights, the initial state, peepholes, lengths, the dropout mask, the activation.
template <typename T, typename Args>
Sizes checked_inputs(Args& a, const py::object& x, const py::object& kernel, const py::object& recurrent_kernel,
                     const py::object& h0, const py::object& c0, const py::object& peephole,
                     const py::object& lengths, const py::object& mask, int activation) {
  const Sizes s = sizes_of<T>(x, recurrent_kernel);
  a.T_ = s.T;
  a.B = s.B;
  a.X = s.X;
  a.H = s.H;
  a.x = checked<T>(x, "x", {s.T, s.B, s.X}, false, false);
  a.kernel = checked<T>(kernel, "kernel", {s.X, 4 * s.H}, false, false);
  a.recurrent_kernel = checked<T>(recurrent_kernel, "recurrent_kernel", {s.H, 4 * s.H}, false, false);
  a.h0 = checked<T>(h0, "h0", {s.B, s.H}, true, false);
  a.c0 = checked<T>(c0, "c0", {s.B, s.H}, true, false);
  a.peephole = checked<T>(peephole, "peephole", {3, s.H}, true, false);
  a.lengths = checked_lengths(lengths, s.T, s.B);
  a.recurrent_dropout_mask = checked<T>(mask, "recurrent_dropout_mask", {s.B, s.H}, true, false);
  a.recurrent_activation = checked_activation(activation);
  return s;
}

template <typename T>
void forward(py::object x, py::object kernel, py::object recurrent_kernel, py::object bias, py::object h0,
             py::object c0, py::object peephole, py::object lengths, py::object mask, int activation, py::object y,
             py::object h, py::object c, py::object gates, py::object cells, int precision) {
  lstmfast::ForwardArgs<T> a;
  const Sizes s = checked_inputs<T>(a, x, kernel, recurrent_kernel, h0, c0, peephole, lengths, mask, activation);
  a.precision = checked_precision<T>(precision);
  a.bias = checked<T>(bias, "bias", {4 * s.H}, true, false);
  a.y = checked<T>(y, "y", {s.T, s.B, s.H}, false, true);
  a.h = checked<T>(h, "h", {s.B, s.H}, false, true);
  a.c = checked<T>(c, "c", {s.B, s.H}, false, true);
  a.gates = checked<T>(gates, "gates", {s.T, s.B, 4 * s.H}, true, true);
  a.cells = checked<T>(cells, "cells", {s.T, s.B, s.H}, true, true);
  if ((a.gates == nullptr) != (a.cells == nullptr))
    throw py::value_error("gates and cells must both be given (training) or both be None (inference)");
  py::gil_scoped_release release;
  lstmfast::lstm_forward(a);
}

template <typename T>
void backward(py::object x, py::object kernel, py::object recurrent_kernel, py::object h0, py::object c0,
              py::object peephole, py::object lengths, py::object mask, int activation, py::object y,
              py::object gates, py::object cells, py::object dy, py::object dh, py::object dc, py::object dx,
              py::object dkernel, py::object drecurrent_kernel, py::object dbias, py::object dh0, py::object dc0,
              py::object dpeephole, int precision) {
  lstmfast::BackwardArgs<T> a;
  const Sizes s = checked_inputs<T>(a, x, kernel, recurrent_kernel, h0, c0, peephole, lengths, mask, activation);
  a.precision = checked_precision<T>(precision);
  a.y = checked<T>(y, "y", {s.T, s.B, s.H}, false, false);
  a.gates = checked<T>(gates, "gates", {s.T, s.B, 4 * s.H}, false, true);
  a.cells = checked<T>(cells, "cells", {s.T, s.B, s.H}, false, false);
  a.dy = checked<T>(dy, "dy", {s.T, s.B, s.H}, true, false);
  a.dh = checked<T>(dh, "dh", {s.B, s.H}, true, false);
  a.dc = checked<T>(dc, "dc", {s.B, s.H}, true, false);
  a.dx = checked<T>(dx, "dx", {s.T, s.B, s.X}, false, true);
  a.dkernel = checked<T>(dkernel, "dkernel", {s.X, 4 * s.H}, false, true);
  a.drecurrent_kernel = checked<T>(drecurrent_kernel, "drecurrent_kernel", {s.H, 4 * s.H}, false, true);
  a.dbias = checked<T>(dbias, "dbias", {4 * s.H}, true, true);
  a.dh0 = checked<T>(dh0, "dh0", {s.B, s.H}, false, true);
  a.dc0 = checked<T>(dc0, "dc0", {s.B, s.H}, false, true);
  a.dpeephole = checked<T>(dpeephole, "dpeephole", {3, s.H}, true, true);
  if ((a.peephole == nullptr) != (a.dpeephole == nullptr))
    throw py::value_error("dpeephole must be given exactly when peephole is");
  py::gil_scoped_release release;
  lstmfast::lstm_backward(a);
}

// The engine precision is x's dtype: float32 or float64; every other float array must match it.
bool is_float32(const py::object& x) {
  if (!py::isinstance<py::array>(x)) throw py::type_error("x must be a numpy array");
  const py::dtype dt = py::reinterpret_borrow<py::array>(x).dtype();
  if (dt.equal(py::dtype::of<float>())) return true;
  if (dt.equal(py::dtype::of<double>())) return false;
  throw py::type_error("x must have dtype float32 or float64, got " + std::string(py::str(dt)));
}

void forward_any(py::object x, py::object kernel, py::object recurrent_kernel, py::object bias, py::object h0,
                 py::object c0, py::object peephole, py::object lengths, py::object mask, int activation, py::object y,
                 py::object h, py::object c, py::object gates, py::object cells, int precision) {
  (is_float32(x) ? forward<float> : forward<double>)(x, kernel, recurrent_kernel, bias, h0, c0, peephole, lengths,
                                                     mask, activation, y, h, c, gates, cells, precision);
}

void backward_any(py::object x, py::object kernel, py::object recurrent_kernel, py::object h0, py::object c0,
                  py::object peephole, py::object lengths, py::object mask, int activation, py::object y,
                  py::object gates, py::object cells, py::object dy, py::object dh, py::object dc, py::object dx,
                  py::object dkernel, py::object drecurrent_kernel, py::object dbias, py::object dh0, py::object dc0,
                  py::object dpeephole, int precision) {
  (is_float32(x) ? backward<float> : backward<double>)(x, kernel, recurrent_kernel, h0, c0, peephole, lengths, mask,
                                                       activation, y, gates, cells, dy, dh, dc, dx, dkernel,
                                                       drecurrent_kernel, dbias, dh0, dc0, dpeephole, precision);
}

template <typename T>
void gemm(bool trans_a, bool trans_b, py::object A, py::object B, py::object C, bool accumulate) {
  if (!py::isinstance<py::array>(A) || !py::isinstance<py::array>(B))
    throw py::type_error("A and B must be numpy arrays");
  py::array a = py::reinterpret_borrow<py::array>(A), b = py::reinterpret_borrow<py::array>(B);
  if (a.ndim() != 2 || b.ndim() != 2) throw py::value_error("A and B must be 2-D");
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  if (K != Kb) throw py::value_error("inner dimensions differ: " + std::to_string(K) + " vs " + std::to_string(Kb));
  const T* pa = checked<T>(A, "A", {a.shape(0), a.shape(1)}, false, false);
  const T* pb = checked<T>(B, "B", {b.shape(0), b.shape(1)}, false, false);
  T* pc = checked<T>(C, "C", {M, N}, false, true);
  py::gil_scoped_release release;
  lstmfast::gemm(trans_a, trans_b, M, N, K, pa, a.shape(1), pb, b.shape(1), pc, N, accumulate);
}

// Slots each optimizer rule reads and writes (optim.h).
constexpr int kRuleSlots[lstmfast::kOptimRules] = {0, 1, 1, 2, 3, 1, 2, 2, 3, 1};

// Whether [a, a + na) and [b, b + nb) (element counts) share any byte; empty ranges share none.
template <typename A, typename B>
bool overlap(const A* a, int64_t na, const B* b, int64_t nb) {
  const char *a0 = reinterpret_cast<const char*>(a), *b0 = reinterpret_cast<const char*>(b);
  const char *a1 = a0 + na * int64_t(sizeof(A)), *b1 = b0 + nb * int64_t(sizeof(B));
  return na > 0 && nb > 0 && a0 < b1 && b0 < a1;
}

// Validated arguments of one variable's step (nothing runs until every variable checks out).
template <typename T>
lstmfast::OptimArgs<T> optim_args(int rule, const py::object& var, const py::object& grad, const py::object& slots,
                                  const std::string& where) {
  if (!py::isinstance<py::array>(var)) throw py::type_error(where + "var must be a numpy array");
  py::array va = py::reinterpret_borrow<py::array>(var);
  const std::vector<int64_t> shape(va.shape(), va.shape() + va.ndim());
  lstmfast::OptimArgs<T> a;
  a.rule = lstmfast::OptimRule(rule);
  a.n = va.size();
  a.var = checked<T>(var, (where + "var").c_str(), shape, false, true);
  a.grad = checked<T>(grad, (where + "grad").c_str(), shape, false, false);
  if (!py::isinstance<py::sequence>(slots) || py::isinstance<py::str>(slots))
    throw py::type_error(where + "slots must be a list of arrays");
  py::sequence seq = py::reinterpret_borrow<py::sequence>(slots);
  const int want = kRuleSlots[rule];
  if (int(py::len(seq)) != want)
    throw py::value_error(where + "rule " + std::to_string(rule) + " needs " + std::to_string(want) +
                          " slot arrays, got " + std::to_string(py::len(seq)));
  // Written arrays must not overlap each other (the grad may alias nothing written either).
  std::vector<const T*> arrays{a.var, a.grad};
  for (int k = 0; k < want; ++k) {
    const std::string name = where + "slots[" + std::to_string(k) + "]";
    a.slot[k] = checked<T>(seq[k], name.c_str(), shape, false, true);
    arrays.push_back(a.slot[k]);
  }
  for (size_t i = 0; i < arrays.size(); ++i)
    for (size_t j = i + 1; j < arrays.size(); ++j)
      if (overlap(arrays[i], a.n, arrays[j], a.n))
        throw py::value_error(where + "var, grad and the slot arrays must not share memory");
  return a;
}

// One optimizer step over several variables: optim_step(rule, vars, grads, slots, hyper..., scales,
// clipvalue, decay_keep); vars/grads/slots/scales are lists with one entry per variable (slots: a
// list of that variable's slot arrays; scales: None or one gradient factor per variable). Every
// argument is checked before any variable is touched.
template <typename T>
void optim_step(int rule, py::sequence vars, py::sequence grads, py::sequence slots, double lr, double momentum,
                double one_minus_beta_1, double one_minus_beta_2, double rho, double one_minus_rho, double epsilon,
                py::object scales, py::object clipvalue, double decay_keep) {
  if (rule < 0 || rule >= lstmfast::kOptimRules)
    throw py::value_error("rule must be in [0, " + std::to_string(lstmfast::kOptimRules) + "), got " +
                          std::to_string(rule));
  const size_t n = py::len(vars);
  if (py::len(grads) != n || py::len(slots) != n)
    throw py::value_error("vars, grads and slots must have the same length, got " + std::to_string(n) + ", " +
                          std::to_string(py::len(grads)) + " and " + std::to_string(py::len(slots)));
  auto real = [](const py::handle& v, const std::string& name) {
    if (!py::isinstance<py::float_>(v) && !py::isinstance<py::int_>(v))
      throw py::type_error(name + " must be a real number, got " + std::string(py::str(py::type::of(v).attr("__name__"))));
    return v.cast<double>();
  };
  std::vector<double> scale(n, 1.0);
  if (!scales.is_none()) {
    if (!py::isinstance<py::sequence>(scales) || py::isinstance<py::str>(scales))
      throw py::type_error("scales must be None or a list of numbers");
    py::sequence sl = py::reinterpret_borrow<py::sequence>(scales);
    if (py::len(sl) != n)
      throw py::value_error("scales must be None or have one entry per variable, got " + std::to_string(py::len(sl)));
    for (size_t i = 0; i < n; ++i) scale[i] = real(sl[i], "scales[" + std::to_string(i) + "]");
  }
  const bool clip = !clipvalue.is_none();
  const double cv = clip ? real(clipvalue, "clipvalue") : 0.0;
  std::vector<lstmfast::OptimArgs<T>> args;
  args.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string where = n == 1 ? std::string() : "variable " + std::to_string(i) + ": ";
    lstmfast::OptimArgs<T> a = optim_args<T>(rule, vars[i], grads[i], slots[i], where);
    a.lr = lr;
    a.momentum = momentum;
    a.one_minus_beta_1 = one_minus_beta_1;
    a.one_minus_beta_2 = one_minus_beta_2;
    a.rho = rho;
    a.one_minus_rho = one_minus_rho;
    a.epsilon = epsilon;
    a.grad_scale = scale[i];
    a.clip_value = clip;
    a.clipvalue = cv;
    a.decay_keep = decay_keep;
    args.push_back(a);
  }
  // Variables are updated one after another: the same memory in two of them would be updated twice,
  // and a gradient inside another variable's var or slots would be read before or after that
  // variable's update, depending on the order. Refuse both.
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      const lstmfast::OptimArgs<T>&vi = args[i], &vj = args[j];
      if (i < j && overlap(vi.var, vi.n, vj.var, vj.n))
        throw py::value_error("variables " + std::to_string(i) + " and " + std::to_string(j) + " share memory");
      bool grad_in_j = overlap(vi.grad, vi.n, vj.var, vj.n);
      for (int k = 0; k < kRuleSlots[rule]; ++k) grad_in_j = grad_in_j || overlap(vi.grad, vi.n, vj.slot[k], vj.n);
      if (grad_in_j)
        throw py::value_error("variable " + std::to_string(i) + ": grad shares memory with variable " +
                              std::to_string(j) + "'s var or slots, which this step writes");
    }
  py::gil_scoped_release release;
  for (const auto& a : args) lstmfast::optim_step(a);
}

template <typename T, typename I>
void scatter_rows(py::array out, py::array index, py::object src) {
  if (out.ndim() != 2) throw py::value_error("out must be 2-D [rows, D], got " + std::to_string(out.ndim()) + " dims");
  const int64_t rows = out.shape(0), D = out.shape(1);
  if (index.ndim() != 1) throw py::value_error("index must be 1-D");
  const int64_t n = index.shape(0);
  T* po = checked<T>(out, "out", {rows, D}, false, true);
  const I* pi = checked<I>(index, "index", {n}, false, false);
  const T* ps = checked<T>(src, "src", {n, D}, false, false);
  // out is written while index and src are read: an index inside out could move out of range.
  if (overlap(po, rows * D, pi, n) || overlap(po, rows * D, ps, n * D))
    throw py::value_error("index and src must not share memory with out");
  for (int64_t i = 0; i < n; ++i)
    if (pi[i] < 0 || int64_t(pi[i]) >= rows)
      throw py::value_error("index[" + std::to_string(i) + "] = " + std::to_string(int64_t(pi[i])) +
                            " is out of range for " + std::to_string(rows) + " rows");
  py::gil_scoped_release release;
  lstmfast::scatter_add_rows(po, D, pi, ps, n);
}

template <typename T>
void scatter_add(py::object out, py::object index, py::object src) {
  if (!py::isinstance<py::array>(out) || !py::isinstance<py::array>(index))
    throw py::type_error("out and index must be numpy arrays");
  py::array o = py::reinterpret_borrow<py::array>(out), ix = py::reinterpret_borrow<py::array>(index);
  if (ix.dtype().equal(py::dtype::of<int32_t>()))
    scatter_rows<T, int32_t>(o, ix, src);
  else if (ix.dtype().equal(py::dtype::of<int64_t>()))
    scatter_rows<T, int64_t>(o, ix, src);
  else
    throw py::type_error("index must have dtype int32 or int64, got " + std::string(py::str(ix.dtype())));
}

}  // namespace

constexpr const char* kForwardDoc = R"(The LSTM forward pass of cpp/lstm.h into caller-allocated arrays. Every array is a C-contiguous
numpy array of x's dtype (float32 or float64; lengths int32); T = time, B = batch, X = input, H = units.

Inputs (read):
  x                       [T,B,X]
  kernel                  [X,4H]   gate columns i, f, c, o
  recurrent_kernel        [H,4H]
  bias                    [4H]     or None (zeros)
  h0, c0                  [B,H]    or None (zeros)
  peephole                [3,H]    or None (rows p_i, p_f, p_o)
  lengths                 [B]      int32 in [0,T], or None (all T)
  recurrent_dropout_mask  [B,H]    or None; scales h_{t-1} in the recurrent product
  recurrent_activation    int      0 sigmoid, 1 hard_sigmoid
Outputs (written):
  y                       [T,B,H]
  h, c                    [B,H]    final state
  gates                   [T,B,4H] activated gates, training cache; None with cells for inference
  cells                   [T,B,H]  c_t per step, training cache; None with gates for inference
Option:
  precision               int      0 native, 1 bfloat16 (float32 only): products may round their
                                   operands to bfloat16; this engine computes such a call in float32
)";

constexpr const char* kBackwardDoc = R"(Gradients of a forward call (cpp/lstm.h) into caller-allocated arrays; same array rules as forward.

The forward call's arguments (read): x [T,B,X], kernel [X,4H], recurrent_kernel [H,4H],
  h0, c0 [B,H] or None, peephole [3,H] or None, lengths [B] int32 or None,
  recurrent_dropout_mask [B,H] or None, recurrent_activation int, y [T,B,H], cells [T,B,H].
In/out:
  gates                   [T,B,4H] in: the forward call's activated gates; out: the gate
                          gradients dz (the cache is consumed)
Incoming gradients (read, each may be None = zeros):
  dy                      [T,B,H]  ignored at padded steps
  dh, dc                  [B,H]    of the final h and c
Outputs (written):
  dx                      [T,B,X]
  dkernel                 [X,4H]
  drecurrent_kernel       [H,4H]
  dbias                   [4H]     or None (not computed)
  dh0, dc0                [B,H]
  dpeephole               [3,H]    given exactly when peephole is
Option:
  precision               int      the forward call's (0 native, 1 bfloat16)
)";

PYBIND11_MODULE(_core, m) {
  m.doc() = "lstmfast native engine (see cpp/lstm.h for the contract)";
  m.attr("__version__") = LSTMFAST_VERSION;
  m.def("forward", &forward_any, kForwardDoc, py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"),
        py::arg("bias"), py::arg("h0"), py::arg("c0"), py::arg("peephole"),
        py::arg("lengths"), py::arg("recurrent_dropout_mask"), py::arg("recurrent_activation"),
        py::arg("y"), py::arg("h"), py::arg("c"), py::arg("gates"), py::arg("cells"), py::arg("precision") = 0);
  m.def("backward", &backward_any, kBackwardDoc, py::arg("x"), py::arg("kernel"), py::arg("recurrent_kernel"),
        py::arg("h0"), py::arg("c0"), py::arg("peephole"),
        py::arg("lengths"), py::arg("recurrent_dropout_mask"), py::arg("recurrent_activation"),
        py::arg("y"), py::arg("gates"), py::arg("cells"), py::arg("dy"), py::arg("dh"),
        py::arg("dc"), py::arg("dx"), py::arg("dkernel"), py::arg("drecurrent_kernel"),
        py::arg("dbias"), py::arg("dh0"), py::arg("dc0"), py::arg("dpeephole"), py::arg("precision") = 0);
  // One signature for both dtypes (every argument is a Python object or a double).
  for (const auto& [name, step, dtype] : {std::make_tuple("optim_step_f32", &optim_step<float>, "float32"),
                                          std::make_tuple("optim_step_f64", &optim_step<double>, "float64")})
    m.def(name, step,
          (std::string("One fused optimizer step over several ") + dtype + " variables (optim.h): every argument "
           "is checked before any\nvariable is touched; vars/grads/slots/scales hold one entry per variable.").c_str(),
          py::arg("rule"), py::arg("vars"), py::arg("grads"), py::arg("slots"), py::arg("lr"), py::arg("momentum"),
          py::arg("one_minus_beta_1"), py::arg("one_minus_beta_2"), py::arg("rho"), py::arg("one_minus_rho"),
          py::arg("epsilon"), py::arg("scales"), py::arg("clipvalue"), py::arg("decay_keep"));
  m.def("scatter_add_rows_f32", &scatter_add<float>,
        "out[index[i]] += src[i] for float32 out [N,D] (in/out), index [n] int32 or int64 in [0,N), src [n,D];\n"
        "repeated indices accumulate in order (np.add.at's meaning).",
        py::arg("out"), py::arg("index"), py::arg("src"));
  m.def("scatter_add_rows_f64", &scatter_add<double>, "scatter_add_rows_f32 for float64 out and src.", py::arg("out"),
        py::arg("index"), py::arg("src"));
  m.def("gemm_f32", &gemm<float>,
        "C [M,N] = op(A) op(B) (+ C when accumulate), float32, row-major; op transposes when trans_a / trans_b.\n"
        "A [M,K] (or [K,M]) and B [K,N] (or [N,K]) are read, C is written (in/out when accumulate).",
        py::arg("trans_a"), py::arg("trans_b"), py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("accumulate") = false);
  m.def("gemm_f64", &gemm<double>, "gemm_f32 for float64 arrays.", py::arg("trans_a"), py::arg("trans_b"),
        py::arg("A"), py::arg("B"), py::arg("C"), py::arg("accumulate") = false);
  m.def("simd_level", [] { return std::string(lstmfast::simd_level_name(lstmfast::simd_level())); },
        "The SIMD level in use: 'portable', 'avx2', 'avx512' or 'avx512emu'.");
  m.def("simd_level_supported",
        [] { return std::string(lstmfast::simd_level_name(lstmfast::simd_level_supported())); },
        "The best SIMD level this CPU (and OS) supports.");
  m.def("set_simd_level", [](const std::string& name) {
    lstmfast::SimdLevel l;
    if (name == "portable")
      l = lstmfast::SimdLevel::portable;
    else if (name == "avx2")
      l = lstmfast::SimdLevel::avx2;
    else if (name == "avx512")
      l = lstmfast::SimdLevel::avx512;
    else if (name == "avx512emu")
      l = lstmfast::SimdLevel::avx512emu;
    else
      throw py::value_error("simd level must be one of 'portable', 'avx2', 'avx512', 'avx512emu', got '" + name +
                            "'");
    if (!lstmfast::set_simd_level(l))
      throw py::value_error("simd level '" + name + "' is not supported by this CPU (best: " +
                            lstmfast::simd_level_name(lstmfast::simd_level_supported()) + ")");
  }, "Force a SIMD level ('portable', 'avx2', 'avx512', 'avx512emu'); ValueError when this CPU lacks it.",
        py::arg("level"));
  m.def("num_threads", &lstmfast::num_threads, "Threads the engine uses.");
  m.def("set_num_threads", [](int n) {
    if (n < 0 || n > kMaxThreads)
      throw py::value_error("threads must be in [0, " + std::to_string(kMaxThreads) + "] (0 = default), got " +
                            std::to_string(n));
    lstmfast::set_num_threads(n);
  }, "Threads for the engine, 0..1024 (0 = OpenMP's default).", py::arg("n"));
  m.def("openmp_enabled", &lstmfast::openmp_enabled, "Whether the engine was built with OpenMP.");
}
