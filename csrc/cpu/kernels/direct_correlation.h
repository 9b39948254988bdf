// Direct correlation on the CPU (forward pass and input gradient): the plain loop nest is in
// ../direct_corr.h and, as tensor ops, in torchcorr/reference.py.
//
// Work split: one task per (image n, group g, block of output rows). A task first stages the rows of
// V its outputs read, for the group's Cg channels, into a cache-resident buffer, split by stride phase:
// phase (a, b) holds V(i*sh + a, j*sw + b). In that layout every tap (c, r, s) of every output pixel is
// a unit-stride read at a fixed offset, tap_offset[c,r,s] + pixel, where pixel = row * width + column
// runs over the staged rows (columns >= Q are computed and dropped). Padding, stride and
// dilation all disappear into the staging; the inner kernels only see "acc += weight * x[offset + pixel]".
//
// Two register-blocked kernels, chosen in choose_kernel (which sends depthwise layers on small planes to
// channel_vectors.h, its own staging with channels across the lanes):
//  - channel_tile (K per group > four vectors): output channels across the vector lanes, J pixels
//    down the registers; per tap it loads KV weight vectors and broadcasts J input values.
//  - pixel_tile (fewer output channels: single-channel images, depthwise, LeNet): pixels across the lanes,
//    KB channels x U vectors of pixels; per tap it loads U input vectors and broadcasts KB weights.
// Weights are packed once per call into [group][channel block][tap][block] with zero padding.
// Memory: x is read once into staging (plus halo rows per block), y written once; the packed weights
// and the staged block stay in L1/L2 while a task runs. Every output is a sum over taps in (c, r, s)
// order by one task, so results are the same whatever the thread count.
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

// out[j][0 .. KV*L) = sum_t x[tap_offsets[t] + pixel(j)] * w[t][0 .. KV*L) for j < J: channels across lanes.
template <typename T, int KV, int J, typename Pixel>
void channel_tile_at(const T* x, const Pixel& pixel, const int64_t* tap_offsets, int64_t taps, const T* w,
                     int64_t w_block_stride, T* out) {
  using S = Simd<T>;
  typename S::Vec acc[J][KV];
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < KV; ++v) acc[j][v] = S::zero();
  for (int64_t t = 0; t < taps; ++t) {
    const T* xt = x + tap_offsets[t];
    typename S::Vec wv[KV];
    for (int v = 0; v < KV; ++v) wv[v] = S::load(w + v * w_block_stride + t * S::lanes);
    for (int j = 0; j < J; ++j) {
      const T xs = xt[pixel(j)];
      for (int v = 0; v < KV; ++v) acc[j][v] += wv[v] * xs;
    }
  }
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < KV; ++v) S::store(out + (j * KV + v) * S::lanes, acc[j][v]);
}

// channel_tile_at with the pixels at the given offsets.
template <typename T, int KV, int J>
void channel_tile(const T* x, const int64_t* pixels, const int64_t* tap_offsets, int64_t taps, const T* w,
                  int64_t w_block_stride, T* out) {
  channel_tile_at<T, KV, J>(x, [pixels](int j) { return pixels[j]; }, tap_offsets, taps, w, w_block_stride, out);
}

// out[kb][0 .. U*L) = sum_t w[t][kb] * x[tap_offsets[t] + 0 .. U*L) for kb < KB: pixels across lanes.
template <typename T, int KB, int U>
void pixel_tile(const T* x, const int64_t* tap_offsets, int64_t taps, const T* w, T* out) {
  using S = Simd<T>;
  typename S::Vec acc[KB][U];
  for (int k = 0; k < KB; ++k)
    for (int u = 0; u < U; ++u) acc[k][u] = S::zero();
  for (int64_t t = 0; t < taps; ++t) {
    const T* xt = x + tap_offsets[t];
    typename S::Vec xv[U];
    for (int u = 0; u < U; ++u) xv[u] = S::load(xt + u * S::lanes);
    for (int k = 0; k < KB; ++k) {
      const T wk = w[t * KB + k];
      for (int u = 0; u < U; ++u) acc[k][u] += xv[u] * wk;
    }
  }
  for (int k = 0; k < KB; ++k)
    for (int u = 0; u < U; ++u) S::store(out + (k * U + u) * S::lanes, acc[k][u]);
}

