// Forward correlation of thin layers (few input channels per group: single-channel images, depthwise,
// LeNet's first layer) from shared-memory tiles; the input gradient of stride-1 layers runs through the
// same kernel as a correlation of grad_output with the flipped, transposed weights (see the launchers).
//
// Computes y[n,k,p,q] = b[k] + sum_{c < Cg, r, s} x[n, g*Cg+c, p*sh-ph+r*dh, q*sw-pw+s*dw] * w[k,c,r,s],
// taps in the zero padding skipped, summed in (c, r, s) order in opmath precision (acc_t).
//
// Work split: a block of 256 threads computes a tile of TW x (4 * 256 / TW) outputs of one (n, k) plane:
// thread t owns column t % TW and 4 consecutive rows. blockIdx.x walks the tiles of a plane, blockIdx.y the
// (n, k) planes, folded into a loop past 65535.
// Memory: per input channel of the group, the block stages the input window its tile reads (with halo,
// zero where it falls in the padding) in shared memory, so each input value is read from global memory
// once per tile instead of R*S times; the block's Cg*R*S weights are staged once per plane. Offsets inside
// one image fit in 32 bits (the launcher checks); image offsets are 64-bit.
#pragma once

#include <cstdint>

namespace torchcorr::cuda::tile {

constexpr int kThreads = 256;
constexpr int kRowsPerThread = 4;
// Shared memory of a block (a window and the plane's weights): small enough for 8 blocks per SM.
constexpr int64_t kSharedBytes = 24 * 1024;

template <typename scalar_t>
struct DirectTile {
  const scalar_t* x;
  const scalar_t* w;     // [K][Cg][R][S]
  const scalar_t* bias;  // may be null
  scalar_t* y;
  int N, C, H, W, K, R, S, P, Q, Cg, Kg;
  int stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int tiles_w, tiles;         // tiles across a row of the plane, and per plane
  int window_h, window_w;     // the staged input window of one tile
};

// Output rows of a tile TW columns wide: 4 rows for each of the block's kThreads / TW rows of threads.
constexpr int tile_height(int TW) { return kThreads / TW * kRowsPerThread; }

// window[i] = the input value at (h0 + i / window_w, v0 + i % window_w) of one channel plane, zero outside it.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_window(const DirectTile<scalar_t>& d, const scalar_t* plane, int h0, int v0,
                                             acc_t* window) {
  for (int i = threadIdx.x; i < d.window_h * d.window_w; i += kThreads) {
    const int h = h0 + i / d.window_w, v = v0 + i % d.window_w;
    window[i] = h >= 0 && h < d.H && v >= 0 && v < d.W ? static_cast<acc_t>(plane[h * d.W + v]) : acc_t(0);
  }
}

template <typename scalar_t, typename acc_t, int TW>
__global__ void __launch_bounds__(kThreads) direct_tile_kernel(const DirectTile<scalar_t> d) {
  __shared__ acc_t staged[kSharedBytes / sizeof(acc_t)];
  acc_t* window = staged;
  acc_t* weights = staged + d.window_h * d.window_w;
  const int tile = blockIdx.x, tile_row = tile / d.tiles_w, tile_col = tile % d.tiles_w;
  const int p0 = tile_row * tile_height(TW), q0 = tile_col * TW;
  const int col = threadIdx.x % TW, row = (threadIdx.x / TW) * kRowsPerThread;
  const int h0 = p0 * d.stride_h - d.pad_h, v0 = q0 * d.stride_w - d.pad_w;  // the window's corner
  const int taps = d.Cg * d.R * d.S;

  for (int64_t plane = blockIdx.y; plane < int64_t(d.N) * d.K; plane += gridDim.y) {
    const int64_t n = plane / d.K;
    const int k = static_cast<int>(plane % d.K), group = k / d.Kg;
    __syncthreads();  // the block is done with the previous plane's weights and window
    for (int i = threadIdx.x; i < taps; i += kThreads) weights[i] = static_cast<acc_t>(d.w[int64_t(k) * taps + i]);
    acc_t acc[kRowsPerThread];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) acc[i] = acc_t(0);

    for (int c = 0; c < d.Cg; ++c) {
      const scalar_t* x = d.x + (n * d.C + group * d.Cg + c) * int64_t(d.H) * d.W;
      if (c > 0) __syncthreads();  // the previous channel's window is consumed
      stage_window(d, x, h0, v0, window);
      __syncthreads();
      const acc_t* tap = weights + c * d.R * d.S;
      for (int r = 0; r < d.R; ++r) {
        const acc_t* line = window + (row * d.stride_h + r * d.dilation_h) * d.window_w + col * d.stride_w;
        for (int s = 0; s < d.S; ++s) {
          const acc_t weight = tap[r * d.S + s];
          const acc_t* value = line + s * d.dilation_w;
#pragma unroll
          for (int i = 0; i < kRowsPerThread; ++i) acc[i] += value[i * d.stride_h * d.window_w] * weight;
        }
      }
    }
    const int q = q0 + col;
    if (q >= d.Q) continue;
    const acc_t bias = d.bias ? static_cast<acc_t>(d.bias[k]) : acc_t(0);
    scalar_t* y = d.y + (n * d.K + k) * int64_t(d.P) * d.Q;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int p = p0 + row + i;
      if (p < d.P) y[p * d.Q + q] = static_cast<scalar_t>(acc[i] + bias);
    }
  }
}

