// Weight gradient of the cross-correlation on the CPU, compiled once per instruction-set level (isa.h).
//
// Computes gw[k,c,r,s] = sum_{n,p,q} gy[n,k,p,q] * x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw].
//
// Work split: units of (image n, block of output rows). Per group, a unit's rows of x are staged exactly as
// the forward pass stages them (staging.h: tap (c, r, s) at pixel m reads x_staged[tap_offset + m]), and
// gy's rows on the same pixel grid, zero at the columns that are not outputs. Two drivers here and a third for
// depthwise layers on small planes (channel_vectors.h), chosen in weight_grad_kernel; in each, every sum runs
// in an order fixed by the sizes, never by the thread count:
//  - weight_grad_dense (many outputs: K per group >= a vector and many taps): chunks of units that fit in
//    cache are staged, gy transposed to pixel-major; then each output tile, owned by one task, adds the
//    chunk's sums with channel_sums: acc[tap j][k lanes] += gy_t[m][k lanes] * x[tap_j + m].
//  - weight_grad_few_outputs (single channel, depthwise, LeNet, stems): units are dealt in order to a fixed
//    number of partial sums, added in order at the end; pixel_sums computes
//    acc[k][tap j] (vectors over pixels) += gy[k][m..] * x[tap_j + m..], summed across lanes at the end (of
//    each unit, or of each slot where its vectors fit in cache).
// Memory: x and gy are read once into staging (plus halo rows); gw is written once per chunk or partial.
//
#pragma once

#include "../cpu_kernel_utils.h"
#include "../direct_corr.h"
#include "channel_vectors.h"
#include "isa.h"
#include "simd.h"
#include "staging.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

TORCHCORR_ISA_BEGIN

// out[j][0 .. KV*L) += sum_m x[taps[j] + m] * gy_t[m][0 .. KV*L) for m < pixels.
template <typename T, int KV, int J>
void channel_sums(const T* x, const int64_t* taps, const T* gy_t, int64_t gy_stride, int64_t pixels, T* out) {
  using S = Simd<T>;
  typename S::Vec acc[J][KV];
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < KV; ++v) acc[j][v] = S::load(out + (j * KV + v) * S::lanes);
  for (int64_t m = 0; m < pixels; ++m) {
    typename S::Vec g[KV];
    for (int v = 0; v < KV; ++v) g[v] = S::load(gy_t + m * gy_stride + v * S::lanes);
    for (int j = 0; j < J; ++j) {
      const T xs = x[taps[j] + m];
      for (int v = 0; v < KV; ++v) acc[j][v] += g[v] * xs;
    }
  }
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < KV; ++v) S::store(out + (j * KV + v) * S::lanes, acc[j][v]);
}

// out[k][j] = sum_m gy[k][m] * x[taps[j] + m] for m < pixels (a multiple of the lanes), k < KB; or, Lanes, the
// KB x J vectors at out continue their sums (lane i of a vector: the pixels m = i modulo the lanes), to be summed
// across the lanes by the caller once the last unit is in.
template <typename T, int KB, int J, bool Lanes>
void pixel_sums(const T* x, const int64_t* taps, const T* gy, int64_t gy_stride, int64_t pixels, T* out) {
  using S = Simd<T>;
  typename S::Vec acc[KB][J];
  for (int k = 0; k < KB; ++k)
    for (int j = 0; j < J; ++j) acc[k][j] = Lanes ? S::load(out + (k * J + j) * S::lanes) : S::zero();
  for (int64_t m = 0; m < pixels; m += S::lanes) {
    typename S::Vec g[KB];
    for (int k = 0; k < KB; ++k) g[k] = S::load(gy + k * gy_stride + m);
    for (int j = 0; j < J; ++j) {
      const typename S::Vec xv = S::load(x + taps[j] + m);
      for (int k = 0; k < KB; ++k) acc[k][j] += g[k] * xv;
    }
  }
  for (int k = 0; k < KB; ++k)
    for (int j = 0; j < J; ++j) {
      if constexpr (Lanes) {
        S::store(out + (k * J + j) * S::lanes, acc[k][j]);
      } else {
        out[k * J + j] = S::sum(acc[k][j]);
      }
    }
}

