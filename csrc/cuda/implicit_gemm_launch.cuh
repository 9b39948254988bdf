// Launching the implicit GEMM kernels of implicit_gemm.cuh and implicit_gemm_mma.cuh from ATen tensors: the
// tap table, the kernel family (tensor cores for float16/bfloat16 on sm_80+), the tile shape and the grid.
// The kernels themselves need no ATen, so tests/cuda_emulation can run them on a CPU.
#pragma once

#include "cuda_kernel_utils.cuh"
#include "implicit_gemm.cuh"
#include "implicit_gemm_mma.cuh"

#include <ATen/ATen.h>

#include <type_traits>

namespace torchcorr::cuda::gemm {

// Layers with at least this many output columns and reduction indices per group take the implicit GEMM;
// thinner ones (depthwise, a few channels) keep the direct kernels, which waste no tile.
constexpr int64_t kMinGemmColumns = 16;
constexpr int64_t kMinGemmReduction = 16;

inline bool worth_a_gemm(int64_t columns, int64_t reduction) {
  return columns >= kMinGemmColumns && reduction >= kMinGemmReduction;
}

// Tile width for `columns` output columns: 64 wastes less on layers of up to 64 channels.
inline int column_tile(int64_t columns) { return columns <= 64 ? 64 : 128; }

inline int64_t multiprocessors() {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return count;
}

// Tile height of a plane GEMM: 128 rows, or 64 where 128-row tiles would give the GPU fewer than two blocks
// per multiprocessor (deep layers on small planes). Every output sums in the same order either way, so the
// choice never changes a bit of the result.
inline int row_tile(int64_t rows, int64_t column_tiles, int64_t groups) {
  return div_up(rows, 128) * column_tiles * groups < 2 * multiprocessors() ? 64 : 128;
}

template <typename scalar_t>
constexpr bool is_16bit_float = std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;

// Whether the current GPU's tensor cores multiply float16/bfloat16 as mma.m16n8k16 (compute capability 8.0+).
inline bool has_16bit_mma() {
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c10::cuda::current_device()));
  return major >= 8;
}

// The tap table of a launch, filled on the device (no host-to-device copy).
inline at::Tensor tap_table(const TapRule& rule, const at::TensorOptions& options, cudaStream_t stream) {
  auto taps = at::empty({rule.J, 4}, options.dtype(at::kInt));
  if (rule.J == 0) return taps;
  tap_table_kernel<<<grid_x(div_up(rule.J, kThreads)), kThreads, 0, stream>>>(
      reinterpret_cast<Tap*>(taps.mutable_data_ptr<int>()), rule);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return taps;
}

// out = the plane GEMM g over `groups` groups.
template <typename scalar_t>
void launch_plane_gemm(PlaneGemm<scalar_t> g, const TapRule& rule, int64_t groups, const at::Tensor& like) {
  using acc_t = at::opmath_type<scalar_t>;
  if (g.rows == 0) return;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto taps = tap_table(rule, like.options(), stream);
  g.taps = reinterpret_cast<const Tap*>(taps.const_data_ptr<int>());
  const int bn = column_tile(g.cols), bm = row_tile(g.rows, div_up(g.cols, bn), groups);
  const dim3 grid(grid_x(div_up(g.rows, bm)), static_cast<unsigned>(div_up(g.cols, bn)),
                  static_cast<unsigned>(groups));
  auto kernel = bm == 64 ? (bn == 64 ? plane_gemm_kernel<scalar_t, acc_t, 64, 64> : plane_gemm_kernel<scalar_t, acc_t, 64, 128>)
                         : (bn == 64 ? plane_gemm_kernel<scalar_t, acc_t, 128, 64> : plane_gemm_kernel<scalar_t, acc_t, 128, 128>);
  if constexpr (is_16bit_float<scalar_t>) {
    constexpr bool kBF16 = std::is_same_v<scalar_t, at::BFloat16>;
    if (has_16bit_mma()) {
      kernel = bm == 64 ? (bn == 64 ? plane_mma_kernel<scalar_t, 64, 64, kBF16> : plane_mma_kernel<scalar_t, 64, 128, kBF16>)
                        : (bn == 64 ? plane_mma_kernel<scalar_t, 128, 64, kBF16> : plane_mma_kernel<scalar_t, 128, 128, kBF16>);
    }
  }
  kernel<<<grid, kThreads, 0, stream>>>(g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace torchcorr::cuda::gemm
