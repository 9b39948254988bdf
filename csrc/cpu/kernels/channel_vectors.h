// Depthwise correlation with channels across the vector lanes (forward pass, input gradient and, at the end,
// weight gradient of depthwise layers on small planes, and in channels last of depthwise layers and of grouped
// layers whose groups divide a vector), compiled once per instruction-set level (isa.h). The problem is the
// direct engine's (../direct_corr.h); for depthwise layers
//   y[n,c,p,q] = bias[c] + sum_{r,s} V[n,c](p*sh + r*dh, q*sw + s*dw) * w[c,r,s],
// for groups of G channels the sum runs over the G input channels of c's group too.
//
// Why: on the 7x7-28x28 planes of modern CNNs a row of pixels fills few vector lanes (7 of 16 on 7x7), and
// the pixel tiles of direct_correlation.h spend most lanes on halo columns. With L channels in the lanes every
// lane is a real output, whatever the plane size.
//
// Work split: one task per (image n, block of L channels, band of output rows). The task stages its channels'
// virtual input rows (the padded planes, or the cropped ones of an input gradient) as [row][column][L], zero
// outside the real planes: transposed from planes, which are staged whole (small planes only), or copied from
// channels last, a band of rows at a time (any plane size); then for each output row and run of J outputs it
// keeps J vectors in registers and, per tap, loads the tap's L weights once and J staged vectors (with 3, 5 or
// 7 taps per kernel row and dilation 1, each of a row's input vectors once for all its taps). The J x L
// results go straight to channels-last outputs, or are transposed back into the output planes on `grid`. A
// whole block of L channels of a kernel up to 3 wide in channels last reads x in place instead
// (channel_vector_rows_in_place).
// Memory: x read once (plus halo rows per band), y written once; the staged rows stay in L1/L2.
// Each output is one task's sum over the taps in (r, s) order: the same bits whatever the thread count.
#pragma once

#include "../cpu_kernel_utils.h"
#include "../direct_corr.h"
#include "isa.h"
#include "simd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

TORCHCORR_ISA_BEGIN

// Depthwise problems whose staged planes are at most this large run with channels across the lanes: up to
// 28x28 planes for 3x3 kernels, 56x56 for 5x5 and larger, whose taps amortise the transposes (measured on
// AVX-512, 2 threads: 56x56 planes were 1.2x faster than the pixel tiles at 7x7, 0.85x at 3x3).
constexpr int64_t kChannelVectorStagedBytes = 96 << 10, kChannelVectorStagedBytesLargeKernel = 320 << 10;

// The virtual input rows and columns the outputs read.
inline int64_t virtual_extent(int64_t outputs, int64_t stride, int64_t taps, int64_t dilation) {
  return (outputs - 1) * stride + (taps - 1) * dilation + 1;
}

// Planes are staged whole, so they must be small; channels-last input is staged a band of rows at a time.
inline bool channel_vectors_apply(const DirectProblem& d, int64_t lanes, int64_t element_size) {
  if (!channel_vectors_fit(d)) return false;
  if (d.layout == Layout::channels_last) return true;
  const int64_t rows = virtual_extent(d.P, d.stride_h, d.R, d.dilation_h);
  const int64_t cols = virtual_extent(d.Q, d.stride_w, d.S, d.dilation_w);
  const int64_t limit = d.R * d.S >= 25 ? kChannelVectorStagedBytesLargeKernel : kChannelVectorStagedBytes;
  return rows * cols * lanes * element_size <= limit;
}

// Groups of G = C/groups = K/groups channels, G dividing L (regnet's groups of 8), in channels last, kernels
// up to 3 wide, column stride 1 or 2 and dilation 1: a block of L output channels holds L / G whole groups, and
// for input channel c of the group, lane l reads the staged vector permuted so that it holds channel
// (l / G) * G + c (every lane a real output; the pixel tiles measured 0.3-0.8x of torch on regnet's grouped
// layers).
inline bool grouped_channel_vectors_apply(const DirectProblem& d, int64_t lanes) {
  const int64_t G = d.C_per_group();
  return d.layout == Layout::channels_last && G > 1 && G == d.K_per_group() && lanes % G == 0 && d.S <= 3 &&
         d.dilation_w == 1 && d.stride_w <= 2 && channel_vector_sizes_fit(d);
}

// G permutations of L lanes: permutation c moves the lane of channel (l / G) * G + c, input channel c of lane
// l's group, to lane l.
template <typename T>
std::vector<typename Simd<T>::Index> group_permutations(int64_t G) {
  constexpr int64_t L = Simd<T>::lanes;
  std::vector<typename Simd<T>::Index> lanes(G * L);
  for (int64_t c = 0; c < G; ++c)
    for (int64_t l = 0; l < L; ++l) lanes[c * L + l] = l / G * G + c;
  return lanes;
}

// The output columns [qa, qb) whose windows lie inside the real planes (no padding read).
inline std::pair<int64_t, int64_t> columns_inside(const DirectProblem& d) {
  const int64_t qa = d.offset_w <= 0 ? 0 : std::min(d.Q, div_up(d.offset_w, d.stride_w));
  const int64_t last_start = d.W - 1 - (d.S - 1) * d.dilation_w + d.offset_w;  // q * stride_w at most this
  return {qa, last_start < 0 ? qa : std::clamp<int64_t>(last_start / d.stride_w + 1, qa, d.Q)};
}

// Output rows per task: the whole plane, or from channels-last input a band whose staged rows take about
// kChannelVectorBandBytes (a 112x112 plane staged whole would be 0.8 MB per 16 channels).
constexpr int64_t kChannelVectorBandBytes = 64 << 10;

inline int64_t channel_vector_band(const DirectProblem& d, int64_t lanes, int64_t element_size) {
  if (d.layout == Layout::planes) return d.P;
  const int64_t row_bytes = virtual_extent(d.Q, d.stride_w, d.S, d.dilation_w) * lanes * element_size;
  const int64_t virtual_rows = kChannelVectorBandBytes / row_bytes;
  return std::clamp<int64_t>((virtual_rows - (d.R - 1) * d.dilation_h - 1) / d.stride_h + 1, 1, d.P);
}

