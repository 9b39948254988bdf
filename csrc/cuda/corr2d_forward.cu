// Forward cross-correlation on CUDA.
//
// Computes the plain loop nest (g = k / Kg is the group of output channel k)
//   for n, k, p, q:
//     y[n,k,p,q] = b[k] + sum_{c < Cg, r, s} x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k,c,r,s]
// with taps that land in the zero padding skipped; sums run in (c, r, s) order in opmath precision
// (float for float16/bfloat16).
//
// Layers with many channels take the implicit GEMM (implicit_gemm.cuh), thin layers on large planes the
// plane tiles (direct_tile.cuh); launch_forward chooses. The kernel below serves the rest.
// Work split: one thread per output element. A block is a tile of pixels of one output plane (x)
// times a few images (y), all for the same output channel k; blockIdx.x walks the tiles of a plane,
// blockIdx.y the (image tile, k) pairs, folded into a loop past 65535.
// Memory: the block stages w[k] (Cg*R*S values) in shared memory when it fits in kMaxStagedBytes, else
// every thread reads the same weight from global memory (a broadcast through L1). Each thread reads its
// Cg*R*S input values directly (neighbouring threads read neighbouring columns) and writes y once.
#include "cuda_kernel_utils.cuh"
#include "direct_tile_launch.cuh"
#include "implicit_gemm_launch.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

namespace torchcorr::cuda {
namespace {

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const Corr2dProblem p, const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                   const scalar_t* __restrict__ bias, scalar_t* __restrict__ y, int64_t image_tiles,
                   bool stage_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Cg = p.C / p.groups, Kg = p.K / p.groups, weights_per_k = Cg * p.R * p.S;
  const int64_t pixels = p.P * p.Q;
  const int64_t pixel = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int thread = threadIdx.y * blockDim.x + threadIdx.x, threads = blockDim.x * blockDim.y;
  scalar_t* staged = shared_array<scalar_t>();

  for (int64_t item = blockIdx.y; item < image_tiles * p.K; item += gridDim.y) {
    const int64_t k = item % p.K, n = (item / p.K) * blockDim.y + threadIdx.y;
    const scalar_t* taps = w + k * weights_per_k;
    if (stage_weights) {
      __syncthreads();  // the block is done with the previous item's weights
      for (int64_t i = thread; i < weights_per_k; i += threads) staged[i] = taps[i];
      __syncthreads();
      taps = staged;
    }
    if (n >= p.N || pixel >= pixels) continue;

    const int64_t row0 = (pixel / p.Q) * p.stride_h - p.pad_h;  // input row and column of tap (0, 0)
    const int64_t col0 = (pixel % p.Q) * p.stride_w - p.pad_w;
    const scalar_t* x_group = x + (n * p.C + (k / Kg) * Cg) * p.H * p.W;
    acc_t acc = bias ? static_cast<acc_t>(bias[k]) : acc_t(0);
    for (int64_t c = 0; c < Cg; ++c) {
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = row0 + r * p.dilation_h;
        if (h < 0 || h >= p.H) continue;
        const scalar_t* x_row = x_group + (c * p.H + h) * p.W;
        const scalar_t* tap_row = taps + (c * p.R + r) * p.S;
        for (int64_t s = 0; s < p.S; ++s) {
          const int64_t v = col0 + s * p.dilation_w;
          if (v >= 0 && v < p.W) acc += static_cast<acc_t>(x_row[v]) * static_cast<acc_t>(tap_row[s]);
        }
      }
    }
    y[(n * p.K + k) * pixels + pixel] = static_cast<scalar_t>(acc);
  }
}

// The one place a forward kernel is chosen: the implicit GEMM for layers with channels enough to fill its
// tiles, else shared-memory tiles of the plane (direct_tile.cuh), else the direct kernel below.
void launch_forward(const Corr2dProblem& p, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                    at::Tensor& y) {
  if (gemm::worth_a_gemm(p.K_per_group(), p.C_per_group() * p.R * p.S) && fits_32bit_offsets(p)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "corr2d_forward_gemm_cuda", [&] {
      auto g = gemm::forward_gemm<scalar_t>(p);
      g.src = x.const_data_ptr<scalar_t>(), g.w = w.const_data_ptr<scalar_t>();
      g.bias = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, g.out = y.mutable_data_ptr<scalar_t>();
      gemm::launch_plane_gemm(g, gemm::forward_taps(p), p.groups, x);
    });
    return;
  }
  if (tile::launch_direct_tile(p, x, w, bias, y)) return;
  const auto tiles = tile_planes(p.P * p.Q, p.N);
  const int64_t staged_bytes = p.C_per_group() * p.R * p.S * static_cast<int64_t>(x.element_size());
  const bool stage = staged_bytes <= kMaxStagedBytes;
  const dim3 grid(grid_x(tiles.pixel_tiles), folded_grid_y(tiles.image_tiles * p.K));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "corr2d_forward_cuda", [&] {
    forward_kernel<scalar_t><<<grid, tiles.block, stage ? staged_bytes : 0, stream>>>(
        p, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
        bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(),
        tiles.image_tiles, stage);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor corr2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_forward("torchcorr.corr2d_forward", input, weight, bias, stride, padding, dilation, groups);
  const c10::cuda::OptionalCUDAGuard device_guard(input.device());
  const auto x = input.contiguous(), w = weight.contiguous();
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  auto y = at::empty({p.N, p.K, p.P, p.Q}, x.options());
  if (y.numel() > 0) launch_forward(p, x, w, b, y);
  return y.contiguous(result_memory_format(input, weight));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CUDA, m) {
  m.impl("corr2d_forward", TORCH_FN(corr2d_forward_cuda));
}

}  // namespace torchcorr::cuda
