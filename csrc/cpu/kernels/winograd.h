// Winograd minimal filtering for stride-1, dilation-1 3x3 correlations of one group on the CPU: the
// forward pass and, with the kernel flipped and its channel axes swapped, the stride-1 input gradient
// (the same DirectProblem as the direct engine, ../direct_corr.h, whose loop nest it must equal); and,
// at the end of the file, the weight gradient (winograd_weight_grad, F(3x3, 2x2)).
//
// F(m x m, 3x3) (m = 4 or 2, a = m + 2) computes an m x m tile of outputs of every channel pair from the
// a x a input patch d that the tile reads and the 3x3 kernel g:
//   Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A,  summed over input channels before the A^T . A transform,
// so a tile costs a*a multiplications per channel pair instead of 9*m*m (36 against 144 for m = 4).
// F(4x4) interpolates at 0, 1, -1, 1/2, -2 and infinity, which measured half the float32 error of the usual
// 0, ±1, ±2 (random 128-channel problems: 2.4x against 4.2x the direct kernel's error); F(2x2) at 0, ±1, inf.
//
// Two drivers compute the products (../algorithm.cpp, winograd_plan, chooses): the block driver, for many tiles,
// transforms the weights once per call and streams them past blocks of tiles held in L2; the strip driver, for
// few tiles and many channels, transforms every tile's input once and the weights a strip of output channels at a
// time, inside the task that uses them (each driver's comment says how work is split and what it moves). The
// transformed products are batched GEMMs on the micro-kernel of gemm.h. Every output is summed over channels in
// order by one task: deterministic and independent of the thread count.
#pragma once

#include "../cpu_kernel_utils.h"
#include "../direct_corr.h"
#include "gemm.h"
#include "isa.h"
#include "simd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

TORCHCORR_ISA_BEGIN

template <int m>
struct WinogradMatrices;

template <>
struct WinogradMatrices<4> {
  static constexpr int a = 6;
  static constexpr double BT[6][6] = {{1, -1.5, -2, 1.5, 1, 0},  {0, -1, 0.5, 2.5, 1, 0},   {0, 1, -2.5, 0.5, 1, 0},
                                      {0, -2, -1, 2, 1, 0},      {0, 0.5, -1, -0.5, 1, 0}, {0, 1, -1.5, -2, 1.5, 1}};
  static constexpr double G[6][3] = {{1, 0, 0},
                                     {1. / 3, 1. / 3, 1. / 3},
                                     {-1. / 3, 1. / 3, -1. / 3},
                                     {-16. / 15, -8. / 15, -4. / 15},
                                     {1. / 15, -2. / 15, 4. / 15},
                                     {0, 0, 1}};
  static constexpr double AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 0.5, -2, 0}, {0, 1, 1, 0.25, 4, 0}, {0, 1, -1, 0.125, -8, 1}};
};

// F(3x3, m x m) for the weight gradient: 3x3 outputs (the kernel's taps) from an m x m tile of gy and the
// (m + 2) x (m + 2) patch of x it meets; the same points as F(m x m, 3x3), so the same B^T. Only m = 2: the
// float32 error of F(3x3, 4x4) (points 0, ±1, 1/2, -2; 1.5x faster) measured 5-14x the direct kernels' on
// layers of 17-128 channels, where F(3x3, 2x2)'s is 0.5x.
template <int m>
struct WinogradGradMatrices;

template <>
struct WinogradGradMatrices<2> {
  static constexpr double G[4][2] = {{1, 0}, {0.5, 0.5}, {0.5, -0.5}, {0, -1}};  // the last row signed as B^T's
  static constexpr double AT[3][4] = {{1, 1, 1, 0}, {0, 1, -1, 0}, {0, 1, 1, 1}};
};

