// Tensor-core implicit GEMM for float16 and bfloat16 layers: the three products of implicit_gemm.cuh (same
// PlaneGemm / WeightGemm descriptions, same tap tables) on mma.sync m16n8k16 with float32 accumulators.
//
// Work split: a block of 256 threads (8 warps) computes a BM x BN tile of the product. The warps form a
// (8 / (BN/32)) x (BN/32) grid; each owns a WM x 32 piece, (WM/16) x 4 tensor-core tiles of 16 x 8 whose
// float accumulators stay in registers (mma_step).
// Memory: per step of kMmaK = 32 reduction indices the block stages the first operand as As[row][j] and
// the second as Bs[col][j]: 16-bit values, j contiguous, pairs (j, j+1) packed in one 32-bit word as the
// mma fragments take them. Rows are padded to kMmaRow = 20 words, so the fragment loads (8 rows x 4 words
// per warp) and the loaders' stores hit 32 different banks. Two buffers: the next step is gathered into
// registers while the tensor cores multiply the current one; one barrier per step. Gathering only moves
// bits (zero padding is the bit pattern 0 in both formats), so values are converted once, in the epilogue.
// Sums: float32 in an order fixed by the tiling (deterministic); products of 16-bit values are exact.
// Needs compute capability 8.0 or newer (the launcher checks).
#pragma once

#include "implicit_gemm.cuh"

#include <cstdint>

namespace torchcorr::cuda::gemm {

constexpr int kMmaK = 32;               // reduction indices per staged step
constexpr int kMmaPairs = kMmaK / 2;    // 32-bit words of a staged row
constexpr int kMmaRow = kMmaPairs + 4;  // words per staged row, padded against bank conflicts

// d += a * b for one 16 x 8 x 16 tile; fragments as PTX lays them out for mma.m16n8k16 (lane = 4*group +
// thread_in_group): a = rows (group, group+8) x reduction pairs (tig, tig+4), b = reduction pairs (tig,
// tig+4) x column group, d = rows (group, group+8) x columns (2*tig, 2*tig+1).
template <bool kBF16>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(TORCHCORR_CUDA_EMULATION)
  emulate_mma_16x8x16<kBF16>(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (kBF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // no tensor cores for 16-bit inputs before sm_80; the launcher never gets here
#endif
}

template <int BM, int BN>
struct MmaShape {
  static constexpr int kWarpsN = BN / 32, kWarpsM = 8 / kWarpsN;
  static constexpr int WM = BM / kWarpsM;  // rows of a warp's piece
  static constexpr int MT = WM / 16, NT = 4;  // tensor-core tiles per warp piece
  static_assert(BN == 64 || BN == 128, "column tiles of 64 or 128");
  static_assert(WM % 16 == 0, "a warp's piece is whole 16-row tiles");
};

// acc += As^T-step x Bs-step for one staged step (two k16 slices).
template <int BM, int BN, bool kBF16>
__device__ __forceinline__ void mma_step(const uint32_t (*As)[kMmaRow], const uint32_t (*Bs)[kMmaRow],
                                         float (&acc)[MmaShape<BM, BN>::MT][4][4]) {
  using S = MmaShape<BM, BN>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, group = lane / 4, tig = lane % 4;
  const int wm0 = (warp / S::kWarpsN) * S::WM, wn0 = (warp % S::kWarpsN) * 32;
#pragma unroll
  for (int kk = 0; kk < kMmaPairs; kk += 8) {
    uint32_t a[S::MT][4], b[S::NT][2];
#pragma unroll
    for (int mt = 0; mt < S::MT; ++mt) {
      const int r = wm0 + mt * 16 + group;
      a[mt][0] = As[r][kk + tig], a[mt][1] = As[r + 8][kk + tig];
      a[mt][2] = As[r][kk + 4 + tig], a[mt][3] = As[r + 8][kk + 4 + tig];
    }
#pragma unroll
    for (int nt = 0; nt < S::NT; ++nt) {
      const int c = wn0 + nt * 8 + group;
      b[nt][0] = Bs[c][kk + tig], b[nt][1] = Bs[c][kk + 4 + tig];
    }
#pragma unroll
    for (int mt = 0; mt < S::MT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < S::NT; ++nt) mma_16x8x16<kBF16>(acc[mt][nt], a[mt], b[nt]);
    }
  }
}

// The main loop of both tensor-core kernels (pipelined_steps of implicit_gemm.cuh).
template <int BM, int BN, bool kBF16, typename Loader>
__device__ __forceinline__ void mma_main_loop(Loader& loader, int64_t steps,
                                              float (&acc)[MmaShape<BM, BN>::MT][4][4]) {
  alignas(16) __shared__ uint32_t As[2][BM][kMmaRow];
  alignas(16) __shared__ uint32_t Bs[2][BN][kMmaRow];
#pragma unroll
  for (int mt = 0; mt < MmaShape<BM, BN>::MT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
    }
  }
  pipelined_steps(loader, steps, As, Bs, [&](const uint32_t(*a)[kMmaRow], const uint32_t(*b)[kMmaRow]) {
    mma_step<BM, BN, kBF16>(a, b, acc);
  });
}