// out[j] = bias + sum_{r,s} w[r][s] * x[(r*row_step + s*col_step + j*stride_step) lanes] for j < J; x points
// at the staged row p*sh, column q0*sw. Per tap: one weight vector and J input vectors.
template <typename T, int J>
void channel_vector_run(const T* x, const T* w, int64_t R, int64_t S, int64_t row_step, int64_t col_step,
                        int64_t stride_step, typename Simd<T>::Vec bias, typename Simd<T>::Vec* out) {
  using V = Simd<T>;
  typename V::Vec acc[J];
  for (int j = 0; j < J; ++j) acc[j] = bias;
  for (int64_t r = 0; r < R; ++r) {
    const T* row = x + r * row_step;
    for (int64_t s = 0; s < S; ++s, w += V::lanes) {
      const typename V::Vec wv = V::load(w);
      const T* tap = row + s * col_step;
      for (int j = 0; j < J; ++j) acc[j] += wv * V::load(tap + j * stride_step);
    }
  }
  for (int j = 0; j < J; ++j) out[j] = acc[j];
}

// The same for KS taps per row, column stride SW and dilation 1 (the depthwise layers of real models, and the
// 1-4 taps of their input gradients' stride phases): a row's (J - 1) * SW + KS input vectors are loaded once
// and each serves up to KS taps.
template <typename T, int J, int KS, int SW, bool Staged>
void channel_vector_run_rows(const T* x, const T* w, int64_t R, int64_t, int64_t row_step, int64_t col_step, int64_t,
                             typename Simd<T>::Vec bias, typename Simd<T>::Vec* out) {
  using V = Simd<T>;
  constexpr int X = (J - 1) * SW + KS;
  if constexpr (Staged) col_step = V::lanes;  // a constant: the loads' offsets are immediates
  typename V::Vec acc[J];
  for (int j = 0; j < J; ++j) acc[j] = bias;
  for (int64_t r = 0; r < R; ++r, w += KS * V::lanes) {
    typename V::Vec xv[X];
    for (int i = 0; i < X; ++i) xv[i] = V::load(x + r * row_step + i * col_step);
    for (int s = 0; s < KS; ++s) {
      const typename V::Vec wv = V::load(w + s * V::lanes);
      for (int j = 0; j < J; ++j) acc[j] += wv * xv[j * SW + s];
    }
  }
  for (int j = 0; j < J; ++j) out[j] = acc[j];
}

template <typename T, int J>
using ChannelVectorRun = void (*)(const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                  typename Simd<T>::Vec, typename Simd<T>::Vec*);

// Staged: x is a staged row (a vector per column); else channels-last input read in place.
template <typename T, int J>
ChannelVectorRun<T, J> choose_channel_vector_run(const DirectProblem& d, bool staged = true) {
  if (d.dilation_w == 1 && (d.stride_w == 1 || d.stride_w == 2)) {
#define TORCHCORR_ROWS_CASE(KS)                                                                     \
  if (d.S == KS && d.stride_w == 1)                                                                 \
    return staged ? &channel_vector_run_rows<T, J, KS, 1, true> : &channel_vector_run_rows<T, J, KS, 1, false>; \
  if (d.S == KS)                                                                                    \
    return staged ? &channel_vector_run_rows<T, J, KS, 2, true> : &channel_vector_run_rows<T, J, KS, 2, false>;
    TORCHCORR_ROWS_CASE(1) TORCHCORR_ROWS_CASE(2) TORCHCORR_ROWS_CASE(3) TORCHCORR_ROWS_CASE(4)
    TORCHCORR_ROWS_CASE(5) TORCHCORR_ROWS_CASE(7)
#undef TORCHCORR_ROWS_CASE
  }
  return &channel_vector_run<T, J>;
}

// The grouped form of channel_vector_run_rows: out[j] = bias + sum_{r,c,s} w[r][c][s] * x_c[r][j*SW + s], where
// x_c is the staged row's vector permuted by lanes[c] (G permutations of L lanes). A row's X input vectors are
// loaded once and permuted once per input channel of the group; JJ outputs at a time, as registers allow.
template <typename T, int JJ, int KS, int SW>
void grouped_channel_vector_outputs(const T* x, const T* w, int64_t R, int64_t G, int64_t row_step,
                                    const typename Simd<T>::Index* lanes, typename Simd<T>::Vec bias,
                                    typename Simd<T>::Vec* out) {
  using V = Simd<T>;
  constexpr int X = (JJ - 1) * SW + KS;
  typename V::Vec acc[JJ];
  for (int j = 0; j < JJ; ++j) acc[j] = bias;
  for (int64_t r = 0; r < R; ++r) {
    typename V::Vec xv[X];
    for (int i = 0; i < X; ++i) xv[i] = V::load(x + r * row_step + i * V::lanes);
    for (int64_t c = 0; c < G; ++c, w += KS * V::lanes) {
      typename V::Mask permutation;
      std::memcpy(&permutation, lanes + c * V::lanes, sizeof(permutation));
      typename V::Vec xc[X];
      for (int i = 0; i < X; ++i) xc[i] = V::permute(xv[i], permutation);
      for (int s = 0; s < KS; ++s) {
        const typename V::Vec wv = V::load(w + s * V::lanes);
        for (int j = 0; j < JJ; ++j) acc[j] += wv * xc[j * SW + s];
      }
    }
  }
  for (int j = 0; j < JJ; ++j) out[j] = acc[j];
}

template <typename T, int J>
using GroupedChannelVectorRun = void (*)(const T*, const T*, int64_t, int64_t, int64_t, const typename Simd<T>::Index*,
                                         typename Simd<T>::Vec, typename Simd<T>::Vec*);