// gy's rows [row0, row0 + rows) of `channels` channels (the first at gy, in d.layout) on the staged pixel grid,
// value (k, m) stored at k * k_stride + m * m_stride; zero at columns >= Q, rows >= P and channels >= channels
// (up to padded).
template <typename T>
void stage_grad(const T* gy, const DirectProblem& d, const StagedLayout& l, int64_t row0, int64_t channels,
                int64_t padded_channels, int64_t pixels, int64_t k_stride, int64_t m_stride, T* out) {
  if (d.layout == Layout::channels_last) {  // a pixel's channels are adjacent
    for (int64_t m = 0, row = 0; m < pixels; m += l.width, ++row) {
      const int64_t count = std::min(l.width, pixels - m);
      const int64_t real = row < l.rows && row0 + row < d.P ? std::min(d.Q, count) : 0;
      for (int64_t col = 0; col < count; ++col) {
        const T* src = gy + ((row0 + row) * d.Q + col) * d.K;
        T* dst = out + (m + col) * m_stride;
        for (int64_t k = 0; k < padded_channels; ++k) dst[k * k_stride] = col < real && k < channels ? src[k] : T(0);
      }
    }
    return;
  }
  for (int64_t k = 0; k < padded_channels; ++k) {
    T* dst = out + k * k_stride;
    for (int64_t m = 0, row = 0; m < pixels; m += l.width, ++row) {
      const int64_t count = std::min(l.width, pixels - m);
      const bool real_row = k < channels && row < l.rows && row0 + row < d.P;
      const int64_t real = real_row ? std::min(d.Q, count) : 0;
      const T* src = gy + (k * d.P + row0 + row) * d.Q;
      if (m_stride == 1) {
        std::copy(src, src + real, dst + m);
        std::fill(dst + m + real, dst + m + count, T(0));
      } else {
        for (int64_t col = 0; col < count; ++col) dst[(m + col) * m_stride] = col < real ? src[col] : T(0);
      }
    }
  }
}

// The taps t0 .. t0 + J - 1 (the last repeated past the end) as staged offsets.
template <int J>
void tap_tile(const StagedLayout& layout, int64_t t0, int64_t* tile) {
  const int64_t taps = layout.tap_offsets.size();
  for (int j = 0; j < J; ++j) tile[j] = layout.tap_offsets[std::min(t0 + j, taps - 1)];
}

// Units of work: (image n, block of `rows` output rows), in order.
struct Units {
  int64_t rows, row_blocks, count;
  int64_t image(int64_t unit) const { return unit / row_blocks; }
  int64_t row0(int64_t unit) const { return unit % row_blocks * rows; }
};

// K per group >= a vector (dense layers). The units are taken in chunks that fit in cache; each chunk is
// staged for every group (x, and gy transposed to pixel-major), then every output tile (group, KV vectors of
// channels, J taps) adds the chunk's sums in unit order. No partial sums: each output has one owner.
template <typename T, int KV>
void weight_grad_dense(const DirectProblem& d, const StagedLayout& layout, const Units& units, const T* gy,
                       const T* x, T* gw) {
  using S = Simd<T>;
  constexpr int J = kAccumulators / KV;
  constexpr int64_t kChunkBytes = 1 << 20;
  const int64_t Cg = d.C_per_group(), Kg = d.K_per_group(), taps = layout.tap_offsets.size();
  const int64_t block = KV * S::lanes, padded_K = div_up(Kg, block) * block, pixels = layout.rows * layout.width;
  const int64_t grad_size = pixels * padded_K, unit_size = d.groups * (layout.size + grad_size);
  const int64_t chunk = std::clamp<int64_t>(kChunkBytes / (unit_size * sizeof(T)), 1, units.count);
  std::vector<T> staged(chunk * d.groups * layout.size, T(0)), grads(chunk * d.groups * grad_size, T(0));
  const int64_t k_blocks = padded_K / block, t_tiles = div_up(taps, J);
  const int64_t tile_work = block * J * chunk * pixels;

  for (int64_t first = 0; first < units.count; first += chunk) {
    const int64_t count = std::min(chunk, units.count - first);
    parallel_tasks(count * d.groups, layout.size, [&](int64_t task) {
      const int64_t u = task / d.groups, g = task % d.groups, n = units.image(first + u), row0 = units.row0(first + u);
      stage(d, layout, x + channel_start(d.layout, n, g * Cg, d.C, d.H * d.W), row0,
            staged.data() + task * layout.size);
      stage_grad(gy + channel_start(d.layout, n, g * Kg, d.K, d.P * d.Q), d, layout, row0, Kg, padded_K, pixels, 1,
                 padded_K, grads.data() + task * grad_size);
    });
    parallel_tasks(d.groups * k_blocks * t_tiles, tile_work, [&](int64_t task) {
      const int64_t t0 = task % t_tiles * J, kb = task / t_tiles % k_blocks, g = task / t_tiles / k_blocks;
      int64_t tile[J];
      tap_tile<J>(layout, t0, tile);
      alignas(64) T out[J * KV * S::lanes] = {};
      for (int64_t u = 0; u < count; ++u) {
        const int64_t slot = u * d.groups + g;
        channel_sums<T, KV, J>(staged.data() + slot * layout.size, tile, grads.data() + slot * grad_size + kb * block,
                               padded_K, pixels, out);
      }
      for (int64_t k = kb * block; k < std::min(Kg, (kb + 1) * block); ++k)
        for (int64_t j = 0; j < std::min<int64_t>(J, taps - t0); ++j)
          gw[(g * Kg + k) * taps + t0 + j] += out[j * block + k - kb * block];
    });
  }
}

