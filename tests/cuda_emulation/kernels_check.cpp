// The ATen-free CUDA kernels run on the CPU (emulate.h) against a float64 loop nest, float and double, on
// random problems (padding, stride, dilation, groups, ragged tiles):
//   implicit_gemm.cuh: forward, input and weight gradient, every tile shape;
//   implicit_gemm_mma.cuh: the same three products on (emulated) tensor cores, bfloat16 and float16;
//   direct_tile.cuh: the forward and weight gradient of thin layers, both tile widths, and the input
//   gradient of stride-1 layers as the launcher computes it (a forward over grad_output with flipped,
//   transposed weights).
// Prints one line per failure and the worst relative error; exits 1 on a mismatch.
//
//   g++ -std=c++20 -O1 -pthread tests/cuda_emulation/kernels_check.cpp -o check && ./check [problems]
#include "emulate.h"

#include "../../csrc/cuda/direct_tile.cuh"
#include "../../csrc/cuda/implicit_gemm.cuh"
#include "../../csrc/cuda/implicit_gemm_mma.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <random>
#include <string>

using namespace torchcorr::cuda::gemm;

// 16-bit floats as the kernels see them (c10::BFloat16, c10::Half): bits, converted with round-to-nearest-even.
struct BFloat16 {
  uint16_t bits;
  BFloat16() = default;
  explicit BFloat16(float f) {
    uint32_t word;
    std::memcpy(&word, &f, 4);
    bits = std::isnan(f) ? 0x7fc0 : uint16_t((word + 0x7fff + ((word >> 16) & 1)) >> 16);
  }
  explicit BFloat16(double f) : BFloat16(static_cast<float>(f)) {}
  explicit operator float() const { return float_of_bits<true>(bits); }
  explicit operator double() const { return float_of_bits<true>(bits); }
};

struct Half {
  uint16_t bits;
  Half() = default;
  explicit Half(float f) {
    const _Float16 h = static_cast<_Float16>(f);
    std::memcpy(&bits, &h, 2);
  }
  explicit Half(double f) : Half(static_cast<float>(f)) {}
  explicit operator float() const { return float_of_bits<false>(bits); }
  explicit operator double() const { return float_of_bits<false>(bits); }
};

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(v[i]);
  return out;
}

struct Problem {  // Corr2dProblem's fields, without ATen
  int64_t N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups;
  int64_t C_per_group() const { return C / groups; }
  int64_t K_per_group() const { return K / groups; }
};

Problem random_problem(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Problem p{};
  p.groups = pick(1, 3) == 1 ? 2 : 1;
  p.N = pick(1, 3), p.C = p.groups * pick(1, 40), p.K = p.groups * pick(1, 150);
  p.R = pick(1, 4), p.S = pick(1, 4), p.H = pick(1, 13), p.W = pick(1, 13);
  p.stride_h = pick(1, 3), p.stride_w = pick(1, 2), p.dilation_h = pick(1, 2), p.dilation_w = pick(1, 2);
  p.pad_h = pick(0, 2), p.pad_w = pick(0, 2);
  p.P = (p.H + 2 * p.pad_h - p.dilation_h * (p.R - 1) - 1) / p.stride_h + 1;
  p.Q = (p.W + 2 * p.pad_w - p.dilation_w * (p.S - 1) - 1) / p.stride_w + 1;
  return p;
}

struct Reference {  // float64 results of the plain loop nests
  std::vector<double> y, gx, gw;
};

