// Launching the shared-memory tile kernel of direct_tile.cuh from ATen tensors (forward of thin layers, and
// the input gradient of stride-1 thin layers through the same kernel).
#pragma once

#include "cuda_kernel_utils.cuh"
#include "direct_tile.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace torchcorr::cuda::tile {

// Output planes below this many pixels leave most of a tile idle; the direct kernels pack several images
// into a block instead.
constexpr int64_t kMinTilePixels = 256;

// y = the forward of p over x with weights w ([K][Cg][R][S]) and bias (may be undefined), through the tiles,
// when its window and weights fit in shared memory; false (nothing launched) otherwise.
inline bool launch_direct_tile(const Corr2dProblem& p, const at::Tensor& x, const at::Tensor& w,
                               const at::Tensor& bias, at::Tensor& y) {
  if (p.P * p.Q < kMinTilePixels || !fits_32bit_offsets(p)) return false;
  const int tw = tile_width(p.Q);
  bool launched = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "corr2d_direct_tile_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto d = direct_tile<scalar_t>(p, tw);
    if (!fits_in_shared(d, sizeof(acc_t))) return;
    d.x = x.const_data_ptr<scalar_t>(), d.w = w.const_data_ptr<scalar_t>();
    d.bias = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, d.y = y.mutable_data_ptr<scalar_t>();
    const dim3 grid(grid_x(d.tiles), folded_grid_y(p.N * p.K));
    auto kernel = tw == 32 ? direct_tile_kernel<scalar_t, acc_t, 32> : direct_tile_kernel<scalar_t, acc_t, 64>;
    kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(d);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    launched = true;
  });
  return launched;
}

// gx = the input gradient of a stride-1 layer as a forward over gy: channels swapped, padding
// dilation*(kernel-1) - pad, weights w'[g*Cg + c][k][r][s] = w[g*Kg + k][c][R-1-r][S-1-s]. False when the
// layer is strided, its padding exceeds the kernel's reach, or the tiles do not fit.
inline bool launch_direct_tile_input_grad(const Corr2dProblem& p, const at::Tensor& gy, const at::Tensor& w,
                                          at::Tensor& gx) {
  Corr2dProblem f = p;
  f.C = p.K, f.H = p.P, f.W = p.Q, f.K = p.C, f.P = p.H, f.Q = p.W;
  f.pad_h = p.dilation_h * (p.R - 1) - p.pad_h, f.pad_w = p.dilation_w * (p.S - 1) - p.pad_w;
  if (p.stride_h != 1 || p.stride_w != 1 || f.pad_h < 0 || f.pad_w < 0) return false;
  if (f.P * f.Q < kMinTilePixels || !fits_32bit_offsets(f)) return false;
  const auto flipped = w.view({p.groups, p.K_per_group(), p.C_per_group(), p.R, p.S})
                           .transpose(1, 2)
                           .flip({3, 4})
                           .reshape({p.C, p.K_per_group(), p.R, p.S})
                           .contiguous();
  return launch_direct_tile(f, gy, flipped, at::Tensor(), gx);
}

}  // namespace torchcorr::cuda::tile