template <>
struct WinogradMatrices<2> {
  static constexpr int a = 4;
  static constexpr double BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr double AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

// out[i * out_step] = sum_j M[i][j] * in[j * in_step] for i < Rows: the zero terms skipped and units
// added, not multiplied (the loops unroll on the constant matrix, so the tests are resolved at compile time).
template <int Rows, int Cols, typename V, typename T>
inline __attribute__((always_inline)) void apply_matrix(const double (&M)[Rows][Cols], const V* in, int in_step,
                                                        V* out, int out_step) {
#pragma GCC unroll 8
  for (int i = 0; i < Rows; ++i) {
    V acc{};
    bool first = true;
#pragma GCC unroll 8
    for (int j = 0; j < Cols; ++j) {
      const double c = M[i][j];
      if (c == 0) continue;
      const V v = in[j * in_step];
      const V term = c == 1 ? v : c == -1 ? -v : v * static_cast<T>(c);
      acc = first ? term : acc + term;
      first = false;
    }
    out[i * out_step] = acc;
  }
}

// out = M d M^T for a Cols x Cols matrix d of vectors (row-major), M Rows x Cols.
template <int Rows, int Cols, typename V, typename T>
inline __attribute__((always_inline)) void apply_both_sides(const double (&M)[Rows][Cols], const V* d, V* out) {
  V half[Rows * Cols];
  for (int j = 0; j < Cols; ++j) apply_matrix<Rows, Cols, V, T>(M, d + j, Cols, half + j, Cols);
  for (int i = 0; i < Rows; ++i) apply_matrix<Rows, Cols, V, T>(M, half + i * Cols, 1, out + i * Rows, 1);
}

// out[i * Size + j] = channels c0 .. c0 + lanes of pixel (h0 + i, w0 + j) of an H x W image whose channel c0
// starts at `image`, zero outside the plane: channels across the lanes, loaded from channels_last pixels
// and gathered from planes.
template <int Size, typename T>
inline __attribute__((always_inline)) void load_pixels(const T* image, ChannelStrides strides, int64_t H, int64_t W,
                                                       int64_t h0, int64_t w0, int64_t lanes,
                                                       typename Simd<T>::Vec* out) {
  using S = Simd<T>;
  for (int i = 0; i < Size; ++i)
    for (int j = 0; j < Size; ++j) {
      const int64_t h = h0 + i, v = w0 + j;
      auto& p = out[i * Size + j];
      p = S::zero();
      if (h < 0 || h >= H || v < 0 || v >= W) continue;
      const T* at = image + (h * W + v) * strides.pixel;
      if (strides.channel == 1 && lanes == S::lanes) {
        __builtin_prefetch(at + 4 * S::lanes);  // the pixels' channels are read in step: too many streams
        p = S::load(at);
      } else {
        for (int64_t l = 0; l < lanes; ++l) p[l] = at[l * strides.channel];
      }
    }
}

// The m x m output tiles of a batch of P x Q planes, numbered t = (image, tile row, tile column).
struct OutputTiles {
  int64_t m, rows, cols;
  OutputTiles(int64_t m, int64_t P, int64_t Q) : m(m), rows(div_up(P, m)), cols(div_up(Q, m)) {}
  int64_t count(int64_t N) const { return N * rows * cols; }
  int64_t image(int64_t t) const { return t / (rows * cols); }
  int64_t first_row(int64_t t) const { return t / cols % rows * m; }
  int64_t first_col(int64_t t) const { return t % cols * m; }
};

// Tiles per task, at most (a multiple of the GEMM's MR): a strip of U, read from L2 or L3, is used for
// kWinogradTileBlock / MR register tiles.
constexpr int64_t kWinogradTileBlock = 8 * kGemmRows;
// Output channels per GEMM pass over V (a multiple of NR), so M stays in L2.
constexpr int64_t kWinogradChannelBlock = 128;
// Input channels per kernel chunk of the strip driver (its transformed kernels, a*a chunks of NR-wide rows, stay in
// L2, one point's chunk in L1).
constexpr int64_t kWinogradStripDepth = 128;

// At least `count` elements, vector-aligned, kept by the calling thread from call to call (grown as needed). Which:
// one buffer per use, so that they never alias.
template <typename T, int Which = 0>
T* workspace(int64_t count) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < count + Simd<T>::lanes) buffer.resize(count + Simd<T>::lanes);
  return vector_aligned(buffer.data());
}

// taps[(c - c0) * 9 + r * 3 + s][k - k0] = g[k, c](r, s) for k0 <= k < k0 + k_count and c0 <= c < c0 + c_count,
// zero for k_count <= k - k0 < k_stride: the kernels of d (w as given, or, for the input gradient, flipped with
// its channel axes swapped) transposed, so that a vector of output channels is one load.
template <typename T>
void gather_kernel_taps(const DirectProblem& d, const T* w, WeightOrder order, int64_t k0, int64_t k_count, int64_t c0,
                        int64_t c_count, T* taps, int64_t k_stride) {
  const int64_t C = d.C, K = d.K;
  if (order == WeightOrder::as_given && d.weights == WeightLayout::krsc) {  // w[k, r, s, c]: one transpose per tap
    for (int rs = 0; rs < 9; ++rs)
      transpose(w + k0 * 9 * C + rs * C + c0, 9 * C, k_count, c_count, taps + rs * k_stride, 9 * k_stride);
  } else if (order == WeightOrder::as_given) {  // w[k, c, r, s]: whole L x L register transposes
    transpose(w + (k0 * C + c0) * 9, C * 9, k_count, c_count * 9, taps, k_stride);
  } else if (d.weights == WeightLayout::krsc) {  // w'[k, c](r, s) = w[c, 2 - r, 2 - s, k]: rows of K
    for (int64_t c = 0; c < c_count; ++c)
      for (int rs = 0; rs < 9; ++rs)
        std::copy_n(w + ((c0 + c) * 9 + 8 - rs) * K + k0, k_count, taps + (c * 9 + rs) * k_stride);
  } else {  // w'[k, c](r, s) = w[c, k](2 - r, 2 - s): the 9 taps of each k as rows of a transpose
    using S = Simd<T>;
    constexpr int64_t L = S::lanes;
    const T* const end = w + C * K * 9;
    for (int64_t c = 0; c < c_count; ++c) {
      const T* const from = w + ((c0 + c) * K + k0) * 9;
      T* const row = taps + c * 9 * k_stride;
      int64_t k = 0;
      if constexpr (L >= 9) {  // L kernels at a time, each loaded as a vector (reaching into the next ones)
        for (; k + L <= k_count && from + (k + L - 1) * 9 + L <= end; k += L) {
          typename S::Vec block[L];
          for (int64_t i = 0; i < L; ++i) block[i] = S::load(from + (k + i) * 9);
          S::transpose(block);
          for (int rs = 0; rs < 9; ++rs) S::store(row + rs * k_stride + k, block[8 - rs]);
        }
      }
      for (; k < k_count; ++k)
        for (int rs = 0; rs < 9; ++rs) row[rs * k_stride + k] = from[k * 9 + 8 - rs];
    }
  }
  for (int64_t row = 0; row < c_count * 9; ++row)
    std::fill(taps + row * k_stride + k_count, taps + (row + 1) * k_stride, T(0));
}

