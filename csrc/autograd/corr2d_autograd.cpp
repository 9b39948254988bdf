// Autograd for the four ops, in C++ so that a call and its backward cost no Python.
//
// Each op is linear in each tensor argument, and the derivatives of each are the other ops:
//
//   op                         d/d(first tensor) of <g, op>       d/d(second tensor) of <g, op>
//   y  = forward(x, w) + b     gx = input_grad(gy, w)             gw = weight_grad(gy, x), gb = bias_grad(gy)
//   gx = input_grad(gy, w)     g_gy = forward(ggx, w)             g_w = weight_grad(gy, ggx)
//   gw = weight_grad(gy, x)    g_gy = forward(x, ggw)             g_x = input_grad(gy, ggw)
//   gb = bias_grad(gy)         g_gy = ggb broadcast over batch and pixels
//
// Backward calls the ops through the dispatcher, so under create_graph they are recorded in turn and
// gradients of any order come from the same kernels.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace torchcorr {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using ForwardSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                    at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t);
using GradSignature = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef, at::IntArrayRef,
                                 at::IntArrayRef, at::IntArrayRef, int64_t);
using BiasGradSignature = at::Tensor(const at::Tensor&);

// stride, padding, dilation and groups: the arguments every op shares.
struct Config {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;

  // One saved entry (each entry is a hashed string key and a list: a third of a small layer's forward call).
  void save(AutogradContext* ctx) const {
    ctx->saved_data["config"] = std::vector<int64_t>{stride[0], stride[1], padding[0], padding[1], dilation[0],
                                                     dilation[1], groups};
  }
  static Config load(AutogradContext* ctx) {
    const auto v = ctx->saved_data["config"].toIntVector();
    return {{v[0], v[1]}, {v[2], v[3]}, {v[4], v[5]}, v[6]};
  }
};

at::Tensor forward_op(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b, const Config& c) {
  static const auto op = find_op<ForwardSignature>("torchcorr::corr2d_forward");
  return op.call(x, w, b, c.stride, c.padding, c.dilation, c.groups);
}

at::Tensor input_grad_op(const at::Tensor& gy, const at::Tensor& w, c10::SymIntArrayRef input_size, const Config& c) {
  static const auto op = find_op<GradSignature>("torchcorr::corr2d_input_grad");
  return op.call(gy, w, input_size, c.stride, c.padding, c.dilation, c.groups);
}

at::Tensor weight_grad_op(const at::Tensor& gy, const at::Tensor& x, c10::SymIntArrayRef weight_size, const Config& c) {
  static const auto op = find_op<GradSignature>("torchcorr::corr2d_weight_grad");
  return op.call(gy, x, weight_size, c.stride, c.padding, c.dilation, c.groups);
}

at::Tensor bias_grad_op(const at::Tensor& gy) {
  static const auto op = find_op<BiasGradSignature>("torchcorr::corr2d_bias_grad");
  return op.call(gy);
}

c10::SymIntArrayRef spatial(const at::Tensor& t) { return t.sym_sizes().slice(2); }

class Forward : public torch::autograd::Function<Forward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const std::optional<at::Tensor>& b, const Config& c) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto y = forward_op(x, w, b, c);  // first: the op checks the config that save() reads
    ctx->save_for_backward({x, w});
    c.save(ctx);
    ctx->saved_data["has_bias"] = b.has_value();
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto c = Config::load(ctx);
    const auto& g = grads[0];
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = input_grad_op(g, w, spatial(x), c);
    if (ctx->needs_input_grad(1)) gw = weight_grad_op(g, x, spatial(w), c);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) gb = bias_grad_op(g);
    return {gx, gw, gb, at::Tensor()};
  }
};

class InputGrad : public torch::autograd::Function<InputGrad> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gy, const at::Tensor& w,
                            c10::SymIntArrayRef input_size, const Config& c) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto gx = input_grad_op(gy, w, input_size, c);
    ctx->save_for_backward({gy, w});
    c.save(ctx);
    return gx;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto c = Config::load(ctx);
    at::Tensor d_gy, d_w;
    if (ctx->needs_input_grad(0)) d_gy = forward_op(grads[0], saved[1], std::nullopt, c);
    if (ctx->needs_input_grad(1)) d_w = weight_grad_op(saved[0], grads[0], spatial(saved[1]), c);
    return {d_gy, d_w, at::Tensor(), at::Tensor()};
  }
};

class WeightGrad : public torch::autograd::Function<WeightGrad> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gy, const at::Tensor& x,
                            c10::SymIntArrayRef weight_size, const Config& c) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto gw = weight_grad_op(gy, x, weight_size, c);
    ctx->save_for_backward({gy, x});
    c.save(ctx);
    return gw;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto c = Config::load(ctx);
    at::Tensor d_gy, d_x;
    if (ctx->needs_input_grad(0)) d_gy = forward_op(saved[1], grads[0], std::nullopt, c);
    if (ctx->needs_input_grad(1)) d_x = input_grad_op(saved[0], grads[0], spatial(saved[1]), c);
    return {d_gy, d_x, at::Tensor(), at::Tensor()};
  }
};

class BiasGrad : public torch::autograd::Function<BiasGrad> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gy) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->saved_data["shape"] = gy.sym_sizes().vec();
    return bias_grad_op(gy);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto shape = ctx->saved_data["shape"].toSymIntList().vec();
    return {grads[0].view({1, -1, 1, 1}).expand_symint(shape)};
  }
};

// Whether a call must be recorded for backward; when not, it goes straight to the kernel (inference).
bool records(std::initializer_list<const at::Tensor*> tensors) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : tensors)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

at::Tensor forward_autograd(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups) {
  const Config c{stride.vec(), padding.vec(), dilation.vec(), groups};
  if (!records({&x, &w, b ? &*b : &x})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op(x, w, b, c);
  }
  return Forward::apply(x, w, b, c);
}

// The gradient ops are recorded only under create_graph (double backward); a plain backward calls them below.
at::Tensor input_grad_autograd(const at::Tensor& gy, const at::Tensor& w, c10::SymIntArrayRef input_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups) {
  const Config c{stride.vec(), padding.vec(), dilation.vec(), groups};
  if (!records({&gy, &w})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return input_grad_op(gy, w, input_size, c);
  }
  return InputGrad::apply(gy, w, input_size, c);
}

at::Tensor weight_grad_autograd(const at::Tensor& gy, const at::Tensor& x, c10::SymIntArrayRef weight_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  const Config c{stride.vec(), padding.vec(), dilation.vec(), groups};
  if (!records({&gy, &x})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return weight_grad_op(gy, x, weight_size, c);
  }
  return WeightGrad::apply(gy, x, weight_size, c);
}

at::Tensor bias_grad_autograd(const at::Tensor& gy) {
  if (!records({&gy})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return bias_grad_op(gy);
  }
  return BiasGrad::apply(gy);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, Autograd, m) {
  m.impl("corr2d_forward", TORCH_FN(forward_autograd));
  m.impl("corr2d_input_grad", TORCH_FN(input_grad_autograd));
  m.impl("corr2d_weight_grad", TORCH_FN(weight_grad_autograd));
  m.impl("corr2d_bias_grad", TORCH_FN(bias_grad_autograd));
}

}  // namespace torchcorr