// packed[g][block][t][0 .. block_size) = w[g*Kg + block*block_size + i][t], zero past Kg: one task per block,
// a transpose of its channels' rows of taps (the weights of a wide layer are megabytes: packed in parallel).
template <typename T>
std::vector<T> pack_weights(const DirectProblem& d, const T* w, WeightOrder order, int64_t block_size) {
  const int64_t Kg = d.K_per_group(), Cg = d.C_per_group(), RS = d.R * d.S, taps = Cg * RS;
  const int64_t blocks = div_up(Kg, block_size);
  std::vector<T> packed(d.groups * blocks * taps * block_size, T(0));
  parallel_tasks(d.groups * blocks, taps * block_size, [&](int64_t task) {
    const int64_t g = task / blocks, k0 = task % blocks * block_size, channels = std::min(block_size, Kg - k0);
    T* out = packed.data() + task * taps * block_size;
    if (order == WeightOrder::as_given) {
      if (d.weights == WeightLayout::kcrs)
        return transpose(w + (g * Kg + k0) * taps, taps, channels, taps, out, block_size);
      for (int64_t rs = 0; rs < RS; ++rs)  // channels last: one channels x Cg transpose per tap
        transpose(w + (g * Kg + k0) * taps + rs * Cg, taps, channels, Cg, out + rs * block_size, RS * block_size);
      return;
    }
    const WeightStrides ws = weight_strides(d, order);  // the adjoint reads the channels' flipped kernels
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t rs = 0; rs < RS; ++rs) {
        const T* kernel = w + (g * Cg + c) * ws.out + k0 * ws.in + (RS - 1 - rs) * ws.tap;
        for (int64_t k = 0; k < channels; ++k) out[(c * RS + rs) * block_size + k] = kernel[k * ws.in];
      }
  });
  return packed;
}

// Writes tile results back: pixel m of the staged rows is output (row0 + m / width, m % width).
struct PixelWriter {
  const StagedLayout& layout;
  const OutputGrid& grid;
  int64_t row0, P, Q;
  // Calls put(j, index, length): the tile's pixels m0 + j .. m0 + j + length are the plane's elements
  // index, index + grid.step_w, ... (one run per staged row; the columns past Q and rows past P are dropped).
  template <typename Put>
  void operator()(int64_t m0, int64_t count, const Put& put) const {
    int64_t row = m0 / layout.width, col = m0 % layout.width;
    for (int64_t j = 0; j < count && row < layout.rows && row0 + row < P; ++row, col = 0) {
      const int64_t run = std::min(count - j, layout.width - col);
      const int64_t index = ((row0 + row) * grid.step_h + grid.first_h) * grid.cols + col * grid.step_w + grid.first_w;
      if (col < Q) put(j, index, std::min(run, Q - col));
      j += run;
    }
  }
};

enum class Kernel { channel_vectors, channel_tile, pixel_tile };

// The one place a kernel is chosen: channels across the lanes for depthwise layers whose padded planes are
// small (channel_vectors.h: every lane a real output, where a row of 7-28 pixels leaves most pixel lanes to
// halo columns); output channels across the lanes when a group has more than four vectors of them (wide dense
// layers); else pixels across the lanes, up to 8 channels at a time (single channel, larger depthwise planes,
// LeNet, and layers up to 64 float channels, where measured on AVX-512 it was as fast or faster: a channel
// tile of one or two vectors spends a broadcast per multiply-add). Channels-last outputs take channel tiles
// from two vectors of channels on: pixel tiles would write them a channel at a time (stems 1.4x faster).
Kernel choose_kernel(const DirectProblem& d, int lanes, int64_t element_size) {
  if (channel_vectors_apply(d, lanes, element_size) || grouped_channel_vectors_apply(d, lanes))
    return Kernel::channel_vectors;
  const int64_t min_k = d.layout == Layout::channels_last ? lanes : 4 * lanes;
  return d.K_per_group() > min_k ? Kernel::channel_tile : Kernel::pixel_tile;
}