// J outputs, in runs of J / 2 at column stride 2 (the inputs and their permutations must fit the registers).
template <typename T, int J, int KS, int SW>
void grouped_channel_vector_run(const T* x, const T* w, int64_t R, int64_t G, int64_t row_step,
                                const typename Simd<T>::Index* lanes, typename Simd<T>::Vec bias,
                                typename Simd<T>::Vec* out) {
  constexpr int JJ = SW == 1 ? J : J / 2;
  for (int j0 = 0; j0 < J; j0 += JJ)
    grouped_channel_vector_outputs<T, JJ, KS, SW>(x + j0 * SW * Simd<T>::lanes, w, R, G, row_step, lanes, bias,
                                                  out + j0);
}

template <typename T, int J>
GroupedChannelVectorRun<T, J> choose_grouped_channel_vector_run(const DirectProblem& d) {
#define TORCHCORR_GROUPED_CASE(KS)                                                                   \
  if (d.S == KS)                                                                                     \
    return d.stride_w == 1 ? &grouped_channel_vector_run<T, J, KS, 1> : &grouped_channel_vector_run<T, J, KS, 2>;
  TORCHCORR_GROUPED_CASE(1) TORCHCORR_GROUPED_CASE(2) TORCHCORR_GROUPED_CASE(3)
#undef TORCHCORR_GROUPED_CASE
  TORCH_INTERNAL_ASSERT(false, "grouped channel vectors: kernels up to 3 wide");
  return nullptr;
}

// dst[i][0..channels) = channels of pixel i at src (strides s), for i < pixels: a transpose from planes, a copy
// per pixel from channels last.
template <typename T>
void gather_channel_vectors(const T* src, ChannelStrides s, int64_t channels, int64_t pixels, T* dst) {
  constexpr int64_t L = Simd<T>::lanes;
  if (s.pixel == 1) return transpose(src, s.channel, channels, pixels, dst, L);
  for (int64_t i = 0; i < pixels; ++i) {
    if (channels == L) {
      Simd<T>::store(dst + i * L, Simd<T>::load(src + i * s.pixel));
    } else {
      std::copy(src + i * s.pixel, src + i * s.pixel + channels, dst + i * L);
    }
  }
}

// The inverse: channels of pixel i at dst (strides s) = src[i][0..channels).
template <typename T>
void scatter_channel_vectors(const T* src, int64_t pixels, int64_t channels, T* dst, ChannelStrides s) {
  constexpr int64_t L = Simd<T>::lanes;
  if (s.pixel == 1) return transpose(src, L, pixels, channels, dst, s.channel);
  for (int64_t i = 0; i < pixels; ++i) {
    if (channels == L) {
      Simd<T>::store(dst + i * s.pixel, Simd<T>::load(src + i * L));
    } else {
      std::copy(src + i * L, src + i * L + channels, dst + i * s.pixel);
    }
  }
}

// Virtual rows [v0, v0 + rows) (../direct_corr.h) of `channels` <= L channels of one image, whose first channel
// is at x, as [row][column][L]: zero outside the real planes and in the lanes past `channels`, with
// `slack_columns` more zero columns at the end.
template <typename T>
void stage_channels(const DirectProblem& d, const T* x, int64_t channels, int64_t v0, int64_t rows,
                    int64_t slack_columns, std::vector<T>& staged) {
  constexpr int64_t L = Simd<T>::lanes;
  const ChannelStrides s = channel_strides(d.layout, d.C, d.H * d.W);
  const int64_t VW = virtual_extent(d.Q, d.stride_w, d.S, d.dilation_w);
  // Virtual row i is real row i - offset_h (likewise columns): real rows [h0, h1) and columns [w0, w1) land.
  const int64_t h0 = std::max<int64_t>(0, v0 - d.offset_h), h1 = std::min(d.H, v0 + rows - d.offset_h);
  const int64_t w0 = std::max<int64_t>(0, -d.offset_w), w1 = std::min(d.W, VW - d.offset_w);
  if (channels < L || h1 <= h0 || w1 <= w0) {
    staged.assign((rows * VW + slack_columns) * L, T(0));
  } else {  // every lane of the real pixels is written below: zero only the margins
    staged.resize((rows * VW + slack_columns) * L);
    const int64_t first = h0 + d.offset_h - v0, last = h1 + d.offset_h - v0;  // staged rows holding real ones
    const int64_t left = (w0 + d.offset_w) * L, right = (w1 + d.offset_w) * L;
    std::fill(staged.begin(), staged.begin() + first * VW * L, T(0));
    for (int64_t row = first; row < last; ++row) {
      std::fill(staged.begin() + row * VW * L, staged.begin() + row * VW * L + left, T(0));
      std::fill(staged.begin() + row * VW * L + right, staged.begin() + (row + 1) * VW * L, T(0));
    }
    std::fill(staged.begin() + last * VW * L, staged.end(), T(0));
  }
  for (int64_t h = h0; h < h1; ++h) {
    T* dst = staged.data() + ((h + d.offset_h - v0) * VW + w0 + d.offset_w) * L;
    gather_channel_vectors(x + (h * d.W + w0) * s.pixel, s, channels, w1 - w0, dst);
  }
}