// Few outputs (single channel, depthwise, LeNet, stems). Units are dealt in order to a fixed number of
// partial sums (a function of the sizes); each unit stages x and gy for a group and adds its sums, KB
// channels x J taps at a time; the partials are added in order at the end. Where a slot's sums fit in
// kMaxLaneSumBytes as vectors, they stay vectors until the slot's last unit (one sum across the lanes per output
// and slot, not per unit: LeNet's 10x10 planes spent more on those than on the multiply-adds).
constexpr int64_t kMaxLaneSumBytes = 512 << 10;

template <typename T, int KB>
void weight_grad_few_outputs(const DirectProblem& d, const StagedLayout& layout, const Units& units,
                             const T* gy, const T* x, T* gw) {
  using S = Simd<T>;
  constexpr int J = std::min(12, kAccumulators / KB);
  constexpr int64_t kMaxPartials = 8, tile_size = KB * J * S::lanes;
  const int64_t Cg = d.C_per_group(), Kg = d.K_per_group(), taps = layout.tap_offsets.size();
  const int64_t outputs = d.K * taps, padded_K = div_up(Kg, KB) * KB;
  const int64_t pixels = div_up(layout.rows * layout.width, S::lanes) * S::lanes;
  const int64_t slots = std::min(units.count, kMaxPartials);
  const int64_t k_tiles = div_up(Kg, KB), t_tiles = div_up(taps, J);
  const int64_t lane_sums_size = d.groups * k_tiles * t_tiles * tile_size;
  const bool in_lanes = lane_sums_size * static_cast<int64_t>(sizeof(T)) <= kMaxLaneSumBytes;
  std::vector<T> partials(slots == 1 ? 0 : slots * outputs, T(0));

  at::parallel_for(0, slots, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> staged(layout.size, T(0)), grad(padded_K * pixels, T(0));
    std::vector<T> lane_sums(in_lanes ? lane_sums_size : 0);
    for (int64_t slot = begin; slot < end; ++slot) {
      T* partial = slots == 1 ? gw : partials.data() + slot * outputs;
      std::fill(lane_sums.begin(), lane_sums.end(), T(0));
      // Adds out (KB x J sums of tile (g, k0, t0), as vectors or not) to the slot's partial sums.
      const auto add_tile = [&](int64_t g, int64_t k0, int64_t t0, const T* out, int64_t stride) {
        for (int64_t k = 0; k < std::min<int64_t>(KB, Kg - k0); ++k)
          for (int64_t j = 0; j < std::min<int64_t>(J, taps - t0); ++j) {
            const T* sum = out + (k * J + j) * stride;
            partial[(g * Kg + k0 + k) * taps + t0 + j] += stride == 1 ? *sum : S::sum(S::load(sum));
          }
      };
      for (int64_t u = slot * units.count / slots; u < (slot + 1) * units.count / slots; ++u) {
        const int64_t n = units.image(u), row0 = units.row0(u);
        for (int64_t g = 0; g < d.groups; ++g) {
          stage(d, layout, x + channel_start(d.layout, n, g * Cg, d.C, d.H * d.W), row0, staged.data());
          stage_grad(gy + channel_start(d.layout, n, g * Kg, d.K, d.P * d.Q), d, layout, row0, Kg, padded_K, pixels,
                     pixels, 1, grad.data());
          for (int64_t k0 = 0; k0 < Kg; k0 += KB) {
            for (int64_t t0 = 0; t0 < taps; t0 += J) {
              int64_t tile[J];
              tap_tile<J>(layout, t0, tile);
              if (in_lanes) {
                T* sums = lane_sums.data() + ((g * k_tiles + k0 / KB) * t_tiles + t0 / J) * tile_size;
                pixel_sums<T, KB, J, true>(staged.data(), tile, grad.data() + k0 * pixels, pixels, pixels, sums);
                continue;
              }
              T out[KB * J];
              pixel_sums<T, KB, J, false>(staged.data(), tile, grad.data() + k0 * pixels, pixels, pixels, out);
              add_tile(g, k0, t0, out, 1);
            }
          }
        }
      }
      if (!in_lanes) continue;
      for (int64_t g = 0; g < d.groups; ++g)
        for (int64_t k0 = 0; k0 < Kg; k0 += KB)
          for (int64_t t0 = 0; t0 < taps; t0 += J)
            add_tile(g, k0, t0, lane_sums.data() + ((g * k_tiles + k0 / KB) * t_tiles + t0 / J) * tile_size, S::lanes);
    }
  });
  if (slots == 1) return;
  at::parallel_for(0, outputs, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t slot = 0; slot < slots; ++slot) {
      const T* values = partials.data() + slot * outputs;
      for (int64_t i = begin; i < end; ++i) gw[i] += values[i];
    }
  });
}