template <typename T>
struct Runner {
  using S = Simd<T>;
  const DirectProblem& d;
  const StagedLayout& layout;
  const OutputGrid& grid;
  const T* bias;

  int64_t pixels() const { return layout.rows * layout.width; }

  // The outputs of images n0 .. n0 + images - 1 (group g, the staged rows from row0), with channel_tile; image
  // n0 + u is staged at staged + u * image_stride. Tiles of J outputs run across image boundaries.
  template <int KV, int J>
  void channel_block(const T* staged, int64_t image_stride, const T* packed, int64_t block, int64_t n0,
                     int64_t images, int64_t g, int64_t row0, T* y) const {
    const int64_t Kg = d.K_per_group(), taps = layout.tap_offsets.size();
    const int64_t k0 = block * S::lanes, kcount = std::min<int64_t>(KV * S::lanes, Kg - k0);
    // Output i of an image is (row0 + i / Q, i % Q), staged at pixel (i / Q) * width + i % Q.
    const int64_t per_image = std::min(layout.rows, d.P - row0) * d.Q, outputs = images * per_image;
    const int64_t grid_pixels = grid.rows * grid.cols;
    const ChannelStrides to = channel_strides(d.layout, d.K, grid_pixels);
    alignas(64) T out[J * KV * S::lanes], biases[KV * S::lanes];
    for (int64_t k = 0; k < KV * S::lanes; ++k) biases[k] = bias && k < kcount ? bias[g * Kg + k0 + k] : T(0);
    int64_t pixels[J], index[J];
    int64_t u = 0, row = 0, col = 0;  // the next output's image, row and column, stepped without divisions
    for (int64_t i0 = 0; i0 < outputs; i0 += J) {
      const int64_t count = std::min<int64_t>(J, outputs - i0);
      for (int j = 0; j < count; ++j) {
        pixels[j] = u * image_stride + row * layout.width + col;
        const int64_t pixel =
            ((row0 + row) * grid.step_h + grid.first_h) * grid.cols + col * grid.step_w + grid.first_w;
        index[j] = channel_start(d.layout, n0 + u, g * Kg + k0, d.K, grid_pixels) + pixel * to.pixel;
        if (++col == d.Q) {
          col = 0;
          if (++row * d.Q == per_image) row = 0, ++u;
        }
      }
      for (int j = count; j < J; ++j) pixels[j] = pixels[count - 1];
      channel_tile<T, KV, J>(staged, pixels, layout.tap_offsets.data(), taps, packed + block * taps * S::lanes,
                             taps * S::lanes, out);
      if (d.layout == Layout::channels_last && kcount == KV * S::lanes) {  // each output's channels are adjacent
        for (int64_t j = 0; j < count; ++j)
          for (int v = 0; v < KV; ++v)
            S::store(y + index[j] + v * S::lanes,
                     S::load(out + (j * KV + v) * S::lanes) + S::load(biases + v * S::lanes));
        continue;
      }
      if (d.layout == Layout::channels_last) {
        for (int64_t j = 0; j < count; ++j)
          for (int64_t k = 0; k < kcount; ++k) y[index[j] + k] = out[j * KV * S::lanes + k] + biases[k];
        continue;
      }
      for (int64_t k = 0; k < kcount; ++k)
        for (int64_t j = 0; j < count; ++j) y[index[j] + k * to.channel] = out[j * KV * S::lanes + k] + biases[k];
    }
  }

