// Forward cross-correlation on the CPU.
//
// Computes y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k,c,r,s]
// (g = k / Kg is the group of output channel k); torchcorr/reference.py is the same thing in tensor ops.
//
// Work split: one task per (image n, output channel k, block of output rows). A task owns its rows,
// so no two threads touch one output and every sum runs in the same order (c, r, s) whatever the
// thread count. For one tap (c, r, s) an output row gains w[k,c,r,s] times a row of x: an axpy
// over q, unit-stride when stride_w == 1.
// Memory: each task reads Cg*R*S weights and the Cg input planes of its group; y is written once
// per tap, and a block of rows is sized to stay in cache while it is accumulated.
#include "cpu_kernel_utils.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

namespace torchcorr::cpu {
namespace {

template <typename T>
void forward_kernel(const Corr2dProblem& p, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  std::vector<ColumnRange> cols(p.S);
  for (int64_t s = 0; s < p.S; ++s) cols[s] = valid_output_cols(p, s);
  const int64_t row_work = p.Q * Cg * p.R * p.S;
  const int64_t rows = rows_per_task(p.P, row_work);
  const int64_t blocks = div_up(p.P, rows);

  parallel_tasks(p.N * p.K * blocks, rows * row_work, [&](int64_t task) {
    const int64_t nk = task / blocks, k = nk % p.K, n = nk / p.K;
    const int64_t row_begin = (task % blocks) * rows, row_end = std::min(p.P, row_begin + rows);
    T* y_plane = y + nk * p.P * p.Q;
    std::fill(y_plane + row_begin * p.Q, y_plane + row_end * p.Q, bias ? bias[k] : T(0));
    const int64_t g = k / Kg;
    for (int64_t c = 0; c < Cg; ++c) {
      const T* x_plane = x + (n * p.C + g * Cg + c) * p.H * p.W;
      const T* taps = w + (k * Cg + c) * p.R * p.S;
      for (int64_t r = 0; r < p.R; ++r) {
        const auto out_rows = output_rows_reading(p, r, 0, p.H);
        for (int64_t pr = std::max(row_begin, out_rows.begin); pr < std::min(row_end, out_rows.end); ++pr) {
          const T* x_row = x_plane + p.input_row(pr, r) * p.W;
          T* y_row = y_plane + pr * p.Q;
          for (int64_t s = 0; s < p.S; ++s) {
            const auto [begin, end] = cols[s];
            axpy(taps[r * p.S + s], x_row + p.input_col(begin, s), p.stride_w, y_row + begin, 1, end - begin);
          }
        }
      }
    }
  });
}

at::Tensor corr2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_forward("torchcorr.corr2d_forward", input, weight, bias, stride, padding, dilation, groups);
  const auto x = to_compute(input), w = to_compute(weight);
  const auto b = bias.has_value() ? std::optional<at::Tensor>(to_compute(*bias)) : std::nullopt;
  auto y = at::empty({p.N, p.K, p.P, p.Q}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "corr2d_forward_cpu", [&] {
    forward_kernel<scalar_t>(p, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             b ? b->const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>());
  });
  return to_result(y, input.scalar_type(), result_memory_format(input, weight));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CPU, m) {
  m.impl("corr2d_forward", TORCH_FN(corr2d_forward_cpu));
}

}  // namespace torchcorr::cpu