// Below this many outputs per group (K per group x taps) the pixel sums were faster, with no transposes of gy:
// 2-4x on stems (3 input channels, 224x224), LeNet and 8-32 channel layers; the channel sums win from about
// 20000 outputs on (64 channels 3x3: 1.5x). Measured on AVX-512, 2 threads.
constexpr int64_t kMaxPixelSumOutputs = 16384;

// The one place a kernel is chosen: channels across the lanes for depthwise layers on small planes
// (channel_vectors.h, as in the forward pass); pixels across the lanes, a few channels at a time, for groups
// with few outputs (few output channels: single channel, depthwise, LeNet; or few taps: stems); else output
// channels across the lanes (dense layers).
template <typename T>
WeightLayout weight_grad_kernel(const Corr2dProblem& p, Layout activations, const T* gy, const T* x, T* gw,
                                WeightLayout wanted) {
  using S = Simd<T>;
  DirectProblem d = forward_problem(p);
  d.layout = activations;
  const int64_t Kg = p.K_per_group();
  std::fill(gw, gw + p.K * p.C_per_group() * p.R * p.S, T(0));
  if (p.N * p.P == 0 || p.K == 0) return WeightLayout::kcrs;
  if (channel_vectors_weight_grad_applies(d, S::lanes, sizeof(T))) {
    channel_vectors_weight_grad(d, gy, x, gw, wanted);
    return wanted;
  }
  const int64_t grad_row_bytes = (Kg + 2 * S::lanes) * (p.Q + p.S * p.dilation_w) * sizeof(T);
  const int64_t rows = balanced_rows(p.P, staged_rows(d, grad_row_bytes, sizeof(T)));
  const StagedLayout layout = make_layout(d, rows);
  const Units units{rows, div_up(p.P, rows), p.N * div_up(p.P, rows)};
  if (Kg < S::lanes || Kg * p.C_per_group() * p.R * p.S <= kMaxPixelSumOutputs) {
    switch (std::min<int64_t>(Kg, 4)) {
      case 1: weight_grad_few_outputs<T, 1>(d, layout, units, gy, x, gw); break;
      case 2: weight_grad_few_outputs<T, 2>(d, layout, units, gy, x, gw); break;
      case 3: weight_grad_few_outputs<T, 3>(d, layout, units, gy, x, gw); break;
      default: weight_grad_few_outputs<T, 4>(d, layout, units, gy, x, gw);
    }
    return WeightLayout::kcrs;
  }
  // Four vectors of channels per tile where there are that many: fewer broadcasts per multiply-add.
  if (Kg >= 4 * S::lanes) weight_grad_dense<T, 4>(d, layout, units, gy, x, gw);
  else if (Kg > S::lanes) weight_grad_dense<T, 2>(d, layout, units, gy, x, gw);
  else weight_grad_dense<T, 1>(d, layout, units, gy, x, gw);
  return WeightLayout::kcrs;
}

TORCHCORR_ISA_END