  // Blocks [first, last) of output channels of group g, two vectors at a time, for the given images.
  void channel_blocks(const T* staged, int64_t image_stride, const T* packed, int64_t first, int64_t last,
                      int64_t n0, int64_t images, int64_t g, int64_t row0, T* y) const {
    constexpr int J2 = kAccumulators / 2, J1 = kAccumulators;
    int64_t block = first;
    for (; block + 1 < last; block += 2)
      channel_block<2, J2>(staged, image_stride, packed, block, n0, images, g, row0, y);
    if (block < last) channel_block<1, J1>(staged, image_stride, packed, block, n0, images, g, row0, y);
  }

  template <int KB>
  void pixel_block(const T* staged, const T* packed, int64_t block, int64_t n, int64_t g, int64_t row0, T* y) const {
    constexpr int U = std::clamp(kAccumulators / KB, 1, 8);
    constexpr int64_t tile = U * S::lanes;
    const int64_t Kg = d.K_per_group(), taps = layout.tap_offsets.size();
    const int64_t k0 = block * KB, kcount = std::min<int64_t>(KB, Kg - k0);
    const PixelWriter write{layout, grid, row0, d.P, d.Q};
    const ChannelStrides to = channel_strides(d.layout, d.K, grid.rows * grid.cols);
    const int64_t step = grid.step_w * to.pixel;
    alignas(64) T out[KB * tile];
    for (int64_t m0 = 0; m0 < pixels(); m0 += tile) {
      pixel_tile<T, KB, U>(staged + m0, layout.tap_offsets.data(), taps, packed + block * taps * KB, out);
      for (int64_t k = 0; k < kcount; ++k) {
        const int64_t channel = g * Kg + k0 + k;
        T* y_plane = y + channel_start(d.layout, n, channel, d.K, grid.rows * grid.cols);
        const T b = bias ? bias[channel] : T(0);
        const T* values = out + k * tile;
        write(m0, tile, [&](int64_t j, int64_t index, int64_t length) {
          T* to_first = y_plane + index * to.pixel;
          if (step == 1) {
            for (int64_t i = 0; i < length; ++i) to_first[i] = values[j + i] + b;
          } else {
            for (int64_t i = 0; i < length; ++i) to_first[i * step] = values[j + i] + b;
          }
        });
      }
    }
  }
};

// Channels-last stems: few input channels (the image's 3), one group, dense outputs. A task (image, band of
// output rows) copies the band's input rows as they are, pixels x channels, zero-padded, and channel tiles read
// every window there: tap (c, r, s) sits at a fixed offset from the window's first pixel. No transposes of
// 3-channel rows into planes (a fifth of the staged path's time), no halo columns.
constexpr int64_t kMaxPaddedRowsChannels = 4;
constexpr int64_t kPaddedRowsBytes = 64 << 10;

inline bool padded_rows_apply(const DirectProblem& d, const OutputGrid& grid) {
  const bool dense = grid.step_h == 1 && grid.step_w == 1 && grid.first_h == 0 && grid.first_w == 0 &&
                     grid.cols == d.Q;
  return d.layout == Layout::channels_last && d.groups == 1 && d.C <= kMaxPaddedRowsChannels && d.K >= 8 && dense &&
         d.offset_h >= 0 && d.offset_w >= 0;
}

// channel_tile for J outputs `step` values apart (Step: the same known at compile time, so that the loads'
// offsets are immediates; 0: step as given). The last tile of a row repeats its last output.
template <typename T, int KV, int J, int Step>
void channel_tile_row(const T* x, int64_t step, int64_t count, const int64_t* tap_offsets, int64_t taps, const T* w,
                      int64_t w_block_stride, T* out) {
  if (count < J) {
    int64_t pixels[J];
    for (int j = 0; j < J; ++j) pixels[j] = std::min<int64_t>(j, count - 1) * step;
    return channel_tile<T, KV, J>(x, pixels, tap_offsets, taps, w, w_block_stride, out);
  }
  if constexpr (Step > 0) {
    channel_tile_at<T, KV, J>(x, [](int j) { return j * Step; }, tap_offsets, taps, w, w_block_stride, out);
  } else {
    channel_tile_at<T, KV, J>(x, [step](int j) { return j * step; }, tap_offsets, taps, w, w_block_stride, out);
  }
}

