// A cache-blocked matrix product on the CPU, compiled once per instruction-set level (isa.h):
//   C_b += A_b · B_b  for every batch entry b          (forward pass, input gradient)
//   C   += sum_b A_b · B_b, b in order                  (reduced: weight gradient)
// where A_b is M x K, B_b is K x N and C is M x N with unit column stride. A and B are read through any
// row and column strides, so transposes cost nothing; B may also be a correlation's input windows (an
// implicit im2col, gemm_problem.h), gathered while packing. C starts as it is, or is overwritten by the
// first depth step with a bias added (GemmStart, gemm_problem.h).
//
// The GotoBLAS/BLIS structure: C is cut into MC x NC blocks, one task each (and per batch entry when
// independent), so every output has one owner. A task walks K in KC steps (kGemmDepth, or the problem's
// depth_block) and the batch, when reduced: it
// packs the KC x NC panel of B into NR-wide strips and the MC x KC panel of A into MR-tall strips, zero-padded
// to whole strips (an operand every task shares, the weights, is packed once per call, before the tasks;
// operands whose strips already lie as packed ones do, are read in place: gemm() says which), then
// runs the MR x NR register micro-kernel over every strip pair. The micro-kernel keeps
// MR x NV vectors of C in registers (NR = NV vector lanes) and, per k, loads NV vectors of B and broadcasts MR
// values of A. Memory: packed panels are sized for L2 (B) and L1 (one strip of A against one of B); C is read
// and written once per KC step. Every output is summed in one fixed order (batch, then k), whatever the
// thread count: deterministic.
#pragma once

#include "../cpu_kernel_utils.h"
#include "../gemm_problem.h"
#include "isa.h"
#include "simd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

TORCHCORR_ISA_BEGIN

constexpr int kGemmVectors = 2;                                  // NV: vectors of C per row of a tile
constexpr int kGemmRows = kAccumulators / kGemmVectors;          // MR: rows of C per tile
constexpr int64_t kGemmDepth = 256;                              // KC
constexpr int64_t kGemmRowBlock = 48 * kGemmRows;                // MC (a multiple of MR), at most
constexpr int64_t kGemmMinRowBlock = 4 * kGemmRows;
constexpr int64_t kGemmManyTasks = 8;  // tasks per thread that need no evening out
// Rows of A up to this long are read in place rather than packed: measured on channels-last 1x1 layers
// (AVX-512, 2 threads), in place was up to 1.5x faster with 16-384 channels, packing 10% faster with 960.
constexpr int64_t kGemmMaxInPlaceDepth = 512;
// Depth of the short steps of a reduction that gemm() runs register tile by register tile (its panels), at most.
constexpr int64_t kGemmTileMajorDepth = 1024;

// C[0..MR)[0..NR) (+)= sum_k A[i][k] * B[k][0..NR), B[k][j] = b[k*b_step + j] (a packed strip: b_step = NR;
// a matrix with unit column stride, read in place: its row stride); c has row stride ldc. A[i][k] is
// a[k*a_step + i] (a packed strip: a_step = MR; in place, a matrix stored transposed), or, RowsApart, MR rows read
// where they are: a[i*a_step + k] (a matrix with unit column stride). The sums start at zero, or at
// row_start[i] or col_start[j] (MR or NR values), and are added to C, or overwrite it. Rows >= m and columns
// >= n are computed on the zero padding and not stored.
template <typename T, bool RowsApart>
void gemm_tile(int64_t depth, const T* a, int64_t a_step, const T* b, int64_t b_step, const T* row_start,
               const T* col_start, bool overwrite, T* c, int64_t ldc, int64_t m, int64_t n) {
  using S = Simd<T>;
  constexpr int MR = kGemmRows, NV = kGemmVectors, NR = NV * S::lanes;
  typename S::Vec acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v)
      acc[i][v] = row_start != nullptr ? S::zero() + row_start[i]
                  : col_start != nullptr ? S::load(col_start + v * S::lanes) : S::zero();
  for (int64_t k = 0; k < depth; ++k, a += RowsApart ? 1 : a_step, b += b_step) {
    typename S::Vec bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = S::load(b + v * S::lanes);
    for (int i = 0; i < MR; ++i) {
      const T ai = RowsApart ? a[i * a_step] : a[i];
      for (int v = 0; v < NV; ++v) acc[i][v] += bv[v] * ai;
    }
  }
  if (m == MR && n == NR) {
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {
        T* to = c + i * ldc + v * S::lanes;
        S::store(to, overwrite ? acc[i][v] : S::load(to) + acc[i][v]);
      }
    return;
  }
  // An edge tile: whole vectors of its columns as above, the last part of a vector one value at a time.
  for (int i = 0; i < MR && i < m; ++i)
    for (int v = 0; v < NV && v * S::lanes < n; ++v) {
      T* to = c + i * ldc + v * S::lanes;
      const int64_t count = std::min<int64_t>(S::lanes, n - v * S::lanes);
      if (count == S::lanes) {
        S::store(to, overwrite ? acc[i][v] : S::load(to) + acc[i][v]);
        continue;
      }
      alignas(64) T part[S::lanes];
      S::store(part, acc[i][v]);
      for (int64_t j = 0; j < count; ++j) to[j] = overwrite ? part[j] : to[j] + part[j];
    }
}