// Calls f(row, col, value) for each accumulator of this thread, row and column within the block's tile.
template <int BM, int BN, typename F>
__device__ __forceinline__ void for_each_accumulator(const float (&acc)[MmaShape<BM, BN>::MT][4][4], F&& f) {
  using S = MmaShape<BM, BN>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int row0 = (warp / S::kWarpsN) * S::WM + lane / 4, col0 = (warp % S::kWarpsN) * 32 + 2 * (lane % 4);
#pragma unroll
  for (int mt = 0; mt < S::MT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < S::NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) f(row0 + mt * 16 + (i / 2) * 8, col0 + nt * 8 + i % 2, acc[mt][nt][i]);
    }
  }
}

__device__ __forceinline__ uint32_t pack_pair(uint16_t low, uint16_t high) {
  return uint32_t(low) | (uint32_t(high) << 16);
}

// Loader of the plane GEMM (BM = 64 or 128 rows). A: thread (warp, lane) gathers rows lane%8 + 8*(warp/2)
// + 32*i (i < BM/32) at index pairs lane/8 + 4*(warp%2) + 8*e (e < 2): eight neighbouring pixels per quarter warp,
// and per store instruction 8 rows x 4 pairs, on 32 banks. B: pair tid%16 of columns tid/16 + 16*i.
template <int BM, int BN, typename scalar_t>
struct MmaPlaneLoader {
  static constexpr int kRows = BM / 32, kPairs = 2, kCols = BN / 16;
  const PlaneGemm<scalar_t>& g;
  const uint16_t* w;  // this block's group
  const uint16_t* src[kRows];
  int base_row[kRows], base_col[kRows];
  int a_row0, a_pair0, b_pair, b_col, b_col0;  // b_col: this thread's first column within the tile
  uint32_t a[kPairs][kRows], b[kCols];

