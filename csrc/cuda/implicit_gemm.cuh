// Implicit GEMM kernels for layers with many channels: forward, input gradient and weight gradient.
//
// Each op is a matrix product whose operands are gathered from the tensors on the fly (no im2col buffer):
//   forward      y[n,k,p,q]  = sum_{j=(c,r,s)} x[n, g*Cg+c, p*sh-ph+r*dh, q*sw-pw+s*dw] * w[g*Kg+k, j]
//                rows m = (n,p,q), columns k < Kg, reduction j < Cg*R*S             (plane_gemm_kernel)
//   input grad   gx[n,c,h,v] = sum_{j=(k,r,s)} gy[n, g*Kg+k, (h+ph-r*dh)/sh, (v+pw-s*dw)/sw] * w[g*Kg+k, c, r, s]
//                rows m = (n,h,v), columns c < Cg, reduction j < Kg*R*S; a tap counts only where the
//                divisions are exact and land inside the output plane                (plane_gemm_kernel)
//   weight grad  gw[k,j]     = sum_{t=(n,p,q)} gy[n, g*Kg+k, p, q] * x[n, g*Cg+c, p*sh-ph+r*dh, q*sw-pw+s*dw]
//                rows k < Kg, columns j = (c,r,s) < Cg*R*S, reduction t < N*P*Q cut into chunks
//                whose partial sums a second pass adds in a fixed order                (weight_gemm_kernel)
// with g the group (blockIdx.z) and taps in the zero padding read as zero. Sums run in opmath precision
// (acc_t: float for float16/bfloat16), each output in a fixed order, so results are deterministic.
//
// Work split: a block of 256 threads computes a BM x BN tile of the product; thread (tx, ty) of a 16 x 16
// grid owns TM x TN outputs: rows tx*VM + i + a*16*VM and columns ty*VN + j + b*16*VN (VM, VN <= 4), so
// that neighbouring lanes read neighbouring shared-memory words and write neighbouring pixels.
// Memory: per step of kTileK reduction indices the block stages a kTileK x BM slice of the first operand
// and a kTileK x BN slice of the second in shared memory (two buffers: the next slice is fetched into
// registers while the current one is multiplied), so each gathered value is read from global memory once
// per block. A per-launch table of taps (one int4 per reduction index: channel offset, row and column
// offsets, weight offset) replaces the divisions that would split a reduction index into (c, r, s).
//
// Offsets inside one image fit in 32 bits (the launcher checks this and uses the direct kernels otherwise);
// image and partial-sum offsets are 64-bit.
#pragma once

#include <algorithm>
#include <cstdint>

namespace torchcorr::cuda::gemm {

constexpr int kThreads = 256;  // a 16 x 16 grid of threads
constexpr int kTileK = 8;      // reduction indices per shared-memory step
constexpr int kPad = 4;        // words of padding per staged row: conflict-free stores, 16-byte rows

// Where reduction index j of a plane GEMM reads: channel offset in the source image, row and column offsets
// from the thread's base pixel, and the weight offset of column 0.
struct alignas(16) Tap {  // one 16-byte load
  int channel, drow, dcol, weight;
};

// Forward / input gradient: out[n, g*cols + col, plane pixel] = sum_j src(gathered) * w(j, col) (+ bias).
template <typename scalar_t>
struct PlaneGemm {
  const scalar_t* src;  // x (forward) or gy (input gradient)
  const scalar_t* w;
  const scalar_t* bias;  // forward only; may be null
  scalar_t* out;
  const Tap* taps;       // J entries
  int rows;              // N * out_h * out_w
  int cols;              // output channels per group (Kg or Cg)
  int J;                 // reduction length
  int out_h, out_w;      // the output plane (P x Q, or H x W)
  int step_h, step_w;    // base row of output pixel (i, j): i * step_h + shift_h (forward: stride, -pad)
  int shift_h, shift_w;  //   (input gradient: 1, +pad)
  int src_h, src_w;      // the source plane
  int div_h, div_w;      // input gradient of a strided layer: source index = numerator / stride, when exact
  int64_t src_image, src_group;  // element strides of an image and a group of channels in src
  int64_t w_group;               // weights of one group
  int w_col;                     // weight stride between neighbouring columns
  int64_t out_image;             // element stride of an image in out
};

// Weight gradient partials: partials[chunk][g*Kg + k][j] for the chunk of terms blockIdx.y.
template <typename scalar_t, typename acc_t>
struct WeightGemm {
  const scalar_t* gy;
  const scalar_t* x;
  acc_t* partials;
  const Tap* taps;  // J entries (forward taps)
  int Kg, J, K;     // rows per group, columns, all output channels
  int C, H, W, Cg, P, Q;
  int stride_h, stride_w, pad_h, pad_w;
  int64_t terms;        // N * P * Q
  int64_t chunk_terms;  // terms per chunk, a multiple of kTileK
  int col_tiles;        // tiles across J; blockIdx.x = row_tile * col_tiles + col_tile
};

// How the tap table of a launch is built: reduction index j = (outer, r, s) with outer the input channel
// (forward, weight gradient) or the output channel (input gradient); tap_table_kernel fills it.
struct TapRule {
  int J, RS, S, dilation_h, dilation_w;
  int channel_stride;  // source elements per `outer` channel
  int weight_stride;   // weight elements per `outer` step (weight offset = outer * weight_stride + r*S + s)
  int sign;            // +1: the tap adds r*dh to the row (forward); -1: it subtracts it (input gradient)
};

// (A template, so that each .cu file that includes this header may instantiate it.)
template <bool kUnused = true>
__global__ void tap_table_kernel(Tap* taps, const TapRule rule) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= rule.J) return;
  const int outer = j / rule.RS, rs = j % rule.RS, r = rs / rule.S, s = rs % rule.S;
  taps[j] = Tap{outer * rule.channel_stride, rule.sign * r * rule.dilation_h, rule.sign * s * rule.dilation_w,
                outer * rule.weight_stride + rs};
}

