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
// and, forward mode, the tangent of op(a, t) is op(a_t, t) + op(a, t_t) (plus b_t broadcast for the forward).
// Each op's autograd kernel records the call (record: a torch::autograd::Function in plain eager, a graph node of
// its own under torch.func's transforms, which refuse such Functions) and sets the result's tangent when an
// operand has one, so torch.func's grad, vjp, jvp, jacrev, jacfwd and hessian run through this file too (vmap:
// the ops' batching rules, torchcorr/_ops.py). Backward and tangents call the ops through the dispatcher, so
// they are recorded in turn and derivatives of any order come from the same kernels.
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <type_traits>

namespace torchcorr {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Node;
using torch::autograd::SavedVariable;
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

// The op below autograd: the kernel itself (the operands' graph and tangents are this file's business).
template <typename Call>
at::Tensor below_autograd(const Call& call) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return call();
}

// a + b, either of which may be undefined.
at::Tensor sum(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

at::Tensor tangent(const at::Tensor& t) { return t.defined() ? t._fw_grad(/*level=*/0) : at::Tensor(); }

// t without its tangent (the other operand's in a tangent formula: a tangent may not carry one of its own).
at::Tensor primal(const at::Tensor& t) { return tangent(t).defined() ? t._fw_primal(/*level=*/0) : t; }

// The tangent of op(a, t), linear in each: op(a_t, t) + op(a, t_t) (undefined when neither has one).
template <typename Op>
at::Tensor linear_tangent(const at::Tensor& a, const at::Tensor& t, const Op& op) {
  const auto a_t = tangent(a), t_t = tangent(t);
  return sum(a_t.defined() ? op(a_t, primal(t)) : at::Tensor(), t_t.defined() ? op(primal(a), t_t) : at::Tensor());
}

void set_tangent(const at::Tensor& result, const at::Tensor& result_tangent) {
  if (result_tangent.defined()) result._set_fw_grad(result_tangent, /*level=*/0, /*is_inplace_op=*/false);
}

// The derivatives of an op linear in its two tensors (a, t): one gradient per operand, and the bias's for the
// forward pass; `needed(i)` says whether operand i's is wanted.
struct ForwardDerivatives {  // y = forward(x, w) + b
  static constexpr const char* name = "Corr2dForwardBackward";
  template <typename Needed>
  static variable_list backward(const at::Tensor& x, const at::Tensor& w, bool has_bias, const at::Tensor& g,
                                const Config& c, const Needed& needed) {
    variable_list result(3);
    if (!g.defined()) return result;
    if (needed(0)) result[0] = input_grad_op(g, w, spatial(x), c);
    if (needed(1)) result[1] = weight_grad_op(g, x, spatial(w), c);
    if (has_bias && needed(2)) result[2] = bias_grad_op(g);
    return result;
  }
};

struct InputGradDerivatives {  // gx = input_grad(gy, w)
  static constexpr const char* name = "Corr2dInputGradBackward";
  template <typename Needed>
  static variable_list backward(const at::Tensor& gy, const at::Tensor& w, bool, const at::Tensor& g,
                                const Config& c, const Needed& needed) {
    variable_list result(2);
    if (!g.defined()) return result;
    if (needed(0)) result[0] = forward_op(g, w, std::nullopt, c);
    if (needed(1)) result[1] = weight_grad_op(gy, g, spatial(w), c);
    return result;
  }
};

struct WeightGradDerivatives {  // gw = weight_grad(gy, x)
  static constexpr const char* name = "Corr2dWeightGradBackward";
  template <typename Needed>
  static variable_list backward(const at::Tensor& gy, const at::Tensor& x, bool, const at::Tensor& g,
                                const Config& c, const Needed& needed) {
    variable_list result(2);
    if (!g.defined()) return result;
    if (needed(0)) result[0] = forward_op(x, g, std::nullopt, c);
    if (needed(1)) result[1] = input_grad_op(gy, g, spatial(x), c);
    return result;
  }
};

// Two recorders of the same derivatives. Plain eager calls: a torch::autograd::Function, which compiled
// autograd can trace. Under torch.func's transforms, which refuse such a Function, and for forward-mode
// tangents, which it cannot carry: a graph node of this file's own, as torch's generated ops record.
bool own_nodes(std::initializer_list<const at::Tensor*> tensors) {
  const auto included = c10::impl::tls_local_dispatch_key_set().included_;  // a transform is running
  if (included.has(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) ||
      included.has(c10::DispatchKey::FuncTorchDynamicLayerBackMode))
    return true;
  for (const at::Tensor* t : tensors)
    if (tangent(*t).defined()) return true;
  return false;
}

template <typename D>
struct Recorded : torch::autograd::Function<Recorded<D>> {
  template <typename Compute>
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& t,
                            const std::optional<at::Tensor>& b, const Config& c, const Compute& compute) {
    auto result = compute();
    ctx->save_for_backward({a, t});
    ctx->saved_data["config"] = std::vector<int64_t>{c.stride[0], c.stride[1], c.padding[0], c.padding[1],
                                                     c.dilation[0], c.dilation[1], c.groups};
    ctx->saved_data["has_bias"] = b.has_value();
    return result;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto v = ctx->saved_data["config"].toIntVector();
    const Config c{{v[0], v[1]}, {v[2], v[3]}, {v[4], v[5]}, v[6]};
    auto result = D::backward(saved[0], saved[1], ctx->saved_data["has_bias"].toBool(), grads[0], c,
                              [&](size_t i) { return ctx->needs_input_grad(i); });
    result.resize(5);  // no gradients for the config and the computation
    return result;
  }
};

