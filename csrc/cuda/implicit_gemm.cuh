// Implicit GEMM kernels for layers with many channels: forward, input gradient and weight gradient.
//
// Each op is a matrix product whose operands are gathered from the tensors on the fly (no im2col buffer):
//   forward      y[n,k,p,q]  = sum_{j=(c,r,s)} x[n, g*Cg+c, p*sh-ph+r*dh, q*sw-pw+s*dw] * w[g*Kg+k, j]
//                rows m = (n,p,q), columns k < Kg, reduction j < Cg*R*S             (plane_gemm_kernel)
//   input grad   gx[n,c,h,v] = sum_{j=(k,r,s)} gy[n, g*Kg+k, (h+ph-r*dh)/sh, (v+pw-s*dw)/sw] * w[g*Kg+k, c, r, s]
//                where the divisions are exact: one plane GEMM per stride phase (h % sh, v % sw), whose
//                rows m = (n, i, j) are the pixels h = h0 + i*sh, v = v0 + j*sw of that phase and whose
//                reduction j < Kg*Rp*Sp runs over the taps that divide exactly there (all of them for
//                stride 1), so no tap is multiplied in vain and no division is left  (plane_gemm_kernel)
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
  int out_h, out_w;      // the GEMM's pixel grid (P x Q; a stride phase of H x W)
  int step_h, step_w;    // base row of pixel (i, j): i * step_h + shift_h (forward: stride, -pad;
  int shift_h, shift_w;  //   input gradient: 1, 0)
  int src_h, src_w;      // the source plane
  int64_t src_image, src_group;  // element strides of an image and a group of channels in src
  int64_t w_group;               // weights of one group
  int w_col;                     // weight stride between neighbouring columns
  int64_t out_image;             // element stride of an image in out
  int out_plane;                 // elements of one output channel
  int out_offset, out_row, out_col;  // pixel (i, j) is element out_offset + i*out_row + j*out_col of its plane
};

// Where row m of a plane GEMM lands in out, for output channel 0 of group 0.
template <typename scalar_t>
__device__ __forceinline__ int64_t output_offset(const PlaneGemm<scalar_t>& g, int m) {
  const int plane = g.out_h * g.out_w, pixel = m % plane;
  return (m / plane) * g.out_image + g.out_offset + (pixel / g.out_w) * g.out_row + (pixel % g.out_w) * g.out_col;
}

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

// How the tap table of a launch is built: reduction index j = (outer, th, tw) with outer the input channel
// (forward, weight gradient) or the output channel (input gradient), and (th, tw) < (taps_h, taps_w) the
// kernel taps r = r0 + th*r_step, s = s0 + tw*s_step that the launch multiplies; tap_table_kernel fills it.
struct TapRule {
  int J;                    // outer channels * taps_h * taps_w
  int taps_h, r0, r_step, drow0, drow_step;  // tap th: kernel row r0 + th*r_step, row offset drow0 + th*drow_step
  int taps_w, s0, s_step, dcol0, dcol_step;  // the same along columns
  int S;                    // kernel width (weight offset = outer * weight_stride + r*S + s)
  int channel_stride;       // source elements per `outer` channel
  int weight_stride;        // weight elements per `outer` step
};

// (A template, so that each .cu file that includes this header may instantiate it.)
template <bool kUnused = true>
__global__ void tap_table_kernel(Tap* taps, const TapRule rule) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= rule.J) return;
  const int per_outer = rule.taps_h * rule.taps_w, outer = j / per_outer, t = j % per_outer;
  const int th = t / rule.taps_w, tw = t % rule.taps_w;
  const int r = rule.r0 + th * rule.r_step, s = rule.s0 + tw * rule.s_step;
  taps[j] = Tap{outer * rule.channel_stride, rule.drow0 + th * rule.drow_step, rule.dcol0 + tw * rule.dcol_step,
                outer * rule.weight_stride + r * rule.S + s};
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

