// Weight gradient of the cross-correlation on the CPU.
//
// Computes gw[k,c,r,s] = sum_{n,p,q} gy[n,k,p,q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw].
//
// Work split: one task per (image n, block of output rows). Per group, a task stages the block's rows of x
// exactly as the forward pass does (staging.h: tap (c, r, s) at pixel m reads x_staged[tap_offset + m]),
// and gy's rows on the same pixel grid, zero at the columns that are not outputs. Tasks are dealt in order
// to a fixed number of partial sums that depends on the sizes only; the partials are added in a fixed
// order at the end, so the result is the same bits for any thread count.
// Two register-blocked kernels, chosen like the forward pass's:
//  - channel_sums (K per group >= a vector): acc[tap j][k lanes] += gy_t[m][k lanes] * x[tap_j + m],
//    with gy transposed to pixel-major while staging.
//  - pixel_sums (few output channels): acc[k][tap j] (vectors over pixels) += gy[k][m..] * x[tap_j + m..],
//    summed across lanes at the end.
// Memory: each task reads its rows of x and gy once into staging and adds K*Cg*R*S values into its partial.
//
// The bias gradient gb[k] = sum_{n,p,q} gy[n,k,p,q] is the same kind of reduction: one task per
// (image, chunk of kMinWorkPerThread pixels, k), partials added in a fixed order.
#include "cpu_kernel_utils.h"
#include "direct_corr.h"
#include "simd.h"
#include "staging.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

namespace torchcorr::cpu {
namespace {

// Partial sums of the weight gradient: at most this many, whatever the problem.
constexpr int64_t kMaxPartials = 8;

// out[j][0 .. KV*L) = sum_m x[taps[j] + m] * gy_t[m][0 .. KV*L) for m < pixels.
template <typename T, int KV, int J>
void channel_sums(const T* x, const int64_t* taps, const T* gy_t, int64_t gy_stride, int64_t pixels, T* out) {
  using S = Simd<T>;
  typename S::Vec acc[J][KV];
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < KV; ++v) acc[j][v] = S::zero();
  for (int64_t m = 0; m < pixels; ++m) {
    typename S::Vec g[KV];
    for (int v = 0; v < KV; ++v) g[v] = S::load(gy_t + m * gy_stride + v * S::lanes);
    for (int j = 0; j < J; ++j) {
      const T xs = x[taps[j] + m];
      for (int v = 0; v < KV; ++v) acc[j][v] += g[v] * xs;
    }
  }
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < KV; ++v) S::store(out + (j * KV + v) * S::lanes, acc[j][v]);
}

// out[k][j] = sum_m gy[k][m] * x[taps[j] + m] for m < pixels (a multiple of the lanes), k < KB.
template <typename T, int KB, int J>
void pixel_sums(const T* x, const int64_t* taps, const T* gy, int64_t gy_stride, int64_t pixels, T* out) {
  using S = Simd<T>;
  typename S::Vec acc[KB][J];
  for (int k = 0; k < KB; ++k)
    for (int j = 0; j < J; ++j) acc[k][j] = S::zero();
  for (int64_t m = 0; m < pixels; m += S::lanes) {
    typename S::Vec g[KB];
    for (int k = 0; k < KB; ++k) g[k] = S::load(gy + k * gy_stride + m);
    for (int j = 0; j < J; ++j) {
      const typename S::Vec xv = S::load(x + taps[j] + m);
      for (int k = 0; k < KB; ++k) acc[k][j] += g[k] * xv;
    }
  }
  for (int k = 0; k < KB; ++k)
    for (int j = 0; j < J; ++j) out[k * J + j] = S::sum(acc[k][j]);
}

// gy's rows [row0, row0 + rows) of `channels` planes on the staged pixel grid, value (k, m) stored at
// k * k_stride + m * m_stride; zero at columns >= Q, rows >= P and channels >= channels (up to padded).
template <typename T>
void stage_grad(const T* gy, const DirectProblem& d, const StagedLayout& l, int64_t row0, int64_t channels,
                int64_t padded_channels, int64_t pixels, int64_t k_stride, int64_t m_stride, T* out) {
  for (int64_t k = 0; k < padded_channels; ++k) {
    T* dst = out + k * k_stride;
    for (int64_t m = 0, row = 0; m < pixels; ++row) {
      const bool real_row = k < channels && row < l.rows && row0 + row < d.P;
      const T* src = gy + (k * d.P + row0 + row) * d.Q;
      for (int64_t col = 0; col < l.width && m < pixels; ++col, ++m)
        dst[m * m_stride] = real_row && col < d.Q ? src[col] : T(0);
    }
  }
}

