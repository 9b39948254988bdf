// Input gradient of the cross-correlation on the CPU.
//
// Computes gx[n, g*Cg + c, h, v] = sum_{k in group g, r, s, and (p, q) with
// p*sh - ph + r*dh = h, q*sw - pw + s*dw = v} gy[n,k,p,q] * w[k,c,r,s]: the adjoint of the forward map.
//
// Work split: one task per (image n, input channel, block of input rows). A task scatters into its
// own rows only, in the fixed order (k, r, s) per element, so results do not depend on threads.
// For one tap an input row gains w[k,c,r,s] times a row of gy: an axpy, unit-stride when stride_w == 1.
// Memory: each task reads the Kg gradient planes of its group and Kg*R*S weights; gx is written once
// per tap into a block of rows sized to stay in cache.
#include "cpu_kernel_utils.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

namespace torchcorr::cpu {
namespace {

template <typename T>
void input_grad_kernel(const Corr2dProblem& p, const T* gy, const T* w, T* gx) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  std::vector<ColumnRange> cols(p.S);
  for (int64_t s = 0; s < p.S; ++s) cols[s] = valid_output_cols(p, s);
  // One input row receives about Kg * R * S * Q / stride_h multiply-adds.
  const int64_t row_work = std::max<int64_t>(1, Kg * p.R * p.S * p.Q / p.stride_h);
  const int64_t rows = rows_per_task(p.H, row_work);
  const int64_t blocks = div_up(p.H, rows);

  parallel_tasks(p.N * p.C * blocks, rows * row_work, [&](int64_t task) {
    const int64_t nc = task / blocks, c_global = nc % p.C, n = nc / p.C;
    const int64_t g = c_global / Cg, c = c_global % Cg;
    const int64_t row_begin = (task % blocks) * rows, row_end = std::min(p.H, row_begin + rows);
    T* gx_plane = gx + nc * p.H * p.W;
    std::fill(gx_plane + row_begin * p.W, gx_plane + row_end * p.W, T(0));
    for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k) {
      const T* gy_plane = gy + (n * p.K + k) * p.P * p.Q;
      const T* taps = w + (k * Cg + c) * p.R * p.S;
      for (int64_t r = 0; r < p.R; ++r) {
        const auto out_rows = output_rows_reading(p, r, row_begin, row_end);
        for (int64_t pr = out_rows.begin; pr < out_rows.end; ++pr) {
          T* gx_row = gx_plane + p.input_row(pr, r) * p.W;
          const T* gy_row = gy_plane + pr * p.Q;
          for (int64_t s = 0; s < p.S; ++s) {
            const auto [begin, end] = cols[s];
            axpy(taps[r * p.S + s], gy_row + begin, 1, gx_row + p.input_col(begin, s), p.stride_w, end - begin);
          }
        }
      }
    }
  });
}

at::Tensor corr2d_input_grad_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                 at::IntArrayRef input_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_input_grad("torchcorr.corr2d_input_grad", grad_output, weight, input_size, stride,
                                  padding, dilation, groups);
  const auto gy = to_compute(grad_output), w = to_compute(weight);
  auto gx = at::empty({p.N, p.C, p.H, p.W}, gy.options());
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "corr2d_input_grad_cpu", [&] {
    input_grad_kernel<scalar_t>(p, gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                gx.mutable_data_ptr<scalar_t>());
  });
  return to_result(gx, grad_output.scalar_type(), result_memory_format(grad_output, weight));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CPU, m) {
  m.impl("corr2d_input_grad", TORCH_FN(corr2d_input_grad_cpu));
}

}  // namespace torchcorr::cpu
