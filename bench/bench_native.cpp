// Native benchmark of the lstmfast engine, no Python: inference forward and a training step
// (forward with the cache + backward, dx included) over the sizes of bench/compare_torch.py.
//
//   cmake -S . -B build/bench -DLSTMFAST_BUILD_BENCH=ON -DLSTMFAST_BUILD_PYTHON=OFF
//   cmake --build build/bench -j2
//   build/bench/lstmfast_bench [--threads N] [--reps N] [--simd portable|avx2|avx512|avx512emu]
//
// Prints the median milliseconds per call and GFLOP/s (forward flops 2*4H*(X+H)*B*T, a training
// step counts 3x), plus the SIMD level and thread count in use. Without --reps each size and mode
// gets about one second, at least 5 repetitions, after one untimed warm-up call.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lstm.h"

namespace {

struct Size {
  int64_t X, H, B, T;  // input size, units, batch, time steps
  double forward_flops() const { return 2.0 * 4 * H * (X + H) * B * T; }
};

const Size kSizes[] = {
    {10, 25, 1, 5}, {128, 128, 32, 80}, {256, 256, 16, 150}, {512, 512, 64, 100}, {1024, 1024, 16, 100},
};

// All buffers of one problem, fp32, random where they are inputs.
struct Problem {
  Size s;
  std::vector<float> x;                 // [T,B,X]
  std::vector<float> kernel;            // [X,4H]
  std::vector<float> recurrent_kernel;  // [H,4H]
  std::vector<float> bias;              // [4H]
  std::vector<float> dy;                // [T,B,H]
  std::vector<float> y;                 // [T,B,H]
  std::vector<float> h, c;              // [B,H]
  std::vector<float> gates;             // [T,B,4H]  training cache, consumed by backward
  std::vector<float> cells;             // [T,B,H]
  std::vector<float> dx;                // [T,B,X]
  std::vector<float> dkernel;           // [X,4H]
  std::vector<float> drecurrent_kernel; // [H,4H]
  std::vector<float> dbias;             // [4H]
  std::vector<float> dh0, dc0;          // [B,H]

  explicit Problem(const Size& size, uint32_t seed) : s(size) {
    const int64_t X = s.X, H = s.H, B = s.B, T = s.T;
    std::mt19937 rng(seed);
    const float bound = 1.0f / std::sqrt(static_cast<float>(H));  // PyTorch's LSTM init
    auto fill = [&rng](std::vector<float>& v, int64_t n, float lo, float hi) {
      std::uniform_real_distribution<float> dist(lo, hi);
      v.resize(static_cast<size_t>(n));
      for (float& e : v) e = dist(rng);
    };
    fill(x, T * B * X, -1.0f, 1.0f);
    fill(kernel, X * 4 * H, -bound, bound);
    fill(recurrent_kernel, H * 4 * H, -bound, bound);
    fill(bias, 4 * H, -bound, bound);
    fill(dy, T * B * H, -1.0f, 1.0f);
    y.assign(static_cast<size_t>(T * B * H), 0.0f);
    h.assign(static_cast<size_t>(B * H), 0.0f);
    c.assign(static_cast<size_t>(B * H), 0.0f);
    gates.assign(static_cast<size_t>(T * B * 4 * H), 0.0f);
    cells.assign(static_cast<size_t>(T * B * H), 0.0f);
    dx.assign(static_cast<size_t>(T * B * X), 0.0f);
    dkernel.assign(static_cast<size_t>(X * 4 * H), 0.0f);
    drecurrent_kernel.assign(static_cast<size_t>(H * 4 * H), 0.0f);
    dbias.assign(static_cast<size_t>(4 * H), 0.0f);
    dh0.assign(static_cast<size_t>(B * H), 0.0f);
    dc0.assign(static_cast<size_t>(B * H), 0.0f);
  }

  lstmfast::ForwardArgs<float> forward_args(bool training) {
    lstmfast::ForwardArgs<float> a;
    a.T_ = s.T; a.B = s.B; a.X = s.X; a.H = s.H;
    a.x = x.data();
    a.kernel = kernel.data();
    a.recurrent_kernel = recurrent_kernel.data();
    a.bias = bias.data();
    a.y = y.data();
    a.h = h.data();
    a.c = c.data();
    if (training) {
      a.gates = gates.data();
      a.cells = cells.data();
    }
    return a;
  }

