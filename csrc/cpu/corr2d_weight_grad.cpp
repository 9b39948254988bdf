// Weight and bias gradients of the cross-correlation on the CPU: the ops, around the weight-gradient kernels
// of kernels/weight_grad.h (compiled per instruction-set level, chosen in cpu_kernels.cpp).
//
// The bias gradient gb[k] = sum_{n,p,q} gy[n,k,p,q] is a reduction, in either layout: one task per chunk of
// kMinWorkPerThread values of gy (of one plane, or of whole pixels in channels last), partials added in a
// fixed order.
#include "cpu_kernel_utils.h"
#include "algorithm.h"
#include "cpu_kernels.h"
#include "gemm_conv.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

namespace torchcorr::cpu {
namespace {

template <typename T>
void bias_grad_planes(int64_t N, int64_t K, int64_t pixels, const T* gy, T* gb) {
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

// Channels last: gy is `pixels` rows of K; a task sums a chunk of rows into its partial row.
template <typename T>
void bias_grad_channels_last(int64_t pixels, int64_t K, const T* gy, T* gb) {
  const int64_t rows = std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, K));  // rows per chunk
  const int64_t chunks = std::max<int64_t>(1, div_up(pixels, rows));
  std::vector<T> partials(chunks * K, T(0));
  parallel_tasks(chunks, rows * K, [&](int64_t chunk) {
    T* sums = partials.data() + chunk * K;
    for (int64_t i = chunk * rows; i < std::min(pixels, (chunk + 1) * rows); ++i)
      for (int64_t k = 0; k < K; ++k) sums[k] += gy[i * K + k];
  });
  std::fill(gb, gb + K, T(0));
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t k = 0; k < K; ++k) gb[k] += partials[c * K + k];
}

at::Tensor corr2d_bias_grad_cpu(const at::Tensor& grad_output) {
  check_bias_grad("torchcorr.corr2d_bias_grad", grad_output);
  const bool channels_last = grad_output.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const auto gy = to_compute(grad_output, channels_last ? Layout::channels_last : Layout::planes);
  const int64_t N = gy.size(0), K = gy.size(1), pixels = gy.size(2) * gy.size(3);
  auto gb = at::empty({K}, gy.options());
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "corr2d_bias_grad_cpu", [&] {
    const scalar_t* values = gy.const_data_ptr<scalar_t>();
    if (channels_last) return bias_grad_channels_last<scalar_t>(N * pixels, K, values, gb.mutable_data_ptr<scalar_t>());
    bias_grad_planes<scalar_t>(N, K, pixels, values, gb.mutable_data_ptr<scalar_t>());
  });
  return gb.to(grad_output.scalar_type());
}

at::Tensor corr2d_weight_grad_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  at::IntArrayRef weight_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_weight_grad("torchcorr.corr2d_weight_grad", grad_output, input, weight_size, stride,
                                   padding, dilation, groups);
  const auto result = result_memory_format(grad_output, input);
  const auto compute = compute_dtype(grad_output.scalar_type());
  const Layout layout = compute_layout(p, Op::weight_grad, compute, result);
  const auto gy = to_compute(grad_output, layout), x = to_compute(input, layout);
  const Algorithm algorithm = choose_algorithm(p, Op::weight_grad, compute, layout);
  if (algorithm == Algorithm::gemm)
    return to_result(gemm_weight_grad(p, layout, gy, x), grad_output.scalar_type(), result);
  // Channels last where the result is (where the kernel writes it so, no copy follows).
  const WeightLayout wanted = result == at::MemoryFormat::ChannelsLast ? WeightLayout::krsc : WeightLayout::kcrs;
  const int64_t Cg = p.C_per_group();
  auto gw = at::empty({p.K, Cg, p.R, p.S}, gy.options());
  WeightLayout written = WeightLayout::kcrs;
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "corr2d_weight_grad_cpu", [&] {
    const auto& kernels = cpu_kernels().of<scalar_t>();
    const auto kernel = algorithm == Algorithm::winograd ? kernels.winograd_weight_grad : kernels.weight_grad;
    written = kernel(p, layout, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                     gw.mutable_data_ptr<scalar_t>(), wanted);
  });
  if (written == WeightLayout::krsc) gw = gw.view({p.K, p.R, p.S, Cg}).permute({0, 3, 1, 2});
  return to_result(gw, grad_output.scalar_type(), result);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CPU, m) {
  m.impl("corr2d_weight_grad", TORCH_FN(corr2d_weight_grad_cpu));
  m.impl("corr2d_bias_grad", TORCH_FN(corr2d_bias_grad_cpu));
}

}  // namespace torchcorr::cpu