// U[e * e_stride + c * c_stride + v * lanes ..] = (G g G^T)[e] of the taps gathered above, for c < c_count and
// `vectors` vectors of output channels.
template <typename T, int m>
void transform_kernels(const T* taps, int64_t k_stride, int64_t c_count, int64_t vectors, T* U, int64_t e_stride,
                       int64_t c_stride) {
  using S = Simd<T>;
  using Mat = WinogradMatrices<m>;
  constexpr int a = Mat::a, E = a * a, L = S::lanes;
  for (int64_t c = 0; c < c_count; ++c)
    for (int64_t v = 0; v < vectors; ++v) {
      typename S::Vec g[9], u[E];
      for (int rs = 0; rs < 9; ++rs) g[rs] = S::load(taps + (c * 9 + rs) * k_stride + v * L);
      apply_both_sides<a, 3, typename S::Vec, T>(Mat::G, g, u);
      for (int e = 0; e < E; ++e) S::store(U + e * e_stride + c * c_stride + v * L, u[e]);
    }
}

// V[e * v_stride + c] = (B^T d B)[e] for every input channel c of `tile`'s input patch d, channels c .. c + L at
// once (loaded from channels_last pixels, gathered from planes).
template <typename T, int m>
void transform_input_tile(const DirectProblem& d, const OutputTiles& grid, const T* x, ChannelStrides xs, int64_t tile,
                          T* V, int64_t v_stride) {
  using S = Simd<T>;
  using Mat = WinogradMatrices<m>;
  constexpr int a = Mat::a, E = a * a, L = S::lanes;
  const int64_t n = grid.image(tile), h0 = grid.first_row(tile) - d.offset_h, w0 = grid.first_col(tile) - d.offset_w;
  for (int64_t c0 = 0; c0 < d.C; c0 += L) {
    typename S::Vec patch[E], transformed[E];
    load_pixels<a>(x + channel_start(d.layout, n, c0, d.C, d.H * d.W), xs, d.H, d.W, h0, w0,
                   std::min<int64_t>(L, d.C - c0), patch);
    apply_both_sides<a, a, typename S::Vec, T>(Mat::BT, patch, transformed);
    for (int e = 0; e < E; ++e) S::store(V + e * v_stride + c0, transformed[e]);
  }
}

// y's outputs of `tile` (cut at the plane's edge), channels k_begin + j for j < count (stopping at K), from the
// products M[e * m_stride + j] of its row: A^T M A + bias, channels k .. k + L at once.
template <typename T, int m>
void store_output_tile(const DirectProblem& d, const OutputTiles& grid, int64_t tile, const T* M, int64_t m_stride,
                       int64_t k_begin, int64_t count, const T* bias, T* y, ChannelStrides ys) {
  using S = Simd<T>;
  using Vec = typename S::Vec;
  using Mat = WinogradMatrices<m>;
  constexpr int a = Mat::a, E = a * a, L = S::lanes;
  const int64_t K = d.K, n = grid.image(tile), p0 = grid.first_row(tile), q0 = grid.first_col(tile);
  const int64_t rows = std::min<int64_t>(m, d.P - p0), cols = std::min<int64_t>(m, d.Q - q0);
  for (int64_t j = 0; j < count && k_begin + j < K; j += L) {
    const int64_t k0 = k_begin + j, lanes = std::min<int64_t>(L, K - k0);
    Vec prod[E], out[m * m];
    for (int e = 0; e < E; ++e) prod[e] = S::load(M + e * m_stride + j);
    apply_both_sides<m, a, Vec, T>(Mat::AT, prod, out);
    Vec b = S::zero();
    if (bias != nullptr) {
      if (lanes == L) {
        b = S::load(bias + k0);
      } else {
        for (int64_t l = 0; l < lanes; ++l) b[l] = bias[k0 + l];
      }
    }
    T* image = y + channel_start(d.layout, n, k0, K, d.P * d.Q);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t q = 0; q < cols; ++q) {
        const Vec value = out[i * m + q] + b;
        T* to = image + ((p0 + i) * d.Q + q0 + q) * ys.pixel;
        if (ys.channel == 1 && lanes == L) {
          S::store(to, value);
        } else {
          for (int64_t l = 0; l < lanes; ++l) to[l * ys.channel] = value[l];
        }
      }
  }
}

