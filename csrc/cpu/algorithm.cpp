#include "algorithm.h"

#include <atomic>

namespace torchcorr::cpu {
namespace {

std::atomic<bool> gemm_switch{true}, gemm_everywhere{false};

// Below this many channels on either side a GEMM tile is mostly padding; the direct tiles handle it.
constexpr int64_t kGemmMinChannels = 16;
// Output planes up to 8x8: where the direct weight gradient measured slower than the GEMM (7x7: 1.6x; on
// 13x13 and 14x14 planes the direct one is 1.3x faster since its chunks fit the cache).
constexpr int64_t kGemmMaxWindowPixels = 8 * 8;

}  // namespace

bool gemm_enabled() { return gemm_switch.load(std::memory_order_relaxed); }
void set_gemm_enabled(bool enabled) { gemm_switch.store(enabled, std::memory_order_relaxed); }
void set_gemm_everywhere(bool everywhere) { gemm_everywhere.store(everywhere, std::memory_order_relaxed); }

Algorithm choose_algorithm(const Corr2dProblem& p, Op op) {
  if (!gemm_enabled() || p.groups != 1 || p.K < kGemmMinChannels || p.C < kGemmMinChannels) return Algorithm::direct;
  if (is_pointwise(p)) return Algorithm::gemm;
  if (gemm_everywhere.load(std::memory_order_relaxed)) return Algorithm::gemm;
  return op == Op::weight_grad && p.P * p.Q <= kGemmMaxWindowPixels ? Algorithm::gemm : Algorithm::direct;
}

Layout compute_layout(const Corr2dProblem& p, Op op, at::MemoryFormat result) {
  if (result != at::MemoryFormat::ChannelsLast) return Layout::planes;
  if (choose_algorithm(p, op) == Algorithm::gemm) return is_pointwise(p) ? Layout::channels_last : Layout::planes;
  // The depthwise problems of each op: the forward correlation; stride-1 correlations of gy producing the
  // H x W gradient or, strided, its stride phases (at most as large, dilation at most the layer's); the
  // weight gradient's kernel rows of 3, 5 or 7 taps (kernels/weight_grad.h).
  DirectProblem d = forward_problem(p);
  if (op == Op::input_grad) d.P = p.H, d.Q = p.W, d.stride_h = 1, d.stride_w = 1;
  if (op == Op::weight_grad && p.S != 3 && p.S != 5 && p.S != 7) return Layout::planes;
  return channel_vectors_fit(d) ? Layout::channels_last : Layout::planes;
}

}  // namespace torchcorr::cpu
