// Input gradient of the cross-correlation on the CPU, the adjoint of the forward map:
//   gx[n, g*Cg + c, h, v] = sum_{k in group g, r, s, (p, q) with p*sh - ph + r*dh = h, q*sw - pw + s*dw = v}
//                           gy[n,k,p,q] * w[k,c,r,s].
// That is a correlation of gy, upsampled by the stride and padded by dilation*(kernel-1) - padding, with the
// kernel flipped and its channel axes swapped; the direct correlation engine (direct_corr.cpp) computes it.
#include "cpu_kernel_utils.h"
#include "direct_corr.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

namespace torchcorr::cpu {
namespace {

at::Tensor corr2d_input_grad_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                 at::IntArrayRef input_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_input_grad("torchcorr.corr2d_input_grad", grad_output, weight, input_size, stride,
                                  padding, dilation, groups);
  const auto gy = to_compute(grad_output), w = to_compute(weight);
  auto gx = at::empty({p.N, p.C, p.H, p.W}, gy.options());
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "corr2d_input_grad_cpu", [&] {
    direct_correlation<scalar_t>(input_grad_problem(p), gy.const_data_ptr<scalar_t>(),
                                 w.const_data_ptr<scalar_t>(), WeightOrder::adjoint, nullptr,
                                 gx.mutable_data_ptr<scalar_t>());
  });
  return to_result(gx, grad_output.scalar_type(), result_memory_format(grad_output, weight));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CPU, m) {
  m.impl("corr2d_input_grad", TORCH_FN(corr2d_input_grad_cpu));
}

}  // namespace torchcorr::cpu