// Output rows [p0, p0 + rows) of one block of L channels read straight from channels-last input (image: its
// first channel at pixel 0) into channels-last y (out: the same channel at output pixel 0). Runs whose windows
// lie inside the image read it in place; the others (at the borders) copy their windows, zero outside, first.
// Reading in place lets the loads of x overlap the arithmetic, which staging a band first does not (measured
// 1.4x on 96 channels of 112x112 with stride 2, within noise on 28x28-56x56 planes). Kernels up to 3 wide
// only: wider ones copy the windows of most runs at the borders of 7x7-14x14 planes (5x5 and 7x7 layers
// measured 0.7-0.8x of the staged band there).
template <typename T, int J>
void channel_vector_rows_in_place(const DirectProblem& d, const T* image, const T* weights, int64_t weight_stride,
                                  const T* biases, int64_t blocks, ChannelVectorRun<T, J> run_outputs, int64_t p0,
                                  int64_t rows, T* out) {
  using S = Simd<T>;
  constexpr int64_t L = S::lanes;
  const int64_t pixel = d.C, window_cols = (J - 1) * d.stride_w + (d.S - 1) * d.dilation_w + 1;
  thread_local std::vector<T> window;
  window.resize(d.R * window_cols * L);
  alignas(64) typename S::Vec run[J];
  // The columns whose windows lie inside the image, [qa, qb). When they hold a run, the runs there read in place
  // (the last one moved back to end at qb) and the border columns are computed one at a time with the taps that
  // land in the image (copying the border runs' windows cost a third of a 56x56 plane's time).
  const auto [qa, qb] = columns_inside(d);
  for (int64_t p = p0; p < p0 + rows; ++p) {
    const int64_t h0 = p * d.stride_h - d.offset_h;  // the real row of the window's first tap row
    // The tap rows [r0, r1) that land in the image (the others read zeros: they are skipped in place).
    const int64_t r0 = std::min(d.R, div_up(std::max<int64_t>(0, -h0), d.dilation_h));
    const int64_t r1 = std::max(r0, std::min(d.R, div_up(d.H - h0, d.dilation_h)));
    T* const out_row = out + p * d.Q * pixel;
    if (r0 < r1 && qb - qa >= J) {
      const T* const first_row = image + (h0 + r0 * d.dilation_h) * d.W * pixel;
      const auto one_output = [&](int64_t q) {
        for (int64_t b = 0; b < blocks; ++b) {
          typename S::Vec acc = S::load(biases + b * L);
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t s = 0; s < d.S; ++s) {
              const int64_t w = q * d.stride_w - d.offset_w + s * d.dilation_w;
              if (w >= 0 && w < d.W) {
                acc += S::load(weights + b * weight_stride + (r * d.S + s) * L) *
                       S::load(first_row + ((r - r0) * d.dilation_h * d.W + w) * pixel + b * L);
              }
            }
          S::store(out_row + q * pixel + b * L, acc);
        }
      };
      for (int64_t q = 0; q < qa; ++q) one_output(q);
      for (int64_t q0 = qa; q0 < qb; q0 += J) {
        const int64_t q1 = std::min(q0, qb - J);
        for (int64_t b = 0; b < blocks; ++b) {  // every block of the run's pixels: their channels read in turn
          run_outputs(first_row + (q1 * d.stride_w - d.offset_w) * pixel + b * L,
                      weights + b * weight_stride + r0 * d.S * L, r1 - r0, d.S, d.dilation_h * d.W * pixel,
                      d.dilation_w * pixel, d.stride_w * pixel, S::load(biases + b * L), run);
          for (int j = 0; j < J; ++j) S::store(out_row + (q1 + j) * pixel + b * L, run[j]);
        }
      }
      for (int64_t q = qb; q < d.Q; ++q) one_output(q);
      continue;
    }
    for (int64_t q0 = 0; q0 < d.Q; q0 += J) {
      const int64_t w0 = q0 * d.stride_w - d.offset_w;
      for (int64_t b = 0; b < blocks; ++b) {
        const typename S::Vec bias = S::load(biases + b * L);
        const T* const block_weights = weights + b * weight_stride;
        if (r0 == r1) {
          for (int j = 0; j < J; ++j) run[j] = bias;
        } else if (w0 >= 0 && w0 + window_cols <= d.W) {
          run_outputs(image + ((h0 + r0 * d.dilation_h) * d.W + w0) * pixel + b * L, block_weights + r0 * d.S * L,
                      r1 - r0, d.S, d.dilation_h * d.W * pixel, d.dilation_w * pixel, d.stride_w * pixel, bias, run);
        } else {
          for (int64_t r = 0; r < d.R; ++r) {
            const int64_t h = h0 + r * d.dilation_h;
            for (int64_t t = 0; t < window_cols; ++t) {
              const int64_t w = w0 + t;
              const bool inside = h >= 0 && h < d.H && w >= 0 && w < d.W;
              S::store(window.data() + (r * window_cols + t) * L,
                       inside ? S::load(image + (h * d.W + w) * pixel + b * L) : S::zero());
            }
          }
          run_outputs(window.data(), block_weights, d.R, d.S, window_cols * L, d.dilation_w * L, d.stride_w * L, bias,
                      run);
        }
        for (int64_t j = 0; j < std::min<int64_t>(J, d.Q - q0); ++j)
          S::store(out_row + (q0 + j) * pixel + b * L, run[j]);
      }
    }
  }
}