template <int BM, int BN>
struct TileShape {
  static constexpr int TM = BM / 16, TN = BN / 16;
  static constexpr int VM = TM < 4 ? TM : 4, VN = TN < 4 ? TN : 4;
  static __device__ __forceinline__ int row(int tx, int i) { return (i / VM) * 16 * VM + tx * VM + i % VM; }
  static __device__ __forceinline__ int col(int ty, int j) { return (j / VN) * 16 * VN + ty * VN + j % VN; }
};

// acc += A_slice^T * B_slice for one staged step: As[kk][row], Bs[kk][col].
template <int BM, int BN, typename acc_t>
__device__ __forceinline__ void multiply_step(const acc_t (*As)[BM + kPad], const acc_t (*Bs)[BN + kPad], int tx,
                                              int ty, acc_t (&acc)[BM / 16][BN / 16]) {
  using T = TileShape<BM, BN>;
#pragma unroll
  for (int kk = 0; kk < kTileK; ++kk) {
    acc_t a[T::TM], b[T::TN];
#pragma unroll
    for (int i = 0; i < T::TM; ++i) a[i] = As[kk][T::row(tx, i)];
#pragma unroll
    for (int j = 0; j < T::TN; ++j) b[j] = Bs[kk][T::col(ty, j)];
#pragma unroll
    for (int i = 0; i < T::TM; ++i) {
#pragma unroll
      for (int j = 0; j < T::TN; ++j) acc[i][j] += a[i] * b[j];
    }
  }
}

// The main loop shared by both kernels: `fetch(step)` loads a step's operands into the loader's registers,
// `commit(As, Bs)` writes them to shared memory. One barrier per step.
template <int BM, int BN, typename acc_t, typename Loader>
__device__ __forceinline__ void gemm_main_loop(Loader& loader, int64_t steps, acc_t (&acc)[BM / 16][BN / 16]) {
  alignas(16) __shared__ acc_t As[2][kTileK][BM + kPad];  // 16-byte rows: vector loads in multiply_step
  alignas(16) __shared__ acc_t Bs[2][kTileK][BN + kPad];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < BM / 16; ++i) {
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) acc[i][j] = acc_t(0);
  }
  if (steps <= 0) return;
  loader.fetch(0);
  loader.commit(As[0], Bs[0]);
  __syncthreads();
  for (int64_t step = 0; step < steps; ++step) {
    const int buffer = step & 1;
    const bool more = step + 1 < steps;
    if (more) loader.fetch(step + 1);
    multiply_step<BM, BN>(As[buffer], Bs[buffer], tx, ty, acc);
    if (more) loader.commit(As[buffer ^ 1], Bs[buffer ^ 1]);
    __syncthreads();
  }
}

