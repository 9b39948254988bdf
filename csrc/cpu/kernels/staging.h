// Staging: the rows of the virtual input (direct_corr.h) that a block of output rows reads, copied into a
// cache-resident buffer split by stride phase. Phase (a, b) holds V(i*sh + a, j*sw + b), so every tap
// (c, r, s) of every output pixel becomes a unit-stride read at tap_offsets[c,r,s] + pixel, with
// pixel = row * width + column over the block's staged rows (columns >= Q exist, read zeros or halo,
// and their results are dropped). Padding, stride and dilation all disappear here.
#pragma once

#include "../direct_corr.h"
#include "isa.h"
#include "simd.h"

#include <algorithm>
#include <vector>

TORCHCORR_ISA_BEGIN

constexpr int64_t kMaxTile = 512;  // no kernel reads further than this past its first pixel

// Real index of virtual coordinate i, or -1 for a zero (padding or an upsampling gap).
inline int64_t real_index(int64_t i, int64_t offset, int64_t size) {
  const int64_t real = i - offset;
  return real >= 0 && real < size ? real : -1;
}

// ceil(a / b) for b > 0 and any a, without overflow.
inline int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b > 0); }

// Where a task's staged rows live, the same for every task of a call.
struct StagedLayout {
  int64_t rows;        // output rows per task
  int64_t width;       // staged row width: Q plus the columns the widest tap reaches
  int64_t phase_rows;  // staged rows per phase: rows plus the rows the tallest tap reaches
  std::vector<int64_t> phases_h, phases_w;  // stride phases some tap reads
  int64_t plane, channel, size;             // element counts: one phase plane, one channel, the buffer
  std::vector<int64_t> tap_offsets;         // per (c, r, s)
};

// The stride phases (t * dilation) % stride that the taps t < taps read, in increasing order.
inline std::vector<int64_t> used_phases(int64_t taps, int64_t dilation, int64_t stride) {
  std::vector<int64_t> phases;
  for (int64_t t = 0; t < taps; ++t) phases.push_back(t * dilation % stride);
  std::sort(phases.begin(), phases.end());
  phases.erase(std::unique(phases.begin(), phases.end()), phases.end());
  return phases;
}

inline int64_t phase_index(const std::vector<int64_t>& phases, int64_t phase) {
  return std::lower_bound(phases.begin(), phases.end(), phase) - phases.begin();
}

inline StagedLayout make_layout(const DirectProblem& d, int64_t rows) {
  StagedLayout l;
  l.rows = rows;
  l.width = d.Q + (d.S - 1) * d.dilation_w / d.stride_w;
  l.phase_rows = rows + (d.R - 1) * d.dilation_h / d.stride_h;
  l.phases_h = used_phases(d.R, d.dilation_h, d.stride_h);
  l.phases_w = used_phases(d.S, d.dilation_w, d.stride_w);
  l.plane = l.phase_rows * l.width;
  l.channel = l.plane * static_cast<int64_t>(l.phases_h.size() * l.phases_w.size());
  // Slack for the last tile, which reads up to kMaxTile pixels past the staged rows, across the halo.
  l.size = d.C_per_group() * l.channel + (l.width - d.Q) + kMaxTile;
  const int64_t phases_w = l.phases_w.size();
  for (int64_t c = 0; c < d.C_per_group(); ++c)
    for (int64_t r = 0; r < d.R; ++r)
      for (int64_t s = 0; s < d.S; ++s) {
        const int64_t vr = r * d.dilation_h, vs = s * d.dilation_w;
        const int64_t phase =
            phase_index(l.phases_h, vr % d.stride_h) * phases_w + phase_index(l.phases_w, vs % d.stride_w);
        l.tap_offsets.push_back(c * l.channel + phase * l.plane + vr / d.stride_h * l.width + vs / d.stride_w);
      }
  return l;
}

// At most `rows` rows per block, in as few blocks as that allows, of nearly equal size (13 rows in blocks of at
// most 11: 7 + 6, not 11 + 2, since a block computes its staged rows whether or not they are outputs).
inline int64_t balanced_rows(int64_t P, int64_t rows) { return P <= 0 ? rows : ceil_div(P, ceil_div(P, rows)); }

// Output rows per block so that the staged rows (plus extra_row_bytes per output row) fill about half of a
// typical 1-2 MiB L2 cache. A function of the sizes alone.
inline int64_t staged_rows(const DirectProblem& d, int64_t extra_row_bytes, int64_t element_size) {
  constexpr int64_t kStagedBytes = 256 << 10;
  const StagedLayout one_row = make_layout(d, 1);
  const int64_t row_bytes = one_row.channel / one_row.phase_rows * d.C_per_group() * element_size + extra_row_bytes;
  return std::clamp<int64_t>(kStagedBytes / std::max<int64_t>(1, row_bytes), 1, std::max<int64_t>(1, d.P));
}

// Stage V for output rows [row0, row0 + l.rows) of one image's group: Cg channels whose first is at x, as planes
// or channels last (d.layout; a row of channels last is transposed into the group's planes).
template <typename T>
void stage(const DirectProblem& d, const StagedLayout& l, const T* x, int64_t row0, T* buffer) {
  const int64_t sw = d.stride_w, Cg = d.C_per_group();
  const ChannelStrides in = channel_strides(d.layout, d.C, d.H * d.W);
  for (size_t a = 0; a < l.phases_h.size(); ++a) {
    for (size_t b = 0; b < l.phases_w.size(); ++b) {
      // Staged column j of phase b is real column j*sw + phase - offset_w: real for j in [first, last).
      const int64_t phase = l.phases_w[b];
      const int64_t first = std::clamp<int64_t>(ceil_div(d.offset_w - phase, sw), 0, l.width);
      const int64_t last = std::clamp<int64_t>(ceil_div(d.offset_w + d.W - phase, sw), first, l.width);
      T* out = buffer + (a * l.phases_w.size() + b) * l.plane;  // channel c's row i at out + c*l.channel + i*l.width
      for (int64_t i = 0; i < l.phase_rows; ++i, out += l.width) {
        const int64_t h = real_index((row0 + i) * d.stride_h + l.phases_h[a], d.offset_h, d.H);
        for (int64_t c = 0; c < Cg; ++c) {
          T* channel = out + c * l.channel;
          std::fill(channel, channel + (h < 0 ? l.width : first), T(0));
          if (h >= 0) std::fill(channel + last, channel + l.width, T(0));
        }
        if (h < 0 || last == first) continue;
        const T* row = x + (h * d.W + first * sw + phase - d.offset_w) * in.pixel;  // row[j*sw*pixel]: column first + j
        if (d.layout == Layout::channels_last) {
          transpose(row, sw * in.pixel, last - first, Cg, out + first, l.channel);
          continue;
        }
        for (int64_t c = 0; c < Cg; ++c) {
          const T* from = row + c * in.channel;
          T* to = out + c * l.channel + first;
          if (sw == 1) {
            std::copy(from, from + (last - first), to);
          } else {
            for (int64_t j = 0; j < last - first; ++j) to[j] = from[j * sw];
          }
        }
      }
    }
  }
}

TORCHCORR_ISA_END