enum class Kernel { channel_sums, pixel_sums };

Kernel choose_kernel(const DirectProblem& d, int lanes) {
  return d.K_per_group() >= lanes ? Kernel::channel_sums : Kernel::pixel_sums;
}

template <typename T>
struct WeightGradTask {
  using S = Simd<T>;
  const DirectProblem& d;
  const StagedLayout& layout;
  Kernel kernel;
  int64_t block;   // output channels per kernel call: KV vectors, or KB for pixel_sums
  int64_t pixels;  // staged pixels, rounded up to the lanes

  int64_t padded_K() const { return div_up(d.K_per_group(), block) * block; }
  int64_t grad_size() const { return padded_K() * pixels; }

  // Adds this task's sums for group g into partial (K x Cg*R*S).
  template <int KV, int J>
  void channel(const T* x_staged, const T* gy_t, int64_t g, T* partial) const {
    const int64_t taps = layout.tap_offsets.size(), Kg = d.K_per_group();
    alignas(64) T out[J * KV * S::lanes];
    for (int64_t k0 = 0; k0 < Kg; k0 += KV * S::lanes) {
      for (int64_t t0 = 0; t0 < taps; t0 += J) {
        int64_t tile[J];
        for (int j = 0; j < J; ++j) tile[j] = layout.tap_offsets[std::min(t0 + j, taps - 1)];
        channel_sums<T, KV, J>(x_staged, tile, gy_t + k0, padded_K(), layout.rows * layout.width, out);
        for (int64_t j = 0; j < std::min<int64_t>(J, taps - t0); ++j)
          for (int64_t k = 0; k < std::min<int64_t>(KV * S::lanes, Kg - k0); ++k)
            partial[(g * Kg + k0 + k) * taps + t0 + j] += out[j * KV * S::lanes + k];
      }
    }
  }

  template <int KB>
  void pixel(const T* x_staged, const T* gy, int64_t g, T* partial) const {
    constexpr int J = std::min(12, kAccumulators / KB);
    const int64_t taps = layout.tap_offsets.size(), Kg = d.K_per_group();
    T out[KB * J];
    for (int64_t k0 = 0; k0 < Kg; k0 += KB) {
      for (int64_t t0 = 0; t0 < taps; t0 += J) {
        int64_t tile[J];
        for (int j = 0; j < J; ++j) tile[j] = layout.tap_offsets[std::min(t0 + j, taps - 1)];
        pixel_sums<T, KB, J>(x_staged, tile, gy + k0 * pixels, pixels, pixels, out);
        for (int64_t k = 0; k < std::min<int64_t>(KB, Kg - k0); ++k)
          for (int64_t j = 0; j < std::min<int64_t>(J, taps - t0); ++j)
            partial[(g * Kg + k0 + k) * taps + t0 + j] += out[k * J + j];
      }
    }
  }

  void run(const T* x_staged, const T* grad, int64_t g, T* partial) const {
    if (kernel == Kernel::channel_sums) {
      if (d.K_per_group() > S::lanes) return channel<2, kAccumulators / 2>(x_staged, grad, g, partial);
      return channel<1, kAccumulators / 2>(x_staged, grad, g, partial);
    }
    switch (block) {
      case 1: return pixel<1>(x_staged, grad, g, partial);
      case 2: return pixel<2>(x_staged, grad, g, partial);
      case 3: return pixel<3>(x_staged, grad, g, partial);
      default: return pixel<4>(x_staged, grad, g, partial);
    }
  }
};