  lstmfast::BackwardArgs<float> backward_args() {
    lstmfast::BackwardArgs<float> a;
    a.T_ = s.T; a.B = s.B; a.X = s.X; a.H = s.H;
    a.x = x.data();
    a.kernel = kernel.data();
    a.recurrent_kernel = recurrent_kernel.data();
    a.y = y.data();
    a.gates = gates.data();
    a.cells = cells.data();
    a.dy = dy.data();
    a.dx = dx.data();
    a.dkernel = dkernel.data();
    a.drecurrent_kernel = drecurrent_kernel.data();
    a.dbias = dbias.data();
    a.dh0 = dh0.data();
    a.dc0 = dc0.data();
    return a;
  }
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Repetitions: --reps when given, else about `target_s` seconds from one timed call, at least 5.
int reps_for(int fixed_reps, double one_call_s, double target_s) {
  if (fixed_reps > 0) return fixed_reps;
  const double r = std::ceil(target_s / std::max(one_call_s, 1e-9));
  return static_cast<int>(std::min(2000.0, std::max(5.0, r)));
}

double sum_of(const std::vector<float>& v) {
  double s = 0.0;
  for (float e : v) s += e;
  return s;
}

[[noreturn]] void usage(const char* message, const char* got) {
  std::fprintf(stderr, "lstmfast_bench: %s, got '%s'\nusage: lstmfast_bench [--threads N] [--reps N] "
               "[--simd portable|avx2|avx512|avx512emu]\n", message, got);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, fixed_reps = 0;
  const char* simd = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage("every option takes a value", arg.c_str());
    const char* value = argv[++i];
    if (arg == "--threads") {
      threads = std::atoi(value);
      if (threads < 1) usage("--threads expects an integer >= 1", value);
    } else if (arg == "--reps") {
      fixed_reps = std::atoi(value);
      if (fixed_reps < 1) usage("--reps expects an integer >= 1", value);
    } else if (arg == "--simd") {
      simd = value;
    } else {
      usage("unknown option", arg.c_str());
    }
  }
  if (threads > 0) lstmfast::set_num_threads(threads);
  if (simd != nullptr) {
    const lstmfast::SimdLevel levels[] = {lstmfast::SimdLevel::portable, lstmfast::SimdLevel::avx2,
                                          lstmfast::SimdLevel::avx512, lstmfast::SimdLevel::avx512emu};
    bool known = false;
    for (lstmfast::SimdLevel level : levels) {
      if (std::strcmp(simd, lstmfast::simd_level_name(level)) != 0) continue;
      known = true;
      if (!lstmfast::set_simd_level(level)) usage("--simd level not supported by this CPU", simd);
    }
    if (!known) usage("--simd expects portable, avx2, avx512 or avx512emu", simd);
  }

  std::printf("lstmfast native bench: simd %s (supported %s), threads %d, openmp %s\n",
              lstmfast::simd_level_name(lstmfast::simd_level()),
              lstmfast::simd_level_name(lstmfast::simd_level_supported()), lstmfast::num_threads(),
              lstmfast::openmp_enabled() ? "on" : "off");
  std::printf("%-20s %-6s %6s %12s %12s %10s\n", "X,H,B,T", "mode", "reps", "median ms", "min ms", "GFLOP/s");

  const double target_s = 1.0;
  for (const Size& s : kSizes) {
    Problem p(s, 1234u);
    char label[64];
    std::snprintf(label, sizeof label, "%lld,%lld,%lld,%lld", static_cast<long long>(s.X),
                  static_cast<long long>(s.H), static_cast<long long>(s.B), static_cast<long long>(s.T));

    // Inference: no cache (gates, cells null).
    {
      const lstmfast::ForwardArgs<float> args = p.forward_args(false);
      double t0 = now_s();
      lstmfast::lstm_forward(args);  // warm-up (packs weights, starts threads)
      t0 = now_s();
      lstmfast::lstm_forward(args);
      const int reps = reps_for(fixed_reps, now_s() - t0, target_s);
      std::vector<double> times;
      for (int r = 0; r < reps; ++r) {
        t0 = now_s();
        lstmfast::lstm_forward(args);
        times.push_back(now_s() - t0);
      }
      const double med = median(times);
      std::printf("%-20s %-6s %6d %12.3f %12.3f %10.1f\n", label, "fwd", reps, 1e3 * med,
                  1e3 * *std::min_element(times.begin(), times.end()), s.forward_flops() / med * 1e-9);
    }

    // Training step: forward with the cache, then backward (which consumes the cache in `gates`),
    // so every repetition runs both. The backward share is reported on its own line.
    {
      const lstmfast::ForwardArgs<float> fwd = p.forward_args(true);
      const lstmfast::BackwardArgs<float> bwd = p.backward_args();
      auto step = [&](double* backward_s) {
        lstmfast::lstm_forward(fwd);
        const double tb = now_s();
        lstmfast::lstm_backward(bwd);
        *backward_s = now_s() - tb;
      };
      double backward_s = 0.0;
      step(&backward_s);  // warm-up
      double t0 = now_s();
      step(&backward_s);
      const int reps = reps_for(fixed_reps, now_s() - t0, target_s);
      std::vector<double> times, backward_times;
      for (int r = 0; r < reps; ++r) {
        t0 = now_s();
        step(&backward_s);
        times.push_back(now_s() - t0);
        backward_times.push_back(backward_s);
      }
      const double med = median(times), med_b = median(backward_times);
      std::printf("%-20s %-6s %6d %12.3f %12.3f %10.1f\n", label, "train", reps, 1e3 * med,
                  1e3 * *std::min_element(times.begin(), times.end()), 3.0 * s.forward_flops() / med * 1e-9);
      std::printf("%-20s %-6s %6d %12.3f %12.3f %10.1f\n", label, " bwd", reps, 1e3 * med_b,
                  1e3 * *std::min_element(backward_times.begin(), backward_times.end()),
                  2.0 * s.forward_flops() / med_b * 1e-9);
    }

    // Keeps the results observable and flags a broken engine (NaN) right where it happens.
    const double check = sum_of(p.y) + sum_of(p.dx) + sum_of(p.dkernel);
    if (!std::isfinite(check)) {
      std::fprintf(stderr, "lstmfast_bench: non-finite outputs at %s\n", label);
      return 1;
    }
  }
  return 0;
}