// The block driver, for many tiles: the weights are transformed once per call, U[e][k][c] = (G g[k,c] G^T)[e],
// packed into NR-wide strips of output channels (the GEMM's B operand, gemm.h). The tiles of the whole batch
// are cut into blocks of up to kWinogradTileBlock tiles; one task per (block, group of output-channel blocks).
// A task
//   1. transforms the input patches of its tiles into V[e][t][c] (a*a matrices of tiles x C, in L2),
//   2. per block of output channels: M[e] (tiles x K block) = V[e] · U[e] on the GEMM micro-kernel, V read in
//      place and U from its strips,
//   3. transforms M back, adds the bias and writes the m x m outputs of each tile to y in its layout.
// Memory: x is read once per task group (with a halo of 2 pixels per tile), y written once, U (a*a/9 times the
// weights, in a workspace the calling thread keeps) written once and read once per task; V and M are meant
// for L2 (the widest layers' V spills to L3).
template <typename T, int m>
void winograd_correlation_blocks(const DirectProblem& d, const T* x, const T* w, WeightOrder order, const T* bias,
                                 T* y) {
  using S = Simd<T>;
  constexpr int a = WinogradMatrices<m>::a, E = a * a, L = S::lanes;
  constexpr int64_t MR = kGemmRows, NR = kGemmVectors * L;
  const int64_t C = d.C, K = d.K, C_pad = div_up(C, L) * L;
  const OutputTiles grid(m, d.P, d.Q);
  const int64_t tiles = grid.count(d.N);
  const int64_t k_strips = div_up(K, NR), K_pad = k_strips * NR;

  // U[k strip][e][c][0..NR): the transformed kernels, zero past K; output channels across the lanes. The
  // points e of a strip are a vector apart beyond whole blocks (as V and M below). In a workspace kept by
  // the calling thread: fresh pages for a large U (37 MiB for 512 channels) cost more than computing it.
  const int64_t u_stride = C * NR + L, u_strip = E * u_stride;
  T* const U = workspace<T>(k_strips * u_strip + C * 9 * K_pad);
  T* const taps = U + k_strips * u_strip;  // taps[c][r*3 + s][k], zero past K
  parallel_tasks(div_up(C, L), K * 9 * L, [&](int64_t chunk) {
    const int64_t c0 = chunk * L;
    gather_kernel_taps(d, w, order, 0, K, c0, std::min<int64_t>(L, C - c0), taps + c0 * 9 * K_pad, K_pad);
  });
  parallel_tasks(k_strips, C * E * NR, [&](int64_t strip) {
    transform_kernels<T, m>(taps + strip * NR, K_pad, C, kGemmVectors, U + strip * u_strip, u_stride, NR);
  });

  const ChannelStrides xs = channel_strides(d.layout, C, d.H * d.W), ys = channel_strides(d.layout, K, d.P * d.Q);
  // Tile blocks of at most kWinogradTileBlock tiles, as many as a multiple of the thread count when that
  // costs no more than a strip of padding; few blocks split the output channels over tasks too (each task
  // then transforms its tiles' input again).
  const int64_t threads = at::get_num_threads();
  const int64_t blocks = div_up(div_up(tiles, kWinogradTileBlock), threads) * threads;
  const int64_t TB = std::min(kWinogradTileBlock, div_up(div_up(tiles, blocks), MR) * MR);
  const int64_t KB = std::min(K_pad, kWinogradChannelBlock);  // output channels per block
  const int64_t tile_blocks = div_up(tiles, TB), k_blocks = div_up(K_pad, KB);
  const int64_t k_groups = std::min(k_blocks, div_up(2 * threads, tile_blocks));
  const int64_t work = TB * E * C * KB * div_up(k_blocks, k_groups);

  at::parallel_for(0, tile_blocks * k_groups, std::max<int64_t>(1, kMinWorkPerThread / work), [&](int64_t begin,
                                                                                                  int64_t end) {
    // V[e] and M[e] one vector apart beyond whole blocks (a multiple of 4 KiB apart, the a*a streams would
    // share one set of L1 and evict each other), aligned to vectors.
    const int64_t v_stride = TB * C_pad + L, m_stride = TB * KB + L;
    const std::unique_ptr<T[]> v_buffer(new T[E * v_stride + L]), m_buffer(new T[E * m_stride + L]);
    T* const V = vector_aligned(v_buffer.get());
    T* const M = vector_aligned(m_buffer.get());
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t0 = task / k_groups * TB, count = std::min(TB, tiles - t0), group = task % k_groups;
      // 1. V[e][t][c] = (B^T d B)[e] of tile t0 + t.
      for (int64_t t = 0; t < TB; ++t) {
        if (t >= count) {  // rows of the last MR strip past the tiles: read by the micro-kernel, never stored
          for (int e = 0; e < E; ++e) std::fill_n(V + e * v_stride + t * C_pad, C_pad, T(0));
          continue;
        }
        transform_input_tile<T, m>(d, grid, x, xs, t0 + t, V + t * C_pad, v_stride);
      }
      for (int64_t kb = group; kb < k_blocks; kb += k_groups) {
        const int64_t k_begin = kb * KB, k_count = std::min(KB, K_pad - k_begin);
        // 2. M[e] (tiles x channels k_begin ..) = V[e] · U[e].
        // Depth in kGemmDepth steps, so a strip of U stays in L1 for all the tiles.
        for (int e = 0; e < E; ++e)
          for (int64_t j = 0; j < k_count; j += NR)
            for (int64_t c0 = 0; c0 < C; c0 += kGemmDepth)
              for (int64_t i = 0; i < TB; i += MR)
                gemm_tile<T, true>(std::min(kGemmDepth, C - c0), V + e * v_stride + i * C_pad + c0, C_pad,
                                   U + (k_begin + j) / NR * u_strip + e * u_stride + c0 * NR, NR, nullptr, nullptr,
                                   c0 == 0, M + e * m_stride + i * KB + j, KB, MR, NR);
        // 3. y tile = A^T M A + bias.
        for (int64_t t = 0; t < count; ++t)
          store_output_tile<T, m>(d, grid, t0 + t, M + t * KB, m_stride, k_begin, k_count, bias, y, ys);
      }
    }
  });
}

