// Autocast for the forward op: inside torch.autocast, corr2d runs in the autocast dtype (float16 or
// bfloat16), as nn.Conv2d does. The gradient ops need no rule: backward runs outside autocast, on the
// tensors the forward saved, which are already in the low-precision dtype.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torchcorr {
namespace {

at::Tensor corr2d_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("torchcorr::corr2d_forward", "")
                             .typed<decltype(corr2d_forward)>();
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

template <c10::DispatchKey autocast_key, c10::DeviceType device_type>
at::Tensor corr2d_forward_autocast(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key);
  const auto dtype = at::autocast::get_lower_precision_fp_from_device_type(device_type);
  return corr2d_forward(at::autocast::cached_cast(dtype, input, device_type),
                        at::autocast::cached_cast(dtype, weight, device_type),
                        at::autocast::cached_cast(dtype, bias, device_type), stride, padding, dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, AutocastCPU, m) {
  m.impl("corr2d_forward", corr2d_forward_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(torchcorr, AutocastCUDA, m) {
  m.impl("corr2d_forward", corr2d_forward_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>);
}

}  // namespace torchcorr