template <typename T>
void channel_vectors(const DirectProblem& d, const T* x, const T* w, WeightOrder order, const T* bias, T* y,
                     const OutputGrid& grid) {
  using S = Simd<T>;
  constexpr int64_t L = S::lanes;
  constexpr int J = kAccumulators / 3;  // outputs per run: J accumulators, and room for a row's inputs
  const int64_t C = d.C, G = d.C_per_group(), RS = d.R * d.S, blocks = div_up(C, L), taps = RS * G;
  // packed[block][r][c][s][0..L) = the weight of output channel k = block*L + l for tap (r, s) of input channel c
  // of its group (flipped for the adjoint), 0 past C.
  std::vector<T> packed(blocks * taps * L, T(0)), biases(blocks * L, T(0));
  // No division in the inner loops (divisions per weight made 768 channels of 7x7 kernels on 7x7 planes
  // 1.3-1.5x slower).
  const WeightStrides ws = weight_strides(d, order);
  for (int64_t k = 0; k < C; ++k) {
    const int64_t group_first = k / G * G, in_group = k % G;
    T* const lane = packed.data() + k / L * taps * L + k % L;
    for (int64_t c = 0; c < G; ++c) {
      const T* const kernel = order == WeightOrder::as_given ? w + k * ws.out + c * ws.in
                                                             : w + (group_first + c) * ws.out + in_group * ws.in;
      for (int64_t r = 0; r < d.R; ++r)
        for (int64_t s = 0; s < d.S; ++s) {
          const int64_t rs = r * d.S + s, tap = order == WeightOrder::as_given ? rs : RS - 1 - rs;
          lane[((r * G + c) * d.S + s) * L] = kernel[tap * ws.tap];
        }
    }
    if (bias != nullptr) biases[k] = bias[k];
  }
  const std::vector<typename S::Index> group_lanes = group_permutations<T>(G);
  const int64_t VW = virtual_extent(d.Q, d.stride_w, d.S, d.dilation_w), plane_out = grid.rows * grid.cols;
  const int64_t band = channel_vector_band(d, L, sizeof(T)), bands = div_up(d.P, band);
  const ChannelStrides out_strides = channel_strides(d.layout, C, plane_out);
  const bool dense = grid.step_h == 1 && grid.step_w == 1 && grid.first_h == 0 && grid.first_w == 0 &&
                     grid.cols == d.Q;
  const ChannelVectorRun<T, J> run_outputs = choose_channel_vector_run<T, J>(d);
  const ChannelVectorRun<T, J> run_in_place = choose_channel_vector_run<T, J>(d, false);
  const GroupedChannelVectorRun<T, J> run_groups = G > 1 ? choose_grouped_channel_vector_run<T, J>(d) : nullptr;

  // Channels-last whole blocks of kernels up to 3 wide read x in place, all of them in one task per band of rows:
  // a run's pixels have every block of their channels read in turn, a few KB together, instead of one 64-byte
  // line a pixel apart (inside a model, where x is not in cache, the pixel-apart reads were 0.7x of torch). Rows
  // whose inside columns hold no run (7x7 planes) are staged instead: in place they would copy every window
  // (960 channels on 7x7: staged 1.15x faster, measured on an AMD EPYC).
  const auto [first_inside, end_inside] = columns_inside(d);
  const int64_t in_place_blocks = dense && d.layout == Layout::channels_last && G == 1 && d.S <= 3 &&
                                  end_inside - first_inside >= J ? C / L : 0;
  int64_t in_place_band = d.P;
  while (in_place_band > 1 && d.N * div_up(d.P, in_place_band) < 4 * at::get_num_threads())
    in_place_band = div_up(in_place_band, 2);
  if (in_place_blocks > 0) {
    const int64_t in_place_bands = div_up(d.P, in_place_band);
    parallel_tasks(d.N * in_place_bands, in_place_band * d.Q * taps * L * in_place_blocks, [&](int64_t task) {
      const int64_t n = task / in_place_bands, p0 = task % in_place_bands * in_place_band;
      channel_vector_rows_in_place<T, J>(d, x + channel_start(d.layout, n, 0, C, d.H * d.W), packed.data(), taps * L,
                                         biases.data(), in_place_blocks, run_in_place, p0,
                                         std::min(in_place_band, d.P - p0),
                                         y + channel_start(d.layout, n, 0, C, plane_out));
    });
  }
  const int64_t first_block = in_place_blocks, staged_blocks = blocks - in_place_blocks;
  parallel_tasks(d.N * staged_blocks * bands, band * d.Q * taps * L, [&](int64_t task) {
    // Channel blocks vary fastest: consecutive tasks read neighbouring bytes of the same channels-last rows.
    const int64_t block = first_block + task % staged_blocks, p0 = task / staged_blocks % bands * band;
    const int64_t n = task / staged_blocks / bands;
    const int64_t rows = std::min(band, d.P - p0), c0 = block * L;
    const int64_t channels = std::min(L, C - c0);
    const T* weights = packed.data() + block * taps * L;
    const typename S::Vec b = S::load(biases.data() + c0);
    T* channels_out = y + channel_start(d.layout, n, c0, C, plane_out);
    // Whole vectors of channels-last outputs go straight to y; the rest through `out`.
    const bool in_place = dense && d.layout == Layout::channels_last && channels == L;
    // Slack past the last row: a run of J outputs is always computed, and those past Q are dropped.
    thread_local std::vector<T> staged, out;
    stage_channels(d, x + channel_start(d.layout, n, c0, C, d.H * d.W), channels, p0 * d.stride_h,
                   virtual_extent(rows, d.stride_h, d.R, d.dilation_h), J * d.stride_w, staged);
    out.resize(rows * d.Q * L);
    T* first_out = in_place ? channels_out + p0 * d.Q * out_strides.pixel : out.data();
    const int64_t out_step = in_place ? out_strides.pixel : L;
    alignas(64) typename S::Vec run[J];
    for (int64_t p = 0; p < rows; ++p) {
      const T* row = staged.data() + p * d.stride_h * VW * L;
      for (int64_t q0 = 0; q0 < d.Q; q0 += J) {
        const int64_t count = std::min<int64_t>(J, d.Q - q0);
        if (G > 1) {
          run_groups(row + q0 * d.stride_w * L, weights, d.R, G, d.dilation_h * VW * L, group_lanes.data(), b, run);
        } else {
          run_outputs(row + q0 * d.stride_w * L, weights, d.R, d.S, d.dilation_h * VW * L, d.dilation_w * L,
                      d.stride_w * L, b, run);
        }
        for (int64_t j = 0; j < count; ++j) S::store(first_out + (p * d.Q + q0 + j) * out_step, run[j]);
      }
    }
    if (in_place) return;
    if (dense) {
      return scatter_channel_vectors(out.data(), rows * d.Q, channels, channels_out + p0 * d.Q * out_strides.pixel,
                                     out_strides);
    }
    // A stride phase of an input gradient: output (p, q) is pixel (p*step_h + first_h, q*step_w + first_w).
    for (int64_t p = 0; p < rows; ++p)
      for (int64_t q = 0; q < d.Q; ++q) {
        const int64_t pixel = ((p0 + p) * grid.step_h + grid.first_h) * grid.cols + q * grid.step_w + grid.first_w;
        scatter_channel_vectors(out.data() + (p * d.Q + q) * L, 1, channels, channels_out + pixel * out_strides.pixel,
                                out_strides);
      }
  });
}