// Loader of the plane GEMM. A (rows x J): each thread gathers one row (pixel) at kTileK*BM/256 reduction
// indices; B (J x cols): each thread reads one reduction index at kTileK*BN/256 columns.
template <int BM, int BN, bool kExactDivision, typename scalar_t, typename acc_t>
struct PlaneLoader {
  static constexpr int kAPerThread = kTileK * BM / kThreads;
  static constexpr int kBPerThread = kTileK * BN / kThreads;
  const PlaneGemm<scalar_t>& g;
  const scalar_t* src;  // this thread's image and group
  const scalar_t* w;    // this block's group
  int a_row, a_kk, base_row, base_col;
  bool row_valid;
  int b_kk, b_col0, col0;
  acc_t a[kAPerThread], b[kBPerThread];

  __device__ PlaneLoader(const PlaneGemm<scalar_t>& gemm, int group, int row0, int col_begin) : g(gemm) {
    a_row = threadIdx.x % BM, a_kk = threadIdx.x / BM;
    const int m = row0 + a_row;
    row_valid = m < g.rows;
    const int plane = g.out_h * g.out_w;
    const int n = row_valid ? m / plane : 0, pixel = row_valid ? m % plane : 0;
    base_row = (pixel / g.out_w) * g.step_h + g.shift_h;
    base_col = (pixel % g.out_w) * g.step_w + g.shift_w;
    src = g.src + n * g.src_image + group * g.src_group;
    w = g.w + group * g.w_group;
    b_kk = threadIdx.x % kTileK, b_col0 = threadIdx.x / kTileK;
    col0 = col_begin;
  }

  __device__ __forceinline__ int source_index(int num, int div, int size) const {
    if (kExactDivision) {
      if (num < 0 || num % div != 0) return -1;
      num /= div;
    }
    return num >= 0 && num < size ? num : -1;
  }

  __device__ __forceinline__ void fetch(int64_t step) {
    const int j0 = static_cast<int>(step) * kTileK;
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) {
      const int j = j0 + a_kk + i * (kThreads / BM);
      acc_t value = acc_t(0);
      if (row_valid && j < g.J) {
        const Tap tap = g.taps[j];
        const int h = source_index(base_row + tap.drow, g.div_h, g.src_h);
        const int v = source_index(base_col + tap.dcol, g.div_w, g.src_w);
        if (h >= 0 && v >= 0) value = static_cast<acc_t>(src[tap.channel + h * g.src_w + v]);
      }
      a[i] = value;
    }
    const int j = j0 + b_kk;
    const int weight = j < g.J ? g.taps[j].weight : 0;
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const int col = col0 + b_col0 + i * (kThreads / kTileK);
      b[i] = j < g.J && col < g.cols ? static_cast<acc_t>(w[weight + col * g.w_col]) : acc_t(0);
    }
  }

  __device__ __forceinline__ void commit(acc_t (*As)[BM + kPad], acc_t (*Bs)[BN + kPad]) const {
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) As[a_kk + i * (kThreads / BM)][a_row] = a[i];
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) Bs[b_kk][b_col0 + i * (kThreads / kTileK)] = b[i];
  }
};

template <typename scalar_t, typename acc_t, int BM, int BN, bool kExactDivision>
__global__ void __launch_bounds__(kThreads) plane_gemm_kernel(const __grid_constant__ PlaneGemm<scalar_t> g) {
  using T = TileShape<BM, BN>;
  const int group = blockIdx.z, row0 = blockIdx.x * BM, col0 = blockIdx.y * BN;
  PlaneLoader<BM, BN, kExactDivision, scalar_t, acc_t> loader(g, group, row0, col0);
  acc_t acc[T::TM][T::TN];
  gemm_main_loop<BM, BN>(loader, (g.J + kTileK - 1) / kTileK, acc);

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, plane = g.out_h * g.out_w;
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int m = row0 + T::row(tx, i);
    if (m >= g.rows) continue;
    scalar_t* out = g.out + (m / plane) * g.out_image + (int64_t(group) * g.cols) * plane + m % plane;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int col = col0 + T::col(ty, j);
      if (col >= g.cols) continue;
      const acc_t bias = g.bias ? static_cast<acc_t>(g.bias[group * g.cols + col]) : acc_t(0);
      out[int64_t(col) * plane] = static_cast<scalar_t>(acc[i][j] + bias);
    }
  }
}