  __device__ MmaPlaneLoader(const PlaneGemm<scalar_t>& gemm, int group, int row_begin, int col_begin) : g(gemm) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    a_row0 = lane % 8 + 8 * (warp / 2), a_pair0 = lane / 8 + 4 * (warp % 2);
    const int plane = g.out_h * g.out_w;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int m = row_begin + a_row0 + 32 * i;
      const bool valid = m < g.rows;
      const int n = valid ? m / plane : 0, pixel = valid ? m % plane : 0;
      // An invalid row starts far outside the source plane, so every tap reads the padding.
      base_row[i] = valid ? (pixel / g.out_w) * g.step_h + g.shift_h : -(1 << 29);
      base_col[i] = (pixel % g.out_w) * g.step_w + g.shift_w;
      src[i] = reinterpret_cast<const uint16_t*>(g.src) + n * g.src_image + group * g.src_group;
    }
    w = reinterpret_cast<const uint16_t*>(g.w) + group * g.w_group;
    b_pair = threadIdx.x % 16, b_col = threadIdx.x / 16, b_col0 = col_begin + b_col;
  }

  __device__ __forceinline__ uint16_t gather(int i, const Tap& tap, bool valid) const {
    const int h = base_row[i] + tap.drow, v = base_col[i] + tap.dcol;
    const bool inside = valid && h >= 0 && h < g.src_h && v >= 0 && v < g.src_w;
    return inside ? src[i][tap.channel + h * g.src_w + v] : uint16_t(0);
  }

  __device__ __forceinline__ void fetch(int64_t step) {
    const int j0 = static_cast<int>(step) * kMmaK;
#pragma unroll
    for (int e = 0; e < kPairs; ++e) {
      const int j = j0 + 2 * (a_pair0 + 8 * e);
      const bool valid0 = j < g.J, valid1 = j + 1 < g.J;
      const Tap tap0 = g.taps[valid0 ? j : 0], tap1 = g.taps[valid1 ? j + 1 : 0];
#pragma unroll
      for (int i = 0; i < kRows; ++i) a[e][i] = pack_pair(gather(i, tap0, valid0), gather(i, tap1, valid1));
    }
    const int j = j0 + 2 * b_pair;
    const bool valid0 = j < g.J, valid1 = j + 1 < g.J;
    const int weight0 = valid0 ? g.taps[j].weight : 0, weight1 = valid1 ? g.taps[j + 1].weight : 0;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int col = b_col0 + 16 * i;
      const bool inside = col < g.cols;
      const uint16_t low = inside && valid0 ? w[weight0 + col * g.w_col] : uint16_t(0);
      const uint16_t high = inside && valid1 ? w[weight1 + col * g.w_col] : uint16_t(0);
      b[i] = pack_pair(low, high);
    }
  }

  __device__ __forceinline__ void commit(uint32_t (*As)[kMmaRow], uint32_t (*Bs)[kMmaRow]) const {
#pragma unroll
    for (int e = 0; e < kPairs; ++e) {
#pragma unroll
      for (int i = 0; i < kRows; ++i) As[a_row0 + 32 * i][a_pair0 + 8 * e] = a[e][i];
    }
#pragma unroll
    for (int i = 0; i < kCols; ++i) Bs[b_col + 16 * i][b_pair] = b[i];
  }
};

template <typename scalar_t, int BM, int BN, bool kBF16>
__global__ void __launch_bounds__(kThreads, 2) plane_mma_kernel(const __grid_constant__ PlaneGemm<scalar_t> g) {
  const int group = blockIdx.z, row0 = blockIdx.x * BM, col0 = blockIdx.y * BN;
  MmaPlaneLoader<BM, BN, scalar_t> loader(g, group, row0, col0);
  float acc[MmaShape<BM, BN>::MT][4][4];
  mma_main_loop<BM, BN, kBF16>(loader, (g.J + kMmaK - 1) / kMmaK, acc);

  for_each_accumulator<BM, BN>(acc, [&](int row, int col, float value) {
    const int m = row0 + row, c = col0 + col;
    if (m >= g.rows || c >= g.cols) return;
    const float bias = g.bias ? static_cast<float>(g.bias[group * g.cols + c]) : 0.0f;
    g.out[output_offset(g, m) + (int64_t(group) * g.cols + c) * g.out_plane] = static_cast<scalar_t>(value + bias);
  });
}

// Loader of the weight-gradient GEMM: A = gy (rows k x terms t), B = gathered x (terms t x columns j).
// Each thread takes the term pair tid%16 of every step (its two terms split into (n, p, q) once per step)
// and rows / columns tid/16 + 16*i.
template <int BM, int BN, typename scalar_t>
struct MmaWeightLoader {
  static constexpr int kRows = BM / 16, kCols = BN / 16;
  const WeightGemm<scalar_t, float>& g;
  int group, pair, line, row0, col0;
  int64_t t_begin, t_end;
  uint32_t a[kRows], b[kCols];