// Weight gradient of a depthwise layer on small planes, channels across the lanes:
//   gw[c,r,s] = sum_{n,p,q} gy[n,c,p,q] * V[n,c](p*sh + r*dh, q*sw + s*dw)
// One task per block of L channels and slot of images, summing over its images in order: it stages each
// image's virtual planes and gy ([pixel][L]), then for each tile of KS-tap kernel rows keeps the tile's sums in
// registers while it walks the pixels: per pixel one gy vector and one input vector per tap. Kernel rows of 3,
// 5 or 7 taps.
// Tasks the weight gradient wants at least (blocks of channels times slots of images).
constexpr int64_t kChannelVectorGradTasks = 16;

inline bool channel_vectors_weight_grad_applies(const DirectProblem& d, int64_t lanes, int64_t element_size) {
  return (channel_vectors_apply(d, lanes, element_size) || grouped_channel_vectors_apply(d, lanes)) &&
         (d.S == 3 || d.S == 5 || d.S == 7);
}

// sums[r][s] += sum_{p,q} gy[p][q] * x[p*sh + r*dh][q*sw + s*dw] for RT kernel rows starting at x, over
// `rows` output rows; Grouped, with each x vector permuted by `lanes` (one input channel of every group).
template <typename T, int RT, int KS, bool Grouped>
void channel_vector_tap_sums(const DirectProblem& d, int64_t rows_out, const T* x, int64_t VW, const T* gy,
                             const typename Simd<T>::Index* lanes, T* sums) {
  using V = Simd<T>;
  constexpr int64_t L = V::lanes;
  typename V::Mask permutation{};
  if constexpr (Grouped) std::memcpy(&permutation, lanes, sizeof(permutation));
  const auto input = [&](const T* at) {
    if constexpr (Grouped) return V::permute(V::load(at), permutation);
    return V::load(at);
  };
  typename V::Vec acc[RT][KS];
  for (int r = 0; r < RT; ++r)
    for (int s = 0; s < KS; ++s) acc[r][s] = V::load(sums + (r * KS + s) * L);
  for (int64_t p = 0; p < rows_out; ++p) {
    const T* rows[RT];
    for (int r = 0; r < RT; ++r) rows[r] = x + (p * d.stride_h + r * d.dilation_h) * VW * L;
    for (int64_t q = 0; q < d.Q; ++q) {
      const typename V::Vec g = V::load(gy + (p * d.Q + q) * L);
      for (int r = 0; r < RT; ++r)
        for (int s = 0; s < KS; ++s) acc[r][s] += g * input(rows[r] + (q * d.stride_w + s * d.dilation_w) * L);
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int s = 0; s < KS; ++s) V::store(sums + (r * KS + s) * L, acc[r][s]);
}

// Kernel rows per tile: as many as the accumulators hold.
template <int KS>
constexpr int kTileRows = std::max(1, kAccumulators / KS);

// The sums of channel_vector_tap_sums for a 3x3 kernel, one image, read in place from channels-last x and gy
// (their block of L channels at pixel 0; every lane real): windows inside the image in a tight loop, the
// border columns and rows with the taps that land in it (the others add zeros). The same order of sums as the
// staged kernel; no staging copies, whose strided reads of x and gy were twice the multiply-adds' time.
constexpr int64_t kTapSumsAhead = 16;  // outputs ahead whose pixels are asked for: a pixel apart, too far for the
                                      // hardware prefetchers

template <typename T>
void channel_vector_tap_sums_in_place(const DirectProblem& d, const T* x, const T* gy, int64_t qa, int64_t qb,
                                      T* sums) {
  using V = Simd<T>;
  constexpr int64_t L = V::lanes;
  const int64_t C = d.C;
  typename V::Vec acc[3][3];
  for (int r = 0; r < 3; ++r)
    for (int s = 0; s < 3; ++s) acc[r][s] = V::load(sums + (r * 3 + s) * L);
  for (int64_t p = 0; p < d.P; ++p) {
    const int64_t h0 = p * d.stride_h - d.offset_h;
    const int64_t r0 = std::min<int64_t>(3, div_up(std::max<int64_t>(0, -h0), d.dilation_h));
    const int64_t r1 = std::max(r0, std::min<int64_t>(3, div_up(d.H - h0, d.dilation_h)));
    const T* const g_row = gy + p * d.Q * C;
    const auto border = [&](int64_t q) {
      const typename V::Vec g = V::load(g_row + q * C);
      for (int64_t r = r0; r < r1; ++r)
        for (int s = 0; s < 3; ++s) {
          const int64_t w = q * d.stride_w - d.offset_w + s * d.dilation_w;
          if (w >= 0 && w < d.W) acc[r][s] += g * V::load(x + ((h0 + r * d.dilation_h) * d.W + w) * C);
        }
    };
    if (r0 > 0 || r1 < 3) {
      for (int64_t q = 0; q < d.Q; ++q) border(q);
      continue;
    }
    for (int64_t q = 0; q < qa; ++q) border(q);
    const T* rows[3];
    for (int r = 0; r < 3; ++r) rows[r] = x + ((h0 + r * d.dilation_h) * d.W - d.offset_w) * C;
    const int64_t col_step = d.dilation_w * C;
    const int64_t ahead = kTapSumsAhead * d.stride_w * C;
    for (int64_t q = qa; q < qb; ++q) {
      const typename V::Vec g = V::load(g_row + q * C);
      const int64_t column = q * d.stride_w * C;
      __builtin_prefetch(g_row + (q + kTapSumsAhead) * C);
      for (int r = 0; r < 3; ++r) __builtin_prefetch(rows[r] + column + 2 * col_step + ahead);
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) acc[r][s] += g * V::load(rows[r] + column + s * col_step);
    }
    for (int64_t q = qb; q < d.Q; ++q) border(q);
  }
  for (int r = 0; r < 3; ++r)
    for (int s = 0; s < 3; ++s) V::store(sums + (r * 3 + s) * L, acc[r][s]);
}

