// Operator schemas and the one place their arguments are checked.
//
// Three ops, closed under differentiation (torchcorr/_ops.py writes the table):
//   corr2d_forward(x, w, b)         y  = corr(x, w) + b
//   corr2d_input_grad(gy, w, HW)    gx = the adjoint of corr(., w) applied to gy
//   corr2d_weight_grad(gy, x, RS)   gw = the adjoint of corr(x, .) applied to gy
// and corr2d_bias_grad(gy) = gy summed over everything but channels, in a fixed order (torch's own
// sum splits by thread count, so its bits would depend on torch.set_num_threads).
#include "corr2d.h"

#include <c10/util/safe_numerics.h>
#include <torch/library.h>

namespace torchcorr {
namespace {

// Rounded quotients for b > 0, exact for every int64 a and b (no a + b - 1 to overflow).
int64_t div_floor(int64_t a, int64_t b) { return a / b - (a % b != 0 && a < 0); }
int64_t div_ceil(int64_t a, int64_t b) { return a / b + (a % b != 0 && a > 0); }

// x * factor + offset, refusing a result that does not fit in 64 bits.
int64_t checked_extent(const char* op, const char* what, int64_t x, int64_t factor, int64_t offset) {
  int64_t product = 0, sum = 0;
  TORCH_CHECK_VALUE(!c10::mul_overflows(x, factor, &product) && !c10::add_overflows(product, offset, &sum), op,
                    ": the ", what, " does not fit in 64 bits");
  return sum;
}

void check_pair(const char* op, const char* name, at::IntArrayRef value, int64_t minimum) {
  TORCH_CHECK_VALUE(value.size() == 2, op, ": ", name, " must have 2 values (height, width), got ",
                    value.size());
  TORCH_CHECK_VALUE(value[0] >= minimum && value[1] >= minimum, op, ": ", name, " must be ",
                    minimum == 0 ? "non-negative" : "positive", ", got ", value);
}

// A dtype as Python prints it: torch.float32.
std::string dtype_name(at::ScalarType dtype) { return "torch." + std::string(c10::getDtypeNames(dtype).first); }

void check_tensor(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                  const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got a ", t.dim(),
                    "-D tensor of shape ", t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ",
                   dtype_name(t.scalar_type()));
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ",
                   dtype_name(t.scalar_type()), " but the other operand has ", dtype_name(like.scalar_type()));
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device(),
              " but the other operand is on ", like.device());
}

// Fill in everything derived from input sizes (N, C, H, W) and weight sizes (K, C/G, R, S).
Corr2dProblem make_problem(const char* op, at::IntArrayRef input_size, at::IntArrayRef weight_size,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           int64_t groups) {
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  TORCH_CHECK_VALUE(groups >= 1, op, ": groups must be positive, got ", groups);
  Corr2dProblem p{};
  p.N = input_size[0], p.C = input_size[1], p.H = input_size[2], p.W = input_size[3];
  p.K = weight_size[0], p.R = weight_size[2], p.S = weight_size[3];
  p.stride_h = stride[0], p.stride_w = stride[1];
  p.pad_h = padding[0], p.pad_w = padding[1];
  p.dilation_h = dilation[0], p.dilation_w = dilation[1];
  p.groups = groups;
  TORCH_CHECK_VALUE(p.C % groups == 0, op, ": input channels (", p.C, ") must be divisible by groups (",
                    groups, ")");
  TORCH_CHECK_VALUE(p.K % groups == 0, op, ": output channels (", p.K,
                    ") must be divisible by groups (", groups, ")");
  TORCH_CHECK_VALUE(weight_size[1] * groups == p.C, op, ": weight of shape ", weight_size,
                    " expects ", weight_size[1] * groups, " input channels (", weight_size[1],
                    " per group x ", groups, " groups), but the input has ", p.C);
  TORCH_CHECK_VALUE(p.R >= 1 && p.S >= 1, op, ": kernel must be at least 1x1, got ", p.R, "x", p.S);
  const int64_t span_h = checked_extent(op, "dilated kernel height", p.dilation_h, p.R - 1, 1);
  const int64_t span_w = checked_extent(op, "dilated kernel width", p.dilation_w, p.S - 1, 1);
  const int64_t padded_h = checked_extent(op, "padded input height", p.pad_h, 2, p.H);
  const int64_t padded_w = checked_extent(op, "padded input width", p.pad_w, 2, p.W);
  TORCH_CHECK_VALUE(span_h <= padded_h && span_w <= padded_w, op, ": kernel (", p.R, "x", p.S,
                    ", spanning ", span_h, "x", span_w, " with dilation) is larger than the padded input (",
                    padded_h, "x", padded_w, ")");
  p.P = (padded_h - span_h) / p.stride_h + 1;
  p.Q = (padded_w - span_w) / p.stride_w + 1;
  return p;
}