  __device__ MmaWeightLoader(const WeightGemm<scalar_t, float>& gemm, int group_, int row_begin, int col_begin,
                             int64_t chunk)
      : g(gemm), group(group_) {
    pair = threadIdx.x % 16, line = threadIdx.x / 16, row0 = row_begin, col0 = col_begin;
    t_begin = chunk * g.chunk_terms;
    t_end = t_begin + g.chunk_terms < g.terms ? t_begin + g.chunk_terms : g.terms;
  }

  // Term t's gy value pointer (row 0 of the group) and x gather base; false past the chunk.
  struct Term {
    const uint16_t* gy;
    const uint16_t* x;
    int row, col;
    bool valid;
  };

  __device__ __forceinline__ Term term(int64_t t) const {
    Term u;
    u.valid = t < t_end;
    const int plane = g.P * g.Q;
    const int64_t n = u.valid ? t / plane : 0;
    const int pixel = u.valid ? static_cast<int>(t - n * plane) : 0;
    u.gy = reinterpret_cast<const uint16_t*>(g.gy) + (n * g.K + int64_t(group) * g.Kg) * plane + pixel;
    u.x = reinterpret_cast<const uint16_t*>(g.x) + (n * g.C + int64_t(group) * g.Cg) * g.H * g.W;
    u.row = (pixel / g.Q) * g.stride_h - g.pad_h, u.col = (pixel % g.Q) * g.stride_w - g.pad_w;
    return u;
  }

  __device__ __forceinline__ uint16_t gather(const Term& u, const Tap& tap, bool col_valid) const {
    const int h = u.row + tap.drow, v = u.col + tap.dcol;
    const bool inside = u.valid && col_valid && h >= 0 && h < g.H && v >= 0 && v < g.W;
    return inside ? u.x[tap.channel + h * g.W + v] : uint16_t(0);
  }

  __device__ __forceinline__ void fetch(int64_t step) {
    const int64_t t = t_begin + step * kMmaK + 2 * pair;
    const Term u0 = term(t), u1 = term(t + 1);
    const int plane = g.P * g.Q;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int k = row0 + line + 16 * i;
      const int64_t offset = int64_t(k) * plane;
      const uint16_t low = u0.valid && k < g.Kg ? u0.gy[offset] : uint16_t(0);
      const uint16_t high = u1.valid && k < g.Kg ? u1.gy[offset] : uint16_t(0);
      a[i] = pack_pair(low, high);
    }
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int col = col0 + line + 16 * i;
      const bool col_valid = col < g.J;
      const Tap tap = g.taps[col_valid ? col : 0];  // 16 bytes from L1: cheaper than registers for all
      b[i] = pack_pair(gather(u0, tap, col_valid), gather(u1, tap, col_valid));
    }
  }

  __device__ __forceinline__ void commit(uint32_t (*As)[kMmaRow], uint32_t (*Bs)[kMmaRow]) const {
#pragma unroll
    for (int i = 0; i < kRows; ++i) As[line + 16 * i][pair] = a[i];
#pragma unroll
    for (int i = 0; i < kCols; ++i) Bs[line + 16 * i][pair] = b[i];
  }
};

template <typename scalar_t, int BM, int BN, bool kBF16>
__global__ void __launch_bounds__(kThreads, 2) weight_mma_kernel(const __grid_constant__ WeightGemm<scalar_t, float> g) {
  const int group = blockIdx.z;
  const int row0 = (blockIdx.x / g.col_tiles) * BM, col0 = (blockIdx.x % g.col_tiles) * BN;
  const int64_t chunk = blockIdx.y;
  MmaWeightLoader<BM, BN, scalar_t> loader(g, group, row0, col0, chunk);
  float acc[MmaShape<BM, BN>::MT][4][4];
  mma_main_loop<BM, BN, kBF16>(loader, (loader.t_end - loader.t_begin + kMmaK - 1) / kMmaK, acc);

  float* partials = g.partials + (chunk * g.K + int64_t(group) * g.Kg) * g.J;
  for_each_accumulator<BM, BN>(acc, [&](int row, int col, float value) {
    const int k = row0 + row, j = col0 + col;
    if (k < g.Kg && j < g.J) partials[int64_t(k) * g.J + j] = value;
  });
}

}  // namespace torchcorr::cuda::gemm