Reference reference(const Problem& p, const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<double>& b, const std::vector<double>& gy) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  Reference ref{std::vector<double>(p.N * p.K * p.P * p.Q), std::vector<double>(x.size()),
                std::vector<double>(w.size())};
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < p.K; ++k)
      for (int64_t op = 0; op < p.P; ++op)
        for (int64_t oq = 0; oq < p.Q; ++oq) {
          const int64_t yi = ((n * p.K + k) * p.P + op) * p.Q + oq;
          double acc = b[k];
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t r = 0; r < p.R; ++r)
              for (int64_t s = 0; s < p.S; ++s) {
                const int64_t h = op * p.stride_h - p.pad_h + r * p.dilation_h;
                const int64_t v = oq * p.stride_w - p.pad_w + s * p.dilation_w;
                if (h < 0 || h >= p.H || v < 0 || v >= p.W) continue;
                const int64_t xi = ((n * p.C + (k / Kg) * Cg + c) * p.H + h) * p.W + v;
                const int64_t wi = ((k * Cg + c) * p.R + r) * p.S + s;
                acc += x[xi] * w[wi];
                ref.gx[xi] += gy[yi] * w[wi];
                ref.gw[wi] += gy[yi] * x[xi];
              }
          ref.y[yi] = acc;
        }
  return ref;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<T>(v[i]);
  return out;
}

double relative_error(const std::vector<double>& want, const std::vector<double>& got) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (got[i] - want[i]) * (got[i] - want[i]), norm += want[i] * want[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-300);
}

std::vector<Tap> tap_table(const TapRule& rule) {
  std::vector<Tap> taps(rule.J);
  launch(tap_table_kernel<true>, dim3((rule.J + 255) / 256), dim3(256), taps.data(), rule);
  return taps;
}

template <typename T>
using PlaneKernel = void (*)(PlaneGemm<T>);

// out = the plane GEMM g (one launch, as launch_plane_gemm makes it) with tile width bn.
template <typename T>
void run_plane(PlaneKernel<T> kernel, int bm, int bn, PlaneGemm<T> g, const Problem& p, const TapRule& rule,
               const T* src, const T* w, const T* bias, T* out) {
  if (g.rows == 0) return;
  const auto taps = tap_table(rule);
  g.src = src, g.w = w, g.bias = bias, g.out = out, g.taps = taps.data();
  launch(kernel, dim3(ceil_div(g.rows, bm), ceil_div(g.cols, bn), p.groups), dim3(kThreads), g);
}

template <typename T>
std::vector<double> run_forward(PlaneKernel<T> kernel, int bm, int bn, const Problem& p, const std::vector<T>& x,
                                const std::vector<T>& w, const std::vector<T>& bias) {
  std::vector<T> y(p.N * p.K * p.P * p.Q, T(NAN));
  run_plane(kernel, bm, bn, forward_gemm<T>(p), p, forward_taps(p), x.data(), w.data(), bias.data(), y.data());
  return to_double(y);
}

// The input gradient as corr2d_input_grad.cu launches it: one plane GEMM per stride phase.
template <typename T>
std::vector<double> run_input_grad(PlaneKernel<T> kernel, int bm, int bn, const Problem& p, const std::vector<T>& gy,
                                   const std::vector<T>& w) {
  std::vector<T> gx(p.N * p.C * p.H * p.W, T(NAN));
  for_each_input_grad_phase<T>(p, [&](const InputGradPhase<T>& phase) {
    run_plane(kernel, bm, bn, phase.gemm, p, phase.taps, gy.data(), w.data(), static_cast<const T*>(nullptr), gx.data());
  });
  return to_double(gx);
}

template <typename T, int BM, int BN>
std::vector<double> run_weight_mma(const Problem& p, const std::vector<T>& gy, const std::vector<T>& x) {
  auto g = weight_gemm<T, float>(p, BM, BN);
  const auto taps = tap_table(forward_taps(p));
  const int64_t chunks = ceil_div(g.terms, g.chunk_terms), outputs = p.K * g.J;
  std::vector<float> partials(chunks * outputs, NAN);
  g.gy = gy.data(), g.x = x.data(), g.partials = partials.data(), g.taps = taps.data();
  launch(weight_mma_kernel<T, BM, BN, std::is_same_v<T, BFloat16>>,
         dim3(ceil_div(g.Kg, BM) * g.col_tiles, chunks, p.groups), dim3(kThreads), g);
  std::vector<double> gw(outputs, 0.0);
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t o = 0; o < outputs; ++o) gw[o] += partials[c * outputs + o];
  return gw;
}