// The double-buffered step loop of every GEMM kernel (here and in implicit_gemm_mma.cuh): `fetch(step)`
// loads a step's operands into the loader's registers, `commit(As, Bs)` writes them to one pair of shared
// buffers while `multiply(As, Bs)` works on the other. One barrier per step.
template <typename Loader, typename StageA, typename StageB, typename Multiply>
__device__ __forceinline__ void pipelined_steps(Loader& loader, int64_t steps, StageA (&As)[2], StageB (&Bs)[2],
                                                Multiply&& multiply) {
  if (steps <= 0) return;
  loader.fetch(0);
  loader.commit(As[0], Bs[0]);
  __syncthreads();
  for (int64_t step = 0; step < steps; ++step) {
    const int buffer = step & 1;
    const bool more = step + 1 < steps;
    if (more) loader.fetch(step + 1);
    multiply(As[buffer], Bs[buffer]);
    if (more) loader.commit(As[buffer ^ 1], Bs[buffer ^ 1]);
    __syncthreads();
  }
}

// The main loop of both CUDA-core kernels.
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
  pipelined_steps(loader, steps, As, Bs, [&](const acc_t(*a)[BM + kPad], const acc_t(*b)[BN + kPad]) {
    multiply_step<BM, BN>(a, b, tx, ty, acc);
  });
}

