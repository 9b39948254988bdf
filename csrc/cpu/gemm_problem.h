// The description of a batched matrix product for kernels/gemm.h: C_b += A_b · B_b, or C += sum_b A_b · B_b.
#pragma once

#include <cstdint>

namespace torchcorr::cpu {

// The matrix of a correlation's input windows, never stored (an implicit im2col): row k = (c, r, s) in that
// order, column j = output pixel (p, q), element x[c][p*sh - ph + r*dh][q*sw - pw + s*dw], zero outside the
// H x W plane (ph and pw may be negative: a crop). Transposed: rows are pixels, columns (c, r, s).
struct ConvWindows {
  int64_t H, W, R, S, Q;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  bool transposed;
  // 0: the planes are C x H x W; else H x W x C with C = channels_last (transposed only), and the columns are
  // taps (r, s, c) in that order, so that a kernel row's taps are contiguous
  int64_t channels_last = 0;
};

// A matrix read through strides: element (i, j) of batch entry b is data[b*batch_stride + i*row_stride +
// j*col_stride] (a transpose is a swap of the strides); or, with `windows`, the windows of the planes at
// data + b*batch_stride.
template <typename T>
struct GemmOperand {
  const T* data;
  int64_t row_stride, col_stride, batch_stride;
  const ConvWindows* windows = nullptr;

  T at(int64_t i, int64_t j) const { return data[i * row_stride + j * col_stride]; }
  GemmOperand batch(int64_t b) const {
    return {data + b * batch_stride, row_stride, col_stride, batch_stride, windows};
  }
};

// How C starts: as it is (C += A·B), or overwritten (C = A·B + bias) with bias[i] per row or bias[j] per
// column (a null bias: zero). Overwriting saves a pass over C and its reads (a 1x1 layer's output is most of
// its memory traffic).
enum class GemmStart { accumulate, row_bias, column_bias };

template <typename T>
struct GemmProblem {
  int64_t M, N, K, batch;
  bool reduced;  // C += sum over the batch (in order), else one C per batch entry
  GemmOperand<T> a, b;
  T* c;  // M x N, unit column stride
  int64_t c_row_stride, c_batch_stride;
  GemmStart start = GemmStart::accumulate;  // reduced products accumulate
  const T* bias = nullptr;
  // Depth summed in registers before C is updated (0: kGemmDepth, gemm.h); shorter runs round less.
  int64_t depth_block = 0;
  // Read A stored transposed (unit row stride) and B with unit column stride where they are, as reduced
  // products do: for operands that are streamed once over a long depth (Winograd's weight gradient).
  bool in_place = false;
};

}  // namespace torchcorr::cpu