// A tile of one vector of columns (n <= lanes) by 2 MR rows: the strips at a and a_next, read as gemm_tile reads
// one. Where C has at most a vector of columns (16-channel sides of channels-last 1x1 layers) a 2-vector tile
// would spend half its multiply-adds on padding.
template <typename T, bool RowsApart>
void gemm_tile_narrow(int64_t depth, const T* a, const T* a_next, int64_t a_step, const T* b, int64_t b_step,
                      const T* row_start, const T* col_start, bool overwrite, T* c, int64_t ldc, int64_t m, int64_t n) {
  using S = Simd<T>;
  constexpr int MR = kGemmRows;
  typename S::Vec acc[2 * MR];
  for (int i = 0; i < 2 * MR; ++i)
    acc[i] = row_start != nullptr ? S::zero() + row_start[i] : col_start != nullptr ? S::load(col_start) : S::zero();
  for (int64_t k = 0; k < depth; ++k, a += RowsApart ? 1 : a_step, a_next += RowsApart ? 1 : a_step, b += b_step) {
    const typename S::Vec bv = S::load(b);
    for (int i = 0; i < MR; ++i) acc[i] += bv * (RowsApart ? a[i * a_step] : a[i]);
    for (int i = 0; i < MR; ++i) acc[MR + i] += bv * (RowsApart ? a_next[i * a_step] : a_next[i]);
  }
  for (int i = 0; i < 2 * MR && i < m; ++i) {
    T* to = c + i * ldc;
    if (n == S::lanes) {
      S::store(to, overwrite ? acc[i] : S::load(to) + acc[i]);
      continue;
    }
    alignas(64) T part[S::lanes];
    S::store(part, acc[i]);
    for (int64_t j = 0; j < n; ++j) to[j] = overwrite ? part[j] : to[j] + part[j];
  }
}

// to[0..count) = from[0..count), count <= Run: a whole run as fixed-size vector moves, a shorter one by a loop (a
// library call per run of a strip's 12-32 values measured a sixth of a small product's time).
template <int64_t Run, typename T>
inline void copy_run(const T* from, int64_t count, T* to) {
  if (count == Run) {
    for (int64_t i = 0; i < Run; ++i) to[i] = from[i];
  } else {
    for (int64_t i = 0; i < count; ++i) to[i] = from[i];
  }
}

// packed[strip][k][0..MR) = A[row0 + strip*MR + i][k0 + k], zero past `rows`.
template <typename T>
void pack_a(const GemmOperand<T>& a, int64_t row0, int64_t rows, int64_t k0, int64_t depth, T* packed) {
  using S = Simd<T>;
  constexpr int MR = kGemmRows;
  constexpr int64_t L = S::lanes;
  for (int64_t strip = 0; strip * MR < rows; ++strip, packed += depth * MR) {
    const int64_t count = std::min<int64_t>(MR, rows - strip * MR);
    int64_t k = 0;
    if (MR <= L && a.col_stride == 1 && a.row_stride != 1) {  // A row-major: register transposes, L k at a time
      const T* first = a.data + (row0 + strip * MR) * a.row_stride + k0;
      typename S::Vec block[L];
      for (; k + L <= depth; k += L) {
        for (int64_t i = 0; i < L; ++i) block[i] = i < count ? S::load(first + i * a.row_stride + k) : S::zero();
        S::transpose(block);
        // Lanes past MR land on the next k's, stored next; the last k's go through `last`.
        for (int64_t j = 0; j + 1 < L; ++j) S::store(packed + (k + j) * MR, block[j]);
        alignas(64) T last[L];
        S::store(last, block[L - 1]);
        std::copy(last, last + MR, packed + (k + L - 1) * MR);
      }
    }
    for (; k < depth; ++k) {
      if (a.row_stride == 1) {  // A stored transposed: a run of rows is a copy
        copy_run<MR>(a.data + (k0 + k) * a.col_stride + row0 + strip * MR, count, packed + k * MR);
      } else {
        for (int64_t i = 0; i < count; ++i) packed[k * MR + i] = a.at(row0 + strip * MR + i, k0 + k);
      }
      std::fill(packed + k * MR + count, packed + (k + 1) * MR, T(0));
    }
  }
}