// The strip driver, for few tiles and many channels (the weights' transform would outweigh the products, as a
// 512-channel layer on 7x7 planes, where U is 16/9 or 4 times 9 MiB of weights): the input patches of every
// tile are transformed first, V[e][t][c] (in parallel, one task per tile), then one task per strip of NR output
// channels transforms its kernels kWinogradStripDepth input channels at a time (U[e][c][0..NR), in L2) and adds
// M[e] (tiles x NR) += V[e] · U[e] for that chunk, then writes its channels of every tile.
// Memory: the weights are read once and U is never stored whole; V is read once per strip (from L2 or L3).
template <typename T, int m>
void winograd_correlation_strips(const DirectProblem& d, const T* x, const T* w, WeightOrder order, const T* bias,
                                 T* y) {
  using S = Simd<T>;
  constexpr int a = WinogradMatrices<m>::a, E = a * a, L = S::lanes;
  constexpr int64_t MR = kGemmRows, NR = kGemmVectors * L, CB = kWinogradStripDepth;
  const int64_t C = d.C, K = d.K, C_pad = div_up(C, L) * L;
  const OutputTiles grid(m, d.P, d.Q);
  const int64_t tiles = grid.count(d.N), rows = div_up(tiles, MR) * MR;
  const ChannelStrides xs = channel_strides(d.layout, C, d.H * d.W), ys = channel_strides(d.layout, K, d.P * d.Q);

  const int64_t v_stride = rows * C_pad + L;  // the points e a vector apart beyond whole blocks, as in the blocks
  T* const V = workspace<T>(E * v_stride);
  parallel_tasks(rows, E * C * 4, [&](int64_t t) {
    if (t < tiles) return transform_input_tile<T, m>(d, grid, x, xs, t, V + t * C_pad, v_stride);
    for (int e = 0; e < E; ++e) std::fill_n(V + e * v_stride + t * C_pad, C_pad, T(0));  // read, never stored
  });
  const int64_t u_stride = CB * NR + L, m_stride = rows * NR + L;
  parallel_tasks(div_up(K, NR), rows * E * C * NR, [&](int64_t strip) {
    const int64_t k0 = strip * NR, k_count = std::min(NR, K - k0);
    T* const taps = workspace<T, 1>(CB * 9 * NR);
    T* const U = workspace<T, 2>(E * u_stride);
    T* const M = workspace<T, 3>(E * m_stride);
    for (int64_t c0 = 0; c0 < C; c0 += CB) {
      const int64_t depth = std::min(CB, C - c0);
      gather_kernel_taps(d, w, order, k0, k_count, c0, depth, taps, NR);
      transform_kernels<T, m>(taps, NR, depth, kGemmVectors, U, u_stride, NR);
      for (int e = 0; e < E; ++e)
        for (int64_t i = 0; i < rows; i += MR)
          gemm_tile<T, true>(depth, V + e * v_stride + i * C_pad + c0, C_pad, U + e * u_stride, NR, nullptr, nullptr,
                             c0 == 0, M + e * m_stride + i * NR, NR, MR, NR);
    }
    for (int64_t t = 0; t < tiles; ++t) store_output_tile<T, m>(d, grid, t, M + t * NR, m_stride, k0, NR, bias, y, ys);
  });
}

