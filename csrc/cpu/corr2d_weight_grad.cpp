// Weight gradient of the cross-correlation on the CPU.
//
// Computes gw[k,c,r,s] = sum_{n,p,q} gy[n,k,p,q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw].
//
// Work split: the reduction over the N*P output rows is cut into a number of chunks that depends
// only on the problem's sizes. One task per (chunk, k, c) sums its rows into R*S partials; the
// partials are then added chunk by chunk in a fixed order. The result is therefore the same bits
// for any thread count. The innermost loop is a dot product of a gy row with a row of x.
// Memory: each task reads its chunk of one gy plane and one x plane; the partials take
// chunks * K * Cg * R * S values.
//
// The bias gradient gb[k] = sum_{n,p,q} gy[n,k,p,q] is the same kind of reduction: one task per
// (image, chunk of kMinWorkPerThread pixels, k), partials added in a fixed order.
#include "cpu_kernel_utils.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

namespace torchcorr::cpu {
namespace {

// How many chunks to cut the N*P reduction rows into: enough for about 64 tasks in all, but no
// chunk with fewer than kMinWorkPerThread multiply-adds. A function of the sizes alone.
int64_t reduction_chunks(const Corr2dProblem& p) {
  const int64_t rows = p.N * p.P, outputs = p.K * p.C_per_group();
  const int64_t wanted = div_up(64, std::max<int64_t>(1, outputs));
  const int64_t affordable = rows * p.Q * p.R * p.S / kMinWorkPerThread;
  return std::clamp<int64_t>(std::min(wanted, affordable), 1, std::max<int64_t>(rows, 1));
}

template <typename T>
void weight_grad_kernel(const Corr2dProblem& p, const T* gy, const T* x, T* gw) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), taps = p.R * p.S;
  const int64_t outputs = p.K * Cg * taps;
  const int64_t rows_total = p.N * p.P;
  if (rows_total == 0 || outputs == 0) {
    std::fill(gw, gw + outputs, T(0));
    return;
  }
  std::vector<ColumnRange> cols(p.S);
  for (int64_t s = 0; s < p.S; ++s) cols[s] = valid_output_cols(p, s);
  const int64_t rows = div_up(rows_total, reduction_chunks(p));
  const int64_t chunks = div_up(rows_total, rows);
  std::vector<T> partials(chunks == 1 ? 0 : chunks * outputs);
  T* sums = chunks == 1 ? gw : partials.data();

  parallel_tasks(chunks * p.K * Cg, rows * p.Q * taps, [&](int64_t task) {
    const int64_t kc = task % (p.K * Cg), chunk = task / (p.K * Cg);
    const int64_t k = kc / Cg, c = kc % Cg, g = k / Kg;
    T* acc = sums + chunk * outputs + kc * taps;
    std::fill(acc, acc + taps, T(0));
    const int64_t row_end = std::min(rows_total, (chunk + 1) * rows);
    for (int64_t row = chunk * rows; row < row_end; ++row) {
      const int64_t n = row / p.P, pr = row % p.P;
      const T* gy_row = gy + ((n * p.K + k) * p.P + pr) * p.Q;
      const T* x_plane = x + (n * p.C + g * Cg + c) * p.H * p.W;
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = p.input_row(pr, r);
        if (h < 0 || h >= p.H) continue;
        const T* x_row = x_plane + h * p.W;
        for (int64_t s = 0; s < p.S; ++s) {
          const auto [begin, end] = cols[s];
          acc[r * p.S + s] += dot(gy_row + begin, x_row + p.input_col(begin, s), p.stride_w, end - begin);
        }
      }
    }
  });
  if (chunks == 1) return;
  parallel_tasks(outputs, chunks, [&](int64_t i) {
    T sum = 0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partials[chunk * outputs + i];
    gw[i] = sum;
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
