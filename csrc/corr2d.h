// The one description of a 2-D cross-correlation problem, shared by every kernel.
//
// Notation (CUTLASS's): input x is N x C x H x W, weight w is K x (C/G) x R x S,
// output y is N x K x P x Q, G groups. Output pixel (p, q) and kernel tap (r, s)
// read input pixel (p*stride_h - pad_h + r*dilation_h, q*stride_w - pad_w + s*dilation_w);
// taps that land in the zero padding contribute nothing.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>

namespace torchcorr {

struct Corr2dProblem {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // weight: K output channels of R x S taps
  int64_t P, Q;        // output rows and columns
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dilation_h, dilation_w;
  int64_t groups;

  int64_t C_per_group() const { return C / groups; }
  int64_t K_per_group() const { return K / groups; }
  // Input row read by output row p through kernel row r (may fall in the padding).
  int64_t input_row(int64_t p, int64_t r) const { return p * stride_h - pad_h + r * dilation_h; }
  int64_t input_col(int64_t q, int64_t s) const { return q * stride_w - pad_w + s * dilation_w; }
};

// Output columns [begin, end) whose tap s reads a real (unpadded) input column.
struct ColumnRange {
  int64_t begin, end;
};
ColumnRange valid_output_cols(const Corr2dProblem& p, int64_t s);

// Output rows [begin, end) whose tap r reads an input row inside [row_begin, row_end).
ColumnRange output_rows_reading(const Corr2dProblem& p, int64_t r, int64_t row_begin, int64_t row_end);

// Build and check the problem; `op` names the caller in error messages. Each checks every
// size, dtype and device it is given, so a direct torch.ops call can never read out of bounds.
Corr2dProblem check_forward(const char* op, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
Corr2dProblem check_input_grad(const char* op, const at::Tensor& grad_output, const at::Tensor& weight,
                               at::IntArrayRef input_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
Corr2dProblem check_weight_grad(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                at::IntArrayRef weight_size, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
void check_bias_grad(const char* op, const at::Tensor& grad_output);

// Kernels compute in float for float16/bfloat16 (and in the tensor's own type otherwise).
at::ScalarType compute_dtype(at::ScalarType dtype);

// Layout of an op's result: channels_last when either operand is, as torch's conv2d decides
// (torchcorr/_ops.py's fake kernels apply the same rule).
at::MemoryFormat result_memory_format(const at::Tensor& first, const at::Tensor& second);

}  // namespace torchcorr