template <typename T>
void weight_grad_kernel(const Corr2dProblem& p, const T* gy, const T* x, T* gw) {
  using S = Simd<T>;
  const DirectProblem d = forward_problem(p);
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), outputs = p.K * Cg * p.R * p.S;
  std::fill(gw, gw + outputs, T(0));
  if (p.N * p.P == 0 || outputs == 0) return;
  const Kernel kernel = choose_kernel(d, S::lanes);
  const int64_t block = kernel == Kernel::channel_sums ? (Kg > S::lanes ? 2 * S::lanes : S::lanes)
                                                       : std::min<int64_t>(Kg, 4);
  const int64_t rows = staged_rows(d, (Kg + block) * (p.Q + p.S * p.dilation_w) * sizeof(T), sizeof(T));
  const StagedLayout layout = make_layout(d, rows);
  const WeightGradTask<T> task{d, layout, kernel, block, div_up(rows * layout.width, S::lanes) * S::lanes};
  const int64_t row_blocks = div_up(p.P, rows), tasks = p.N * row_blocks;
  const int64_t slots = std::min(tasks, kMaxPartials);
  std::vector<T> partials(slots == 1 ? 0 : slots * outputs, T(0));

  at::parallel_for(0, slots, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> staged(layout.size, T(0)), grad(task.grad_size() + S::lanes, T(0));
    for (int64_t slot = begin; slot < end; ++slot) {
      T* partial = slots == 1 ? gw : partials.data() + slot * outputs;
      for (int64_t t = slot * tasks / slots; t < (slot + 1) * tasks / slots; ++t) {
        const int64_t n = t / row_blocks, row0 = t % row_blocks * rows;
        for (int64_t g = 0; g < p.groups; ++g) {
          stage(d, layout, x + (n * p.C + g * Cg) * p.H * p.W, row0, staged.data());
          const T* gy_group = gy + (n * p.K + g * Kg) * p.P * p.Q;
          if (kernel == Kernel::channel_sums) {
            stage_grad(gy_group, d, layout, row0, Kg, task.padded_K(), task.pixels, 1, task.padded_K(), grad.data());
          } else {
            stage_grad(gy_group, d, layout, row0, Kg, task.padded_K(), task.pixels, task.pixels, 1, grad.data());
          }
          task.run(staged.data(), grad.data(), g, partial);
        }
      }
    }
  });
  if (slots == 1) return;
  at::parallel_for(0, outputs, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t slot = 0; slot < slots; ++slot) {
      const T* values = partials.data() + slot * outputs;
      for (int64_t i = begin; i < end; ++i) gw[i] += values[i];
    }
  });
}

template <typename T>
void bias_grad_kernel(int64_t N, int64_t K, int64_t pixels, const T* gy, T* gb) {
  constexpr int64_t chunk = kMinWorkPerThread;  // pixels a task sums
  const int64_t chunks_per_plane = std::max<int64_t>(1, div_up(pixels, chunk));
  const int64_t chunks = N * chunks_per_plane;
  std::vector<T> partials(chunks * K);
  parallel_tasks(chunks * K, chunk, [&](int64_t task) {
    const int64_t k = task % K, plane_chunk = task / K;
    const int64_t n = plane_chunk / chunks_per_plane, begin = (plane_chunk % chunks_per_plane) * chunk;
    const T* values = gy + (n * K + k) * pixels;
    T sum = 0;
    for (int64_t i = begin; i < std::min(pixels, begin + chunk); ++i) sum += values[i];
    partials[plane_chunk * K + k] = sum;
  });
  for (int64_t k = 0; k < K; ++k) {
    T sum = 0;
    for (int64_t c = 0; c < chunks; ++c) sum += partials[c * K + k];
    gb[k] = sum;
  }
}

at::Tensor corr2d_bias_grad_cpu(const at::Tensor& grad_output) {
  check_bias_grad("torchcorr.corr2d_bias_grad", grad_output);
  const auto gy = to_compute(grad_output);
  auto gb = at::empty({gy.size(1)}, gy.options());
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "corr2d_bias_grad_cpu", [&] {
    bias_grad_kernel<scalar_t>(gy.size(0), gy.size(1), gy.size(2) * gy.size(3), gy.const_data_ptr<scalar_t>(),
                               gb.mutable_data_ptr<scalar_t>());
  });
  return gb.to(grad_output.scalar_type());
}

at::Tensor corr2d_weight_grad_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  at::IntArrayRef weight_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_weight_grad("torchcorr.corr2d_weight_grad", grad_output, input, weight_size, stride,
                                   padding, dilation, groups);
  const auto gy = to_compute(grad_output), x = to_compute(input);
  auto gw = at::empty({p.K, p.C_per_group(), p.R, p.S}, gy.options());
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "corr2d_weight_grad_cpu", [&] {
    weight_grad_kernel<scalar_t>(p, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                 gw.mutable_data_ptr<scalar_t>());
  });
  return to_result(gw, grad_output.scalar_type(), result_memory_format(grad_output, input));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CPU, m) {
  m.impl("corr2d_weight_grad", TORCH_FN(corr2d_weight_grad_cpu));
  m.impl("corr2d_bias_grad", TORCH_FN(corr2d_bias_grad_cpu));
}

}  // namespace torchcorr::cpu
