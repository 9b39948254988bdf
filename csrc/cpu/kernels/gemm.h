// A cache-blocked matrix product on the CPU, compiled once per instruction-set level (isa.h):
//   C_b += A_b · B_b  for every batch entry b          (forward pass, input gradient)
//   C   += sum_b A_b · B_b, b in order                  (reduced: weight gradient)
// where A_b is M x K, B_b is K x N and C is M x N with unit column stride. A and B are read through any
// row and column strides, so transposes cost nothing; B may also be a correlation's input windows (an
// implicit im2col, gemm_problem.h), gathered while packing. C's initial value (bias, zero) is the caller's.
//
// The GotoBLAS/BLIS structure: C is cut into MC x NC blocks, one task each (and per batch entry when
// independent), so every output has one owner. A task walks K in KC steps (and the batch, when reduced): it
// packs the KC x NC panel of B into NR-wide strips and the MC x KC panel of A into MR-tall strips, zero-padded
// to whole strips (an A shared by the batch, the weights, is packed once per call, before the tasks), then
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
constexpr int64_t kGemmRowBlock = 48 * kGemmRows;                // MC (a multiple of MR)

// C[0..MR)[0..NR) += sum_k a[k][0..MR) * b[k][0..NR); a and b are packed strips, c has row stride ldc.
// Rows >= m and columns >= n are computed on the zero padding and not stored.
template <typename T>
void gemm_tile(int64_t depth, const T* a, const T* b, T* c, int64_t ldc, int64_t m, int64_t n) {
  using S = Simd<T>;
  constexpr int MR = kGemmRows, NV = kGemmVectors, NR = NV * S::lanes;
  typename S::Vec acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = S::zero();
  for (int64_t k = 0; k < depth; ++k, a += MR, b += NR) {
    typename S::Vec bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = S::load(b + v * S::lanes);
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i];
      for (int v = 0; v < NV; ++v) acc[i][v] += bv[v] * ai;
    }
  }
  if (m == MR && n == NR) {
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) S::store(c + i * ldc + v * S::lanes, S::load(c + i * ldc + v * S::lanes) + acc[i][v]);
    return;
  }
  alignas(64) T out[MR * NR];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) S::store(out + i * NR + v * S::lanes, acc[i][v]);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] += out[i * NR + j];
}

// packed[strip][k][0..MR) = A[row0 + strip*MR + i][k0 + k], zero past `rows`.
template <typename T>
void pack_a(const GemmOperand<T>& a, int64_t row0, int64_t rows, int64_t k0, int64_t depth, T* packed) {
  constexpr int MR = kGemmRows;
  for (int64_t strip = 0; strip * MR < rows; ++strip, packed += depth * MR) {
    for (int64_t k = 0; k < depth; ++k)
      for (int i = 0; i < MR; ++i) {
        const int64_t row = strip * MR + i;
        packed[k * MR + i] = row < rows ? a.at(row0 + row, k0 + k) : T(0);
      }
  }
}

