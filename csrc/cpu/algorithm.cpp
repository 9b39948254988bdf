#include "algorithm.h"

#include <atomic>

namespace torchcorr::cpu {
namespace {

std::atomic<bool> gemm_switch{true}, gemm_everywhere{false};

// Below this many channels on either side a GEMM tile is mostly padding; the direct tiles handle it.
constexpr int64_t kGemmMinChannels = 16;
// Output planes up to 14x14: where the direct weight gradient measured slower than the GEMM.
constexpr int64_t kGemmMaxWindowPixels = 14 * 14;
// Strided layers with output planes up to 7x7: where the direct input gradient, one stride phase at a time,
// measured slower than a GEMM per phase (1.15-1.35x on the 256->512 3x3 and 384->768 2x2 layers).
constexpr int64_t kGemmMaxStridedInputGradPixels = 7 * 7;

}  // namespace

bool gemm_enabled() { return gemm_switch.load(std::memory_order_relaxed); }
void set_gemm_enabled(bool enabled) { gemm_switch.store(enabled, std::memory_order_relaxed); }
void set_gemm_everywhere(bool everywhere) { gemm_everywhere.store(everywhere, std::memory_order_relaxed); }

Algorithm choose_algorithm(const Corr2dProblem& p, Op op) {
  if (!gemm_enabled() || p.groups != 1 || p.K < kGemmMinChannels || p.C < kGemmMinChannels) return Algorithm::direct;
  if (is_pointwise(p)) return Algorithm::gemm;
  if (gemm_everywhere.load(std::memory_order_relaxed)) return Algorithm::gemm;
  const bool strided = p.stride_h > 1 || p.stride_w > 1;
  if (op == Op::input_grad && strided) return p.P * p.Q <= kGemmMaxStridedInputGradPixels ? Algorithm::gemm
                                                                                          : Algorithm::direct;
  return op == Op::weight_grad && p.P * p.Q <= kGemmMaxWindowPixels ? Algorithm::gemm : Algorithm::direct;
}

}  // namespace torchcorr::cpu