// Loader of the plane GEMM. A (rows x J): each thread gathers one row (pixel) at kTileK*BM/256 reduction
// indices; B (J x cols): each thread reads one reduction index at kTileK*BN/256 columns.
template <int BM, int BN, typename scalar_t, typename acc_t>
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

  __device__ __forceinline__ void fetch(int64_t step) {
    const int j0 = static_cast<int>(step) * kTileK;
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) {
      const int j = j0 + a_kk + i * (kThreads / BM);
      acc_t value = acc_t(0);
      if (row_valid && j < g.J) {
        const Tap tap = g.taps[j];
        const int h = base_row + tap.drow, v = base_col + tap.dcol;
        if (h >= 0 && h < g.src_h && v >= 0 && v < g.src_w) value = static_cast<acc_t>(src[tap.channel + h * g.src_w + v]);
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

template <typename scalar_t, typename acc_t, int BM, int BN>
__global__ void __launch_bounds__(kThreads) plane_gemm_kernel(const __grid_constant__ PlaneGemm<scalar_t> g) {
  using T = TileShape<BM, BN>;
  const int group = blockIdx.z, row0 = blockIdx.x * BM, col0 = blockIdx.y * BN;
  PlaneLoader<BM, BN, scalar_t, acc_t> loader(g, group, row0, col0);
  acc_t acc[T::TM][T::TN];
  gemm_main_loop<BM, BN>(loader, (g.J + kTileK - 1) / kTileK, acc);

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int m = row0 + T::row(tx, i);
    if (m >= g.rows) continue;
    scalar_t* out = g.out + output_offset(g, m) + (int64_t(group) * g.cols) * g.out_plane;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int col = col0 + T::col(ty, j);
      if (col >= g.cols) continue;
      const acc_t bias = g.bias ? static_cast<acc_t>(g.bias[group * g.cols + col]) : acc_t(0);
      out[int64_t(col) * g.out_plane] = static_cast<scalar_t>(acc[i][j] + bias);
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
  return {int(p.C_per_group() * p.R * p.S), int(p.R), 0, 1, 0, int(p.dilation_h), int(p.S), 0, 1, 0,
          int(p.dilation_w), int(p.S), int(p.H * p.W), int(p.R * p.S)};
}

// Sizes of the forward as a plane GEMM (pointers left for the caller).
template <typename scalar_t, typename Problem>
PlaneGemm<scalar_t> forward_gemm(const Problem& p) {
  PlaneGemm<scalar_t> g{};
  g.rows = int(p.N * p.P * p.Q), g.cols = int(p.K_per_group()), g.J = int(p.C_per_group() * p.R * p.S);
  g.out_h = int(p.P), g.out_w = int(p.Q);
  g.step_h = int(p.stride_h), g.step_w = int(p.stride_w), g.shift_h = int(-p.pad_h), g.shift_w = int(-p.pad_w);
  g.src_h = int(p.H), g.src_w = int(p.W);
  g.src_image = p.C * p.H * p.W, g.src_group = p.C_per_group() * p.H * p.W;
  g.w_group = p.K_per_group() * p.C_per_group() * p.R * p.S, g.w_col = g.J;
  g.out_image = p.K * p.P * p.Q, g.out_plane = int(p.P * p.Q);
  g.out_offset = 0, g.out_row = int(p.Q), g.out_col = 1;
  return g;
}

// The kernel taps that reach input index `phase` (mod stride) exactly: those r with
// (phase + pad - r*dilation) % stride == 0, which step by stride / gcd(stride, dilation). Sets count, first
// tap, tap step, and the source offsets (phase + pad - r*dilation) / stride of the first tap and per step.
inline void phase_taps(int64_t phase, int64_t stride, int64_t pad, int64_t dilation, int64_t kernel, int& count,
                       int& first, int& step, int& offset0, int& offset_step) {
  count = 0, first = 0, step = 1;
  for (int64_t r = 0; r < kernel; ++r) {
    if ((phase + pad - r * dilation) % stride != 0) continue;
    if (count == 0) first = int(r);
    if (count == 1) step = int(r) - first;
    ++count;
  }
  offset0 = int((phase + pad - first * dilation) / stride);
  offset_step = -int(step * dilation / stride);
}

// One stride phase of the input gradient (the pixels h = a + i*sh, v = b + j*sw) as a plane GEMM and its
// taps; for stride 1 the one phase is the whole input gradient.
template <typename scalar_t>
struct InputGradPhase {
  PlaneGemm<scalar_t> gemm;
  TapRule taps;
};

template <typename scalar_t, typename Problem>
InputGradPhase<scalar_t> input_grad_phase(const Problem& p, int64_t a, int64_t b) {
  TapRule t{};
  phase_taps(a, p.stride_h, p.pad_h, p.dilation_h, p.R, t.taps_h, t.r0, t.r_step, t.drow0, t.drow_step);
  phase_taps(b, p.stride_w, p.pad_w, p.dilation_w, p.S, t.taps_w, t.s0, t.s_step, t.dcol0, t.dcol_step);
  t.J = int(p.K_per_group()) * t.taps_h * t.taps_w, t.S = int(p.S);
  t.channel_stride = int(p.P * p.Q), t.weight_stride = int(p.C_per_group() * p.R * p.S);
  PlaneGemm<scalar_t> g{};
  g.out_h = int(ceil_div(p.H - a, p.stride_h)), g.out_w = int(ceil_div(p.W - b, p.stride_w));
  g.rows = int(p.N) * g.out_h * g.out_w, g.cols = int(p.C_per_group()), g.J = t.J;
  g.step_h = 1, g.step_w = 1, g.shift_h = 0, g.shift_w = 0;
  g.src_h = int(p.P), g.src_w = int(p.Q);
  g.src_image = p.K * p.P * p.Q, g.src_group = p.K_per_group() * p.P * p.Q;
  g.w_group = p.K_per_group() * p.C_per_group() * p.R * p.S, g.w_col = int(p.R * p.S);
  g.out_image = p.C * p.H * p.W, g.out_plane = int(p.H * p.W);
  g.out_offset = int(a * p.W + b), g.out_row = int(p.stride_h * p.W), g.out_col = int(p.stride_w);
  return {g, t};
}

// Calls f(phase) for every stride phase of the input gradient that holds pixels (a phase no tap reaches
// has J = 0: its GEMM writes zeros).
template <typename scalar_t, typename Problem, typename F>
void for_each_input_grad_phase(const Problem& p, F&& f) {
  for (int64_t a = 0; a < std::min(p.stride_h, p.H); ++a) {
    for (int64_t b = 0; b < std::min(p.stride_w, p.W); ++b) f(input_grad_phase<scalar_t>(p, a, b));
  }
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