// Output row p's outputs, block of KV vectors of output channels at a time, J outputs per tile; `rows` holds the
// padded input rows from p's first, VW pixels each.
template <typename T, int KV, int J>
void padded_row_tiles(const DirectProblem& d, const T* rows, int64_t VW, const int64_t* tap_offsets, int64_t taps,
                      const T* packed, int64_t block, const T* biases, T* y_row) {
  using S = Simd<T>;
  constexpr int64_t L = S::lanes;
  const int64_t k0 = block * L, kcount = std::min<int64_t>(KV * L, d.K - k0), step = d.stride_w * d.C;
  alignas(64) T out[J * KV * L];
  for (int64_t q0 = 0; q0 < d.Q; q0 += J) {
    const int64_t count = std::min<int64_t>(J, d.Q - q0);
    const T* first = rows + q0 * step;
    const T* w = packed + block * taps * L;
    switch (step) {  // the stems of real models: 3 channels at strides 2 and 4
      case 6: channel_tile_row<T, KV, J, 6>(first, step, count, tap_offsets, taps, w, taps * L, out); break;
      case 12: channel_tile_row<T, KV, J, 12>(first, step, count, tap_offsets, taps, w, taps * L, out); break;
      default: channel_tile_row<T, KV, J, 0>(first, step, count, tap_offsets, taps, w, taps * L, out);
    }
    for (int64_t j = 0; j < count; ++j) {
      T* to = y_row + (q0 + j) * d.K + k0;
      if (kcount == KV * L) {
        for (int v = 0; v < KV; ++v)
          S::store(to + v * L, S::load(out + (j * KV + v) * L) + S::load(biases + k0 + v * L));
      } else {
        for (int64_t k = 0; k < kcount; ++k) to[k] = out[j * KV * L + k] + biases[k0 + k];
      }
    }
  }
}

template <typename T>
void padded_rows_correlation(const DirectProblem& d, const T* x, const std::vector<T>& packed, const T* bias, T* y) {
  constexpr int64_t L = Simd<T>::lanes;
  constexpr int J2 = kAccumulators / 2, J1 = kAccumulators;
  const int64_t C = d.C, taps = C * d.R * d.S, blocks = div_up(d.K, L);
  const int64_t VW = virtual_extent(d.Q, d.stride_w, d.S, d.dilation_w);
  const int64_t w_first = std::min(d.offset_w, VW), w_last = std::clamp(d.offset_w + d.W, w_first, VW);
  std::vector<int64_t> tap_offsets(taps);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < d.R; ++r)
      for (int64_t s = 0; s < d.S; ++s)
        tap_offsets[(c * d.R + r) * d.S + s] = (r * d.dilation_h * VW + s * d.dilation_w) * C + c;
  std::vector<T> biases(blocks * L, T(0));
  if (bias != nullptr) std::copy(bias, bias + d.K, biases.begin());
  // Output rows per band: its padded rows near kPaddedRowsBytes, and at least four tasks per thread.
  const int64_t row_bytes = d.stride_h * VW * C * static_cast<int64_t>(sizeof(T));
  int64_t band = std::clamp<int64_t>(kPaddedRowsBytes / std::max<int64_t>(1, row_bytes), 1, d.P);
  while (band > 1 && d.N * div_up(d.P, band) < 4 * at::get_num_threads()) band = div_up(band, 2);
  const int64_t bands = div_up(d.P, band);
  parallel_tasks(d.N * bands, band * d.Q * taps * d.K, [&](int64_t task) {
    const int64_t n = task / bands, p0 = task % bands * band, count = std::min(band, d.P - p0);
    const int64_t v0 = p0 * d.stride_h, rows = virtual_extent(count, d.stride_h, d.R, d.dilation_h);
    thread_local std::vector<T> padded;
    padded.resize(rows * VW * C);
    for (int64_t i = 0; i < rows; ++i) {  // virtual row v0 + i is real row v0 + i - offset_h
      T* row = padded.data() + i * VW * C;
      const int64_t h = v0 + i - d.offset_h;
      if (h < 0 || h >= d.H) {
        std::fill(row, row + VW * C, T(0));
        continue;
      }
      std::fill(row, row + w_first * C, T(0));
      std::copy_n(x + ((n * d.H + h) * d.W + w_first - d.offset_w) * C, (w_last - w_first) * C, row + w_first * C);
      std::fill(row + w_last * C, row + VW * C, T(0));
    }
    for (int64_t p = p0; p < p0 + count; ++p) {
      const T* first = padded.data() + (p - p0) * d.stride_h * VW * C;
      T* y_row = y + (n * d.P + p) * d.Q * d.K;
      int64_t block = 0;
      for (; block + 1 < blocks; block += 2)
        padded_row_tiles<T, 2, J2>(d, first, VW, tap_offsets.data(), taps, packed.data(), block, biases.data(), y_row);
      if (block < blocks)
        padded_row_tiles<T, 1, J1>(d, first, VW, tap_offsets.data(), taps, packed.data(), block, biases.data(), y_row);
    }
  });
}