template <typename T, int KS, int RT = kTileRows<KS>>
void channel_vector_kernel_rows(const DirectProblem& d, int64_t rows_out, const T* x, int64_t VW, const T* gy,
                                int64_t rows, const typename Simd<T>::Index* lanes, T* sums) {
  if constexpr (RT > 1) {
    if (rows < RT) return channel_vector_kernel_rows<T, KS, RT - 1>(d, rows_out, x, VW, gy, rows, lanes, sums);
  }
  if (lanes != nullptr) return channel_vector_tap_sums<T, RT, KS, true>(d, rows_out, x, VW, gy, lanes, sums);
  channel_vector_tap_sums<T, RT, KS, false>(d, rows_out, x, VW, gy, nullptr, sums);
}

template <typename T>
void channel_vectors_weight_grad(const DirectProblem& d, const T* gy, const T* x, T* gw, WeightLayout gw_layout) {
  using V = Simd<T>;
  constexpr int64_t L = V::lanes;
  const int64_t C = d.C, G = d.C_per_group(), RS = d.R * d.S, blocks = div_up(C, L);
  const int64_t VW = virtual_extent(d.Q, d.stride_w, d.S, d.dilation_w);
  const int64_t tile_rows = d.S == 3 ? kTileRows<3> : d.S == 5 ? kTileRows<5> : kTileRows<7>;
  // Groups: the sums of input channel c of every group in turn, its vectors permuted into place.
  const std::vector<typename V::Index> group_lanes = group_permutations<T>(G);
  const int64_t band = channel_vector_band(d, L, sizeof(T));
  const ChannelStrides gy_strides = channel_strides(d.layout, C, d.P * d.Q);
  // Few blocks also split the images into slots, each summed into its own partial sums, which are added in slot
  // order: the split depends on the sizes alone, so the result does not depend on the thread count.
  const int64_t slots = std::clamp<int64_t>(div_up(kChannelVectorGradTasks, blocks), 1, d.N);
  std::vector<T> partials(blocks * slots * G * RS * L, T(0));  // [block][slot][c][r][s][L]
  // Whole blocks of 3x3 kernels in channels last read x and gy in place where a row holds a run of windows
  // inside the image (the columns [qa, qb)).
  const auto [qa, qb] = columns_inside(d);
  const bool in_place = d.layout == Layout::channels_last && G == 1 && d.R == 3 && d.S == 3 && qb - qa >= 8;
  parallel_tasks(blocks * slots, div_up(d.N, slots) * d.P * d.Q * G * RS * L, [&](int64_t task) {
    const int64_t block = task / slots, slot = task % slots, c0 = block * L, channels = std::min(L, C - c0);
    if (in_place && channels == L) {
      for (int64_t n = slot * d.N / slots; n < (slot + 1) * d.N / slots; ++n)
        channel_vector_tap_sums_in_place(d, x + channel_start(d.layout, n, c0, C, d.H * d.W),
                                         gy + channel_start(d.layout, n, c0, C, d.P * d.Q), qa, qb,
                                         partials.data() + task * RS * L);
      return;
    }
    thread_local std::vector<T> staged, grads;
    grads.assign(band * d.Q * L, T(0));
    for (int64_t n = slot * d.N / slots; n < (slot + 1) * d.N / slots; ++n)
      for (int64_t p0 = 0; p0 < d.P; p0 += band) {  // each tap sums over (n, p, q) in order, whatever the band
        const int64_t rows_out = std::min(band, d.P - p0);
        stage_channels(d, x + channel_start(d.layout, n, c0, C, d.H * d.W), channels, p0 * d.stride_h,
                       virtual_extent(rows_out, d.stride_h, d.R, d.dilation_h), 0, staged);
        gather_channel_vectors(gy + channel_start(d.layout, n, c0, C, d.P * d.Q) + p0 * d.Q * gy_strides.pixel,
                               gy_strides, channels, rows_out * d.Q, grads.data());
        for (int64_t c = 0; c < G; ++c)
          for (int64_t r0 = 0; r0 < d.R; r0 += tile_rows) {
            const int64_t rows = std::min(d.R - r0, tile_rows);
            const T* first = staged.data() + r0 * d.dilation_h * VW * L;
            const typename V::Index* lanes = G > 1 ? group_lanes.data() + c * L : nullptr;
            T* tile = partials.data() + ((task * G + c) * RS + r0 * d.S) * L;
            if (d.S == 3) channel_vector_kernel_rows<T, 3>(d, rows_out, first, VW, grads.data(), rows, lanes, tile);
            if (d.S == 5) channel_vector_kernel_rows<T, 5>(d, rows_out, first, VW, grads.data(), rows, lanes, tile);
            if (d.S == 7) channel_vector_kernel_rows<T, 7>(d, rows_out, first, VW, grads.data(), rows, lanes, tile);
          }
      }
  });
  // gw[k][c][r][s] (or gw[k][r][s][c]), k output channel, c input channel of its group
  const int64_t c_step = gw_layout == WeightLayout::krsc ? 1 : RS, rs_step = gw_layout == WeightLayout::krsc ? G : 1;
  for (int64_t k = 0; k < C; ++k)
    for (int64_t c = 0; c < G; ++c)
      for (int64_t rs = 0; rs < RS; ++rs) {
        T sum = 0;
        for (int64_t slot = 0; slot < slots; ++slot)
          sum += partials[(((k / L * slots + slot) * G + c) * RS + rs) * L + k % L];
        gw[k * G * RS + c * c_step + rs * rs_step] = sum;
      }
}

