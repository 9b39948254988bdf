#include "algorithm.h"
#include "cpu_kernel_utils.h"

#include <algorithm>
#include <atomic>

namespace torchcorr::cpu {
namespace {

std::atomic<bool> gemm_switch{true}, gemm_everywhere{false}, winograd_switch{true};

// Below this many channels on either side a GEMM tile is mostly padding; the direct tiles handle it.
constexpr int64_t kGemmMinChannels = 16;
constexpr int64_t kGemmMinStemChannels = 8;
// Output planes up to 8x8: where the direct weight gradient measured slower than the GEMM (7x7: 1.6x; on
// 13x13 and 14x14 planes the direct one is 1.3x faster since its chunks fit the cache).
constexpr int64_t kGemmMaxWindowPixels = 8 * 8;

// Output tiles of m x m over the batch of N planes of P x Q.
int64_t output_tiles(int64_t N, int64_t P, int64_t Q, int64_t m) { return N * div_up(P, m) * div_up(Q, m); }

// Stride-1, dilation-1 3x3 layers in float32 (the input gradient of such a layer is itself such a correlation).
// Measured (2 threads, AVX-512, float32, 16-1024 channels, 3x3-56x56 planes, batch 1-64), the forward pass and
// input gradient beat the direct kernels on all but the smallest layers (16 channels on 14x14 at batch 1: 0.9x)
// once the strip driver (winograd_plan) took the layers with few tiles. The weight gradient, F(3x3, 2x2), needs
// enough tiles to repay its transforms: from kWinogradMinGradTiles tiles of 2x2 on it beat the GEMM on planes of up
// to kGemmMaxWindowPixels (512 channels on 7x7 at batch 8, 128 tiles: 1.4x; at batch 1, 16 tiles: 0.7x) and the
// direct kernels on larger ones (256 channels on 14x14 at batch 1, 49 tiles: 1.4x).
constexpr int64_t kWinogradMinGradTiles = 48;
bool winograd_fits(const Corr2dProblem& p, Op op, at::ScalarType compute) {
  const bool stride_one_3x3 = p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 &&
                              p.dilation_w == 1;
  if (!winograd_switch.load(std::memory_order_relaxed) || compute != at::kFloat || !stride_one_3x3) return false;
  return op != Op::weight_grad || output_tiles(p.N, p.P, p.Q, 2) >= kWinogradMinGradTiles;
}

// Channels-last weight gradients of stems (few input channels, some output channels): the GEMM reads each kernel
// row of a window as one run of S * C values (3 -> 16-96 channels at 224x224: 1.2-1.8x faster than the direct
// tiles).
bool stem_weight_grad(const Corr2dProblem& p, Op op, Layout layout) {
  return op == Op::weight_grad && layout == Layout::channels_last && p.groups == 1 && p.C < kGemmMinChannels &&
         p.K >= kGemmMinStemChannels;
}

// Weight gradients of one image's grouped layer with whole GEMM strips per group: per-sample gradients under
// torch.func's vmap, which folds the samples into groups (the direct kernel splits work by images and rows,
// so one image ran on one thread).
bool per_group_weight_grad(const Corr2dProblem& p, Op op, Layout layout) {
  return op == Op::weight_grad && layout == Layout::planes && p.groups > 1 && p.N == 1 &&
         p.K / p.groups >= kGemmMinStemChannels && p.C / p.groups * p.R * p.S >= kGemmMinChannels;
}

}  // namespace

bool winograd_enabled() { return winograd_switch.load(std::memory_order_relaxed); }
void set_winograd_enabled(bool enabled) { winograd_switch.store(enabled, std::memory_order_relaxed); }

bool gemm_enabled() { return gemm_switch.load(std::memory_order_relaxed); }
void set_gemm_enabled(bool enabled) { gemm_switch.store(enabled, std::memory_order_relaxed); }
void set_gemm_everywhere(bool everywhere) { gemm_everywhere.store(everywhere, std::memory_order_relaxed); }

Algorithm choose_algorithm(const Corr2dProblem& p, Op op, at::ScalarType compute, Layout layout) {
  if (gemm_enabled() && (stem_weight_grad(p, op, layout) || per_group_weight_grad(p, op, layout)))
    return Algorithm::gemm;
  if (p.groups != 1 || p.K < kGemmMinChannels || p.C < kGemmMinChannels) return Algorithm::direct;
  if (gemm_enabled() && (is_pointwise(p) || gemm_everywhere.load(std::memory_order_relaxed))) return Algorithm::gemm;
  if (winograd_fits(p, op, compute)) return Algorithm::winograd;
  if (!gemm_enabled() || op != Op::weight_grad) return Algorithm::direct;
  const bool strided_channels_last = layout == Layout::channels_last && p.stride_h > 1 && p.stride_w > 1;
  return p.P * p.Q <= kGemmMaxWindowPixels || strided_channels_last ? Algorithm::gemm : Algorithm::direct;
}

WinogradPlan winograd_plan(const DirectProblem& d) {
  // Measured as winograd_fits says (the ratios against the other choice):
  //   strips  at most min(2 K, 512) tiles of 4x4: the transformed kernels (4x or 16/9x the weights) would
  //           outweigh the few tiles that reuse them (512 channels on 7x7 at batch 8: 1.8x faster, 256 on 14x14
  //           at batch 1: 1.6x); the strip's products for every tile (a*a x tiles x NR) stay in L2
  //   blocks  more tiles: a block's V and M stay in L2 while the kernels, transformed once, stream (64 channels on
  //           56x56 at batch 8: 1.5x faster)
  // F(4x4) takes fewer multiplications than F(2x2) unless the plane is small (5x5: a tie), but its kernels are
  // 2.25x larger and with few tiles its register tiles (12 rows of tiles) are mostly padding: it won from 24
  // tiles of 4x4 on with the strips, from max(48, max(C, K) / 4) with the blocks.
  const int64_t tiles = output_tiles(d.N, d.P, d.Q, 4);
  const bool strips = tiles <= std::min<int64_t>(2 * d.K, 512);
  const auto multiplications = [&](int64_t m) { return div_up(d.P, m) * div_up(d.Q, m) * (m + 2) * (m + 2); };
  const bool many_tiles = tiles >= (strips ? 24 : std::max<int64_t>(48, std::max(d.C, d.K) / 4));
  return {many_tiles && multiplications(4) < multiplications(2) ? 4 : 2, strips};
}

Layout compute_layout(const Corr2dProblem& p, Op op, at::ScalarType compute, at::MemoryFormat result) {
  if (result != at::MemoryFormat::ChannelsLast) return Layout::planes;
  // The windowed GEMM's forward pass and input gradient read rows of planes (gemm_everywhere only).
  const bool planes_only = choose_algorithm(p, op, compute, Layout::channels_last) == Algorithm::gemm &&
                           !is_pointwise(p) && op != Op::weight_grad;
  return planes_only ? Layout::planes : Layout::channels_last;
}

}  // namespace torchcorr::cpu