// Output channels per pixel_tile block: all of a small group, else 8 at a time.
constexpr int64_t kMaxPixelBlock = 8;

template <typename T, int KB>
void run_pixel_blocks(const Runner<T>& runner, const T* staged, const T* packed, int64_t blocks, int64_t n,
                      int64_t g, int64_t row0, T* y) {
  for (int64_t block = 0; block < blocks; ++block) runner.template pixel_block<KB>(staged, packed, block, n, g, row0, y);
}

// Whole planes that fit one staged block (7x7-14x14 outputs of wide layers): every image is staged once, and
// a task owns a block of output channels across all the images, so its packed weights (taps x 32 channels,
// up to 590 KB) are read from L2 for every tile instead of streaming from L3 per image, and tiles of J outputs
// run across image boundaries (512 channels on 7x7 planes, batch 8: 1.2x faster than a task per image).
constexpr int64_t kMaxStagedImagesBytes = 64 << 20;

template <typename T>
void channel_tiles_across_images(const DirectProblem& d, const T* x, const std::vector<T>& packed,
                                 int64_t group_packed, int64_t blocks, const T* bias, T* y, const OutputGrid& grid) {
  const StagedLayout layout = make_layout(d, d.P);
  const int64_t Cg = d.C_per_group(), taps = layout.tap_offsets.size(), pairs = div_up(blocks, 2);
  std::vector<T> staged(d.N * d.groups * layout.size, T(0));  // image n, group g at (g * N + n) * layout.size
  parallel_tasks(d.N * d.groups, layout.size, [&](int64_t task) {
    const int64_t g = task / d.N, n = task % d.N;
    stage(d, layout, x + channel_start(d.layout, n, g * Cg, d.C, d.H * d.W), 0, staged.data() + task * layout.size);
  });
  const Runner<T> runner{d, layout, grid, bias};
  // Few block pairs (32-64 channels) also split the images, so that every thread has work; each output's sum
  // is the same whichever task computes it.
  const int64_t image_chunks = std::clamp<int64_t>(div_up(2 * at::get_num_threads(), d.groups * pairs), 1, d.N);
  parallel_tasks(d.groups * pairs * image_chunks, d.N * d.P * d.Q * 2 * Simd<T>::lanes * taps / image_chunks,
                 [&](int64_t task) {
    const int64_t chunk = task % image_chunks, g = task / image_chunks / pairs, block = task / image_chunks % pairs * 2;
    const int64_t n0 = chunk * d.N / image_chunks, images = (chunk + 1) * d.N / image_chunks - n0;
    runner.channel_blocks(staged.data() + (g * d.N + n0) * layout.size, layout.size, packed.data() + g * group_packed,
                          block, std::min(block + 2, blocks), n0, images, g, 0, y);
  });
}

