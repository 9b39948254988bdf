// Weight and bias gradients of the cross-correlation on CUDA: deterministic reductions.
//
// Computes the plain loop nests (g = k / Kg)
//   for k, c < Cg, r, s:  gw[k,c,r,s] = sum_{n,p,q} gy[n,k,p,q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]
//   for k:                gb[k]       = sum_{n,p,q} gy[n,k,p,q]
// with taps that land in the zero padding skipped, in opmath precision (float for float16/bfloat16).
//
// Layers with many channels take the implicit GEMM (implicit_gemm.cuh), thin layers on large planes the
// plane tiles (direct_tile.cuh); launch_weight_grad chooses. The kernels below serve the rest.
// Work split: the N*P*Q terms of every sum are cut into `chunks` equal runs of consecutive (n, p, q);
// the number of chunks depends only on the sizes (reduction_chunks), never on the device. One warp
// reduces one (output, chunk): lane i takes terms i, i+32, ... of its chunk in order, then the lanes
// are added by a fixed shuffle tree (warp_sum) into a float/double partials buffer. A second kernel
// adds each output's chunk partials in a fixed order and rounds to the result dtype (launch_sum_chunks,
// which every weight-gradient path shares).
// There are no atomics anywhere, so every run, stream and GPU gives the same bits, and
// torch.use_deterministic_algorithms(True) has nothing to object to.
// Memory: each warp reads its chunk of one gy plane (and of one x plane for gw), coalesced along q;
// neighbouring warps take neighbouring taps of the same (k, c) and so share those reads in L1/L2.
// The partials take chunks * outputs values in opmath precision.
#include "cuda_kernel_utils.cuh"
#include "direct_tile_launch.cuh"
#include "implicit_gemm_launch.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