// All the stride phases of a depthwise layer's input gradient at once: each task stages its channels' gy
// once, with margins for every phase's virtual planes (they differ only by their offsets), computes every
// phase into its channels' gx planes kept pixel-major, and transposes those back once. (Phase by phase, gy
// would be staged and gx written once per phase, every stride-th pixel.)
template <typename T>
bool channel_vector_phases_apply(const std::vector<InputGradPhase<T>>& phases) {
  if (phases.empty()) return false;
  for (const auto& phase : phases)
    if (!channel_vectors_apply(phase.d, Simd<T>::lanes, sizeof(T))) return false;
  // In channels last, whole planes of any size: staging is a copy there, and gx is written in place.
  if (phases[0].d.layout == Layout::channels_last) return true;
  const OutputGrid& planes = phases[0].grid;
  return planes.rows * planes.cols * Simd<T>::lanes * int64_t(sizeof(T)) <= kChannelVectorStagedBytesLargeKernel;
}

template <typename T>
void channel_vector_phases(const std::vector<InputGradPhase<T>>& phases, const T* gy, T* gx) {
  using S = Simd<T>;
  constexpr int64_t L = S::lanes;
  constexpr int J = kAccumulators / 3;
  const DirectProblem& first = phases[0].d;  // every phase reads the same gy planes, N x C x H x W
  const int64_t C = first.C, H = first.H, W = first.W, blocks = div_up(C, L);
  const int64_t plane_out = phases[0].grid.rows * phases[0].grid.cols, gx_cols = phases[0].grid.cols;
  // Staged row i is gy row i - top (zero outside gy), columns likewise: phase f's virtual row i is staged
  // row i + top - offset_h.
  int64_t top = 0, left = 0;
  for (const auto& phase : phases) top = std::max(top, phase.d.offset_h), left = std::max(left, phase.d.offset_w);
  int64_t rows = top + H, cols = left + W;
  for (const auto& phase : phases) {
    const DirectProblem& d = phase.d;
    rows = std::max(rows, top - d.offset_h + virtual_extent(d.P, 1, d.R, d.dilation_h));
    cols = std::max(cols, left - d.offset_w + virtual_extent(d.Q, 1, d.S, d.dilation_w));
  }
  // packed[phase][block][r][s][0..L): the phase's taps of channel block*L + l, 0 past C.
  std::vector<int64_t> first_weight{0};
  for (const auto& phase : phases) first_weight.push_back(first_weight.back() + blocks * phase.d.R * phase.d.S * L);
  std::vector<T> packed(first_weight.back(), T(0));
  for (size_t f = 0; f < phases.size(); ++f) {
    const int64_t RS = phases[f].d.R * phases[f].d.S;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t rs = 0; rs < RS; ++rs)
        packed[first_weight[f] + (c / L * RS + rs) * L + c % L] = phases[f].taps[c * RS + rs];
  }

  const ChannelStrides in_strides = channel_strides(first.layout, C, H * W);
  const ChannelStrides out_strides = channel_strides(first.layout, C, plane_out);
  int64_t most_rows = 0;
  std::vector<ChannelVectorRun<T, J>> runs;
  for (const auto& phase : phases) {
    most_rows = std::max(most_rows, phase.d.P);
    runs.push_back(choose_channel_vector_run<T, J>(phase.d));
  }
  parallel_tasks(first.N * blocks, plane_out * L, [&](int64_t task) {
    const int64_t n = task / blocks, block = task % blocks, c0 = block * L, channels = std::min(L, C - c0);
    thread_local std::vector<T> staged, out;
    staged.assign((rows * cols + J) * L, T(0));  // slack: runs of J outputs read past a row's end
    const T* channels_in = gy + channel_start(first.layout, n, c0, C, H * W);
    for (int64_t h = 0; h < H; ++h)
      gather_channel_vectors(channels_in + h * W * in_strides.pixel, in_strides, channels, W,
                             staged.data() + ((h + top) * cols + left) * L);
    // Whole vectors of channels-last gradients go straight to gx (zero where no phase reaches); the rest through `out`.
    T* channels_out = gx + channel_start(first.layout, n, c0, C, plane_out);
    const bool in_place = first.layout == Layout::channels_last && channels == L;
    if (!in_place) out.assign(plane_out * L, T(0));  // pixels no tap reaches stay zero
    T* first_out = in_place ? channels_out : out.data();
    const int64_t out_step = in_place ? out_strides.pixel : L;
    alignas(64) typename S::Vec run[J];
    // Row p of every phase in turn: the phases' rows interleave into whole rows of gx, written together.
    for (int64_t p = 0; p < most_rows; ++p)
      for (size_t f = 0; f < phases.size(); ++f) {
        const DirectProblem& d = phases[f].d;
        if (p >= d.P) continue;
        if (in_place && phases[f].grid.first_w == 0) {  // gx's pixels of the next row, written a pixel apart
          const OutputGrid& grid = phases[f].grid;
          const T* next = first_out + ((p + 1) * grid.step_h + grid.first_h) * gx_cols * out_step;
          for (int64_t col = 0; col < gx_cols && p + 1 < d.P; ++col) __builtin_prefetch(next + col * out_step, 1);
        }
        const OutputGrid& grid = phases[f].grid;
        const T* weights = packed.data() + first_weight[f] + block * d.R * d.S * L;
        const T* origin = staged.data() + ((top - d.offset_h) * cols + left - d.offset_w) * L;
        const ChannelVectorRun<T, J> run_outputs = runs[f];
        T* out_row = first_out + ((p * grid.step_h + grid.first_h) * gx_cols + grid.first_w) * out_step;
        for (int64_t q0 = 0; q0 < d.Q; q0 += J) {
          run_outputs(origin + (p * cols + q0) * L, weights, d.R, d.S, d.dilation_h * cols * L, d.dilation_w * L, L,
                      S::zero(), run);
          for (int64_t j = 0; j < std::min<int64_t>(J, d.Q - q0); ++j)
            S::store(out_row + (q0 + j) * grid.step_w * out_step, run[j]);
        }
      }
    if (in_place) return;
    scatter_channel_vectors(out.data(), plane_out, channels, channels_out, out_strides);
  });
}

TORCHCORR_ISA_END