// Tiles per product of the weight gradient (its depth), summed in this order, kWinogradGradDepth at a time in
// registers (shorter runs than the GEMM's round less: the transforms amplify the sums' rounding).
constexpr int64_t kWinogradGradChunk = 512;
constexpr int64_t kWinogradGradDepth = 64;
// Layers whose transformed gradient (a*a x C x K) takes at most this many bytes sum slots of at least
// kWinogradGradSlotTiles tiles apart, at most kWinogradGradSlots of them (winograd_weight_grad_slots).
constexpr int64_t kWinogradGradSlotBytes = 256 << 10;
constexpr int64_t kWinogradGradSlotTiles = 128;
constexpr int64_t kWinogradGradSlots = 8;

// The weight gradient of a stride-1 3x3 layer of one group by F(3x3, m x m), gy and x dense in `layout`:
//   gw[k, c] = A'^T [ sum over tiles t of (G' gy_t[k] G'^T) ⊙ (B^T d_t[c] B) ] A'
// with gy_t the m x m tiles of gy (zero past the plane) and d_t the (m + 2) x (m + 2) patches of x zero-padded
// they meet. The sum is a*a matrix products M[e] (K x C) += Ugy[e] (K x tiles) · V[e] (tiles x C) on the GEMM
// micro-kernel of gemm.h; gw is transformed back from M at the end. Two drivers, below.

// V[e * v_stride + c] = (B^T d B)[e] and Ugy[e * g_stride + k] = (G' gy_t[k] G'^T)[e] of `tile`, channels across
// the lanes.
template <typename T, int m>
void transform_grad_tile(const Corr2dProblem& p, Layout layout, const OutputTiles& grid, const T* gy, const T* x,
                         int64_t tile, T* V, int64_t v_stride, T* Ugy, int64_t g_stride) {
  using S = Simd<T>;
  using Vec = typename S::Vec;
  using Mat = WinogradMatrices<m>;
  constexpr int a = Mat::a, E = a * a, L = S::lanes;
  const int64_t C = p.C, K = p.K, n = grid.image(tile), p0 = grid.first_row(tile), q0 = grid.first_col(tile);
  const ChannelStrides xs = channel_strides(layout, C, p.H * p.W), gs = channel_strides(layout, K, p.P * p.Q);
  for (int64_t c0 = 0; c0 < C; c0 += L) {
    Vec patch[E], transformed[E];
    load_pixels<a>(x + channel_start(layout, n, c0, C, p.H * p.W), xs, p.H, p.W, p0 - p.pad_h, q0 - p.pad_w,
                   std::min<int64_t>(L, C - c0), patch);
    apply_both_sides<a, a, Vec, T>(Mat::BT, patch, transformed);
    for (int e = 0; e < E; ++e) S::store(V + e * v_stride + c0, transformed[e]);
  }
  for (int64_t k0 = 0; k0 < K; k0 += L) {
    Vec g[m * m], transformed[E];
    load_pixels<m>(gy + channel_start(layout, n, k0, K, p.P * p.Q), gs, p.P, p.Q, p0, q0, std::min<int64_t>(L, K - k0),
                   g);
    apply_both_sides<a, m, Vec, T>(WinogradGradMatrices<m>::G, g, transformed);
    for (int e = 0; e < E; ++e) S::store(Ugy + e * g_stride + k0, transformed[e]);
  }
}

