// Input gradient of the cross-correlation on the CPU, the adjoint of the forward map:
//   gx[n, g*Cg + c, h, v] = sum_{k in group g, r, s, (p, q) with p*sh - ph + r*dh = h, q*sw - pw + s*dw = v}
//                           gy[n,k,p,q] * w[k,c,r,s].
// With stride 1 that is a correlation of gy, zero-padded by dilation*(kernel-1) - padding, with the kernel
// flipped and its channel axes swapped; the direct correlation engine (kernels/direct_correlation.h) computes it.
// With a stride, each stride phase of gx (rows h = a*sh + first_h, columns likewise) is such a correlation
// with the kernel taps that reach it: only the rows r with (first_h + ph - r*dh) divisible by sh, read in
// descending order, gy rows a + (first_h + ph - r*dh) / sh. No multiply-add is spent on the zeros a
// zero-inserted gy would have.
#include "cpu_kernel_utils.h"
#include "algorithm.h"
#include "cpu_kernels.h"
#include "gemm_conv.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <numeric>
#include <vector>

namespace torchcorr::cpu {
namespace {

// The kernel taps (along one axis) that reach output phase `first` of the gradient, and how they read gy.
struct PhaseTaps {
  std::vector<int64_t> taps;  // kernel indices, descending
  int64_t spacing;            // gy step between consecutive taps
  int64_t offset;             // the virtual input's zero offset: gy index a + k*spacing - offset
  int64_t outputs;            // gradient rows (or columns) in the phase
};

PhaseTaps phase_taps(int64_t first, int64_t size, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  PhaseTaps phase{{}, dilation / std::gcd(dilation, stride), 0, first < size ? div_up(size - first, stride) : 0};
  for (int64_t r = kernel - 1; r >= 0; --r) {
    const int64_t reach = first + pad - r * dilation;  // stride * (gy index - a)
    if (reach % stride == 0) phase.taps.push_back(r);
  }
  if (!phase.taps.empty()) phase.offset = -((first + pad - phase.taps[0] * dilation) / stride);
  return phase;
}

template <typename T>
void strided_input_grad(const Corr2dProblem& p, const at::Tensor& gy, const at::Tensor& w, at::Tensor& gx) {
  const int64_t Kg = p.K_per_group(), Cg = p.C_per_group();
  // w_t[g*Cg + c, k, r, s] = w[g*Kg + k, c, r, s]
  const auto w_t = w.view({p.groups, Kg, Cg, p.R, p.S}).transpose(1, 2);
  for (int64_t first_h = 0; first_h < std::min(p.stride_h, p.H); ++first_h) {  // later phases are empty
    const auto rows = phase_taps(first_h, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    for (int64_t first_w = 0; first_w < std::min(p.stride_w, p.W); ++first_w) {
      const auto cols = phase_taps(first_w, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
      if (rows.taps.empty() || cols.taps.empty() || rows.outputs == 0 || cols.outputs == 0) continue;
      const int64_t R = rows.taps.size(), S = cols.taps.size();
      const auto taps = w_t.index_select(3, at::tensor(rows.taps))
                            .index_select(4, at::tensor(cols.taps))
                            .reshape({p.C, Kg, R, S})
                            .contiguous();
      const DirectProblem d{p.N, p.K, p.P, p.Q, p.C, R, S, p.groups, rows.outputs, cols.outputs, 1, 1,
                            rows.spacing, cols.spacing, rows.offset, cols.offset};
      cpu_kernels().of<T>().direct_correlation(d, gy.const_data_ptr<T>(), taps.const_data_ptr<T>(),
                                               WeightOrder::as_given, nullptr, gx.mutable_data_ptr<T>(),
                                               {p.stride_h, p.stride_w, first_h, first_w, p.H, p.W});
    }
  }
}

at::Tensor corr2d_input_grad_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                 at::IntArrayRef input_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_input_grad("torchcorr.corr2d_input_grad", grad_output, weight, input_size, stride,
                                  padding, dilation, groups);
  const auto gy = to_compute(grad_output), w = to_compute(weight);
  const auto layout = result_memory_format(grad_output, weight);
  if (choose_algorithm(p, Op::input_grad) == Algorithm::gemm)
    return to_result(gemm_input_grad(p, gy, w), grad_output.scalar_type(), layout);
  const bool strided = p.stride_h > 1 || p.stride_w > 1;
  // Phases no tap reaches keep zeros.
  auto gx = strided ? at::zeros({p.N, p.C, p.H, p.W}, gy.options()) : at::empty({p.N, p.C, p.H, p.W}, gy.options());
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "corr2d_input_grad_cpu", [&] {
    if (strided) return strided_input_grad<scalar_t>(p, gy, w, gx);
    const auto d = input_grad_problem(p);
    cpu_kernels().of<scalar_t>().direct_correlation(d, gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                                    WeightOrder::adjoint, nullptr, gx.mutable_data_ptr<scalar_t>(),
                                                    OutputGrid::dense(d));
  });
  return to_result(gx, grad_output.scalar_type(), layout);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CPU, m) {
  m.impl("corr2d_input_grad", TORCH_FN(corr2d_input_grad_cpu));
}

}  // namespace torchcorr::cpu