// out[0..count) = windows row k (tap (c, r, s)) at pixels j0 .. j0 + count: one run per output row, a copy
// between zeros when the stride is 1.
template <typename T>
void window_row(const ConvWindows& v, const T* x, int64_t k, int64_t j0, int64_t count, T* out) {
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

// out[0..count) = transposed windows row j (pixel (p, q)) at taps k0 .. k0 + count.
template <typename T>
void window_column(const ConvWindows& v, const T* x, int64_t j, int64_t k0, int64_t count, T* out) {
  const int64_t h0 = j / v.Q * v.stride_h - v.pad_h, w0 = j % v.Q * v.stride_w - v.pad_w;
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
  constexpr int64_t NR = kGemmVectors * Simd<T>::lanes;
  for (int64_t strip = 0; strip * NR < cols; ++strip, packed += depth * NR) {
    const int64_t first = col0 + strip * NR, count = std::min(NR, cols - strip * NR);
    for (int64_t k = 0; k < depth; ++k) {
      T* out = packed + k * NR;
      if (b.windows != nullptr) {
        if (b.windows->transposed) {
          window_column(*b.windows, b.data, k0 + k, first, count, out);
        } else {
          window_row(*b.windows, b.data, k0 + k, first, count, out);
        }
      } else if (b.col_stride == 1) {
        const T* row = b.data + (k0 + k) * b.row_stride + first;
        std::copy(row, row + count, out);
      } else {
        for (int64_t j = 0; j < count; ++j) out[j] = b.at(k0 + k, first + j);
      }
      std::fill(out + count, out + NR, T(0));
    }
  }
}

// A reduced product with fewer output blocks than kReductionTasks (a weight gradient with few channels) splits
// its reduction, the (batch entry, KC block) steps in order, into contiguous slots: each slot sums its steps
// into a partial C, and the partials are added to C in slot order. The split is a function of the sizes alone.
constexpr int64_t kReductionTasks = 8;
constexpr int64_t kMinSlotDepth = 1024;  // reduction length per slot that amortises its partial C

template <typename T>
void gemm(const GemmProblem<T>& g) {
  constexpr int64_t MR = kGemmRows, NR = kGemmVectors * Simd<T>::lanes;
  if (g.M == 0 || g.N == 0 || g.K == 0 || g.batch == 0) return;
  // Columns per block: the packed B panel near half of a 1-2 MiB L2, and enough blocks for every thread.
  const int64_t threads = at::get_num_threads();
  const int64_t widest_block = std::max<int64_t>(NR, (512 << 10) / (kGemmDepth * sizeof(T)) / NR * NR);
  const int64_t row_blocks = div_up(g.M, kGemmRowBlock);
  const int64_t depth_max = std::min(g.K, kGemmDepth), depth_blocks = div_up(g.K, kGemmDepth);
  const int64_t steps = g.reduced ? g.batch * depth_blocks : depth_blocks;
  const int64_t slots = !g.reduced ? 1 : std::clamp<int64_t>(
      std::min(kReductionTasks / (row_blocks * div_up(g.N, widest_block)), g.batch * g.K / kMinSlotDepth), 1, steps);
  const int64_t outputs = g.reduced ? slots : g.batch;
  int64_t col_block = widest_block;
  while (col_block > NR && outputs * row_blocks * div_up(g.N, col_block) < 2 * threads)
    col_block = div_up(col_block / 2, NR) * NR;
  const int64_t col_blocks = div_up(g.N, col_block);
  const int64_t task_work =
      std::min(g.M, kGemmRowBlock) * std::min(g.N, col_block) * g.K * (g.reduced ? div_up(g.batch, slots) : 1);

  // A shared by the whole batch (the weights) is packed once, every (row block, depth block) panel, not per task.
  const bool shared_a = g.a.batch_stride == 0 && g.batch > 1;
  const int64_t a_panel = div_up(std::min(g.M, kGemmRowBlock), MR) * MR * depth_max;
  std::vector<T> a_shared(shared_a ? row_blocks * depth_blocks * a_panel : 0);
  if (shared_a) {
    parallel_tasks(row_blocks * depth_blocks, a_panel, [&](int64_t panel) {
      const int64_t ib = panel / depth_blocks, k0 = panel % depth_blocks * kGemmDepth;
      const int64_t row0 = ib * kGemmRowBlock;
      pack_a(g.a, row0, std::min(kGemmRowBlock, g.M - row0), k0, std::min(kGemmDepth, g.K - k0),
             a_shared.data() + panel * a_panel);
    });
  }
  // Slot 0 sums into C itself; slot s > 0 into partials[s - 1] (M x N, zero to start).
  std::vector<T> partials((slots - 1) * g.M * g.N, T(0));

  at::parallel_for(0, outputs * row_blocks * col_blocks, std::max<int64_t>(1, kMinWorkPerThread / task_work),
                   [&](int64_t begin, int64_t end) {
    std::vector<T> a_packed(shared_a ? 0 : a_panel);
    std::vector<T> b_packed(div_up(std::min(g.N, col_block), NR) * NR * depth_max);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t jb = task % col_blocks, ib = task / col_blocks % row_blocks, out = task / col_blocks / row_blocks;
      const int64_t row0 = ib * kGemmRowBlock, rows = std::min(kGemmRowBlock, g.M - row0);
      const int64_t col0 = jb * col_block, cols = std::min(col_block, g.N - col0);
      T* c = g.reduced && out > 0 ? partials.data() + (out - 1) * g.M * g.N + row0 * g.N + col0
                                  : g.c + (g.reduced ? 0 : out * g.c_batch_stride) + row0 * g.c_row_stride + col0;
      const int64_t ldc = g.reduced && out > 0 ? g.N : g.c_row_stride;
      // This task's (batch entry, KC block) steps, in order.
      const int64_t first = g.reduced ? out * steps / slots : 0, last = g.reduced ? (out + 1) * steps / slots : steps;
      for (int64_t step = first; step < last; ++step) {
        const int64_t b = g.reduced ? step / depth_blocks : out, k0 = step % depth_blocks * kGemmDepth;
        const GemmOperand<T> a = g.a.batch(b), bm = g.b.batch(b);
        const int64_t depth = std::min(kGemmDepth, g.K - k0);
        const T* a_panel_data = a_packed.data();
        if (shared_a) {
          a_panel_data = a_shared.data() + (ib * depth_blocks + k0 / kGemmDepth) * a_panel;
        } else {
          pack_a(a, row0, rows, k0, depth, a_packed.data());
        }
        pack_b(bm, k0, depth, col0, cols, b_packed.data());
        for (int64_t j = 0; j < cols; j += NR)
          for (int64_t i = 0; i < rows; i += MR)
            gemm_tile(depth, a_panel_data + i * depth, b_packed.data() + j * depth, c + i * ldc + j, ldc,
                      std::min(MR, rows - i), std::min(NR, cols - j));
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