// gw[k, c] = A'^T M[.][k][c] A' from M[e] (rows x cols, row stride ld; rows are output channels when k_rows, else
// input channels), the columns across the lanes.
template <typename T, int m>
void store_weight_grad(const Corr2dProblem& p, const T* M, int64_t rows, int64_t cols, int64_t ld, bool k_rows,
                       T* gw, WeightLayout gw_layout) {
  using S = Simd<T>;
  constexpr int a = WinogradMatrices<m>::a, E = a * a, L = S::lanes;
  const int64_t C = p.C;
  const int64_t c_step = gw_layout == WeightLayout::krsc ? 1 : 9, rs_step = gw_layout == WeightLayout::krsc ? C : 1;
  parallel_tasks(rows, E * cols, [&](int64_t row) {
    for (int64_t j0 = 0; j0 < cols; j0 += L) {
      typename S::Vec prod[E], taps[9];
      for (int e = 0; e < E; ++e) prod[e] = S::load(M + (e * rows + row) * ld + j0);  // lanes past cols: unused
      apply_both_sides<3, a, typename S::Vec, T>(WinogradGradMatrices<m>::AT, prod, taps);
      for (int64_t l = 0; l < std::min<int64_t>(L, cols - j0); ++l) {
        const int64_t k = k_rows ? row : j0 + l, c = k_rows ? j0 + l : row;
        for (int rs = 0; rs < 9; ++rs) gw[k * C * 9 + c * c_step + rs * rs_step] = taps[rs][l];
      }
    }
  });
}

// The chunk driver: M[e] (or its transpose, the wider channel side across the lanes) summed a chunk of at least
// kWinogradGradChunk tiles at a time: the chunk's V and Ugy are transformed in parallel (one task per tile), then
// summed into M in tile order by the batched GEMM of gemm.h (one task per block of M). Deterministic: every sum
// runs in an order fixed by the sizes.
template <typename T, int m>
void winograd_weight_grad_chunks(const Corr2dProblem& p, Layout layout, const T* gy, const T* x, T* gw,
                                 WeightLayout gw_layout) {
  constexpr int a = WinogradMatrices<m>::a, E = a * a, L = Simd<T>::lanes;
  const int64_t C = p.C, K = p.K, C_pad = div_up(C, L) * L, K_pad = div_up(K, L) * L;
  const OutputTiles grid(m, p.P, p.Q);
  const int64_t tiles = grid.count(p.N);
  // At least kWinogradGradChunk tiles per product, more while V and Ugy stay within 4 MiB (few channels: fewer,
  // larger products).
  const int64_t chunk_bytes = E * (C_pad + K_pad) * static_cast<int64_t>(sizeof(T));
  const int64_t chunk = std::min(tiles, std::max(kWinogradGradChunk, (int64_t{4} << 20) / chunk_bytes));
  // M, then V[e][t][c] and Ugy[e][t][k] of a chunk, the points e a vector apart beyond whole blocks (as in the
  // forward pass).
  const int64_t m_size = div_up(E * K * C, L) * L, v_stride = chunk * C_pad + L, g_stride = chunk * K_pad + L;
  T* const M = workspace<T>(m_size + E * (v_stride + g_stride) + L);
  T* const V = M + m_size;
  T* const Ugy = V + E * v_stride;
  std::fill(M, M + E * K * C, T(0));
  for (int64_t t0 = 0; t0 < tiles; t0 += chunk) {
    const int64_t count = std::min(chunk, tiles - t0);
    parallel_tasks(count, E * (C + K) * 4, [&](int64_t t) {
      transform_grad_tile<T, m>(p, layout, grid, gy, x, t0 + t, V + t * C_pad, v_stride, Ugy + t * K_pad, g_stride);
    });
    const GemmOperand<T> by_k{Ugy, 1, K_pad, g_stride}, by_c{V, 1, C_pad, v_stride};
    if (C >= K) {  // M[e] = Ugy[e] (K x tiles) · V[e] (tiles x C)
      gemm<T>({K, C, count, E, false, by_k, {V, C_pad, 1, v_stride}, M, C, K * C, GemmStart::accumulate, nullptr,
               kWinogradGradDepth, true});
    } else {  // M[e]^T = V[e]^T (C x tiles) · Ugy[e]^T (tiles x K)
      gemm<T>({C, K, count, E, false, by_c, {Ugy, K_pad, 1, g_stride}, M, K, K * C, GemmStart::accumulate, nullptr,
               kWinogradGradDepth, true});
    }
  }
  store_weight_grad<T, m>(p, M, std::min(C, K), std::max(C, K), std::max(C, K), C >= K, gw, gw_layout);
}