// Graph nodes are shared_ptr in torch 2.11 and intrusive_ptr from 2.14: whichever Edge holds.
using NodePtr = decltype(torch::autograd::Edge::function);

template <typename N>
auto make_node() {
  if constexpr (std::is_same_v<NodePtr, std::shared_ptr<Node>>) {  // deleteNode (found by argument lookup, and
    return std::shared_ptr<N>(new N(), [](N* node) { deleteNode(node); });  // only in 2.11) frees long chains
  } else {
    return c10::make_intrusive<N>();
  }
}

template <typename D>
struct OwnNode : Node {
  SavedVariable a, t;
  Config config;
  bool has_bias = false;
  std::string name() const override { return D::name; }
  variable_list apply(variable_list&& grads) override {
    auto result = D::backward(a.unpack(), t.unpack(), has_bias, grads[0], config,
                              [&](size_t i) { return task_should_compute_output(i); });
    result.resize(num_outputs());  // the forward pass's bias gradient only where it has a bias
    return result;
  }
  void release_variables() override {
    a.reset_data();
    t.reset_data();
  }
};

// gb = bias_grad(gy): g_gy = ggb broadcast.
at::Tensor bias_grad_backward(const at::Tensor& g, c10::SymIntArrayRef shape) {
  return g.defined() ? g.view({1, -1, 1, 1}).expand_symint(shape) : at::Tensor();
}

struct BiasGradRecorded : torch::autograd::Function<BiasGradRecorded> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gy) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->saved_data["shape"] = gy.sym_sizes().vec();
    return bias_grad_op(gy);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {bias_grad_backward(grads[0], ctx->saved_data["shape"].toSymIntList().vec())};
  }
};

struct BiasGradNode : Node {
  std::vector<c10::SymInt> shape;
  std::string name() const override { return "Corr2dBiasGradBackward"; }
  variable_list apply(variable_list&& grads) override { return {bias_grad_backward(grads[0], shape)}; }
};

// Whether a call must be recorded for backward.
bool records(std::initializer_list<const at::Tensor*> tensors) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : tensors)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

