// Forward cross-correlation on the CPU:
//   y[n,k,p,q] = b[k] + sum_{c,r,s} x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k,c,r,s]
// (g = k / Kg; taps in the zero padding add nothing). torchcorr/reference.py is the same in tensor ops.
// The work is done by the family algorithm.h chooses: the direct correlation engine
// (kernels/direct_correlation.h) on x zero-padded, Winograd (kernels/winograd.h) or the GEMM (gemm_conv.h).
#include "cpu_kernel_utils.h"
#include "algorithm.h"
#include "cpu_kernels.h"
#include "gemm_conv.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

namespace torchcorr::cpu {
namespace {

at::Tensor corr2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_forward("torchcorr.corr2d_forward", input, weight, bias, stride, padding, dilation, groups);
  const auto result = result_memory_format(input, weight);
  const auto compute = compute_dtype(input.scalar_type());
  const Layout layout = compute_layout(p, Op::forward, compute, result);
  const Algorithm algorithm = choose_algorithm(p, Op::forward, compute, layout);
  const auto x = to_compute(input, layout), w = to_compute_weights(weight);
  const auto b = bias.has_value() ? std::optional<at::Tensor>(to_compute(*bias)) : std::nullopt;
  if (algorithm == Algorithm::gemm) return to_result(gemm_forward(p, layout, x, w, b), input.scalar_type(), result);
  auto y = empty_activation({p.N, p.K, p.P, p.Q}, x.options(), layout);
  auto d = forward_problem(p);
  d.layout = layout;
  d.weights = weight_layout(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "corr2d_forward_cpu", [&] {
    const auto& kernels = cpu_kernels().of<scalar_t>();
    const scalar_t* b_data = b ? b->const_data_ptr<scalar_t>() : nullptr;
    if (algorithm == Algorithm::winograd) {
      return kernels.winograd(d, winograd_plan(d), x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                              WeightOrder::as_given, b_data, y.mutable_data_ptr<scalar_t>());
    }
    kernels.direct_correlation(d, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), WeightOrder::as_given,
                               b_data, y.mutable_data_ptr<scalar_t>(), OutputGrid::dense(d));
  });
  return to_result(y, input.scalar_type(), result);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CPU, m) {
  m.impl("corr2d_forward", TORCH_FN(corr2d_forward_cpu));
}

}  // namespace torchcorr::cpu