// out[0..count) = windows row k (tap (c, r, s)) at pixels j0 .. j0 + count: one run per output row, a copy
// between zeros when the stride is 1.
template <typename T>
void window_row(const ConvWindows& v, const T* x, int64_t k, int64_t j0, int64_t count, T* out) {
  TORCH_INTERNAL_ASSERT(v.channels_last == 0, "window rows of planes only");
  const int64_t c = k / (v.R * v.S), r = k / v.S % v.R, s = k % v.S;
  const T* plane = x + c * v.H * v.W;
  for (int64_t j = 0, p = j0 / v.Q, q = j0 % v.Q; j < count; q = 0, ++p) {
    const int64_t run = std::min(count - j, v.Q - q), h = p * v.stride_h - v.pad_h + r * v.dilation_h;
    const int64_t w0 = q * v.stride_w - v.pad_w + s * v.dilation_w;
    T* o = out + j;
    j += run;
    if (h < 0 || h >= v.H) {
      std::fill(o, o + run, T(0));
      continue;
    }
    const T* row = plane + h * v.W;
    if (v.stride_w == 1) {
      const int64_t first = std::clamp<int64_t>(-w0, 0, run), last = std::clamp<int64_t>(v.W - w0, first, run);
      std::fill(o, o + first, T(0));
      std::copy(row + w0 + first, row + w0 + last, o + first);
      std::fill(o + last, o + run, T(0));
    } else {
      for (int64_t t = 0; t < run; ++t) {
        const int64_t w = w0 + t * v.stride_w;
        o[t] = w >= 0 && w < v.W ? row[w] : T(0);
      }
    }
  }
}

// to[0..count) = from[0..count) for the short runs of a window: whole vectors, then values (a library call per
// run measured a third of the packing).
template <typename T>
inline void copy_short(const T* from, int64_t count, T* to) {
  using S = Simd<T>;
  int64_t i = 0;
  for (; i + S::lanes <= count; i += S::lanes) S::store(to + i, S::load(from + i));
  for (; i < count; ++i) to[i] = from[i];
}

// out[0..count) = transposed windows row j (pixel (p, q)) at taps k0 .. k0 + count: taps (c, r, s) of planes,
// or (r, s, c) of channels-last pixels, a kernel row's S * C taps being a copy where the row lies inside (by
// whole vectors within the image: out has room for count + lanes values, and those past count are left
// unspecified). (h0, w0): the window's first input pixel.
template <typename T>
void window_column(const ConvWindows& v, const T* x, int64_t h0, int64_t w0, int64_t k0, int64_t count, T* out) {
  using S = Simd<T>;
  if (v.channels_last != 0) {
    const int64_t C = v.channels_last, row_taps = v.S * C, image = v.H * v.W * C;
    for (int64_t k = 0, r = k0 / row_taps, first = k0 % row_taps; k < count; ++r, first = 0) {
      const int64_t run = std::min(count - k, row_taps - first), h = h0 + r * v.dilation_h;
      T* o = out + k;
      k += run;
      if (h < 0 || h >= v.H) {
        std::fill(o, o + run, T(0));
      } else if (v.dilation_w == 1 && w0 >= 0 && w0 + v.S <= v.W) {
        const int64_t at = (h * v.W + w0) * C + first, vectors = div_up(run, S::lanes);
        if (at + vectors * S::lanes <= image) {
          for (int64_t i = 0; i < vectors; ++i) S::store(o + i * S::lanes, S::load(x + at + i * S::lanes));
        } else {
          copy_short(x + at, run, o);
        }
      } else {
        for (int64_t i = 0; i < run; ++i) {
          const int64_t w = w0 + (first + i) / C * v.dilation_w;
          o[i] = w >= 0 && w < v.W ? x[(h * v.W + w) * C + (first + i) % C] : T(0);
        }
      }
    }
    return;
  }
  int64_t c = k0 / (v.R * v.S), r = k0 / v.S % v.R, s = k0 % v.S;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t h = h0 + r * v.dilation_h, w = w0 + s * v.dilation_w;
    out[k] = h >= 0 && h < v.H && w >= 0 && w < v.W ? x[(c * v.H + h) * v.W + w] : T(0);
    if (++s == v.S && (s = 0, ++r == v.R)) r = 0, ++c;
  }
}