template <typename T, int BM, int BN>
std::vector<double> run_weight(const Problem& p, const std::vector<T>& gy, const std::vector<T>& x) {
  auto g = weight_gemm<T, T>(p, BM, BN);
  const auto taps = tap_table(forward_taps(p));
  const int64_t chunks = ceil_div(g.terms, g.chunk_terms), outputs = p.K * g.J;
  std::vector<T> partials(chunks * outputs, T(NAN));
  g.gy = gy.data(), g.x = x.data(), g.partials = partials.data(), g.taps = taps.data();
  launch(weight_gemm_kernel<T, T, BM, BN>, dim3(ceil_div(g.Kg, BM) * g.col_tiles, chunks, p.groups),
         dim3(kThreads), g);
  std::vector<double> gw(outputs, 0.0);
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t o = 0; o < outputs; ++o) gw[o] += partials[c * outputs + o];
  return gw;
}

template <typename T, int TW>
std::vector<double> run_tile(const Problem& p, const std::vector<T>& x, const std::vector<T>& w, const T* bias) {
  auto d = torchcorr::cuda::tile::direct_tile<T>(p, TW);
  if (!torchcorr::cuda::tile::fits_in_shared(d, sizeof(T))) return {};
  std::vector<T> y(p.N * p.K * p.P * p.Q, T(NAN));
  d.x = x.data(), d.w = w.data(), d.bias = bias, d.y = y.data();
  launch(torchcorr::cuda::tile::direct_tile_kernel<T, T, TW>, dim3(d.tiles, std::min<int64_t>(p.N * p.K, 5)),
         dim3(torchcorr::cuda::tile::kThreads), d);
  return std::vector<double>(y.begin(), y.end());
}

template <typename T, int TW>
std::vector<double> run_tile_weight_grad(const Problem& p, const std::vector<T>& x, const std::vector<T>& gy) {
  auto d = torchcorr::cuda::tile::direct_tile<T>(p, TW);
  if (!torchcorr::cuda::tile::fits_in_shared(d, sizeof(T))) return {};
  const int64_t chunks = p.N * d.tiles, outputs = p.K * p.C_per_group() * p.R * p.S;
  std::vector<T> partials(chunks * outputs, T(NAN));
  d.x = x.data();
  launch(torchcorr::cuda::tile::direct_tile_weight_grad_kernel<T, T, TW>,
         dim3(d.tiles, std::min<int64_t>(p.N * p.K, 5)), dim3(torchcorr::cuda::tile::kThreads), d, gy.data(),
         partials.data());
  std::vector<double> gw(outputs, 0.0);
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t o = 0; o < outputs; ++o) gw[o] += partials[c * outputs + o];
  return gw;
}

// The input gradient of a stride-1 problem as the forward of `flipped` over grad_output: channels swapped,
// padding dilation*(kernel-1) - pad, weights w'[g*Cg + c][k][r][s] = w[g*Kg + k][c][R-1-r][S-1-s].
Problem flipped(const Problem& p) {
  Problem f = p;
  f.C = p.K, f.H = p.P, f.W = p.Q, f.K = p.C, f.P = p.H, f.Q = p.W;
  f.pad_h = p.dilation_h * (p.R - 1) - p.pad_h, f.pad_w = p.dilation_w * (p.S - 1) - p.pad_w;
  return f;
}

template <typename T>
std::vector<T> flipped_weights(const Problem& p, const std::vector<T>& w) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  std::vector<T> out(w.size());
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t r = 0; r < p.R; ++r)
          for (int64_t s = 0; s < p.S; ++s)
            out[(((g * Cg + c) * Kg + k) * p.R + r) * p.S + s] =
                w[(((g * Kg + k) * Cg + c) * p.R + (p.R - 1 - r)) * p.S + (p.S - 1 - s)];
  return out;
}

int failures = 0, tile_input_grads = 0;
double worst = 0;

void check(const char* what, const std::string& problem, const std::vector<double>& want,
           const std::vector<double>& got, double tolerance) {
  const double error = relative_error(want, got);
  worst = std::max(worst, error);
  if (!(error <= tolerance)) {
    ++failures;
    std::printf("FAIL %s on %s: relative error %g\n", what, problem.c_str(), error);
  }
}