// Loader of the weight-gradient GEMM: A = gy (rows k x terms t), B = gathered x (terms t x columns j).
// Each thread takes one term of every step (t = step*kTileK + tid % kTileK, split into (n, p, q) once)
// and kTileK*BM/256 rows and kTileK*BN/256 columns, whose taps it keeps in registers.
template <int BM, int BN, typename scalar_t, typename acc_t>
struct WeightLoader {
  static constexpr int kAPerThread = kTileK * BM / kThreads;
  static constexpr int kBPerThread = kTileK * BN / kThreads;
  static constexpr int kLines = kThreads / kTileK;  // rows or columns one pass of the block covers
  const WeightGemm<scalar_t, acc_t>& g;
  int group, tt, line, row0;
  int64_t t_begin, t_end;
  Tap taps[kBPerThread];
  bool col_valid[kBPerThread];
  acc_t a[kAPerThread], b[kBPerThread];

  __device__ WeightLoader(const WeightGemm<scalar_t, acc_t>& gemm, int group_, int row_begin, int col_begin,
                          int64_t chunk)
      : g(gemm), group(group_) {
    tt = threadIdx.x % kTileK, line = threadIdx.x / kTileK, row0 = row_begin;
    t_begin = chunk * g.chunk_terms;
    t_end = t_begin + g.chunk_terms < g.terms ? t_begin + g.chunk_terms : g.terms;
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const int col = col_begin + line + i * kLines;
      col_valid[i] = col < g.J;
      taps[i] = g.taps[col_valid[i] ? col : 0];
    }
  }

  __device__ __forceinline__ void fetch(int64_t step) {
    const int64_t t = t_begin + step * kTileK + tt;
    const bool valid = t < t_end;
    const int plane = g.P * g.Q;
    const int64_t n = valid ? t / plane : 0;
    const int pixel = valid ? static_cast<int>(t - n * plane) : 0;
    const int p = pixel / g.Q, q = pixel % g.Q;
    const scalar_t* gy = g.gy + (n * g.K + int64_t(group) * g.Kg) * plane + pixel;
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) {
      const int k = row0 + line + i * kLines;
      a[i] = valid && k < g.Kg ? static_cast<acc_t>(gy[int64_t(k) * plane]) : acc_t(0);
    }
    const scalar_t* x = g.x + (n * g.C + int64_t(group) * g.Cg) * g.H * g.W;
    const int row = p * g.stride_h - g.pad_h, col = q * g.stride_w - g.pad_w;
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const int h = row + taps[i].drow, v = col + taps[i].dcol;
      const bool inside = valid && col_valid[i] && h >= 0 && h < g.H && v >= 0 && v < g.W;
      b[i] = inside ? static_cast<acc_t>(x[taps[i].channel + h * g.W + v]) : acc_t(0);
    }
  }

  __device__ __forceinline__ void commit(acc_t (*As)[BM + kPad], acc_t (*Bs)[BN + kPad]) const {
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) As[tt][line + i * kLines] = a[i];
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) Bs[tt][line + i * kLines] = b[i];
  }
};

template <typename scalar_t, typename acc_t, int BM, int BN>
__global__ void __launch_bounds__(kThreads) weight_gemm_kernel(const __grid_constant__ WeightGemm<scalar_t, acc_t> g) {
  using T = TileShape<BM, BN>;
  const int group = blockIdx.z;
  const int row0 = (blockIdx.x / g.col_tiles) * BM, col0 = (blockIdx.x % g.col_tiles) * BN;
  const int64_t chunk = blockIdx.y;
  WeightLoader<BM, BN, scalar_t, acc_t> loader(g, group, row0, col0, chunk);
  const int64_t length = loader.t_end - loader.t_begin;
  acc_t acc[T::TM][T::TN];
  gemm_main_loop<BM, BN>(loader, (length + kTileK - 1) / kTileK, acc);

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  acc_t* partials = g.partials + (chunk * g.K + int64_t(group) * g.Kg) * g.J;
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int k = row0 + T::row(tx, i);
    if (k >= g.Kg) continue;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int col = col0 + T::col(ty, j);
      if (col < g.J) partials[int64_t(k) * g.J + col] = acc[i][j];
    }
  }
}

}  // namespace torchcorr::cuda::gemm

