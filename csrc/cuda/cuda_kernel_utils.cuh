// Small pieces every CUDA kernel uses: launch shapes, index arithmetic, staging and warp sums.
//
// All indices are int64_t: one image may hold more than 2^31 elements. Grids keep gridDim.y at most
// 65535 by folding the rest into a loop (see folded_grid_y), so no size is too large to launch.
#pragma once

#include "../corr2d.h"

#include <ATen/OpMathType.h>
// The stream from c10, not ATen/cuda/CUDAContext.h: that header also pulls in cuBLAS and cuSPARSE headers,
// which minimal CUDA toolkits lack and which these kernels never use.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>
#include <cstdint>

namespace torchcorr::cuda {

constexpr int kThreads = 256;    // threads per block, every kernel
constexpr int kWarp = 32;
constexpr int64_t kMaxGridY = 65535;
// Weights a block of the direct kernels stages in shared memory at most; larger sets are read from global
// memory. (Their registers, 72-80 per thread, allow 3 blocks of 256 threads per SM anyway.)
constexpr int64_t kMaxStagedBytes = 16 * 1024;

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether the offsets the tiled kernels (implicit_gemm.cuh, direct_tile.cuh) keep in 32 bits fit: inside an
// image, along the GEMM rows and in the weights; and whether their grids do (groups in gridDim.z, column
// tiles in gridDim.y). Problems that do not fit take the direct kernels, whose indices are all 64-bit.
inline bool fits_32bit_offsets(const Corr2dProblem& p) {
  // (a tile's worth below 2^31, so that the last tile's first index fits too)
  constexpr int64_t limit = (int64_t(1) << 31) - 1024, max_columns = 4000000;
  return p.C * p.H * p.W < limit && p.K * p.P * p.Q < limit && p.N * p.P * p.Q < limit && p.N * p.H * p.W < limit &&
         p.K * p.C_per_group() * p.R * p.S < limit && p.groups <= 65535 && p.K_per_group() <= max_columns &&
         p.C_per_group() <= max_columns;
}

inline unsigned int grid_x(int64_t blocks) {
  TORCH_CHECK(blocks >= 1 && blocks <= INT_MAX, "torchcorr: ", blocks, " blocks do not fit in a CUDA grid");
  return static_cast<unsigned int>(blocks);
}

// Block rows for `items` work items: at most kMaxGridY; kernels loop `item += gridDim.y` over the rest.
inline unsigned int folded_grid_y(int64_t items) {
  return static_cast<unsigned int>(std::clamp<int64_t>(items, 1, kMaxGridY));
}

// Threads of a block for kernels that give each thread one pixel of an image plane: x runs over the
// pixels (a multiple of 32, at most kThreads), y over images that share the block's channel, and so
// its staged weights. Small planes thereby still fill a block.
struct PlaneTiles {
  dim3 block;
  int64_t pixel_tiles;  // blocks across one plane
  int64_t image_tiles;  // blocks across the batch
};

inline PlaneTiles tile_planes(int64_t pixels, int64_t images) {
  const int64_t x = std::min<int64_t>(kThreads, div_up(std::max<int64_t>(pixels, 1), kWarp) * kWarp);
  const int64_t y = std::clamp<int64_t>(kThreads / x, 1, std::max<int64_t>(images, 1));
  return {dim3(static_cast<unsigned int>(x), static_cast<unsigned int>(y)), div_up(pixels, x), div_up(images, y)};
}

// Dynamic shared memory as an array of T. One declaration, aligned for every scalar type, serves all
// template instances (a typed `extern __shared__ T[]` per instance would conflict).
template <typename T>
__device__ __forceinline__ T* shared_array() {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return reinterpret_cast<T*>(shared_bytes);
}

// The index o in [0, outputs) with o * stride - pad + tap * dilation == i (the output row or column
// that reads input index i through this tap), or -1 when there is none.
__host__ __device__ __forceinline__ int64_t output_reading(int64_t i, int64_t tap, int64_t stride, int64_t pad,
                                                           int64_t dilation, int64_t outputs) {
  const int64_t offset = i + pad - tap * dilation;
  if (offset < 0) return -1;
  if (stride != 1) {
    if (offset % stride != 0) return -1;
    const int64_t o = offset / stride;
    return o < outputs ? o : -1;
  }
  return offset < outputs ? offset : -1;
}

// Walks the positions (n, p, q) of an N x P x Q grid in steps of `step` flat indices, starting from
// `start`, with a carry instead of a division per step (each digit of the step is below its radix).
struct GridCursor {
  int64_t n, p, q;
  int64_t dn, dp, dq;
  int64_t P, Q;

  __host__ __device__ GridCursor(int64_t start, int64_t step, int64_t P_, int64_t Q_) : P(P_), Q(Q_) {
    q = start % Q, p = (start / Q) % P, n = start / (P * Q);
    dq = step % Q, dp = (step / Q) % P, dn = step / (P * Q);
  }

  __host__ __device__ __forceinline__ void advance() {
    q += dq, p += dp, n += dn;
    if (q >= Q) q -= Q, ++p;
    if (p >= P) p -= P, ++n;
  }
};

// Sum over the 32 lanes of a warp, always in the same tree order; lane 0 gets the total.
template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  return value;
}

}  // namespace torchcorr::cuda