template <typename T>
void check_tiles(const Problem& p, const Reference& ref, const std::vector<T>& xt, const std::vector<T>& wt,
                 const std::vector<T>& bt, const std::vector<T>& gyt, const char* name, double tolerance) {
  for (const auto& [what, y] : {std::pair{"tile forward TW=32", run_tile<T, 32>(p, xt, wt, bt.data())},
                                std::pair{"tile forward TW=64", run_tile<T, 64>(p, xt, wt, bt.data())}}) {
    if (!y.empty()) check(what, name, ref.y, y, tolerance);
  }
  for (const auto& [what, gw] : {std::pair{"tile weight grad TW=32", run_tile_weight_grad<T, 32>(p, xt, gyt)},
                                 std::pair{"tile weight grad TW=64", run_tile_weight_grad<T, 64>(p, xt, gyt)}}) {
    if (!gw.empty()) check(what, name, ref.gw, gw, tolerance);
  }
  const Problem f = flipped(p);
  if (p.stride_h == 1 && p.stride_w == 1 && f.pad_h >= 0 && f.pad_w >= 0) {
    const auto gx = run_tile<T, 32>(f, gyt, flipped_weights(p, wt), nullptr);
    if (!gx.empty()) check("tile input grad", name, ref.gx, gx, tolerance);
    ++tile_input_grads;
  }
}

// Random inputs of a problem, exactly representable in T, and their float64 results.
template <typename T>
struct Case {
  Reference ref;
  std::vector<T> xt, wt, bt, gyt;
  std::string name;
};

template <typename T>
Case<T> random_case(const Problem& p, std::mt19937& rng, const char* dtype) {
  std::normal_distribution<double> normal;
  auto randn = [&](int64_t size) {
    std::vector<double> v(size);
    for (auto& e : v) e = static_cast<double>(static_cast<T>(normal(rng)));
    return v;
  };
  const auto x = randn(p.N * p.C * p.H * p.W), w = randn(p.K * p.C_per_group() * p.R * p.S), b = randn(p.K);
  const auto gy = randn(p.N * p.K * p.P * p.Q);
  char name[256];
  std::snprintf(name, sizeof name, "%s N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld,%ld p%ld,%ld d%ld,%ld g%ld", dtype,
                p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h,
                p.dilation_w, p.groups);
  return {reference(p, x, w, b, gy), cast<T>(x), cast<T>(w), cast<T>(b), cast<T>(gy), name};
}

template <typename T>
void check_problem(const Problem& p, std::mt19937& rng, double tolerance) {
  const auto c = random_case<T>(p, rng, sizeof(T) == 8 ? "double" : "float");
  const auto& [ref, xt, wt, bt, gyt, case_name] = c;
  const char* name = case_name.c_str();
  check("forward 128x64", name, ref.y, run_forward<T>(plane_gemm_kernel<T, T, 128, 64>, 128, 64, p, xt, wt, bt), tolerance);
  check("forward 64x128", name, ref.y, run_forward<T>(plane_gemm_kernel<T, T, 64, 128>, 64, 128, p, xt, wt, bt), tolerance);
  check("input grad 64x64", name, ref.gx, run_input_grad<T>(plane_gemm_kernel<T, T, 64, 64>, 64, 64, p, gyt, wt), tolerance);
  check("input grad 128x128", name, ref.gx, run_input_grad<T>(plane_gemm_kernel<T, T, 128, 128>, 128, 128, p, gyt, wt), tolerance);
  check("weight grad 64x128", name, ref.gw, run_weight<T, 64, 128>(p, gyt, xt), tolerance);
  check("weight grad 128x64", name, ref.gw, run_weight<T, 128, 64>(p, gyt, xt), tolerance);
  check_tiles<T>(p, ref, xt, wt, bt, gyt, name, tolerance);
}