// packed[strip][k][0..NR) = B[k0 + k][col0 + strip*NR + j], zero past `cols`; unit column stride is a copy.
template <typename T>
void pack_b(const GemmOperand<T>& b, int64_t k0, int64_t depth, int64_t col0, int64_t cols, T* packed) {
  using S = Simd<T>;
  constexpr int64_t L = S::lanes, NR = kGemmVectors * L;
  if (b.windows != nullptr && b.windows->transposed) {  // each pixel's window once, then cut into the strips
    const int64_t strips = div_up(cols, NR);
    thread_local std::vector<T> window;
    window.assign(strips * NR + L, T(0));
    const ConvWindows& v = *b.windows;
    for (int64_t k = 0, p = k0 / v.Q, q = k0 % v.Q; k < depth; ++k, ++q == v.Q ? (q = 0, ++p) : 0) {
      window_column(v, b.data, p * v.stride_h - v.pad_h, q * v.stride_w - v.pad_w, col0, cols, window.data());
      std::fill(window.data() + cols, window.data() + strips * NR, T(0));
      for (int64_t strip = 0; strip < strips; ++strip)
        for (int64_t v = 0; v < kGemmVectors; ++v)
          S::store(packed + (strip * depth + k) * NR + v * L, S::load(window.data() + strip * NR + v * L));
    }
    return;
  }
  for (int64_t strip = 0; strip * NR < cols; ++strip, packed += depth * NR) {
    const int64_t first = col0 + strip * NR, count = std::min(NR, cols - strip * NR);
    int64_t k = 0;
    if (b.windows == nullptr && b.row_stride == 1 && count == NR) {  // B stored transposed: L x L register transposes
      typename S::Vec block[L];
      for (; k + L <= depth; k += L)
        for (int64_t v = 0; v < kGemmVectors; ++v) {
          for (int64_t j = 0; j < L; ++j) block[j] = S::load(b.data + (first + v * L + j) * b.col_stride + k0 + k);
          S::transpose(block);
          for (int64_t i = 0; i < L; ++i) S::store(packed + (k + i) * NR + v * L, block[i]);
        }
    }
    for (; k < depth; ++k) {
      T* out = packed + k * NR;
      if (b.windows != nullptr) {
        window_row(*b.windows, b.data, k0 + k, first, count, out);
      } else if (b.col_stride == 1) {
        copy_run<NR>(b.data + (k0 + k) * b.row_stride + first, count, out);
      } else {
        for (int64_t j = 0; j < count; ++j) out[j] = b.at(k0 + k, first + j);
      }
      std::fill(out + count, out + NR, T(0));
    }
  }
}

// At least `count` elements kept by the calling thread from call to call, uninitialised (zero-filled fresh
// panels measured a few percent of a 1x1 layer). Which: one buffer per use, so that they never alias.
template <typename T, int Which>
T* gemm_buffer(int64_t count) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

// A reduced product with fewer output blocks than kReductionTasks (a weight gradient with few channels) splits
// its reduction, the (batch entry, KC block) steps in order, into contiguous slots: each slot sums its steps
// into a partial C, and the partials are added to C in slot order. The split is a function of the sizes alone.
constexpr int64_t kReductionTasks = 8;
constexpr int64_t kMinSlotDepth = 1024;  // reduction length per slot that amortises its partial C