void check_grad_output(const char* op, const at::Tensor& grad_output, const Corr2dProblem& p) {
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef({p.N, p.K, p.P, p.Q}), op,
                    ": grad_output has shape ", grad_output.sizes(), " but this problem's output is [",
                    p.N, ", ", p.K, ", ", p.P, ", ", p.Q, "]");
}

}  // namespace

ColumnRange valid_output_cols(const Corr2dProblem& p, int64_t s) {
  const int64_t offset = s * p.dilation_w - p.pad_w;  // input column of q = 0
  int64_t begin = std::max<int64_t>(0, div_ceil(-offset, p.stride_w));
  int64_t end = std::min<int64_t>(p.Q, div_floor(p.W - 1 - offset, p.stride_w) + 1);
  return {begin, std::max(begin, end)};
}

ColumnRange output_rows_reading(const Corr2dProblem& p, int64_t r, int64_t row_begin, int64_t row_end) {
  const int64_t offset = r * p.dilation_h - p.pad_h;  // input row of p = 0
  int64_t begin = std::max<int64_t>(0, div_ceil(row_begin - offset, p.stride_h));
  int64_t end = std::min<int64_t>(p.P, div_ceil(row_end - offset, p.stride_h));
  return {begin, std::max(begin, end)};
}

Corr2dProblem check_forward(const char* op, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_tensor(op, "input", input, 4, input);
  check_tensor(op, "weight", weight, 4, input);
  auto p = make_problem(op, input.sizes(), weight.sizes(), stride, padding, dilation, groups);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == p.K, op, ": bias must have shape (", p.K,
                      ",), one value per output channel, got ", bias->sizes());
    check_tensor(op, "bias", *bias, 1, input);
  }
  return p;
}

Corr2dProblem check_input_grad(const char* op, const at::Tensor& grad_output, const at::Tensor& weight,
                               at::IntArrayRef input_size, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_tensor(op, "grad_output", grad_output, 4, grad_output);
  check_tensor(op, "weight", weight, 4, grad_output);
  TORCH_CHECK_VALUE(input_size.size() == 2 && input_size[0] >= 0 && input_size[1] >= 0, op,
                    ": input_size must be (height, width), got ", input_size);
  std::array<int64_t, 4> x_size{grad_output.size(0), weight.size(1) * groups, input_size[0], input_size[1]};
  auto p = make_problem(op, x_size, weight.sizes(), stride, padding, dilation, groups);
  check_grad_output(op, grad_output, p);
  return p;
}

Corr2dProblem check_weight_grad(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                at::IntArrayRef weight_size, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_tensor(op, "grad_output", grad_output, 4, grad_output);
  check_tensor(op, "input", input, 4, grad_output);
  TORCH_CHECK_VALUE(weight_size.size() == 2 && weight_size[0] >= 1 && weight_size[1] >= 1, op,
                    ": weight_size must be (kernel height, kernel width), got ", weight_size);
  TORCH_CHECK_VALUE(groups >= 1 && input.size(1) % groups == 0, op, ": input channels (", input.size(1),
                    ") must be divisible by groups (", groups, ")");
  std::array<int64_t, 4> w_size{grad_output.size(1), input.size(1) / groups, weight_size[0], weight_size[1]};
  auto p = make_problem(op, input.sizes(), w_size, stride, padding, dilation, groups);
  check_grad_output(op, grad_output, p);
  return p;
}

void check_bias_grad(const char* op, const at::Tensor& grad_output) {
  check_tensor(op, "grad_output", grad_output, 4, grad_output);
}

at::ScalarType compute_dtype(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

at::MemoryFormat result_memory_format(const at::Tensor& first, const at::Tensor& second) {
  const auto channels_last = at::MemoryFormat::ChannelsLast;
  return first.suggest_memory_format() == channels_last || second.suggest_memory_format() == channels_last
             ? channels_last
             : at::MemoryFormat::Contiguous;
}

TORCH_LIBRARY(torchcorr, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def("corr2d_forward(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups) -> Tensor",
        tags);
  m.def("corr2d_input_grad(Tensor grad_output, Tensor weight, SymInt[2] input_size, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups) -> Tensor",
        tags);
  m.def("corr2d_weight_grad(Tensor grad_output, Tensor input, SymInt[2] weight_size, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups) -> Tensor",
        tags);
  m.def("corr2d_bias_grad(Tensor grad_output) -> Tensor", tags);
}

}  // namespace torchcorr