// The slot driver, for few channels (M within kWinogradGradSlotBytes; the chunk driver's V and Ugy, 4x the size of
// x and gy for F(3x3, 2x2), then stream through L3 and back): the tiles are cut into a number of slots fixed by
// the sizes, one task each, which transforms kWinogradGradDepth tiles at a time into V and Ugy (in L2) and adds
// their products into its own M (K x C, output channels down the rows); the slots' M are then added in slot order.
// Deterministic and independent of the thread count.
template <typename T, int m>
void winograd_weight_grad_slots(const Corr2dProblem& p, Layout layout, const T* gy, const T* x, T* gw,
                                WeightLayout gw_layout) {
  constexpr int a = WinogradMatrices<m>::a, E = a * a, L = Simd<T>::lanes;
  constexpr int64_t MR = kGemmRows, NR = kGemmVectors * L, SC = kWinogradGradDepth;
  const int64_t C = p.C, K = p.K, C_pad = div_up(C, L) * L, K_pad = div_up(K, L) * L;
  const OutputTiles grid(m, p.P, p.Q);
  const int64_t tiles = grid.count(p.N);
  const int64_t slots = std::clamp<int64_t>(tiles / kWinogradGradSlotTiles, 1, kWinogradGradSlots);
  const int64_t m_size = E * K * C_pad;  // M[e][k][c], rows C_pad apart
  std::vector<T> partials(slots * m_size, T(0));
  // V and Ugy of SC tiles, with room for the last register tile's reads past them.
  const int64_t v_stride = SC * C_pad + NR, g_stride = SC * K_pad + 2 * MR;
  parallel_tasks(slots, div_up(tiles, slots) * E * C * K, [&](int64_t slot) {
    T* const M = partials.data() + slot * m_size;
    T* const V = workspace<T, 1>(E * v_stride);
    T* const Ugy = workspace<T, 2>(E * g_stride);
    for (int64_t t0 = slot * tiles / slots, end = (slot + 1) * tiles / slots; t0 < end; t0 += SC) {
      const int64_t count = std::min(SC, end - t0);
      for (int64_t t = 0; t < count; ++t)
        transform_grad_tile<T, m>(p, layout, grid, gy, x, t0 + t, V + t * C_pad, v_stride, Ugy + t * K_pad, g_stride);
      // M[e] (K x C) += Ugy[e]^T (K x tiles, read as stored: a k-run per tile) · V[e] (tiles x C).
      for (int e = 0; e < E; ++e) {
        const T* u = Ugy + e * g_stride;
        const T* v = V + e * v_stride;
        T* const out = M + e * K * C_pad;
        for (int64_t i = 0; i < K;) {
          if (C_pad <= L) {  // one vector of columns: two strips of rows at once
            gemm_tile_narrow<T, false>(count, u + i, u + i + MR, K_pad, v, C_pad, nullptr, nullptr, false,
                                       out + i * C_pad, C_pad, std::min(2 * MR, K - i), C_pad);
            i += 2 * MR;
            continue;
          }
          for (int64_t j = 0; j < C_pad; j += NR)
            gemm_tile<T, false>(count, u + i, K_pad, v + j, C_pad, nullptr, nullptr, false, out + i * C_pad + j, C_pad,
                                std::min(MR, K - i), std::min(NR, C_pad - j));
          i += MR;
        }
      }
    }
  });
  T* const M = partials.data();
  for (int64_t slot = 1; slot < slots; ++slot)
    for (int64_t i = 0; i < m_size; ++i) M[i] += partials[slot * m_size + i];
  store_weight_grad<T, m>(p, M, K, C, C_pad, true, gw, gw_layout);
}

template <typename T, int m>
void winograd_weight_grad_tiles(const Corr2dProblem& p, Layout layout, const T* gy, const T* x, T* gw,
                                WeightLayout gw_layout) {
  constexpr int E = WinogradMatrices<m>::a * WinogradMatrices<m>::a;
  if (E * p.C * p.K * static_cast<int64_t>(sizeof(T)) <= kWinogradGradSlotBytes)
    return winograd_weight_grad_slots<T, m>(p, layout, gy, x, gw, gw_layout);
  winograd_weight_grad_chunks<T, m>(p, layout, gy, x, gw, gw_layout);
}

template <typename T>
WeightLayout winograd_weight_grad(const Corr2dProblem& p, Layout layout, const T* gy, const T* x, T* gw,
                                  WeightLayout wanted) {
  TORCH_INTERNAL_ASSERT(p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 &&
                        p.dilation_w == 1 && p.groups == 1);
  winograd_weight_grad_tiles<T, 2>(p, layout, gy, x, gw, wanted);
  return wanted;
}

// The driver and output tile as planned (../algorithm.cpp chooses).
template <typename T>
void winograd_correlation(const DirectProblem& d, WinogradPlan plan, const T* x, const T* w, WeightOrder order,
                          const T* bias, T* y) {
  TORCH_INTERNAL_ASSERT(d.R == 3 && d.S == 3 && d.stride_h == 1 && d.stride_w == 1 && d.dilation_h == 1 &&
                        d.dilation_w == 1 && d.groups == 1 && (plan.output_tile == 2 || plan.output_tile == 4));
  if (d.N * d.P * d.Q == 0 || d.K == 0) return;
  if (plan.strips) {
    if (plan.output_tile == 2) return winograd_correlation_strips<T, 2>(d, x, w, order, bias, y);
    return winograd_correlation_strips<T, 4>(d, x, w, order, bias, y);
  }
  if (plan.output_tile == 2) return winograd_correlation_blocks<T, 2>(d, x, w, order, bias, y);
  winograd_correlation_blocks<T, 4>(d, x, w, order, bias, y);
}

TORCHCORR_ISA_END
