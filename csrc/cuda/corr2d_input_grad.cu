// Input gradient of the cross-correlation on CUDA.
//
// Computes the adjoint of the forward map, gathered per input element (c = c_global % Cg, g = c_global / Cg):
//   for n, c_global, h, v:  gx[n, c_global, h, v] = sum_{r, s, k in group g} gy[n, k, p, q] * w[k, c, r, s]
//   over the (p, q) with p*sh - ph + r*dh = h and q*sw - pw + s*dw = v, 0 <= p < P, 0 <= q < Q
// (a tap reaches (h, v) only when h + ph - r*dh is a multiple of the stride: output_reading).
// Sums run in (r, s, k) order in opmath precision (float for float16/bfloat16).
//
// Layers with many channels take the implicit GEMM (implicit_gemm.cuh; one per stride phase, tensor cores
// for float16/bfloat16), thin layers on large planes the plane tiles (direct_tile.cuh); launch_input_grad
// chooses. The kernel below serves the rest.
// Work split: one thread per input element; each owns its sum, so there is no scatter and no atomic.
// A block is a tile of pixels of one input plane (x) times a few images (y), all for the same input
// channel; blockIdx.x walks the tiles of a plane, blockIdx.y the (image tile, channel) pairs, folded into
// a loop past 65535.
// Memory: the block stages w[k in group, c] (Kg*R*S values, strided in w) in shared memory when it
// fits in kMaxStagedBytes, else reads them from global memory. Each thread reads up to Kg*R*S gradient
// values (neighbouring threads read neighbouring columns when stride_w is 1) and writes gx once.
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
    input_grad_kernel(const Corr2dProblem p, const scalar_t* __restrict__ gy, const scalar_t* __restrict__ w,
                      scalar_t* __restrict__ gx, int64_t image_tiles, bool stage_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Cg = p.C / p.groups, Kg = p.K / p.groups, taps = p.R * p.S;
  const int64_t pixels = p.H * p.W, out_pixels = p.P * p.Q;
  const int64_t pixel = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t h = pixel / p.W, v = pixel % p.W;
  const int thread = threadIdx.y * blockDim.x + threadIdx.x, threads = blockDim.x * blockDim.y;
  scalar_t* staged = shared_array<scalar_t>();

  for (int64_t item = blockIdx.y; item < image_tiles * p.C; item += gridDim.y) {
    const int64_t c_global = item % p.C, n = (item / p.C) * blockDim.y + threadIdx.y;
    const int64_t g = c_global / Cg, c = c_global % Cg;
    // w[g*Kg + kk, c, r, s] lives at taps_of_c[kk * k_stride + r*S + s]
    const scalar_t* taps_of_c = w + (g * Kg * Cg + c) * taps;
    int64_t k_stride = Cg * taps;
    if (stage_weights) {
      __syncthreads();  // the block is done with the previous item's weights
      for (int64_t i = thread; i < Kg * taps; i += threads) staged[i] = taps_of_c[(i / taps) * k_stride + i % taps];
      __syncthreads();
      taps_of_c = staged, k_stride = taps;
    }
    if (n >= p.N || pixel >= pixels) continue;

    const scalar_t* gy_group = gy + (n * p.K + g * Kg) * out_pixels;
    acc_t acc = 0;
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t out_row = output_reading(h, r, p.stride_h, p.pad_h, p.dilation_h, p.P);
      if (out_row < 0) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t out_col = output_reading(v, s, p.stride_w, p.pad_w, p.dilation_w, p.Q);
        if (out_col < 0) continue;
        const scalar_t* gy_pixel = gy_group + out_row * p.Q + out_col;
        const scalar_t* tap = taps_of_c + r * p.S + s;
        for (int64_t kk = 0; kk < Kg; ++kk) {
          acc += static_cast<acc_t>(gy_pixel[kk * out_pixels]) * static_cast<acc_t>(tap[kk * k_stride]);
        }
      }
    }
    gx[(n * p.C + c_global) * pixels + pixel] = static_cast<scalar_t>(acc);
  }
}

// The one place an input-gradient kernel is chosen: the implicit GEMM for layers with channels enough to
// fill its tiles, else (stride 1) the forward's plane tiles over flipped weights, else the direct kernel.
void launch_input_grad(const Corr2dProblem& p, const at::Tensor& gy, const at::Tensor& w, at::Tensor& gx) {
  if (gemm::worth_a_gemm(p.C_per_group(), p.K_per_group() * p.R * p.S) && fits_32bit_offsets(p)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "corr2d_input_grad_gemm_cuda", [&] {
      gemm::for_each_input_grad_phase<scalar_t>(p, [&](gemm::InputGradPhase<scalar_t> phase) {
        auto& g = phase.gemm;
        g.src = gy.const_data_ptr<scalar_t>(), g.w = w.const_data_ptr<scalar_t>(), g.out = gx.mutable_data_ptr<scalar_t>();
        gemm::launch_plane_gemm(g, phase.taps, p.groups, gy);
      });
    });
    return;
  }
  if (tile::launch_direct_tile_input_grad(p, gy, w, gx)) return;
  const auto tiles = tile_planes(p.H * p.W, p.N);
  const int64_t staged_bytes = p.K_per_group() * p.R * p.S * static_cast<int64_t>(gy.element_size());
  const bool stage = staged_bytes <= kMaxStagedBytes;
  const dim3 grid(grid_x(tiles.pixel_tiles), folded_grid_y(tiles.image_tiles * p.C));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "corr2d_input_grad_cuda", [&] {
    input_grad_kernel<scalar_t><<<grid, tiles.block, stage ? staged_bytes : 0, stream>>>(
        p, gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(),
        tiles.image_tiles, stage);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor corr2d_input_grad_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                  at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_input_grad("torchcorr.corr2d_input_grad", grad_output, weight, input_size, stride, padding,
                                  dilation, groups);
  const c10::cuda::OptionalCUDAGuard device_guard(grad_output.device());
  const auto gy = grad_output.contiguous(), w = weight.contiguous();
  auto gx = at::empty({p.N, p.C, p.H, p.W}, gy.options());
  if (gx.numel() > 0) launch_input_grad(p, gy, w, gx);
  return gx.contiguous(result_memory_format(grad_output, weight));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CUDA, m) {
  m.impl("corr2d_input_grad", TORCH_FN(corr2d_input_grad_cuda));
}

}  // namespace torchcorr::cuda
