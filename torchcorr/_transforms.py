"""torch.func support: grad, vjp, jvp, jacrev, jacfwd, hessian and vmap through the native ops.

The ops' everyday autograd is C++ (csrc/autograd/), which torch.func does not run (and under jvp it would
give zero tangents). A call whose tensors a transform is tracking (functorch-wrapped tensors) takes the
autograd.Functions below instead; plain eager and compiled calls keep the C++ path. Each op is linear in
each tensor argument, so a forward-mode derivative is the op applied to one tangent at a time, and the
backward of each op is the others (the table in csrc/autograd/corr2d_autograd.cpp): derivatives of any
order come from the same kernels.

vmap: the Functions' rules are generated from the raw ops' batching rules (_ops.py).
"""

import torch
from torch._C._functorch import is_functorch_wrapped_tensor

ops = torch.ops.torchcorr


def transformed(*tensors) -> bool:
    """Whether a torch.func transform is tracking any of the tensors (never while torch.compile traces: it
    keeps the ops, and their C++ autograd, in the graph)."""
    if not torch._C._are_functorch_transforms_active() or torch.compiler.is_compiling():
        return False
    return any(t is not None and is_functorch_wrapped_tensor(t) for t in tensors)


class Config:
    """stride, padding, dilation, groups (and the size of a gradient's result) as one opaque argument: a
    Function's arguments are flattened as pytrees under vmap, and its backward returns one gradient per
    argument."""

    def __init__(self, stride, padding, dilation, groups, size=None):
        self.args, self.size = (stride, padding, dilation, groups), size

    def sized(self, size):
        return Config(*self.args, list(size))


def _sum(terms):
    terms = [t for t in terms if t is not None]
    return sum(terms[1:], terms[0]) if terms else None


class Forward(torch.autograd.Function):
    """y = corr2d_forward(x, w) + b."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, config):
        return ops.corr2d_forward(x, w, b, *config.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, config = inputs
        ctx.save_for_backward(x, w)
        ctx.save_for_forward(x, w)
        ctx.config, ctx.has_bias = config, b is not None

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx = InputGrad.apply(gy, w, ctx.config.sized(x.shape[-2:])) if ctx.needs_input_grad[0] else None
        gw = WeightGrad.apply(gy, x, ctx.config.sized(w.shape[-2:])) if ctx.needs_input_grad[1] else None
        gb = gy.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None

    @staticmethod
    def jvp(ctx, x_t, w_t, b_t, _):
        x, w = ctx.saved_tensors
        terms = [Forward.apply(x_t, w, None, ctx.config) if x_t is not None else None,
                 Forward.apply(x, w_t, None, ctx.config) if w_t is not None else None]
        if b_t is not None:  # broadcast over the output (computed, when it is the only tangent)
            only_bias = all(t is None for t in terms)
            terms.append(Forward.apply(x, torch.zeros_like(w), b_t, ctx.config) if only_bias
                         else b_t[None, :, None, None])
        return _sum(terms)


class _Gradient(torch.autograd.Function):
    """A gradient op g(gy, t) (t the weights or the input), linear in each argument."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output):
        gy, t, ctx.config = inputs
        ctx.save_for_backward(gy, t)
        ctx.save_for_forward(gy, t)


def _gradient_jvp(op, ctx, gy_t, t_t):
    """The forward-mode derivative of a gradient op: the op of each tangent in turn."""
    gy, t = ctx.saved_tensors
    return _sum([op.apply(gy_t, t, ctx.config) if gy_t is not None else None,
                 op.apply(gy, t_t, ctx.config) if t_t is not None else None])


class InputGrad(_Gradient):
    """gx = corr2d_input_grad(gy, w): its derivatives are forward(., w) and weight_grad(gy, .)."""

    @staticmethod
    def forward(gy, w, config):
        return ops.corr2d_input_grad(gy, w, config.size, *config.args)

    @staticmethod
    def backward(ctx, ggx):
        gy, w = ctx.saved_tensors
        g_gy = Forward.apply(ggx, w, None, ctx.config) if ctx.needs_input_grad[0] else None
        g_w = WeightGrad.apply(gy, ggx, ctx.config.sized(w.shape[-2:])) if ctx.needs_input_grad[1] else None
        return g_gy, g_w, None

    @staticmethod
    def jvp(ctx, gy_t, w_t, _):
        return _gradient_jvp(InputGrad, ctx, gy_t, w_t)


class WeightGrad(_Gradient):
    """gw = corr2d_weight_grad(gy, x): its derivatives are forward(x, .) and input_grad(gy, .)."""

    @staticmethod
    def forward(gy, x, config):
        return ops.corr2d_weight_grad(gy, x, config.size, *config.args)

    @staticmethod
    def backward(ctx, ggw):
        gy, x = ctx.saved_tensors
        g_gy = Forward.apply(x, ggw, None, ctx.config) if ctx.needs_input_grad[0] else None
        g_x = InputGrad.apply(gy, ggw, ctx.config.sized(x.shape[-2:])) if ctx.needs_input_grad[1] else None
        return g_gy, g_x, None

    @staticmethod
    def jvp(ctx, gy_t, x_t, _):
        return _gradient_jvp(WeightGrad, ctx, gy_t, x_t)
