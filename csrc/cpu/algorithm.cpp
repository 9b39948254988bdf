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
  // The windowed GEMM's forward pass and input gradient read rows of planes (gemm_everywhere only).
  const bool planes_only = choose_algorithm(p, op) == Algorithm::gemm && !is_pointwise(p) && op != Op::weight_grad;
  return planes_only ? Layout::planes : Layout::channels_last;
}

}  // namespace torchcorr::cpu