template <typename T>
void gemm(const GemmProblem<T>& g) {
  constexpr int64_t MR = kGemmRows, L = Simd<T>::lanes, NR = kGemmVectors * L;
  TORCH_INTERNAL_ASSERT(!g.reduced || g.start == GemmStart::accumulate);
  if (g.M == 0 || g.N == 0 || g.batch == 0) return;
  if (g.K == 0) {  // no products: C keeps its value, or becomes the bias
    if (g.start == GemmStart::accumulate) return;
    for (int64_t b = 0; b < g.batch; ++b)
      for (int64_t i = 0; i < g.M; ++i)
        for (int64_t j = 0; j < g.N; ++j)
          g.c[b * g.c_batch_stride + i * g.c_row_stride + j] =
              g.bias == nullptr ? T(0) : g.bias[g.start == GemmStart::row_bias ? i : j];
    return;
  }
  // Columns per block: the packed B panel at most half of a 1-2 MiB L2 (blocks of even widths), and enough
  // blocks for every thread.
  const int64_t threads = at::get_num_threads();
  const int64_t KC = g.depth_block > 0 ? g.depth_block : kGemmDepth;
  const int64_t widest_block = std::max<int64_t>(NR, (512 << 10) / (KC * sizeof(T)) / NR * NR);
  const int64_t depth_max = std::min(g.K, KC), depth_blocks = div_up(g.K, KC);
  const int64_t steps = g.reduced ? g.batch * depth_blocks : depth_blocks;
  const int64_t slots = !g.reduced ? 1 : std::clamp<int64_t>(
      std::min(kReductionTasks / (div_up(g.M, kGemmRowBlock) * div_up(g.N, widest_block)),
               g.batch * g.K / kMinSlotDepth), 1, steps);
  const int64_t outputs = g.reduced ? slots : g.batch;
  // Blocks: few tasks are cut to a multiple of the thread count (5 tasks on 2 threads idle one for a fifth
  // of the time), rows first (blocks of at least kGemmMinRowBlock), then columns (down to NR).
  int64_t row_block = kGemmRowBlock, col_block = div_up(div_up(g.N, div_up(g.N, widest_block)), NR) * NR;
  const auto tasks = [&] { return outputs * div_up(g.M, row_block) * div_up(g.N, col_block); };
  if (tasks() < kGemmManyTasks * threads) {
    for (int64_t blocks = div_up(g.M, row_block); blocks <= div_up(g.M, kGemmRowBlock) + threads; ++blocks) {
      const int64_t block = div_up(div_up(g.M, blocks), MR) * MR;
      if (block < kGemmMinRowBlock) break;
      row_block = block;
      if (tasks() % threads == 0) break;
    }
    if (tasks() % threads != 0)
      while (col_block > NR && tasks() < 2 * threads) col_block = div_up(col_block / 2, NR) * NR;
  }
  const int64_t row_blocks = div_up(g.M, row_block), col_blocks = div_up(g.N, col_block);
  const int64_t task_work =
      std::min(g.M, row_block) * std::min(g.N, col_block) * g.K * (g.reduced ? div_up(g.batch, slots) : 1);

  // A shared by the whole batch (the weights) is packed once, every (row block, depth block) panel, not per task;
  // an A with unit column stride and short rows is read in place (but for a last strip of fewer than MR rows).
  // Likewise a B that every row block of every batch entry reads (the weights of a channels-last 1x1 layer).
  const bool shared_a = g.a.batch_stride == 0 && g.batch > 1;
  const bool shared_b = !g.reduced && (g.b.batch_stride == 0 || g.batch == 1) && g.batch * row_blocks > 1;
  // Operands read where they are (whole strips; a last strip of fewer rows or columns is packed): A rows with
  // unit column stride and short depth (rows apart); and in reduced products, whose long depth streams from
  // memory once, A stored transposed (unit row stride: a strip's MR values of one k lie together, as packed)
  // and B with unit column stride (measured on channels-last 1x1 weight gradients: up to 2x faster than packing).
  const bool rows_apart_a = !shared_a && g.a.windows == nullptr && g.a.col_stride == 1 && g.K <= kGemmMaxInPlaceDepth;
  const bool columns_a = !shared_a && (g.reduced || g.in_place) && g.a.windows == nullptr && g.a.row_stride == 1;
  const bool in_place_b = (g.reduced || g.in_place) && g.b.windows == nullptr && g.b.col_stride == 1;
  const int64_t a_panel = div_up(std::min(g.M, row_block), MR) * MR * depth_max;
  const int64_t b_panel = div_up(std::min(g.N, col_block), NR) * NR * depth_max;
  std::vector<T> a_shared(shared_a ? row_blocks * depth_blocks * a_panel : 0);
  std::vector<T> b_shared(shared_b ? col_blocks * depth_blocks * b_panel : 0);
  if (shared_a) {
    parallel_tasks(row_blocks * depth_blocks, a_panel, [&](int64_t panel) {
      const int64_t ib = panel / depth_blocks, k0 = panel % depth_blocks * KC;
      const int64_t row0 = ib * row_block;
      pack_a(g.a, row0, std::min(row_block, g.M - row0), k0, std::min(KC, g.K - k0),
             a_shared.data() + panel * a_panel);
    });
  }
  if (shared_b) {
    parallel_tasks(col_blocks * depth_blocks, b_panel, [&](int64_t panel) {
      const int64_t jb = panel / depth_blocks, k0 = panel % depth_blocks * KC;
      const int64_t col0 = jb * col_block;
      pack_b(g.b, k0, std::min(KC, g.K - k0), col0, std::min(col_block, g.N - col0), b_shared.data() + panel * b_panel);
    });
  }
  // The bias a tile starts from, zero-padded past the last row (or column) tile.
  const int64_t bias_count = g.start == GemmStart::row_bias ? g.M : g.start == GemmStart::column_bias ? g.N : 0;
  std::vector<T> biases(bias_count == 0 ? 0 : bias_count + NR + MR, T(0));
  if (g.bias != nullptr) std::copy(g.bias, g.bias + bias_count, biases.begin());
  // Slot 0 sums into C itself; slot s > 0 into partials[s - 1] (M x N, zero to start).
  std::vector<T> partials((slots - 1) * g.M * g.N, T(0));

  // Reductions of short steps (weight gradients on small planes: a step is one image's 49 pixels) run the steps
  // of a register tile back to back, up to kGemmTileMajorDepth of them, their panels packed first: the tile of C
  // stays in L1 instead of streaming from L3 once per step (512 channels on 7x7 at batch 8: 1.7x faster).
  const int64_t panels = g.reduced && depth_max < KC ? std::max<int64_t>(1, kGemmTileMajorDepth / depth_max) : 1;

  at::parallel_for(0, outputs * row_blocks * col_blocks, std::max<int64_t>(1, kMinWorkPerThread / task_work),
                   [&](int64_t begin, int64_t end) {
    T* const a_packed = shared_a ? nullptr : gemm_buffer<T, 0>(a_panel * panels);
    T* const b_own = shared_b ? nullptr : gemm_buffer<T, 1>(b_panel * panels);
    // One (batch entry, KC block) step of a task: where its panels of A and B are, and which rows and columns
    // are read in place.
    struct Step {
      GemmOperand<T> a, b;
      int64_t k0, depth, full_rows, full_cols;
      const T* a_panel;
      const T* b_panel;
    };
    for (int64_t task = begin; task < end; ++task) {
      const int64_t jb = task % col_blocks, ib = task / col_blocks % row_blocks, out = task / col_blocks / row_blocks;
      const int64_t row0 = ib * row_block, rows = std::min(row_block, g.M - row0);
      const int64_t col0 = jb * col_block, cols = std::min(col_block, g.N - col0);
      T* c = g.reduced && out > 0 ? partials.data() + (out - 1) * g.M * g.N + row0 * g.N + col0
                                  : g.c + (g.reduced ? 0 : out * g.c_batch_stride) + row0 * g.c_row_stride + col0;
      const int64_t ldc = g.reduced && out > 0 ? g.N : g.c_row_stride;
      // Packs the panels of `step` (the panel-th packed at once) where they are not read in place or shared.
      const auto prepare = [&](int64_t step, int64_t panel) {
        const int64_t b = g.reduced ? step / depth_blocks : out, k0 = step % depth_blocks * KC;
        Step st{g.a.batch(b), g.b.batch(b), k0, std::min(KC, g.K - k0), 0, 0,
                shared_a ? nullptr : a_packed + panel * a_panel, shared_b ? nullptr : b_own + panel * b_panel};
        st.full_rows = rows_apart_a || columns_a ? rows / MR * MR : 0;  // rows read in place
        if (shared_a) {
          st.a_panel = a_shared.data() + (ib * depth_blocks + k0 / KC) * a_panel;
        } else if (st.full_rows < rows) {
          pack_a(st.a, row0 + st.full_rows, rows - st.full_rows, k0, st.depth,
                 a_packed + panel * a_panel + st.full_rows * st.depth);
        }
        st.full_cols = in_place_b ? cols / NR * NR : 0;  // columns read in place
        if (shared_b) {
          st.b_panel = b_shared.data() + (jb * depth_blocks + k0 / KC) * b_panel;
        } else if (st.full_cols < cols) {
          pack_b(st.b, k0, st.depth, col0 + st.full_cols, cols - st.full_cols, b_own + panel * b_panel);
        }
        return st;
      };
      // The register tile (i, j) of C, one step's products; returns the rows it covered (two strips of one vector
      // of columns at once).
      const auto tile = [&](const Step& st, int64_t i, int64_t j) -> int64_t {
        const GemmOperand<T>& a = st.a;
        const int64_t k0 = st.k0, depth = st.depth, full_rows = st.full_rows;
        const bool overwrite = g.start != GemmStart::accumulate && k0 == 0;
        const bool b_in_place = j < st.full_cols;
        const T* b_strip = b_in_place ? st.b.data + k0 * st.b.row_stride + col0 + j
                                      : st.b_panel + (j - (shared_b ? 0 : st.full_cols)) * depth;
        const int64_t b_step = b_in_place ? st.b.row_stride : NR;
        const int64_t m = std::min(MR, rows - i), n = std::min(NR, cols - j);
        const T* row_start = overwrite && g.start == GemmStart::row_bias ? biases.data() + row0 + i : nullptr;
        const T* col_start = overwrite && g.start == GemmStart::column_bias ? biases.data() + col0 + j : nullptr;
        T* c_tile = c + i * ldc + j;
        // One vector of columns: two strips of rows at once, packed or rows apart in place.
        if (n <= L && rows - i > MR && (i >= full_rows || (rows_apart_a && i + 2 * MR <= full_rows))) {
          const int64_t m2 = std::min(2 * MR, rows - i);
          if (i >= full_rows) {
            const T* strip = st.a_panel + i * depth;
            gemm_tile_narrow<T, false>(depth, strip, strip + MR * depth, MR, b_strip, b_step, row_start, col_start,
                                       overwrite, c_tile, ldc, m2, n);
          } else {
            const T* strip = a.data + (row0 + i) * a.row_stride + k0;
            gemm_tile_narrow<T, true>(depth, strip, strip + MR * a.row_stride, a.row_stride, b_strip, b_step,
                                      row_start, col_start, overwrite, c_tile, ldc, m2, n);
          }
          return 2 * MR;
        }
        if (i < full_rows && rows_apart_a) {
          gemm_tile<T, true>(depth, a.data + (row0 + i) * a.row_stride + k0, a.row_stride, b_strip, b_step,
                             row_start, col_start, overwrite, c_tile, ldc, m, n);
        } else if (i < full_rows) {
          gemm_tile<T, false>(depth, a.data + k0 * a.col_stride + row0 + i, a.col_stride, b_strip, b_step, row_start,
                              col_start, overwrite, c_tile, ldc, m, n);
        } else {
          gemm_tile<T, false>(depth, st.a_panel + i * depth, MR, b_strip, b_step, row_start, col_start, overwrite,
                              c_tile, ldc, m, n);
        }
        return MR;
      };
      // This task's (batch entry, KC block) steps, in order, `panels` at a time: every register tile runs them all.
      const int64_t first = g.reduced ? out * steps / slots : 0, last = g.reduced ? (out + 1) * steps / slots : steps;
      std::vector<Step> prepared;
      for (int64_t s0 = first; s0 < last; s0 += panels) {
        prepared.clear();
        for (int64_t step = s0; step < std::min(last, s0 + panels); ++step)
          prepared.push_back(prepare(step, step - s0));
        for (int64_t j = 0; j < cols; j += NR)
          for (int64_t i = 0; i < rows;) {
            int64_t covered = 0;
            for (const Step& st : prepared) covered = tile(st, i, j);
            i += covered;
          }
      }
    }
  });
  if (slots == 1) return;
  at::parallel_for(0, g.M, std::max<int64_t>(1, kMinWorkPerThread / (g.N * slots)), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t s = 0; s + 1 < slots; ++s) {
        const T* partial = partials.data() + s * g.M * g.N + i * g.N;
        T* c = g.c + i * g.c_row_stride;
        for (int64_t j = 0; j < g.N; ++j) c[j] += partial[j];
      }
  });
}

TORCHCORR_ISA_END