// Weight gradient of thin layers: partials[(n * tiles + tile) * K + k][c][r][s] = the sum, over the outputs
// (p, q) of one tile of plane (n, k), of gy[n,k,p,q] * x[n, g*Cg+c, p*sh-ph+r*dh, q*sw-pw+s*dw]; a second
// pass adds the N * tiles partials of each weight in order. Same split and window as the forward (d.y is
// unused, d.x is the input); each thread keeps its 4 gy values in registers, and the block adds the 256
// threads' products of kTapsPerPass taps at a time in a fixed order: 8 per lane of a warp-sized row,
// then the 32 lanes.
constexpr int kTapsPerPass = 8;
static_assert(kThreads / 32 == kTapsPerPass, "one warp-sized row of threads per tap of a pass");

template <typename scalar_t, typename acc_t, int TW>
__global__ void __launch_bounds__(kThreads)
    direct_tile_weight_grad_kernel(const DirectTile<scalar_t> d, const scalar_t* __restrict__ gy, acc_t* partials) {
  __shared__ acc_t window[kSharedBytes / sizeof(acc_t)];
  __shared__ acc_t products[kTapsPerPass][kThreads];
  __shared__ acc_t lanes[kTapsPerPass][32];
  const int tile = blockIdx.x, p0 = (tile / d.tiles_w) * tile_height(TW), q0 = (tile % d.tiles_w) * TW;
  const int col = threadIdx.x % TW, row = (threadIdx.x / TW) * kRowsPerThread;
  const int h0 = p0 * d.stride_h - d.pad_h, v0 = q0 * d.stride_w - d.pad_w;
  const int taps = d.R * d.S;

  for (int64_t plane = blockIdx.y; plane < int64_t(d.N) * d.K; plane += gridDim.y) {
    const int64_t n = plane / d.K;
    const int k = static_cast<int>(plane % d.K), group = k / d.Kg;
    acc_t grad[kRowsPerThread];
    const scalar_t* gy_plane = gy + plane * d.P * d.Q;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int p = p0 + row + i, q = q0 + col;
      grad[i] = p < d.P && q < d.Q ? static_cast<acc_t>(gy_plane[p * d.Q + q]) : acc_t(0);
    }
    acc_t* out = partials + ((n * d.tiles + tile) * d.K + k) * int64_t(d.Cg) * taps;
    for (int c = 0; c < d.Cg; ++c) {
      __syncthreads();  // the previous window and products are consumed
      stage_window(d, d.x + (n * d.C + group * d.Cg + c) * int64_t(d.H) * d.W, h0, v0, window);
      __syncthreads();
      for (int first = 0; first < taps; first += kTapsPerPass) {
        for (int t = 0; t < kTapsPerPass; ++t) {
          acc_t sum = 0;
          if (first + t < taps) {
            const int r = (first + t) / d.S, s = (first + t) % d.S;
            const acc_t* value = window + (row * d.stride_h + r * d.dilation_h) * d.window_w + col * d.stride_w +
                                 s * d.dilation_w;
#pragma unroll
            for (int i = 0; i < kRowsPerThread; ++i) sum += grad[i] * value[i * d.stride_h * d.window_w];
          }
          products[t][threadIdx.x] = sum;
        }
        __syncthreads();
        {  // thread (t, lane) adds products[t][lane + 32 j] over j
          const int t = threadIdx.x / 32, lane = threadIdx.x % 32;
          acc_t sum = 0;
          for (int j = 0; j < kThreads / 32; ++j) sum += products[t][lane + 32 * j];
          lanes[t][lane] = sum;
        }
        __syncthreads();
        if (threadIdx.x < kTapsPerPass && first + threadIdx.x < taps) {
          acc_t sum = 0;
          for (int lane = 0; lane < 32; ++lane) sum += lanes[threadIdx.x][lane];
          out[c * taps + first + threadIdx.x] = sum;
        }
        __syncthreads();  // products and lanes are free again
      }
    }
  }
}

// ---- host side ----

// Whether the window and weights of a block with tiles TW wide fit in kSharedBytes of acc_t.
template <typename Tile>
bool fits_in_shared(const Tile& d, int64_t acc_bytes) {
  return (int64_t(d.window_h) * d.window_w + int64_t(d.Cg) * d.R * d.S) * acc_bytes <= kSharedBytes;
}

// Tile width for an output plane Q columns wide: 32 (tiles of 32 x 32) for narrow planes, else 64 x 16.
inline int tile_width(int64_t Q) { return Q <= 32 ? 32 : 64; }

// The launch sizes of the forward of `p` with tiles TW wide (pointers left for the caller).
template <typename scalar_t, typename Problem>
DirectTile<scalar_t> direct_tile(const Problem& p, int TW) {
  DirectTile<scalar_t> d{};
  d.N = int(p.N), d.C = int(p.C), d.H = int(p.H), d.W = int(p.W), d.K = int(p.K), d.R = int(p.R), d.S = int(p.S);
  d.P = int(p.P), d.Q = int(p.Q), d.Cg = int(p.C_per_group()), d.Kg = int(p.K_per_group());
  d.stride_h = int(p.stride_h), d.stride_w = int(p.stride_w), d.pad_h = int(p.pad_h), d.pad_w = int(p.pad_w);
  d.dilation_h = int(p.dilation_h), d.dilation_w = int(p.dilation_w);
  const int tile_h = tile_height(TW);
  d.tiles_w = int((p.Q + TW - 1) / TW);
  d.tiles = d.tiles_w * int((p.P + tile_h - 1) / tile_h);
  d.window_h = (tile_h - 1) * d.stride_h + (d.R - 1) * d.dilation_h + 1;
  d.window_w = (TW - 1) * d.stride_w + (d.S - 1) * d.dilation_w + 1;
  return d;
}

}  // namespace torchcorr::cuda::tile