namespace torchcorr::cuda {
namespace {

constexpr int kWarpsPerBlock = kThreads / kWarp;
// Enough warps to fill any current GPU a few times over; chunks shorter than kMinTermsPerChunk are not
// worth a warp; at most kMaxChunks partials per output.
constexpr int64_t kTargetWarps = 16384;
constexpr int64_t kMinTermsPerChunk = 1024;
constexpr int64_t kMaxChunks = 4096;

struct Chunking {
  int64_t chunks, length;  // chunk c holds terms [c * length, min(terms, (c + 1) * length))
};

// How a reduction of `terms` terms per output is cut, for `outputs` outputs: a function of the sizes
// alone, so the order of every sum (and so every bit of the result) is too.
Chunking chunking(int64_t outputs, int64_t terms) {
  const int64_t wanted = div_up(kTargetWarps, std::max<int64_t>(outputs, 1));
  const int64_t affordable = div_up(terms, kMinTermsPerChunk);
  const int64_t chunks = std::max<int64_t>(1, std::min({wanted, affordable, kMaxChunks}));
  const int64_t length = div_up(terms, chunks);
  return {div_up(terms, length), length};  // no empty chunk at the end
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads)
    weight_grad_kernel(const Corr2dProblem p, const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x,
                       acc_t* __restrict__ partials, Chunking split) {
  const int64_t Cg = p.C / p.groups, Kg = p.K / p.groups;
  const int64_t outputs = p.K * Cg * p.R * p.S, terms = p.N * p.P * p.Q;
  const int64_t item = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp;  // one per warp
  const int lane = threadIdx.x % kWarp;
  if (item >= outputs * split.chunks) return;  // whole warps only
  const int64_t output = item % outputs, chunk = item / outputs;
  const int64_t s = output % p.S, r = (output / p.S) % p.R, kc = output / (p.R * p.S);
  const int64_t k = kc / Cg, c_global = (k / Kg) * Cg + kc % Cg;
  const int64_t begin = chunk * split.length, end = std::min(terms, begin + split.length);
  const int64_t row_offset = r * p.dilation_h - p.pad_h, col_offset = s * p.dilation_w - p.pad_w;

  acc_t acc = 0;
  GridCursor pos(begin + lane, kWarp, p.P, p.Q);
  for (int64_t term = begin + lane; term < end; term += kWarp, pos.advance()) {
    const int64_t h = pos.p * p.stride_h + row_offset, v = pos.q * p.stride_w + col_offset;
    if (h < 0 || h >= p.H || v < 0 || v >= p.W) continue;
    const scalar_t grad = gy[((pos.n * p.K + k) * p.P + pos.p) * p.Q + pos.q];
    const scalar_t input = x[((pos.n * p.C + c_global) * p.H + h) * p.W + v];
    acc += static_cast<acc_t>(grad) * static_cast<acc_t>(input);
  }
  acc = warp_sum(acc);
  if (lane == 0) partials[chunk * outputs + output] = acc;
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads)
    bias_grad_kernel(const Corr2dProblem p, const scalar_t* __restrict__ gy, acc_t* __restrict__ partials,
                     Chunking split) {
  const int64_t terms = p.N * p.P * p.Q;
  const int64_t item = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (item >= p.K * split.chunks) return;
  const int64_t k = item % p.K, chunk = item / p.K;
  const int64_t begin = chunk * split.length, end = std::min(terms, begin + split.length);

  acc_t acc = 0;
  GridCursor pos(begin + lane, kWarp, p.P, p.Q);
  for (int64_t term = begin + lane; term < end; term += kWarp, pos.advance()) {
    acc += static_cast<acc_t>(gy[((pos.n * p.K + k) * p.P + pos.p) * p.Q + pos.q]);
  }
  acc = warp_sum(acc);
  if (lane == 0) partials[chunk * p.K + k] = acc;
}

// result[o] = sum over chunks of partials[chunk * outputs + o] in a fixed order: one warp per output (lanes
// over chunks, then the shuffle tree) for few outputs, one thread per output (chunks in order) for many.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    sum_chunks_kernel(const acc_t* __restrict__ partials, int64_t chunks, int64_t outputs,
                      scalar_t* __restrict__ result) {
  const int64_t output = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (output >= outputs) return;
  acc_t acc = 0;
  for (int64_t chunk = lane; chunk < chunks; chunk += kWarp) acc += partials[chunk * outputs + output];
  acc = warp_sum(acc);
  if (lane == 0) result[output] = static_cast<scalar_t>(acc);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    sum_chunks_by_thread_kernel(const acc_t* __restrict__ partials, int64_t chunks, int64_t outputs,
                                scalar_t* __restrict__ result) {
  const int64_t output = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (output >= outputs) return;
  acc_t acc = 0;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) acc += partials[chunk * outputs + output];
  result[output] = static_cast<scalar_t>(acc);
}

// Outputs from which a thread per output fills the GPU.
constexpr int64_t kOutputsForThreadSums = 16384;

unsigned int blocks_for_warps(int64_t warps) { return grid_x(div_up(warps, kWarpsPerBlock)); }

// Second pass shared by both gradients: partials -> result in its own dtype.
template <typename scalar_t, typename acc_t>
void launch_sum_chunks(const at::Tensor& partials, int64_t chunks, at::Tensor& result) {
  const int64_t outputs = result.numel();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (outputs >= kOutputsForThreadSums) {
    sum_chunks_by_thread_kernel<scalar_t, acc_t><<<grid_x(div_up(outputs, kThreads)), kThreads, 0, stream>>>(
        partials.const_data_ptr<acc_t>(), chunks, outputs, result.mutable_data_ptr<scalar_t>());
  } else {
    sum_chunks_kernel<scalar_t, acc_t><<<blocks_for_warps(outputs), kThreads, 0, stream>>>(
        partials.const_data_ptr<acc_t>(), chunks, outputs, result.mutable_data_ptr<scalar_t>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The weight gradient as an implicit GEMM (implicit_gemm.cuh): chunk partials, then launch_sum_chunks.
template <typename scalar_t>
void launch_weight_gemm(const Corr2dProblem& p, const at::Tensor& gy, const at::Tensor& x, at::Tensor& gw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int bm = gemm::column_tile(p.K_per_group()), bn = gemm::column_tile(p.C_per_group() * p.R * p.S);
  auto g = gemm::weight_gemm<scalar_t, acc_t>(p, bm, bn);
  const int64_t chunks = div_up(g.terms, g.chunk_terms), outputs = gw.numel();
  auto partials = at::empty({chunks * outputs}, gy.options().dtype(compute_dtype(gy.scalar_type())));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto taps = gemm::tap_table(gemm::forward_taps(p), gy.options(), stream);
  g.gy = gy.const_data_ptr<scalar_t>(), g.x = x.const_data_ptr<scalar_t>();
  g.partials = partials.mutable_data_ptr<acc_t>(), g.taps = reinterpret_cast<const gemm::Tap*>(taps.const_data_ptr<int>());
  const dim3 grid(grid_x(div_up(g.Kg, bm) * g.col_tiles), static_cast<unsigned>(chunks),
                  static_cast<unsigned>(p.groups));
  auto kernel = bm == 64 ? (bn == 64 ? gemm::weight_gemm_kernel<scalar_t, acc_t, 64, 64>
                                     : gemm::weight_gemm_kernel<scalar_t, acc_t, 64, 128>)
                         : (bn == 64 ? gemm::weight_gemm_kernel<scalar_t, acc_t, 128, 64>
                                     : gemm::weight_gemm_kernel<scalar_t, acc_t, 128, 128>);
  if constexpr (gemm::is_16bit_float<scalar_t>) {  // tensor cores
    constexpr bool kBF16 = std::is_same_v<scalar_t, at::BFloat16>;
    if (gemm::has_16bit_mma()) {
      kernel = bm == 64 ? (bn == 64 ? gemm::weight_mma_kernel<scalar_t, 64, 64, kBF16>
                                    : gemm::weight_mma_kernel<scalar_t, 64, 128, kBF16>)
                        : (bn == 64 ? gemm::weight_mma_kernel<scalar_t, 128, 64, kBF16>
                                    : gemm::weight_mma_kernel<scalar_t, 128, 128, kBF16>);
    }
  }
  kernel<<<grid, kThreads, 0, stream>>>(g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  launch_sum_chunks<scalar_t, acc_t>(partials, chunks, gw);
}

// Partials per tile and plane at most, in the tile path (memory: 4 bytes each for float).
constexpr int64_t kMaxTilePartials = int64_t(1) << 27;

// The weight gradient of a thin layer through the forward's plane tiles (direct_tile.cuh): partials of
// each (image, tile), then launch_sum_chunks. False (nothing launched) when the tiles do not apply.
bool launch_tile_weight_grad(const Corr2dProblem& p, const at::Tensor& gy, const at::Tensor& x, at::Tensor& gw) {
  if (p.P * p.Q < tile::kMinTilePixels || !fits_32bit_offsets(p)) return false;
  const int tw = tile::tile_width(p.Q);
  bool launched = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "corr2d_tile_weight_grad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto d = tile::direct_tile<scalar_t>(p, tw);
    const int64_t chunks = p.N * d.tiles, outputs = gw.numel();
    if (!tile::fits_in_shared(d, sizeof(acc_t)) || chunks * outputs > kMaxTilePartials) return;
    auto partials = at::empty({chunks * outputs}, gy.options().dtype(compute_dtype(gy.scalar_type())));
    d.x = x.const_data_ptr<scalar_t>();
    const dim3 grid(grid_x(d.tiles), folded_grid_y(p.N * p.K));
    auto kernel = tw == 32 ? tile::direct_tile_weight_grad_kernel<scalar_t, acc_t, 32>
                           : tile::direct_tile_weight_grad_kernel<scalar_t, acc_t, 64>;
    kernel<<<grid, tile::kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(d, gy.const_data_ptr<scalar_t>(),
                                                                           partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    launch_sum_chunks<scalar_t, acc_t>(partials, chunks, gw);
    launched = true;
  });
  return launched;
}

// The one place a weight-gradient kernel is chosen: the implicit GEMM for layers with channels enough to
// fill its tiles, else plane tiles for thin layers on large planes, else a warp per (output, chunk).
void launch_weight_grad(const Corr2dProblem& p, const at::Tensor& gy, const at::Tensor& x, at::Tensor& gw) {
  if (gemm::worth_a_gemm(p.K_per_group(), p.C_per_group() * p.R * p.S) && fits_32bit_offsets(p)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "corr2d_weight_grad_gemm_cuda",
                                    [&] { launch_weight_gemm<scalar_t>(p, gy, x, gw); });
    return;
  }
  if (launch_tile_weight_grad(p, gy, x, gw)) return;
  const int64_t outputs = gw.numel();
  const auto split = chunking(outputs, p.N * p.P * p.Q);
  auto partials = at::empty({split.chunks * outputs}, gy.options().dtype(compute_dtype(gy.scalar_type())));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "corr2d_weight_grad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    weight_grad_kernel<scalar_t><<<blocks_for_warps(split.chunks * outputs), kThreads, 0, stream>>>(
        p, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), partials.mutable_data_ptr<acc_t>(), split);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    launch_sum_chunks<scalar_t, acc_t>(partials, split.chunks, gw);
  });
}