namespace torchcorr::cuda::gemm {

// ---- host side: the sizes of each launch, from a problem with Corr2dProblem's fields ----

// Weight gradient: chunks until about this many blocks run (a constant, so that the summation order, and
// so every bit of the result, is the same on every GPU), each of at least kMinChunkTerms terms.
constexpr int64_t kWeightGemmBlocks = 1056;
constexpr int64_t kMinChunkTerms = 512;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename Problem>
TapRule forward_taps(const Problem& p) {
  return {int(p.C_per_group() * p.R * p.S), int(p.R * p.S), int(p.S), int(p.dilation_h), int(p.dilation_w),
          int(p.H * p.W), int(p.R * p.S), +1};
}

template <typename Problem>
TapRule input_grad_taps(const Problem& p) {
  return {int(p.K_per_group() * p.R * p.S), int(p.R * p.S), int(p.S), int(p.dilation_h), int(p.dilation_w),
          int(p.P * p.Q), int(p.C_per_group() * p.R * p.S), -1};
}

// Sizes of the forward as a plane GEMM (pointers left for the caller).
template <typename scalar_t, typename Problem>
PlaneGemm<scalar_t> forward_gemm(const Problem& p) {
  PlaneGemm<scalar_t> g{};
  g.rows = int(p.N * p.P * p.Q), g.cols = int(p.K_per_group()), g.J = int(p.C_per_group() * p.R * p.S);
  g.out_h = int(p.P), g.out_w = int(p.Q);
  g.step_h = int(p.stride_h), g.step_w = int(p.stride_w), g.shift_h = int(-p.pad_h), g.shift_w = int(-p.pad_w);
  g.src_h = int(p.H), g.src_w = int(p.W), g.div_h = 1, g.div_w = 1;
  g.src_image = p.C * p.H * p.W, g.src_group = p.C_per_group() * p.H * p.W;
  g.w_group = p.K_per_group() * p.C_per_group() * p.R * p.S, g.w_col = g.J;
  g.out_image = p.K * p.P * p.Q;
  return g;
}

// Sizes of the input gradient as a plane GEMM; exact division is needed when a stride is above 1.
template <typename scalar_t, typename Problem>
PlaneGemm<scalar_t> input_grad_gemm(const Problem& p) {
  PlaneGemm<scalar_t> g{};
  g.rows = int(p.N * p.H * p.W), g.cols = int(p.C_per_group()), g.J = int(p.K_per_group() * p.R * p.S);
  g.out_h = int(p.H), g.out_w = int(p.W);
  g.step_h = 1, g.step_w = 1, g.shift_h = int(p.pad_h), g.shift_w = int(p.pad_w);
  g.src_h = int(p.P), g.src_w = int(p.Q), g.div_h = int(p.stride_h), g.div_w = int(p.stride_w);
  g.src_image = p.K * p.P * p.Q, g.src_group = p.K_per_group() * p.P * p.Q;
  g.w_group = p.K_per_group() * p.C_per_group() * p.R * p.S, g.w_col = int(p.R * p.S);
  g.out_image = p.C * p.H * p.W;
  return g;
}

// Sizes and chunking of the weight gradient for tiles of BM x BN; chunks = ceil(terms / chunk_terms).
template <typename scalar_t, typename acc_t, typename Problem>
WeightGemm<scalar_t, acc_t> weight_gemm(const Problem& p, int BM, int BN) {
  WeightGemm<scalar_t, acc_t> g{};
  g.Kg = int(p.K_per_group()), g.J = int(p.C_per_group() * p.R * p.S), g.K = int(p.K);
  g.C = int(p.C), g.H = int(p.H), g.W = int(p.W), g.Cg = int(p.C_per_group()), g.P = int(p.P), g.Q = int(p.Q);
  g.stride_h = int(p.stride_h), g.stride_w = int(p.stride_w), g.pad_h = int(p.pad_h), g.pad_w = int(p.pad_w);
  g.terms = p.N * p.P * p.Q;
  g.col_tiles = int(ceil_div(g.J, BN));
  const int64_t tiles = ceil_div(g.Kg, BM) * g.col_tiles * p.groups;
  const int64_t chunks = std::max<int64_t>(1, std::min(ceil_div(kWeightGemmBlocks, tiles),
                                                       ceil_div(g.terms, kMinChunkTerms)));
  g.chunk_terms = ceil_div(ceil_div(g.terms, chunks), kTileK) * kTileK;
  return g;
}

}  // namespace torchcorr::cuda::gemm