// result = op(a, t) (+ b), computed by `compute` below autograd and recorded for backward when an operand
// needs a gradient.
template <typename D, typename Compute>
at::Tensor record(const at::Tensor& a, const at::Tensor& t, const at::Tensor& b, const Config& config,
                  const Compute& compute) {
  const auto below = [&] { return below_autograd(compute); };
  if (!records({&a, &t, &b})) return below();
  if (!own_nodes({&a, &t, &b})) {
    return Recorded<D>::apply(a, t, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt, config, below);
  }
  auto result = below();
  auto node = make_node<OwnNode<D>>();
  node->set_next_edges(b.defined() ? torch::autograd::collect_next_edges(a, t, b)
                                   : torch::autograd::collect_next_edges(a, t));
  node->a = SavedVariable(a, false);
  node->t = SavedVariable(t, false);
  node->config = config;
  node->has_bias = b.defined();
  torch::autograd::set_history(result, node);
  return result;
}

at::Tensor forward_autograd(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups) {
  const Config c{stride.vec(), padding.vec(), dilation.vec(), groups};
  const at::Tensor bias = b.value_or(at::Tensor());
  auto y = record<ForwardDerivatives>(x, w, bias, c, [&] { return forward_op(x, w, b, c); });
  auto y_t = linear_tangent(x, w, [&](const at::Tensor& x, const at::Tensor& w) {
    return forward_op(x, w, std::nullopt, c);
  });
  if (const auto b_t = tangent(bias); b_t.defined())
    y_t = y_t.defined() ? y_t + b_t.view({1, -1, 1, 1}) : b_t.view({1, -1, 1, 1}).expand_as(y);
  set_tangent(y, y_t);
  return y;
}

at::Tensor input_grad_autograd(const at::Tensor& gy, const at::Tensor& w, c10::SymIntArrayRef input_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups) {
  const Config c{stride.vec(), padding.vec(), dilation.vec(), groups};
  const auto op = [&](const at::Tensor& gy, const at::Tensor& w) { return input_grad_op(gy, w, input_size, c); };
  auto gx = record<InputGradDerivatives>(gy, w, at::Tensor(), c, [&] { return op(gy, w); });
  set_tangent(gx, linear_tangent(gy, w, op));
  return gx;
}

at::Tensor weight_grad_autograd(const at::Tensor& gy, const at::Tensor& x, c10::SymIntArrayRef weight_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups) {
  const Config c{stride.vec(), padding.vec(), dilation.vec(), groups};
  const auto op = [&](const at::Tensor& gy, const at::Tensor& x) { return weight_grad_op(gy, x, weight_size, c); };
  auto gw = record<WeightGradDerivatives>(gy, x, at::Tensor(), c, [&] { return op(gy, x); });
  set_tangent(gw, linear_tangent(gy, x, op));
  return gw;
}

at::Tensor bias_grad_autograd(const at::Tensor& gy) {
  const bool recorded = records({&gy}), own_node = recorded && own_nodes({&gy});
  auto gb = recorded && !own_node ? BiasGradRecorded::apply(gy) : below_autograd([&] { return bias_grad_op(gy); });
  if (own_node) {
    auto node = make_node<BiasGradNode>();
    node->set_next_edges(torch::autograd::collect_next_edges(gy));
    node->shape = gy.sym_sizes().vec();
    torch::autograd::set_history(gb, node);
  }
  const auto gy_t = tangent(gy);
  if (gy_t.defined()) set_tangent(gb, bias_grad_op(gy_t));
  return gb;
}

}  // namespace

TORCH_LIBRARY_IMPL(torchcorr, Autograd, m) {
  m.impl("corr2d_forward", TORCH_FN(forward_autograd));
  m.impl("corr2d_input_grad", TORCH_FN(input_grad_autograd));
  m.impl("corr2d_weight_grad", TORCH_FN(weight_grad_autograd));
  m.impl("corr2d_bias_grad", TORCH_FN(bias_grad_autograd));
}

}  // namespace torchcorr