void launch_bias_grad(const Corr2dProblem& p, const at::Tensor& gy, at::Tensor& gb) {
  const auto split = chunking(p.K, p.N * p.P * p.Q);
  auto partials = at::empty({split.chunks * p.K}, gy.options().dtype(compute_dtype(gy.scalar_type())));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "corr2d_bias_grad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    bias_grad_kernel<scalar_t><<<blocks_for_warps(split.chunks * p.K), kThreads, 0, stream>>>(
        p, gy.const_data_ptr<scalar_t>(), partials.mutable_data_ptr<acc_t>(), split);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    launch_sum_chunks<scalar_t, acc_t>(partials, split.chunks, gb);
  });
}

at::Tensor corr2d_weight_grad_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                   at::IntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups) {
  const auto p = check_weight_grad("torchcorr.corr2d_weight_grad", grad_output, input, weight_size, stride,
                                   padding, dilation, groups);
  const c10::cuda::OptionalCUDAGuard device_guard(grad_output.device());
  const auto gy = grad_output.contiguous(), x = input.contiguous();
  auto gw = at::empty({p.K, p.C_per_group(), p.R, p.S}, gy.options());
  if (gw.numel() > 0 && gy.numel() == 0) {
    gw.zero_();  // an empty sum
  } else if (gw.numel() > 0) {
    launch_weight_grad(p, gy, x, gw);
  }
  return gw.contiguous(result_memory_format(grad_output, input));
}

at::Tensor corr2d_bias_grad_cuda(const at::Tensor& grad_output) {
  check_bias_grad("torchcorr.corr2d_bias_grad", grad_output);
  const c10::cuda::OptionalCUDAGuard device_guard(grad_output.device());
  const auto gy = grad_output.contiguous();
  // Only the sizes matter here: N, K and the P x Q plane of grad_output.
  Corr2dProblem p{};
  p.N = gy.size(0), p.K = gy.size(1), p.P = gy.size(2), p.Q = gy.size(3);
  auto gb = at::empty({p.K}, gy.options());
  if (p.K > 0 && gy.numel() == 0) {
    gb.zero_();
  } else if (p.K > 0) {
    launch_bias_grad(p, gy, gb);
  }
  return gb;
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, CUDA, m) {
  m.impl("corr2d_weight_grad", TORCH_FN(corr2d_weight_grad_cuda));
  m.impl("corr2d_bias_grad", TORCH_FN(corr2d_bias_grad_cuda));
}

}  // namespace torchcorr::cuda
