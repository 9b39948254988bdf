// Small pieces every CPU kernel uses: operand preparation and task splitting (compiled for the baseline).
#pragma once

#include "../corr2d.h"
#include "direct_corr.h"
#include "output_blocks.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace torchcorr::cpu {

inline at::MemoryFormat memory_format(Layout layout) {
  return layout == Layout::channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// A dense copy in the compute dtype and the given layout (no copy when the tensor already is one).
inline at::Tensor to_compute(const at::Tensor& t, Layout layout = Layout::planes) {
  return t.to(compute_dtype(t.scalar_type())).contiguous(memory_format(layout));
}

// The weights in the compute dtype, contiguous or channels last as they come (no copy; a model in channels_last
// holds its weights so), else copied to contiguous.
inline at::Tensor to_compute_weights(const at::Tensor& w) {
  const auto t = w.to(compute_dtype(w.scalar_type()));
  return t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast) ? t : t.contiguous();
}
inline WeightLayout weight_layout(const at::Tensor& w) {
  return w.is_contiguous() ? WeightLayout::kcrs : WeightLayout::krsc;
}

// An uninitialised N x C x H x W activation in the given layout (large ones from cached blocks: output_blocks.h).
inline at::Tensor empty_activation(at::IntArrayRef sizes, const at::TensorOptions& options, Layout layout) {
  return empty_output(sizes, options.dtype().toScalarType(), memory_format(layout));
}

// The kernel's result in the caller's dtype and layout.
inline at::Tensor to_result(const at::Tensor& computed, at::ScalarType dtype, at::MemoryFormat layout) {
  return computed.to(dtype).contiguous(layout);
}

// ceil(a / b) for a >= 0, b > 0, without overflow for any b.
inline int64_t div_up(int64_t a, int64_t b) { return a == 0 ? 0 : (a - 1) / b + 1; }

// Below this many multiply-adds a thread is not worth waking.
constexpr int64_t kMinWorkPerThread = 32768;

// Run body(task) for every task in [0, tasks). Tasks are independent and each owns its outputs, so the
// result does not depend on how at::parallel_for splits them (or on the thread count).
template <typename Body>
void parallel_tasks(int64_t tasks, int64_t work_per_task, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, work_per_task));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) body(task);
  });
}

// Rows per task when one row costs `work_per_row`: enough rows to amortise a task, at most `rows`.
inline int64_t rows_per_task(int64_t rows, int64_t work_per_row) {
  return std::clamp<int64_t>(kMinWorkPerThread / std::max<int64_t>(1, work_per_row), 1, std::max<int64_t>(rows, 1));
}

}  // namespace torchcorr::cpu
