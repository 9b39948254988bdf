// Input gradient of the cross-correlation on the CPU, the adjoint of the forward map:
//   gx[n, g*Cg + c, h, v] = sum_{k in group g, r, s, (p, q) with p*sh - ph + r*dh = h, q*sw - pw + s*dw = v}
//                           gy[n,k,p,q] * w[k,c,r,s].
// With stride 1 that is a correlation of gy, zero-padded by dilation*(kernel-1) - padding, with the kernel
// flipped and its channel axes swapped; the direct correlation engine (kernels/direct_correlation.h) or, for
// 3x3 kernels, Winograd (kernels/winograd.h) computes it.
// With a stride, each stride phase of gx is such a correlation with the kernel taps that reach it
// (input_grad_phases.h).
#include "cpu_kernel_utils.h"
#include "algorithm.h"
#include "cpu_kernels.h"
#include "gemm_conv.h"
#include "input_grad_phases.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

namespace torchcorr::cpu {
namespace {

template <typename T>
void strided_input_grad(const Corr2dProblem& p, Layout layout, const at::Tensor& gy, const at::Tensor& w,
                        at::Tensor& gx) {
  std::vector<at::Tensor> weights;  // alive until the kernels have run
  std::vector<InputGradPhase<T>> phases;
  for_each_phase(p, w, [&](int64_t first_h, int64_t first_w, const PhaseTaps& rows, const PhaseTaps& cols,
                           const at::Tensor& taps) {
    const DirectProblem d{p.N, p.K, p.P, p.Q, p.C, taps.size(2), taps.size(3), p.groups, rows.outputs, cols.outputs,
                          1, 1, rows.spacing, cols.spacing, rows.offset, cols.offset, layout};
    weights.push_back(taps);
    phases.push_back({d, {p.stride_h, p.stride_w, first_h, first_w, p.H, p.W}, taps.const_data_ptr<T>()});
  });
  cpu_kernels().of<T>().input_grad_phases(phases, gy.const_data_ptr<T>(), gx.mutable_data_ptr<T>());
}

at::Tensor corr2d_input_grad_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                 at::IntArrayRef input_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_input_grad("torchcorr.corr2d_input_grad", grad_output, weight, input_size, stride,
                                  padding, dilation, groups);
  const auto result = result_memory_format(grad_output, weight);
  const auto compute = compute_dtype(grad_output.scalar_type());
  const Layout layout = compute_layout(p, Op::input_grad, compute, result);
  const Algorithm algorithm = choose_algorithm(p, Op::input_grad, compute, layout);
  const auto gy = to_compute(grad_output, layout), w = to_compute_weights(weight);
  if (algorithm == Algorithm::gemm)
    return to_result(gemm_input_grad(p, layout, gy, w), grad_output.scalar_type(), result);
  const bool strided = p.stride_h > 1 || p.stride_w > 1;
  auto gx = empty_activation({p.N, p.C, p.H, p.W}, gy.options(), layout);
  if (strided && !phases_cover_plane(p)) gx.zero_();  // phases no tap reaches keep zeros
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "corr2d_input_grad_cpu", [&] {
    if (strided) return strided_input_grad<scalar_t>(p, layout, gy, w, gx);
    auto d = input_grad_problem(p);
    d.layout = layout;
    d.weights = weight_layout(w);
    const auto& kernels = cpu_kernels().of<scalar_t>();
    if (algorithm == Algorithm::winograd) {
      return kernels.winograd(d, winograd_plan(d), gy.const_data_ptr<scalar_t>(),
                              w.const_data_ptr<scalar_t>(), WeightOrder::adjoint, nullptr,
                              gx.mutable_data_ptr<scalar_t>());
    }
    kernels.direct_correlation(d, gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), WeightOrder::adjoint,
                               nullptr, gx.mutable_data_ptr<scalar_t>(), OutputGrid::dense(d));
  });
  return to_result(gx, grad_output.scalar_type(), result);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CPU, m) {
  m.impl("corr2d_input_grad", TORCH_FN(corr2d_input_grad_cpu));
}

}  // namespace torchcorr::cpu