template <typename T>
void direct_correlation(const DirectProblem& d, const T* x, const T* w, WeightOrder order, const T* bias, T* y,
                        const OutputGrid& grid) {
  using S = Simd<T>;
  const int64_t Kg = d.K_per_group(), Cg = d.C_per_group();
  if (d.N == 0 || d.K == 0 || d.P == 0 || d.Q == 0) return;
  if (padded_rows_apply(d, grid)) return padded_rows_correlation(d, x, pack_weights(d, w, order, S::lanes), bias, y);
  const Kernel kernel = choose_kernel(d, S::lanes, sizeof(T));
  if (kernel == Kernel::channel_vectors) return channel_vectors(d, x, w, order, bias, y, grid);
  const int64_t block_size = kernel == Kernel::channel_tile ? S::lanes : std::min(Kg, kMaxPixelBlock);
  const int64_t blocks = div_up(Kg, block_size);
  const std::vector<T> packed = pack_weights(d, w, order, block_size);
  const int64_t group_packed = blocks * Cg * d.R * d.S * block_size;

  // Rows per task: the staged block near kStagedBytes, but enough tasks to keep every thread busy.
  int64_t rows = staged_rows(d, 0, sizeof(T));
  if (kernel == Kernel::channel_tile && rows >= d.P &&
      d.N * d.groups * make_layout(d, d.P).size * sizeof(T) <= kMaxStagedImagesBytes)
    return channel_tiles_across_images(d, x, packed, group_packed, blocks, bias, y, grid);
  const int64_t wanted_tasks = 4 * at::get_num_threads();
  while (rows > 1 && d.N * d.groups * div_up(d.P, rows) < wanted_tasks) rows = div_up(rows, 2);
  const StagedLayout layout = make_layout(d, rows);
  const int64_t row_blocks = div_up(d.P, rows);
  const Runner<T> runner{d, layout, grid, bias};
  // With no input channels (Cg = 0) there are no taps: every output is the bias (or zero).
  const int64_t task_work = std::max<int64_t>(1, rows * d.Q * Kg * Cg * d.R * d.S);

  at::parallel_for(0, d.N * d.groups * row_blocks, std::max<int64_t>(1, kMinWorkPerThread / task_work),
                   [&](int64_t begin, int64_t end) {
    std::vector<T> staged(layout.size, T(0));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row0 = task % row_blocks * rows, ng = task / row_blocks, g = ng % d.groups, n = ng / d.groups;
      stage(d, layout, x + channel_start(d.layout, n, g * Cg, d.C, d.H * d.W), row0, staged.data());
      const T* group_weights = packed.data() + g * group_packed;
      if (kernel == Kernel::channel_tile) {
        runner.channel_blocks(staged.data(), 0, group_weights, 0, blocks, n, 1, g, row0, y);
        continue;
      }
      switch (block_size) {
#define TORCHCORR_PIXEL_CASE(KB) \
  case KB: run_pixel_blocks<T, KB>(runner, staged.data(), group_weights, blocks, n, g, row0, y); break;
        TORCHCORR_PIXEL_CASE(1) TORCHCORR_PIXEL_CASE(2) TORCHCORR_PIXEL_CASE(3) TORCHCORR_PIXEL_CASE(4)
        TORCHCORR_PIXEL_CASE(5) TORCHCORR_PIXEL_CASE(6) TORCHCORR_PIXEL_CASE(7) TORCHCORR_PIXEL_CASE(8)
#undef TORCHCORR_PIXEL_CASE
      }
    }
  });
}

// The stride phases of a strided layer's input gradient: a depthwise layer on small planes all at once
// (channel_vectors.h), else the direct engine one phase after another.
template <typename T>
void input_grad_phases(const std::vector<InputGradPhase<T>>& phases, const T* gy, T* gx) {
  if (channel_vector_phases_apply(phases)) return channel_vector_phases(phases, gy, gx);
  for (const auto& phase : phases)
    direct_correlation<T>(phase.d, gy, phase.taps, WeightOrder::as_given, nullptr, gx, phase.grid);
}

TORCHCORR_ISA_END