// The tensor-core kernels in a 16-bit type T: float32 sums of exact products, outputs rounded to T (hence
// `tolerance`), weight-gradient partials kept in float32.
template <typename T>
void check_problem_mma(const Problem& p, std::mt19937& rng, double tolerance) {
  constexpr bool kBF16 = std::is_same_v<T, BFloat16>;
  const auto c = random_case<T>(p, rng, kBF16 ? "bfloat16" : "float16");
  const auto& [ref, xt, wt, bt, gyt, case_name] = c;
  const char* name = case_name.c_str();
  check("mma forward 128x64", name, ref.y, run_forward<T>(plane_mma_kernel<T, 128, 64, kBF16>, 128, 64, p, xt, wt, bt), tolerance);
  check("mma forward 64x128", name, ref.y, run_forward<T>(plane_mma_kernel<T, 64, 128, kBF16>, 64, 128, p, xt, wt, bt), tolerance);
  check("mma input grad 64x64", name, ref.gx, run_input_grad<T>(plane_mma_kernel<T, 64, 64, kBF16>, 64, 64, p, gyt, wt), tolerance);
  check("mma input grad 128x128", name, ref.gx, run_input_grad<T>(plane_mma_kernel<T, 128, 128, kBF16>, 128, 128, p, gyt, wt), tolerance);
  check("mma weight grad 64x64", name, ref.gw, run_weight_mma<T, 64, 64>(p, gyt, xt), 1e-5);
  check("mma weight grad 64x128", name, ref.gw, run_weight_mma<T, 64, 128>(p, gyt, xt), 1e-5);
  check("mma weight grad 128x64", name, ref.gw, run_weight_mma<T, 128, 64>(p, gyt, xt), 1e-5);
  check("mma weight grad 128x128", name, ref.gw, run_weight_mma<T, 128, 128>(p, gyt, xt), 1e-5);
}

int main(int argc, char** argv) {
  const int problems = argc > 1 ? std::atoi(argv[1]) : 12;
  std::mt19937 rng(1234);
  for (int i = 0; i < problems; ++i) {
    const Problem p = random_problem(rng);
    if (p.P < 1 || p.Q < 1) continue;
    if (i % 2) check_problem<double>(p, rng, 1e-12);
    else check_problem<float>(p, rng, 1e-5);
  }
  // Thin layers for the tiles: single channel, depthwise, few channels; stride 1 for the input gradient.
  for (int i = 0; i < problems; ++i) {
    Problem p = random_problem(rng);
    const int64_t groups = i % 3 == 0 ? 1 + i % 4 : 1;
    p.groups = groups, p.C = groups * (1 + i % 3), p.K = groups * (1 + (i / 2) % 3), p.stride_h = p.stride_w = 1 + (i % 4 == 3);
    p.H += 6, p.W += 20 + 10 * (i % 5);
    p.P = (p.H + 2 * p.pad_h - p.dilation_h * (p.R - 1) - 1) / p.stride_h + 1;
    p.Q = (p.W + 2 * p.pad_w - p.dilation_w * (p.S - 1) - 1) / p.stride_w + 1;
    if (i % 2) check_problem<double>(p, rng, 1e-12);
    else check_problem<float>(p, rng, 1e-5);
  }
  // Tensor cores: bfloat16 and float16, random problems with channels enough for a GEMM and a few without.
  for (int i = 0; i < problems; ++i) {
    const Problem p = random_problem(rng);
    if (p.P < 1 || p.Q < 1) continue;
    if (i % 2) check_problem_mma<BFloat16>(p, rng, 1e-2);
    else check_problem_mma<Half>(p, rng, 3e-3);
  }
  // Many reduction chunks: a long weight-gradient sum cut into several chunks, with a ragged last one.
  Problem long_sum{3, 4, 37, 29, 5, 3, 3, 37, 29, 1, 1, 1, 1, 1, 1, 1};
  check_problem<double>(long_sum, rng, 1e-12);
  std::printf("CUDA kernel emulation: %d failures (%d tile input gradients), worst relative error %.3g\n",
              failures, tile_input_grads, worst);
  return failures ? 1 : 0;
}
